// Tests of `cxr gradcam`, run as a child process (CXR_CLI_PATH is the built binary). A
// hand-built model that detects bright blocks makes the answers known: the overlays and
// raw maps exist and decode (16-bit PNG, NumPy .npy), the CSV matches the library run
// in-process, --masks hits and misses on hand-made masks and on a synthetic data set,
// inputs sharing a stem do not overwrite each other, a broken image gets an error row,
// and bad --layer, --class or model are refused.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/image.h"
#include "data/synth.h"
#include "data/transforms.h"
#include "nn/gradcam.h"
#include "nn/serialize.h"
#include "nn/zoo.h"

#include "cli_test_util.h"

namespace {

namespace fs = std::filesystem;
using cxr_test::has;
using cxr_test::Result;
using cxr_test::run_cxr;
using nlohmann::json;

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// CSV records (quoted fields allowed).
std::vector<std::vector<std::string>> read_csv(const std::string& t) { return cxr_test::parse_csv_rows(t); }

// gradcam.csv rows keyed by path, each column by name; the header is checked.
std::map<std::string, std::map<std::string, std::string>> read_rows(const fs::path& p) {
  const auto recs = read_csv(slurp(p));
  std::map<std::string, std::map<std::string, std::string>> rows;
  if (recs.empty()) {
    ADD_FAILURE() << p << " is empty";
    return rows;
  }
  const std::vector<std::string> cols = {"path", "target", "target_name", "probability", "peak_x",
                                         "peak_y", "hit", "overlay", "error"};
  EXPECT_EQ(recs[0], cols);
  for (size_t r = 1; r < recs.size(); ++r) {
    EXPECT_EQ(recs[r].size(), cols.size());
    for (size_t i = 0; i < recs[r].size() && i < cols.size(); ++i) rows[recs[r][0]][cols[i]] = recs[r][i];
  }
  return rows;
}

void set_param(cxr::nn::Model& m, const std::string& name, const std::vector<float>& v) {
  for (auto& [n, t] : m.named_parameters())
    if (n == name) {
      cxr::Tensor d = t;
      d.copy_(cxr::Tensor::from_vector(v, t.shape()));
    }
}

class CliGradcam : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = cxr_test::fresh_test_dir("cxr_test_gradcam_");
    // 16x16 input; channel 0 = ReLU(x - 0.5) (bright), channel 1 = ReLU(0.5 - x) (dark),
    // 2x2 max pool; logit PNEUMONIA = mean of channel 0, logit NORMAL = mean of channel 1.
    json spec = {{"in_channels", 1}, {"num_classes", 2}, {"input_size", {16, 16}},
                 {"layers",
                  {{{"type", "conv"}, {"out", 2}, {"kernel", 1}},
                   {{"type", "relu"}},
                   {{"type", "maxpool"}, {"kernel", 2}},
                   {{"type", "global_avgpool"}},
                   {{"type", "flatten"}},
                   {{"type", "linear"}, {"out", "num_classes"}}}}};
    auto m = cxr::nn::build_model(spec, 1);
    set_param(*m, "0.weight", {1.0f, -1.0f});
    set_param(*m, "0.bias", {-0.5f, 0.5f});
    set_param(*m, "5.weight", {0.0f, 1.0f, 1.0f, 0.0f});
    set_param(*m, "5.bias", {0.0f, 0.0f});
    cxr::nn::ModelInfo info;
    info.class_names = {"NORMAL", "PNEUMONIA"};
    info.mean = {0.0};
    info.stddev = {1.0};
    model_ = (dir_ / "model.safetensors").string();
    cxr::nn::save_model(model_, *m, info);
    fs::create_directories(dir_ / "imgs" / "sub");
  }
  void TearDown() override { cxr_test::remove_test_dir(dir_); }

  std::string q(const fs::path& s) const { return "'" + s.string() + "'"; }

  // A gray image (background 0.5) with a bright block of `b` x `b` pixels at (y0, x0).
  std::string write_image(const fs::path& rel, int h, int w, int y0, int x0, int b) {
    cxr::data::Image img(1, h, w, 0.5f);
    for (int y = y0; y < y0 + b; ++y)
      for (int x = x0; x < x0 + b; ++x) img.at(0, y, x) = 1.0f;
    const fs::path p = dir_ / rel;
    fs::create_directories(p.parent_path());
    cxr::data::write_png(p.string(), img);
    return p.string();
  }

  // 0/1 mask of h x w with the rectangle (y0, x0, size b) set (b = 0: empty).
  void write_mask(const fs::path& rel, int h, int w, int y0, int x0, int b) {
    cxr::data::Image img(1, h, w, 0.0f);
    for (int y = y0; y < y0 + b; ++y)
      for (int x = x0; x < x0 + b; ++x) img.at(0, y, x) = 1.0f;
    fs::create_directories((dir_ / rel).parent_path());
    cxr::data::write_png((dir_ / rel).string(), img);
  }

  // The library's Grad-CAM for one file, preprocessed as the command does.
  cxr::nn::GradCamResult reference(const std::string& path, int64_t target) const {
    auto lm = cxr::nn::load_model(model_);
    cxr::data::Pipeline p;
    p.channels = 1;
    p.height = p.width = 16;
    p.mean = {0.0f};
    p.stddev = {1.0f};
    cxr::data::DecodeOptions o;
    o.channels = 1;
    std::vector<float> buf(256);
    cxr::data::run_pipeline(cxr::data::decode_image(path, o), p, false, cxr::data::SampleRng{}, buf.data());
    return cxr::nn::grad_cam(*lm.model, cxr::Tensor::from_vector(buf, {1, 1, 16, 16}), {target})[0];
  }

  fs::path dir_;
  std::string model_;
};

