// safetensors encoding, whole-model files and atomic writes: round trips, and a
// cxr::FileError naming the file for every kind of malformed input.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nn/autograd.h"
#include "nn/serialize.h"
#include "nn/zoo.h"
#include "runtime/rng.h"

namespace cxr {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// A fresh directory per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::path(::testing::TempDir()) / "cxr_serialize_XXXXXX").string();
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    const char* d = ::mkdtemp(buf.data());
    if (!d) throw std::runtime_error("mkdtemp failed");
    path_ = d;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(path_)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() && std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

// The header JSON and data section of an encoding, and the reverse.
struct Parts {
  json header;
  std::string data;
};
Parts split(const std::string& bytes) {
  uint64_t hl = 0;
  std::memcpy(&hl, bytes.data(), 8);
  return {json::parse(bytes.substr(8, hl)), bytes.substr(8 + hl)};
}
std::string join(const std::string& header_text, const std::string& data) {
  const uint64_t hl = header_text.size();
  std::string out(reinterpret_cast<const char*>(&hl), 8);
  return out + header_text + data;
}
std::string join(const json& header, const std::string& data) { return join(header.dump(), data); }

std::string with_header_length(std::string bytes, uint64_t hl) {
  std::memcpy(bytes.data(), &hl, 8);
  return bytes;
}

// ---------------------------------------------------------------- encode / decode

std::map<std::string, Tensor> sample_tensors() {
  Generator gen(1);
  std::map<std::string, Tensor> t;
  t["a.weight"] = rand_normal({2, 3}, gen);
  t["b64"] = rand_normal({4}, gen, 0.0, 1.0, DType::f64);
  t["idx"] = Tensor::from_vector(std::vector<int64_t>{-3, 0, 1LL << 40, 7}, {2, 2});
  t["scalar"] = Tensor::scalar(2.5);
  t["count"] = Tensor::from_vector(std::vector<int64_t>{42}, {});
  t["empty"] = Tensor::zeros({0, 3});
  t["five_d"] = rand_normal({1, 2, 1, 2, 2}, gen);
  return t;
}

TEST(Safetensors, EncodeDecodeRoundTrip) {
  const auto tensors = sample_tensors();
  const std::map<std::string, std::string> meta = {
      {"k", "v"}, {"json", "{\"a\": [1, 2]}"}, {"unicode", "\xc3\xa9\xe2\x9c\x93"}, {"empty", ""}};
  const std::string bytes = nn::safetensors_encode(tensors, meta);
  const auto back = nn::safetensors_decode(bytes, "memory");
  ASSERT_EQ(back.tensors.size(), tensors.size());
  for (const auto& [n, t] : tensors) {
    ASSERT_TRUE(back.tensors.count(n)) << n;
    EXPECT_TRUE(bitwise_equal(back.tensors.at(n), t)) << n;
  }
  EXPECT_EQ(back.tensors.at("scalar").dim(), 0);
  EXPECT_EQ(back.tensors.at("count").item(), 42.0);
  EXPECT_EQ(back.tensors.at("idx").to_vector()[2], static_cast<double>(1LL << 40));
  EXPECT_EQ(back.metadata, meta);

  // Layout: 8-byte length, then a JSON header padded so the data starts 8-byte aligned,
  // then the tensors' bytes, offsets relative to the data section.
  uint64_t hl = 0;
  std::memcpy(&hl, bytes.data(), 8);
  EXPECT_EQ((8 + hl) % 8, 0u);
  const Parts p = split(bytes);
  EXPECT_EQ(p.header["a.weight"]["dtype"], "F32");
  EXPECT_EQ(p.header["a.weight"]["shape"], json::array({2, 3}));
  EXPECT_EQ(p.header["b64"]["dtype"], "F64");
  EXPECT_EQ(p.header["idx"]["dtype"], "I64");
  EXPECT_EQ(p.header["scalar"]["shape"], json::array());
  EXPECT_EQ(p.header["__metadata__"]["k"], "v");
  uint64_t total = 0;
  for (const auto& [n, t] : tensors) {
    const auto off = p.header[n]["data_offsets"];
    EXPECT_EQ(off[1].get<uint64_t>() - off[0].get<uint64_t>(), t.nbytes()) << n;
    EXPECT_EQ(std::memcmp(p.data.data() + off[0].get<uint64_t>(), t.raw_data(), t.nbytes()), 0) << n;
    total += t.nbytes();
  }
  EXPECT_EQ(p.data.size(), total);

  // Empty tensors decode whatever the size of the data section (here: none at all).
  for (const Shape& s : {Shape{0, 3}, Shape{7, 0, 5}, Shape{0}}) {
    const auto only_empty = nn::safetensors_decode(nn::safetensors_encode({{"e", Tensor::zeros(s)}}), "empty");
    EXPECT_EQ(only_empty.tensors.at("e").shape(), s);
  }
  // A dimension may exceed the data size when another one is 0.
  const auto wide = nn::safetensors_decode(
      nn::safetensors_encode({{"e", Tensor::zeros({0, 1000})}, {"x", Tensor::zeros({1})}}), "wide");
  EXPECT_EQ(wide.tensors.at("e").shape(), (Shape{0, 1000}));

  // No metadata: no __metadata__ entry. No tensors at all is a valid file too.
  EXPECT_FALSE(split(nn::safetensors_encode(tensors)).header.contains("__metadata__"));
  const auto none = nn::safetensors_decode(nn::safetensors_encode({}), "empty");
  EXPECT_TRUE(none.tensors.empty());
  EXPECT_TRUE(none.metadata.empty());
}

TEST(Safetensors, EncodeRejectsBadInput) {
  EXPECT_THROW(nn::safetensors_encode({{"__metadata__", Tensor::zeros({1})}}), Error);
  EXPECT_THROW(nn::safetensors_encode({{"", Tensor::zeros({1})}}), Error);
  EXPECT_THROW(nn::safetensors_encode({{"x", Tensor()}}), Error);
}

TEST(Safetensors, FileRoundTrip) {
  TempDir dir;
  const std::string path = dir.file("t.safetensors");
  const auto tensors = sample_tensors();
  nn::save_safetensors(path, tensors, {{"k", "v"}});
  const auto back = nn::load_safetensors(path);
  for (const auto& [n, t] : tensors) EXPECT_TRUE(bitwise_equal(back.tensors.at(n), t)) << n;
  EXPECT_EQ(back.metadata.at("k"), "v");
  EXPECT_EQ(read_bytes(path), nn::safetensors_encode(tensors, {{"k", "v"}}));
}

// ---------------------------------------------------------------- malformed files

// A valid two-tensor encoding: "a" f32 [2, 3] at [0, 24), "b" i64 [2] at [24, 40).
std::string valid_bytes() {
  std::map<std::string, Tensor> t;
  t["a"] = Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  t["b"] = Tensor::from_vector(std::vector<int64_t>{7, 8}, {2});
  return nn::safetensors_encode(t, {{"k", "v"}});
}

// Loads `bytes` from a file and returns the FileError message (failing if none or
// another type is thrown). The message must name the file.
std::string load_error(const TempDir& dir, const std::string& bytes, const nn::SafetensorsLimits& lim = {}) {
  const std::string path = dir.file("bad.safetensors");
  write_bytes(path, bytes);
  try {
    nn::load_safetensors(path, lim);
  } catch (const FileError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << "the message does not name the file: " << msg;
    return msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected cxr::FileError, got: " << e.what();
    return "";
  }
  ADD_FAILURE() << "the malformed file was accepted";
  return "";
}

void expect_load_error(const TempDir& dir, const std::string& bytes, const std::string& phrase,
                       const nn::SafetensorsLimits& lim = {}) {
  const std::string msg = load_error(dir, bytes, lim);
  if (!msg.empty()) {
    EXPECT_NE(msg.find(phrase), std::string::npos) << "'" << phrase << "' not in: " << msg;
  }
}

// The valid encoding with one header edit applied.
template <typename Edit>
std::string edited(Edit edit) {
  Parts p = split(valid_bytes());
  edit(p.header);
  return join(p.header, p.data);
}

TEST(SafetensorsErrors, SizesAndHeaderLength) {
  TempDir dir;
  EXPECT_NO_THROW(nn::load_safetensors((write_bytes(dir.file("ok"), valid_bytes()), dir.file("ok"))));
  expect_load_error(dir, "", "only 0 bytes");
  expect_load_error(dir, "abcde", "only 5 bytes");
  expect_load_error(dir, std::string(8, '\0'), "not valid JSON");  // zero-length header
  const std::string good = valid_bytes();
  expect_load_error(dir, with_header_length(good, good.size()), "runs past the end");
  expect_load_error(dir, with_header_length(good, good.size() - 7), "runs past the end");
  expect_load_error(dir, with_header_length(good, 1ull << 40), "exceeds the limit");
  expect_load_error(dir, with_header_length(good, ~0ull), "exceeds the limit");
  nn::SafetensorsLimits tight;
  tight.max_header_bytes = 16;
  expect_load_error(dir, good, "exceeds the limit of 16", tight);
  // A header length that stops inside the JSON.
  expect_load_error(dir, with_header_length(good, 20), "not valid JSON");
}

TEST(SafetensorsErrors, HeaderContent) {
  TempDir dir;
  const std::string data(40, '\0');
  expect_load_error(dir, join(std::string("{\"a\": "), data), "not valid JSON");
  expect_load_error(dir, join(std::string("\xff\xfe garbage"), data), "not valid JSON");
  expect_load_error(dir, join(std::string("[1, 2]"), data), "not a JSON object");
  expect_load_error(dir, join(std::string("\"text\""), data), "not a JSON object");
  // Deep nesting is parsed without exhausting the stack.
  const size_t depth = 100000;
  expect_load_error(dir, join(std::string(depth, '[') + std::string(depth, ']'), data), "not a JSON object");
  std::string nested;
  for (size_t i = 0; i < depth; ++i) nested += "{\"a\":";
  nested += "1" + std::string(depth, '}');
  expect_load_error(dir, join(nested, data), "needs dtype, shape and data_offsets");
  expect_load_error(dir, edited([](json& h) { h["a"] = 5; }), "needs dtype, shape and data_offsets");
  expect_load_error(dir, edited([](json& h) { h["a"].erase("data_offsets"); }), "needs dtype, shape and data_offsets");
  expect_load_error(dir, edited([](json& h) { h["a"].erase("dtype"); }), "needs dtype, shape and data_offsets");
  expect_load_error(dir, edited([](json& h) { h["a"]["dtype"] = "BF16"; }), "unsupported dtype \"BF16\"");
  expect_load_error(dir, edited([](json& h) { h["a"]["dtype"] = "f32"; }), "unsupported dtype");
  expect_load_error(dir, edited([](json& h) { h["a"]["dtype"] = 4; }), "unsupported dtype");
  expect_load_error(dir, edited([](json& h) { h["__metadata__"]["k"] = 1; }), "value for 'k' is not a string");
  expect_load_error(dir, edited([](json& h) { h["__metadata__"]["n"] = nullptr; }), "not a string");
  expect_load_error(dir, edited([](json& h) {
                      h["__metadata__"] = json::array({"k", "v"});
                    }),
                    "__metadata__ is not an object");
}

TEST(SafetensorsErrors, Shapes) {
  TempDir dir;
  expect_load_error(dir, edited([](json& h) { h["a"]["shape"] = {-2, -3}; }), "non-negative integers");
  expect_load_error(dir, edited([](json& h) { h["a"]["shape"] = {2.0, 3.0}; }), "non-negative integers");
  expect_load_error(dir, edited([](json& h) { h["a"]["shape"] = {2, "3"}; }), "non-negative integers");
  expect_load_error(dir, edited([](json& h) { h["a"]["shape"] = "2x3"; }), "must be an array");
  expect_load_error(dir, edited([](json& h) { h["a"]["shape"] = {1, 1, 1, 1, 2, 3}; }), "at most 5 dims");
  // Element counts that overflow or exceed the data are reported, not allocated.
  expect_load_error(dir, edited([](json& h) {
                      h["a"]["shape"] = {1ull << 32, 1ull << 32};
                    }),
                    "needs more than the 40-byte data section");
  expect_load_error(dir, edited([](json& h) { h["a"]["shape"] = {~0ull}; }), "needs more than the 40-byte");
  expect_load_error(dir, edited([](json& h) { h["a"]["shape"] = {40, 40, 40, 40, 40}; }), "needs more than");
  expect_load_error(dir, edited([](json& h) {
                      h["e"] = {{"dtype", "F32"}, {"shape", {0, 1ull << 40, 1ull << 40}}, {"data_offsets", {24, 24}}};
                    }),
                    "too large");
  expect_load_error(dir, edited([](json& h) { h["a"]["shape"] = {2, 2}; }), "holds 24 bytes but F32 [2,2] needs 16");
  expect_load_error(dir, edited([](json& h) { h["b"]["dtype"] = "F32"; }), "holds 16 bytes");
}

TEST(SafetensorsErrors, Offsets) {
  TempDir dir;
  expect_load_error(dir, edited([](json& h) {
                      h["b"]["data_offsets"] = {24, 48};
                    }),
                    "outside the 40-byte data section");
  expect_load_error(dir, edited([](json& h) { h["b"]["data_offsets"] = {24, ~0ull}; }), "outside");
  expect_load_error(dir, edited([](json& h) { h["a"]["data_offsets"] = {24, 0}; }), "outside");  // end < begin
  expect_load_error(dir, edited([](json& h) { h["a"]["data_offsets"] = {-1, 23}; }), "must be [begin, end]");
  expect_load_error(dir, edited([](json& h) { h["a"]["data_offsets"] = {0, 24, 40}; }), "must be [begin, end]");
  expect_load_error(dir, edited([](json& h) { h["a"]["data_offsets"] = {0.0, 24.0}; }), "must be [begin, end]");
  expect_load_error(dir, edited([](json& h) { h["a"]["data_offsets"] = "0-24"; }), "must be [begin, end]");
  // Overlapping ranges.
  expect_load_error(dir, edited([](json& h) { h["b"]["data_offsets"] = {16, 32}; }), "overlap");
  expect_load_error(dir, edited([](json& h) { h["b"]["data_offsets"] = {0, 16}; }), "overlap");
  expect_load_error(dir, edited([](json& h) {
                      h["b"]["data_offsets"] = {8, 24};
                      h["a"]["shape"] = {1, 3};
                      h["a"]["data_offsets"] = {4, 16};
                    }),
                    "overlap");
  // An empty tensor between two overlapping ones must not hide the overlap.
  expect_load_error(dir, edited([](json& h) {
                      h["e"] = {{"dtype", "F32"}, {"shape", {0}}, {"data_offsets", {8, 8}}};
                      h["c"] = {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {8, 16}}};
                    }),
                    "overlap");
  // Touching ranges and an empty tensor where two ranges meet are fine.
  const std::string ok = edited([](json& h) {
    h["e"] = {{"dtype", "F32"}, {"shape", {0, 4}}, {"data_offsets", {24, 24}}};
  });
  const auto f = nn::safetensors_decode(ok, "ok");
  EXPECT_EQ(f.tensors.at("e").shape(), (Shape{0, 4}));
  EXPECT_EQ(f.tensors.at("a").to_vector(), (std::vector<double>{1, 2, 3, 4, 5, 6}));
}