TEST_F(CliGradcam, OutputsDecodeAndMatchTheLibrary) {
  const std::string a = write_image("imgs/a.png", 32, 32, 16, 4, 8);
  const std::string b = write_image("imgs/sub/b.png", 48, 40, 0, 24, 12);
  std::ofstream(dir_ / "imgs" / "broken.png") << "not an image";
  const fs::path out = dir_ / "out";
  const Result r = run_cxr("gradcam " + q(model_) + " " + q(dir_ / "imgs") + " --out " + q(out) +
                           " --class PNEUMONIA --batch 2 --threads 2");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(has(r.output, "3 images, 1 failed, layer 2")) << r.output;
  const auto rows = read_rows(out / "gradcam.csv");
  ASSERT_EQ(rows.size(), 3u);
  const std::string broken = (dir_ / "imgs" / "broken.png").string();
  ASSERT_TRUE(rows.count(broken));
  EXPECT_FALSE(rows.at(broken).at("error").empty());
  EXPECT_TRUE(rows.at(broken).at("target").empty());
  EXPECT_FALSE(fs::exists(out / "broken_gradcam.png"));

  struct Case {
    std::string path, stem;
    int h, w, y0, x0, b;
  };
  for (const Case& c : {Case{a, "a", 32, 32, 16, 4, 8}, Case{b, "b", 48, 40, 0, 24, 12}}) {
    SCOPED_TRACE(c.path);
    ASSERT_TRUE(rows.count(c.path));
    const auto& row = rows.at(c.path);
    EXPECT_EQ(row.at("error"), "");
    EXPECT_EQ(row.at("target"), "1");
    EXPECT_EQ(row.at("target_name"), "PNEUMONIA");
    EXPECT_EQ(row.at("hit"), "");
    EXPECT_EQ(row.at("overlay"), c.stem + "_gradcam.png");
    const auto ref = reference(c.path, 1);
    EXPECT_NEAR(std::stod(row.at("probability")), ref.probabilities[1], 1e-6);
    // The peak, in the original image's pixels, lies in the bright block.
    const int px = std::stoi(row.at("peak_x")), py = std::stoi(row.at("peak_y"));
    EXPECT_GE(py, c.y0);
    EXPECT_LT(py, c.y0 + c.b);
    EXPECT_GE(px, c.x0);
    EXPECT_LT(px, c.x0 + c.b);
    // Overlay: RGB at the original size, hot (red) over the block, cold (blue) far from it.
    const auto ov = cxr::data::decode_image((out / (c.stem + "_gradcam.png")).string());
    ASSERT_EQ(ov.channels, 3);
    EXPECT_EQ(ov.height, c.h);
    EXPECT_EQ(ov.width, c.w);
    EXPECT_GT(ov.at(0, py, px), ov.at(2, py, px) + 0.1f);
    const int fy = c.y0 < c.h / 2 ? c.h - 1 : 0, fx = c.x0 < c.w / 2 ? c.w - 1 : 0;
    EXPECT_GT(ov.at(2, fy, fx), ov.at(0, fy, fx) + 0.1f);
    // Raw map: 16-bit gray at the model's input size, equal to the library's map.
    const std::string raw = (out / (c.stem + "_gradcam_raw.png")).string();
    const auto info = cxr::data::probe_image(raw);
    EXPECT_EQ(info.bit_depth, 16);
    EXPECT_EQ(info.channels, 1);
    const auto rm = cxr::data::decode_image(raw);
    ASSERT_EQ(rm.height, 16);
    ASSERT_EQ(rm.width, 16);
    for (size_t i = 0; i < rm.data.size(); ++i) EXPECT_NEAR(rm.data[i], ref.upsampled[i], 1.0 / 65535 + 1e-6);
  }
  const json s = json::parse(slurp(out / "summary.json"));
  EXPECT_EQ(s["count"], 3);
  EXPECT_EQ(s["failed"], 1);
  EXPECT_EQ(s["layer"], "2");
  EXPECT_EQ(s["target"], "PNEUMONIA");
  EXPECT_FALSE(s.contains("hit_rate"));
  EXPECT_FALSE(fs::exists(out / "gradcam.csv.tmp"));

  // One image at a time gives the same rows.
  const Result r1 = run_cxr("gradcam " + q(model_) + " " + q(a) + " " + q(b) + " --out " + q(dir_ / "one") +
                            " --class 1 --batch 1");
  EXPECT_EQ(r1.code, 0) << r1.output;
  const auto rows1 = read_rows(dir_ / "one" / "gradcam.csv");
  for (const std::string& p : {a, b})
    for (const char* col : {"target", "peak_x", "peak_y", "probability"})
      EXPECT_EQ(rows1.at(p).at(col), rows.at(p).at(col)) << p << " " << col;
}