TEST(SafetensorsErrors, TruncatedData) {
  TempDir dir;
  const std::string good = valid_bytes();
  for (size_t cut : {1, 8, 16, 24}) {
    SCOPED_TRACE(cut);
    expect_load_error(dir, good.substr(0, good.size() - cut), "outside");
  }
  // With 1 byte of data left or none, the [2, 3] shape itself is already too large.
  expect_load_error(dir, good.substr(0, good.size() - 39), "needs more than the 1-byte data section");
  expect_load_error(dir, good.substr(0, good.size() - 40), "needs more than the 0-byte data section");
  // Cut inside the header.
  uint64_t hl = 0;
  std::memcpy(&hl, good.data(), 8);
  expect_load_error(dir, good.substr(0, 8 + hl / 2), "runs past the end");
}

TEST(SafetensorsErrors, UnreadablePaths) {
  TempDir dir;
  const std::string missing = dir.file("no_such_file.safetensors");
  try {
    nn::load_safetensors(missing);
    ADD_FAILURE() << "no error for a missing file";
  } catch (const FileError& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
  }
  try {
    nn::load_model(missing);
    ADD_FAILURE() << "no error for a missing model file";
  } catch (const FileError& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
  }
  // A directory is not a file.
  try {
    nn::load_safetensors(dir.path().string());
    ADD_FAILURE() << "no error for a directory";
  } catch (const FileError& e) {
    EXPECT_NE(std::string(e.what()).find(dir.path().string()), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------- model files

// Runs a few training-mode batches so BatchNorm statistics and counters are not defaults.
void warm_up(nn::Model& m, Generator& gen) {
  m.train();
  nn::NoGradGuard ng;
  for (int i = 0; i < 2; ++i) m(rand_normal({2, m.in_channels(), m.input_height(), m.input_width()}, gen));
}

TEST(ModelFile, RoundTripForEveryArchitecture) {
  TempDir dir;
  Generator gen(3);
  for (const std::string& arch : nn::zoo_architectures()) {
    SCOPED_TRACE(arch);
    auto m = nn::build_model(nn::arch_spec(arch, 1, 3, 32, 32), 5);
    warm_up(*m, gen);
    nn::ModelInfo info;
    info.class_names = {"normal", "pneumonia", "other \xe2\x9c\x93"};
    info.mean = {0.485};
    info.stddev = {0.229};
    info.training = {{"epochs", 3}, {"metrics", {{"val_acc", 0.875}}}, {"data", "synthetic"}, {"arch", arch}};
    const std::string path = dir.file(arch + ".safetensors");
    nn::save_model(path, *m, info);

    const nn::LoadedModel loaded = nn::load_model(path);
    ASSERT_TRUE(loaded.model);
    EXPECT_EQ(loaded.info.class_names, info.class_names);
    EXPECT_EQ(loaded.info.mean, info.mean);
    EXPECT_EQ(loaded.info.stddev, info.stddev);
    EXPECT_EQ(loaded.info.training, info.training);
    EXPECT_EQ(loaded.engine_version, CXR_VERSION_STRING);
    EXPECT_EQ(loaded.model->spec(), m->spec());
    EXPECT_EQ(loaded.model->in_channels(), 1);
    EXPECT_EQ(loaded.model->num_classes(), 3);
    EXPECT_EQ(loaded.model->input_height(), 32);
    for (auto& [p, mod] : loaded.model->named_modules())
      EXPECT_FALSE(mod->is_training()) << "loads in eval mode: " << p;

    const auto sa = m->state_dict(), sb = loaded.model->state_dict();
    ASSERT_EQ(sa.size(), sb.size());
    for (const auto& [n, t] : sa) EXPECT_TRUE(bitwise_equal(t, sb.at(n))) << n;

    m->eval();
    const Tensor x = rand_normal({2, 1, 32, 32}, gen);
    nn::NoGradGuard ng;
    EXPECT_TRUE(bitwise_equal((*m)(x), (*loaded.model)(x)));
  }
  EXPECT_EQ(dir.entries().size(), nn::zoo_architectures().size());  // no temp files left
}

TEST(ModelFile, DefaultInfoAndSaveErrors) {
  TempDir dir;
  auto m = nn::build_model({{"arch", "simple_cnn"}, {"channels", {4}}, {"num_classes", 3}, {"input_size", 8}}, 0);
  const std::string path = dir.file("m.safetensors");
  nn::save_model(path, *m);
  const auto loaded = nn::load_model(path);
  EXPECT_EQ(loaded.info.class_names, (std::vector<std::string>{"class_0", "class_1", "class_2"}));
  EXPECT_EQ(loaded.info.mean, std::vector<double>{0.5});
  EXPECT_EQ(loaded.info.stddev, std::vector<double>{0.5});
  EXPECT_TRUE(loaded.info.training.is_object());
  // The file is plain safetensors with string metadata.
  const auto raw = nn::load_safetensors(path);
  EXPECT_EQ(raw.metadata.at("format"), "cxr.model.v1");
  EXPECT_EQ(json::parse(raw.metadata.at("cxr.architecture")), m->spec());
  EXPECT_EQ(raw.tensors.size(), m->state_dict().size());

  nn::ModelInfo wrong_names;
  wrong_names.class_names = {"a", "b"};
  EXPECT_THROW(nn::save_model(dir.file("x.safetensors"), *m, wrong_names), Error);
  nn::ModelInfo wrong_norm;
  wrong_norm.mean = {0.1, 0.2};
  EXPECT_THROW(nn::save_model(dir.file("x.safetensors"), *m, wrong_norm), Error);
  wrong_norm.mean = {};
  wrong_norm.stddev = {};
  EXPECT_THROW(nn::save_model(dir.file("x.safetensors"), *m, wrong_norm), Error);
  EXPECT_EQ(dir.entries(), (std::vector<std::string>{"m.safetensors"}));
}

// A saved model's tensors and metadata, to be edited and written back.
nn::SafetensorsFile saved_model(const TempDir& dir) {
  auto m = nn::build_model({{"arch", "simple_cnn"}, {"channels", {4}}, {"hidden", 6}, {"input_size", 8}}, 0);
  nn::save_model(dir.file("good.safetensors"), *m);
  return nn::load_safetensors(dir.file("good.safetensors"));
}

void expect_model_error(const TempDir& dir, const nn::SafetensorsFile& f, const std::string& phrase) {
  const std::string path = dir.file("bad_model.safetensors");
  nn::save_safetensors(path, f.tensors, f.metadata);
  try {
    nn::load_model(path);
    ADD_FAILURE() << "the bad model file was accepted (expected '" << phrase << "')";
  } catch (const FileError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << "the message does not name the file: " << msg;
    EXPECT_NE(msg.find(phrase), std::string::npos) << "'" << phrase << "' not in: " << msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected cxr::FileError, got: " << e.what();
  }
}

TEST(ModelFileErrors, NotACxrModel) {
  TempDir dir;
  nn::SafetensorsFile f = saved_model(dir);
  auto plain = f;
  plain.metadata.clear();
  expect_model_error(dir, plain, "not a cxr model");
  auto no_arch = f;
  no_arch.metadata.erase("cxr.architecture");
  expect_model_error(dir, no_arch, "'cxr.architecture' is missing");
  auto other = f;
  other.metadata["format"] = "someone.else.v3";
  expect_model_error(dir, other, "unsupported model format 'someone.else.v3'");
  // A malformed safetensors layer is reported as such by load_model too.
  write_bytes(dir.file("junk.safetensors"), "not a safetensors file at all");
  EXPECT_THROW(nn::load_model(dir.file("junk.safetensors")), FileError);
}

TEST(ModelFileErrors, MalformedMetadata) {
  TempDir dir;
  const nn::SafetensorsFile f = saved_model(dir);
  auto edit = [&](const std::string& key, const std::string& value) {
    auto g = f;
    g.metadata[key] = value;
    return g;
  };
  expect_model_error(dir, edit("cxr.architecture", "{not json"), "malformed model metadata");
  expect_model_error(dir, edit("cxr.architecture", "{\"arch\": \"resnet1000\"}"), "unknown arch 'resnet1000'");
  expect_model_error(dir, edit("cxr.architecture", "[1, 2]"), "must be a JSON object");
  expect_model_error(dir, edit("cxr.class_names", "[\"a\"]"), "1 class names for 2 classes");
  expect_model_error(dir, edit("cxr.class_names", "[1, 2]"), "malformed model metadata");
  expect_model_error(dir, edit("cxr.class_names", "\"a,b\""), "malformed model metadata");
  expect_model_error(dir, edit("cxr.normalization", "{}"), "malformed model metadata");
  expect_model_error(dir, edit("cxr.normalization", "{\"mean\": [\"x\"], \"std\": [1]}"), "malformed model metadata");
  expect_model_error(dir, edit("cxr.training", "{oops"), "malformed model metadata");
}

TEST(ModelFileErrors, WeightsThatDoNotMatchTheArchitecture) {
  TempDir dir;
  const nn::SafetensorsFile f = saved_model(dir);
  // The spec says 8 channels, the weights were saved for 4. The stored spec carries
  // both "arch" (a label) and its layer list (which wins when rebuilding): edit the
  // layer list, and separately an arch-only spec.
  const json spec = json::parse(f.metadata.at("cxr.architecture"));
  auto wider = f;
  json arch_form = spec;
  arch_form.erase("layers");
  arch_form["channels"] = {8};
  wider.metadata["cxr.architecture"] = arch_form.dump();
  expect_model_error(dir, wider, "weights do not match the architecture");
  json layer_form = spec;
  layer_form["layers"][0]["out"] = 8;
  wider.metadata["cxr.architecture"] = layer_form.dump();
  expect_model_error(dir, wider, "weights do not match the architecture");
  // A different architecture altogether.
  wider.metadata["cxr.architecture"] = nn::arch_spec("mobilenet_v2", 1, 2, 32, 32).dump();
  expect_model_error(dir, wider, "weights do not match the architecture");
  auto missing = f;
  missing.tensors.erase("0.weight");
  expect_model_error(dir, missing, "'0.weight'");
  auto extra = f;
  extra.tensors["head.weight"] = Tensor::zeros({2});
  expect_model_error(dir, extra, "'head.weight'");
  auto reshaped = f;
  reshaped.tensors["1.running_mean"] = Tensor::zeros({5});
  expect_model_error(dir, reshaped, "'1.running_mean'");
}

// ---------------------------------------------------------------- atomic writes

TEST(AtomicWrite, CreatesAndReplacesWithoutLeavingTempFiles) {
  TempDir dir;
  const std::string path = dir.file("out.bin");
  nn::write_file_atomic(path, "first version");
  EXPECT_EQ(read_bytes(path), "first version");
  EXPECT_EQ(dir.entries(), (std::vector<std::string>{"out.bin"}));
  nn::write_file_atomic(path, std::string("second\0version", 14));
  EXPECT_EQ(read_bytes(path), std::string("second\0version", 14));
  nn::write_file_atomic(path, "");
  EXPECT_EQ(read_bytes(path), "");
  EXPECT_EQ(dir.entries(), (std::vector<std::string>{"out.bin"}));

  // Writing a large file, then a model over it.
  nn::write_file_atomic(path, std::string(3 << 20, 'x'));
  EXPECT_EQ(fs::file_size(path), 3u << 20);
  auto m = nn::build_model({{"arch", "simple_cnn"}, {"channels", {4}}, {"input_size", 8}}, 0);
  nn::save_model(path, *m);
  EXPECT_NO_THROW(nn::load_model(path));
  EXPECT_EQ(dir.entries(), (std::vector<std::string>{"out.bin"}));

  // A relative path (no directory part) writes into the working directory.
  const fs::path cwd = fs::current_path();
  fs::current_path(dir.path());
  nn::write_file_atomic("relative.bin", "rel");
  fs::current_path(cwd);
  EXPECT_EQ(read_bytes(dir.file("relative.bin")), "rel");
}

TEST(AtomicWrite, FailuresNameThePathAndLeaveNothingBehind) {
  TempDir dir;
  const std::string in_missing_dir = dir.file("no_dir/out.bin");
  try {
    nn::write_file_atomic(in_missing_dir, "data");
    ADD_FAILURE() << "writing into a missing directory succeeded";
  } catch (const FileError& e) {
    EXPECT_NE(std::string(e.what()).find(in_missing_dir), std::string::npos) << e.what();
  }
  // The target is a non-empty directory: the rename fails and the temp file is removed.
  fs::create_directory(dir.file("taken"));
  write_bytes(dir.file("taken/inside"), "x");
  try {
    nn::write_file_atomic(dir.file("taken"), "data");
    ADD_FAILURE() << "replacing a directory succeeded";
  } catch (const FileError& e) {
    EXPECT_NE(std::string(e.what()).find(dir.file("taken")), std::string::npos) << e.what();
  }
  EXPECT_EQ(dir.entries(), (std::vector<std::string>{"taken"}));
  EXPECT_EQ(read_bytes(dir.file("taken/inside")), "x");
  // save_model reports the same way.
  auto m = nn::build_model({{"arch", "simple_cnn"}, {"channels", {4}}, {"input_size", 8}}, 0);
  EXPECT_THROW(nn::save_model(in_missing_dir, *m), FileError);
}

}  // namespace
}  // namespace cxr