TEST_F(CliGradcam, NpyRawMapAndNone) {
  const std::string a = write_image("imgs/a.png", 32, 32, 8, 8, 8);
  const Result r = run_cxr("gradcam " + q(model_) + " " + q(a) + " --out " + q(dir_ / "npy") + " --raw npy --class 1");
  ASSERT_EQ(r.code, 0) << r.output;
  const std::string npy = slurp(dir_ / "npy" / "a_gradcam_raw.npy");
  ASSERT_GT(npy.size(), 10u);
  EXPECT_EQ(npy.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const size_t hlen = static_cast<unsigned char>(npy[8]) | (static_cast<unsigned char>(npy[9]) << 8);
  EXPECT_EQ((10 + hlen) % 64, 0u);
  ASSERT_EQ(npy.size(), 10 + hlen + 16 * 16 * 4);
  const std::string header = npy.substr(10, hlen);
  EXPECT_TRUE(has(header, "'descr': '<f4'")) << header;
  EXPECT_TRUE(has(header, "'fortran_order': False")) << header;
  EXPECT_TRUE(has(header, "'shape': (16, 16)")) << header;
  EXPECT_EQ(header.back(), '\n');
  const auto ref = reference(a, 1);
  for (int i = 0; i < 256; ++i) {
    float v;
    std::memcpy(&v, npy.data() + 10 + hlen + 4 * i, 4);  // little-endian hosts
    EXPECT_FLOAT_EQ(v, ref.upsampled[i]) << i;
  }
  EXPECT_FALSE(fs::exists(dir_ / "npy" / "a_gradcam_raw.png"));

  const Result n = run_cxr("gradcam " + q(model_) + " " + q(a) + " --out " + q(dir_ / "none") + " --raw none");
  ASSERT_EQ(n.code, 0) << n.output;
  EXPECT_TRUE(fs::exists(dir_ / "none" / "a_gradcam.png"));
  EXPECT_FALSE(fs::exists(dir_ / "none" / "a_gradcam_raw.png"));
  EXPECT_FALSE(fs::exists(dir_ / "none" / "a_gradcam_raw.npy"));
}

TEST_F(CliGradcam, MaskHitsAndMisses) {
  const std::string hit = write_image("imgs/hit.png", 32, 32, 16, 4, 8);
  const std::string miss = write_image("imgs/miss.png", 32, 32, 16, 4, 8);
  const std::string none = write_image("imgs/none.png", 32, 32, 4, 20, 8);
  const std::string empty = write_image("imgs/empty.png", 32, 32, 4, 20, 8);
  const std::string half = write_image("imgs/half.png", 32, 32, 0, 0, 8);
  write_mask("masks/a/hit.png", 32, 32, 14, 2, 12);
  write_mask("masks/b/miss.png", 32, 32, 0, 20, 12);  // elsewhere
  write_mask("masks/b/empty.png", 32, 32, 0, 0, 0);
  write_mask("masks/half.png", 64, 64, 0, 0, 16);     // a mask twice the image's size
  const Result r = run_cxr("gradcam " + q(model_) + " " + q(dir_ / "imgs") + " --out " + q(dir_ / "out") +
                           " --class PNEUMONIA --masks " + q(dir_ / "masks"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "hit rate: 0.6667 (2 of 3 images with a lesion mask)")) << r.output;
  const auto rows = read_rows(dir_ / "out" / "gradcam.csv");
  EXPECT_EQ(rows.at(hit).at("hit"), "1");
  EXPECT_EQ(rows.at(miss).at("hit"), "0");
  EXPECT_EQ(rows.at(none).at("hit"), "");
  EXPECT_EQ(rows.at(empty).at("hit"), "");
  EXPECT_EQ(rows.at(half).at("hit"), "1");
  const json s = json::parse(slurp(dir_ / "out" / "summary.json"));
  EXPECT_EQ(s["scored"], 3);
  EXPECT_EQ(s["hits"], 2);
  EXPECT_NEAR(s["hit_rate"].get<double>(), 2.0 / 3.0, 1e-12);

  const Result j = run_cxr("gradcam " + q(model_) + " " + q(dir_ / "imgs") + " --out " + q(dir_ / "out2") +
                               " --class PNEUMONIA --json --masks " + q(dir_ / "masks"),
                           true);
  ASSERT_EQ(j.code, 0) << j.output;
  const json sj = json::parse(j.output);
  EXPECT_NEAR(sj["hit_rate"].get<double>(), 2.0 / 3.0, 1e-12);
  EXPECT_EQ(sj["count"], 5);
}

TEST_F(CliGradcam, SyntheticDataSetMasks) {
  cxr::data::SynthOptions o;
  o.size = 32;
  o.count = 16;
  o.seed = 5;
  o.threads = 2;
  cxr::data::write_synthetic_dataset((dir_ / "synth").string(), o);
  // A random small simple_cnn: the hits are whatever they are, but each must agree with the mask.
  json spec = cxr::nn::arch_spec("simple_cnn", 1, 2, 32, 32);
  spec["channels"] = {4, 8};
  spec["hidden"] = 8;
  cxr::nn::ModelInfo info;
  info.class_names = {"NORMAL", "PNEUMONIA"};
  const std::string model = (dir_ / "cnn.safetensors").string();
  cxr::nn::save_model(model, *cxr::nn::build_model(spec, 2), info);
  const fs::path synth = dir_ / "synth";
  const Result r = run_cxr("gradcam " + q(model) + " " + q(synth / "train") + " " + q(synth / "test") + " --out " +
                               q(dir_ / "out") + " --masks " + q(synth / "masks") + " --json",
                           true);
  ASSERT_EQ(r.code, 0) << r.output;
  const json s = json::parse(r.output);
  const auto rows = read_rows(dir_ / "out" / "gradcam.csv");
  int pneumonia = 0, hits = 0;
  for (const auto& [path, row] : rows) {
    SCOPED_TRACE(path);
    EXPECT_EQ(row.at("error"), "");
    const bool is_p = has(path, "/PNEUMONIA/");
    EXPECT_EQ(row.at("hit").empty(), !is_p);
    if (!is_p) continue;
    ++pneumonia;
    const std::string split = has(path, "/train/") ? "train" : "test";
    const auto mask = cxr::data::decode_image(
        (dir_ / "synth" / "masks" / split / fs::path(path).filename()).string());
    const bool inside = mask.at(0, std::stoi(row.at("peak_y")), std::stoi(row.at("peak_x"))) > 0.5f;
    EXPECT_EQ(row.at("hit"), inside ? "1" : "0");
    hits += inside;
  }
  EXPECT_GT(pneumonia, 3);
  EXPECT_EQ(s["count"].get<int>(), static_cast<int>(rows.size()));
  EXPECT_EQ(s["scored"].get<int>(), pneumonia);
  EXPECT_EQ(s["hits"].get<int>(), hits);
  EXPECT_NEAR(s["hit_rate"].get<double>(), static_cast<double>(hits) / pneumonia, 1e-12);
  EXPECT_EQ(s["layer"], "7");
}

TEST_F(CliGradcam, SameStemInDifferentFolders) {
  const std::string a = write_image("imgs/x.png", 32, 32, 0, 0, 8);
  const std::string b = write_image("imgs/sub/x.png", 32, 32, 8, 8, 8);
  const std::string c = write_image("imgs/sub/y.png", 32, 32, 8, 8, 8);
  const Result r = run_cxr("gradcam " + q(model_) + " " + q(dir_ / "imgs") + " --out " + q(dir_ / "out"));
  ASSERT_EQ(r.code, 0) << r.output;
  const auto rows = read_rows(dir_ / "out" / "gradcam.csv");
  const std::string oa = rows.at(a).at("overlay"), ob = rows.at(b).at("overlay");
  EXPECT_NE(oa, ob);
  EXPECT_EQ(oa.rfind("x_", 0), 0u) << oa;
  EXPECT_EQ(rows.at(c).at("overlay"), "y_gradcam.png");
  for (const auto& o : {oa, ob}) {
    EXPECT_TRUE(fs::exists(dir_ / "out" / o)) << o;
    const std::string raw = o.substr(0, o.size() - 4) + "_raw.png";
    EXPECT_TRUE(fs::exists(dir_ / "out" / raw)) << raw;
  }
  // The two overlays show different blocks.
  EXPECT_NE(slurp(dir_ / "out" / oa), slurp(dir_ / "out" / ob));
}

TEST_F(CliGradcam, BadUsage) {
  const std::string a = write_image("imgs/a.png", 32, 32, 0, 0, 8);
  const std::string base = "gradcam " + q(model_) + " " + q(a) + " --out " + q(dir_ / "out");
  Result r = run_cxr(base + " --layer 9");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_TRUE(has(r.output, "--layer '9'")) << r.output;
  EXPECT_TRUE(has(r.output, "0, 1, 2, 3")) << r.output;
  r = run_cxr(base + " --layer 5");  // the linear layer: not a feature map
  EXPECT_EQ(r.code, 2) << r.output;
  r = run_cxr(base + " --class LUNG");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_TRUE(has(r.output, "NORMAL (0), PNEUMONIA (1)")) << r.output;
  r = run_cxr(base + " --class 2");
  EXPECT_EQ(r.code, 2) << r.output;
  r = run_cxr(base + " --raw tiff");
  EXPECT_EQ(r.code, 2) << r.output;
  r = run_cxr(base + " --alpha 1.5");
  EXPECT_EQ(r.code, 2) << r.output;
  r = run_cxr(base + " --masks " + q(dir_ / "nowhere"));
  EXPECT_EQ(r.code, 2) << r.output;
  r = run_cxr("gradcam " + q(dir_ / "missing.safetensors") + " " + q(a) + " --out " + q(dir_ / "out"));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(has(r.output, "no such model file")) << r.output;
  std::ofstream(dir_ / "bad.safetensors") << "garbage";
  r = run_cxr("gradcam " + q(dir_ / "bad.safetensors") + " " + q(a) + " --out " + q(dir_ / "out"));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(has(r.output, "not a valid model file")) << r.output;
  r = run_cxr("gradcam " + q(model_) + " --out " + q(dir_ / "out"));
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_FALSE(fs::exists(dir_ / "out" / "gradcam.csv"));
  // --layer 1 (the ReLU, 16x16) is accepted.
  r = run_cxr(base + " --layer 1 --list " + q(dir_ / "nolist.txt"));
  EXPECT_EQ(r.code, 1) << r.output;  // the list file is missing
  {
    std::ofstream l(dir_ / "list.txt");
    l << "  " << a << "  \n\n";
  }
  r = run_cxr("gradcam " + q(model_) + " --list " + q(dir_ / "list.txt") + " --out " + q(dir_ / "out") + " --layer 1");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "1 images, 0 failed, layer 1")) << r.output;
}

}  // namespace
