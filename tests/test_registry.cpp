// Tests of the model registry library (registry/registry.h): names, versions and
// references; the version lifecycle (register, promote, rollback, archive, delete);
// loading with integrity checks; tamper detection in artifacts and the audit log;
// recovery of an interrupted commit; bad input; A/B split statistics; encryption at rest;
// performance log rotation.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "expect_error.h"
#include "nn/autograd.h"
#include "registry/internal.h"
#include "registry/registry.h"
#include "temp_dir.h"
#include "test_registry_util.h"

namespace {

namespace fs = std::filesystem;
namespace reg = cxr::registry;
using cxr::expect_error;
using nlohmann::json;

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = tmp_.str("reg");
    m1_ = cxr_test::make_model_file(tmp_.path(), 1);
    m2_ = cxr_test::make_model_file(tmp_.path(), 2);
    m3_ = cxr_test::make_model_file(tmp_.path(), 3);
  }
  // Registry with chest 1.0.0, 1.0.1, 1.1.0 and 1.0.0 in production.
  reg::Registry populated() {
    reg::Registry r = reg::Registry::init(dir_);
    r.register_model("chest", m1_);
    r.register_model("chest", m2_);
    reg::RegisterOptions o;
    o.bump = reg::Bump::minor;
    r.register_model("chest", m3_, o);
    r.promote("chest", "1.0.0", reg::Stage::production);
    return r;
  }
  std::string audit_file() const { return dir_ + "/audit.log"; }

  cxr_test::TempDir tmp_{"cxr_test_registry_"};
  std::string dir_, m1_, m2_, m3_;
};

TEST(RegistryNames, ValidAndInvalid) {
  for (const char* ok : {"chest", "Chest-X_ray.v2", "a", "9lives"}) EXPECT_TRUE(reg::valid_name(ok)) << ok;
  const std::vector<std::string> bad = {
      "",     "../x",       "a/b", "..", "a..b", ".hidden", "-x", "a b", std::string(65, 'a'), std::string("ab\0cd", 5),
      "a\\b", "caf\xc3\xa9"};
  for (const auto& b : bad) {
    EXPECT_FALSE(reg::valid_name(b)) << b;
    expect_error([&] { reg::check_name(b); }, {"invalid model name"});
  }
  expect_error([] { reg::check_name(std::string("ab\0cd", 5)); }, {"NUL"});
  expect_error([] { reg::check_name("../x"); }, {"'../x'", "path separator"});
}

TEST(RegistryNames, SemVerParseOrderAndBump) {
  for (const char* s : {"0.0.0", "1.2.3", "10.20.30", "1.0.0-rc.1", "1.0.0-alpha-2.x"})
    EXPECT_EQ(reg::SemVer::parse(s).str(), s);
  for (const char* s : {"", "1", "1.2", "1.2.3.4", "v1.2.3", "01.2.3", "1.2.3-", "1.2.3-01", "1.2.3+build", "1..3",
                        "1.2.x", "1.2.3-a..b", "1234567890.0.0"})
    expect_error([&] { reg::SemVer::parse(s); }, {"invalid version"});
  // The precedence example of semver 2.0.
  const std::vector<std::string> order = {"1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta",
                                          "1.0.0-beta",  "1.0.0-beta.2",  "1.0.0-beta.11",
                                          "1.0.0-rc.1",  "1.0.0",         "1.0.1",
                                          "1.1.0",       "2.0.0"};
  for (size_t i = 0; i + 1 < order.size(); ++i) {
    EXPECT_LT(reg::compare(reg::SemVer::parse(order[i]), reg::SemVer::parse(order[i + 1])), 0) << order[i];
    EXPECT_GT(reg::compare(reg::SemVer::parse(order[i + 1]), reg::SemVer::parse(order[i])), 0) << order[i];
  }
  EXPECT_EQ(reg::bump(std::nullopt, reg::Bump::patch).str(), "1.0.0");
  EXPECT_EQ(reg::bump(reg::SemVer::parse("1.2.3"), reg::Bump::patch).str(), "1.2.4");
  EXPECT_EQ(reg::bump(reg::SemVer::parse("1.2.3"), reg::Bump::minor).str(), "1.3.0");
  EXPECT_EQ(reg::bump(reg::SemVer::parse("1.2.3"), reg::Bump::major).str(), "2.0.0");
  EXPECT_EQ(reg::bump(reg::SemVer::parse("1.2.3-rc.1"), reg::Bump::patch).str(), "1.2.3");
  expect_error([] { reg::parse_bump("huge"); }, {"patch, minor or major"});
}

TEST(RegistryNames, References) {
  EXPECT_EQ(reg::Ref::parse("chest").selector, "latest");
  EXPECT_EQ(reg::Ref::parse("chest@production").selector, "production");
  EXPECT_EQ(reg::Ref::parse("chest@1.2.0").selector, "1.2.0");
  expect_error([] { reg::Ref::parse("chest@newest"); }, {"invalid model reference", "chest@newest"});
  expect_error([] { reg::Ref::parse("../x@production"); }, {"invalid model name"});
}

TEST_F(RegistryTest, Lifecycle) {
  reg::Registry r = reg::Registry::init(dir_);
  reg::RegisterOptions o;
  o.metadata = {{"metrics", {{"val_auc", 0.97}}},
                {"dataset", {{"name", "synth"}, {"version", "1"}, {"manifest_sha256", std::string(64, 'a')}}},
                {"training_config", {{"epochs", 3}}},
                {"git_revision", "abc123"}};
  o.reason = "first model";
  const auto v1 = r.register_model("chest", m1_, o);
  EXPECT_EQ(v1.version, "1.0.0");
  EXPECT_EQ(v1.stage, reg::Stage::none);
  EXPECT_EQ(v1.sha256, reg::sha256_file(m1_));
  EXPECT_EQ(r.register_model("chest", m2_).version, "1.0.1");
  o = {};
  o.bump = reg::Bump::major;
  EXPECT_EQ(r.register_model("chest", m3_, o).version, "2.0.0");
  o.version = "2.1.0-rc.1";
  EXPECT_EQ(r.register_model("chest", m3_, o).version, "2.1.0-rc.1");
  expect_error([&] { r.register_model("chest", m3_, o); }, {"chest@2.1.0-rc.1 already exists"});
  EXPECT_EQ(r.register_model("other", m1_).version, "1.0.0");

  // Metadata recorded with the version.
  const auto shown = r.resolve("chest@1.0.0");
  EXPECT_EQ(shown.metadata["metrics"]["val_auc"], 0.97);
  EXPECT_EQ(shown.metadata["dataset"]["name"], "synth");
  EXPECT_EQ(shown.metadata["git_revision"], "abc123");
  EXPECT_EQ(shown.metadata["engine_version"], CXR_VERSION_STRING);
  EXPECT_EQ(shown.metadata["user"], reg::detail::os_user());
  EXPECT_EQ(shown.metadata["model"]["classes"], json({"NORMAL", "PNEUMONIA"}));
  EXPECT_FALSE(shown.metadata["created"].get<std::string>().empty());
  EXPECT_EQ(r.resolve("chest").version, "2.1.0-rc.1");  // latest by precedence

  // Promotion keeps the previous production version for rollback.
  r.promote("chest", "1.0.0", reg::Stage::production, "validated");
  r.promote("chest", "1.0.1", reg::Stage::staging);
  EXPECT_EQ(r.resolve("chest@staging").version, "1.0.1");
  r.promote("chest", "1.0.1", reg::Stage::production);
  auto m = r.list("chest").at(0);
  EXPECT_EQ(m.production, "1.0.1");
  EXPECT_FALSE(m.staging.has_value());
  EXPECT_EQ(m.history, std::vector<std::string>{"1.0.0"});
  EXPECT_EQ(m.versions.at(0).stage, reg::Stage::none);
  expect_error([&] { r.promote("chest", "1.0.1", reg::Stage::production); }, {"already the production"});
  expect_error([&] { r.promote("chest", "1.0.1", reg::Stage::staging); }, {"production version"});
  r.promote("chest", "2.0.0", reg::Stage::production);
  EXPECT_EQ(r.rollback("chest", "regression").version, "1.0.1");
  EXPECT_EQ(r.rollback("chest").version, "1.0.0");
  expect_error([&] { r.rollback("chest"); }, {"no previous production version"});
  EXPECT_EQ(r.resolve("chest@production").version, "1.0.0");

  // Archive and delete: never the production version.
  expect_error([&] { r.archive("chest", "1.0.0"); }, {"production version"});
  expect_error([&] { r.remove("chest", "1.0.0"); }, {"cannot delete chest@1.0.0", "production version"});
  r.archive("chest", "2.1.0-rc.1");
  EXPECT_EQ(r.resolve("chest").version, "2.0.0");  // archived versions are not "latest"
  r.remove("chest", "2.0.0", "bad model");
  EXPECT_FALSE(fs::exists(dir_ + "/models/chest/2.0.0"));
  expect_error([&] { r.resolve("chest@2.0.0"); }, {"chest@2.0.0 was deleted"});
  o = {};
  o.version = "2.0.0";
  expect_error([&] { r.register_model("chest", m1_, o); }, {"not reused"});
  EXPECT_EQ(r.register_model("chest", m1_).version, "2.1.0");  // bumps past deleted and archived versions

  // Every change is in the audit log, in order, with the reason where given.
  std::vector<std::string> actions;
  for (const auto& rec : r.audit_log()) actions.push_back(rec["action"]);
  const std::vector<std::string> expected = {"init",     "register", "register", "register", "register",
                                             "register", "promote",  "promote",  "promote",  "promote",
                                             "rollback", "rollback", "archive",  "delete",   "register"};
  EXPECT_EQ(actions, expected);
  EXPECT_EQ(r.audit_log().at(1)["reason"], "first model");
  const auto rep = r.verify();
  EXPECT_TRUE(rep.ok) << rep.to_json().dump(1);
  EXPECT_EQ(rep.audit_records, static_cast<int64_t>(expected.size()));
  EXPECT_EQ(rep.artifacts_checked, 5);
}

TEST_F(RegistryTest, LoadChecksAndAudits) {
  reg::Registry r = populated();
  const auto lv = r.load("chest@production");
  EXPECT_EQ(lv.record.version, "1.0.0");
  // The same weights as the file: the same outputs.
  const auto direct = cxr::nn::load_model(m1_);
  cxr::nn::NoGradGuard ng;
  const cxr::Tensor x = cxr::Tensor::full({2, 1, 32, 32}, 0.3f);
  EXPECT_EQ(lv.model.model->forward(x).to_vector(), direct.model->forward(x).to_vector());
  EXPECT_EQ(lv.model.info.class_names, (std::vector<std::string>{"NORMAL", "PNEUMONIA"}));
  const auto log = r.audit_log();
  EXPECT_EQ(log.back()["action"], "load");
  EXPECT_EQ(log.back()["version"], "1.0.0");
  EXPECT_EQ(log.back()["sha256"], reg::sha256_file(m1_));
  EXPECT_EQ(r.artifact_bytes(r.resolve("chest@1.0.1")), cxr_test::slurp(m2_));
  r.load("chest@1.1.0", {.audit = false});
  EXPECT_EQ(r.audit_log().size(), log.size());
}

TEST_F(RegistryTest, TamperedArtifactIsRefused) {
  reg::Registry r = populated();
  const std::string art = dir_ + "/models/chest/1.0.0/model.safetensors";
  std::string bytes = cxr_test::slurp(art);
  bytes[bytes.size() / 2] ^= 0x01;
  cxr_test::spit(art, bytes);
  expect_error([&] { r.load("chest@production"); }, {"integrity check failed", art.c_str()});
  const std::string other = dir_ + "/models/chest/1.0.1/model.safetensors";
  cxr_test::spit(other, cxr_test::slurp(other) + "x");
  expect_error([&] { r.promote("chest", "1.0.1", reg::Stage::production); }, {"integrity check failed", other.c_str()});
  EXPECT_EQ(r.resolve("chest@production").version, "1.0.0");  // nothing changed
  const auto log = r.audit_log();
  EXPECT_EQ(log.at(log.size() - 2)["action"], "integrity_failure");
  EXPECT_EQ(log.back()["action"], "integrity_failure");
  EXPECT_EQ(log.back()["during"], "promote");
  const auto rep = r.verify();
  EXPECT_FALSE(rep.ok);
  ASSERT_EQ(rep.errors.size(), 2u);
  EXPECT_NE(rep.errors[0].find(art), std::string::npos) << rep.errors[0];
  // Edited metadata is refused too.
  const std::string meta = dir_ + "/models/chest/1.1.0/meta.json";
  cxr_test::spit(meta, cxr_test::slurp(meta) + " ");
  expect_error([&] { r.resolve("chest@1.1.0"); }, {"integrity check failed", meta.c_str()});
}

// Each tamper of the audit log is reported at the first bad line.
TEST_F(RegistryTest, TamperedAuditLogNamesTheFirstBadLine) {
  populated();
  const auto lines = cxr_test::read_lines(audit_file());
  ASSERT_EQ(lines.size(), 5u);  // init, 3 registers, promote
  const std::string pristine = cxr_test::slurp(audit_file());
  auto first_bad = [&](const std::vector<std::string>& ls) {
    cxr_test::write_lines(audit_file(), ls);
    const auto rep = reg::Registry::open(dir_).verify();
    cxr_test::spit(audit_file(), pristine);
    EXPECT_FALSE(rep.ok);
    EXPECT_EQ(rep.errors.size(), 1u);
    if (!rep.errors.empty())
      EXPECT_NE(rep.errors[0].find("audit.log line " + std::to_string(rep.first_bad_audit_line)), std::string::npos);
    return rep.first_bad_audit_line;
  };
  {  // one byte of line 3 edited: 1.0.1 -> 1.0.2
    auto ls = lines;
    const size_t p = ls[2].find("\"1.0.1\"");
    ASSERT_NE(p, std::string::npos);
    ls[2][p + 5] = '2';
    EXPECT_EQ(first_bad(ls), 3);
  }
  {  // line 2 removed
    auto ls = lines;
    ls.erase(ls.begin() + 1);
    EXPECT_EQ(first_bad(ls), 2);
  }
  {  // lines 3 and 4 swapped
    auto ls = lines;
    std::swap(ls[2], ls[3]);
    EXPECT_EQ(first_bad(ls), 3);
  }
  {  // line 2 edited and its own hash recomputed: the next line no longer follows it
    auto ls = lines;
    auto rec = reg::detail::parse_record(ls[1]);
    ASSERT_TRUE(rec.has_value());
    json body = rec->body;
    body["user"] = "mallory";
    const std::string text = body.dump(-1, ' ', true);
    ls[1] = text.substr(0, text.size() - 1) + ",\"hash\":\"" + reg::sha256_hex(text) + "\"}";
    EXPECT_EQ(first_bad(ls), 3);
  }
  {  // garbage line
    auto ls = lines;
    ls[3] = "{not json";
    EXPECT_EQ(first_bad(ls), 4);
  }
  {  // the last two lines removed
    auto ls = lines;
    ls.resize(3);
    EXPECT_EQ(first_bad(ls), 4);
  }
  {  // a line appended
    auto ls = lines;
    ls.push_back(ls.back());
    EXPECT_EQ(first_bad(ls), 6);
  }
  EXPECT_TRUE(reg::Registry::open(dir_).verify().ok);
  // A log modified at its end refuses changes.
  auto ls = lines;
  ls.resize(3);
  cxr_test::write_lines(audit_file(), ls);
  expect_error([&] { reg::Registry::open(dir_).promote("chest", "1.0.1", reg::Stage::production); },
               {"refusing to change it"});
}

// A crash between the index commit and the audit append leaves the log one record short,
// possibly with a torn line: open completes it.
TEST_F(RegistryTest, InterruptedCommitIsCompletedOnOpen) {
  populated();
  auto lines = cxr_test::read_lines(audit_file());
  for (size_t cut : {size_t{0}, size_t{1}, lines.back().size() / 2, lines.back().size()}) {
    std::string s;
    for (size_t i = 0; i + 1 < lines.size(); ++i) s += lines[i] + "\n";
    s += lines.back().substr(0, cut);
    cxr_test::spit(audit_file(), s);
    {
      reg::VerifyReport before;
      reg::detail::verify_audit(dir_, reg::detail::audit_head(reg::detail::read_index(dir_)), before);
      EXPECT_TRUE(before.ok) << cut;
      EXPECT_EQ(before.warnings.size(), 1u) << cut;
    }
    const auto rep = reg::Registry::open(dir_).verify();
    EXPECT_TRUE(rep.ok) << cut << rep.to_json().dump(1);
    EXPECT_TRUE(rep.warnings.empty()) << cut;
    EXPECT_EQ(cxr_test::read_lines(audit_file()), lines);
  }
  // Leftovers of interrupted writes are warnings, then cleaned up by the next registration.
  auto r = reg::Registry::open(dir_);
  r.remove("chest", "1.0.1");
  fs::create_directories(dir_ + "/models/chest/1.0.1");  // a delete interrupted after its commit
  fs::create_directories(dir_ + "/models/chest/.staging-9.9.9-0000");
  fs::create_directories(dir_ + "/models/chest/9.9.9");  // a registration interrupted before its commit
  cxr_test::spit(dir_ + "/.index.json.tmp.1.2", "{");
  const auto rep = r.verify();
  EXPECT_TRUE(rep.ok);
  EXPECT_EQ(rep.warnings.size(), 4u) << rep.to_json().dump(1);
  reg::RegisterOptions o;
  o.version = "9.9.9";
  r.register_model("chest", m1_, o);
  const auto after = r.verify();
  EXPECT_TRUE(after.ok);
  EXPECT_TRUE(after.warnings.empty()) << after.to_json().dump(1);
}

TEST_F(RegistryTest, BadInput) {
  expect_error([&] { reg::Registry::open(dir_); }, {"no model registry at", dir_.c_str()});
  fs::create_directories(dir_);
  expect_error([&] { reg::Registry::open(dir_); }, {"is not a model registry", dir_.c_str()});
  cxr_test::spit(tmp_.file("plain"), "x");
  expect_error([&] { reg::Registry::open(tmp_.file("plain")); }, {"not a directory"});
  cxr_test::spit(dir_ + "/stuff", "x");
  expect_error([&] { reg::Registry::init(dir_); }, {"not empty"});
  fs::remove(dir_ + "/stuff");
  reg::Registry r = reg::Registry::init(dir_);
  expect_error([&] { reg::Registry::init(dir_); }, {"already a model registry"});
  cxr_test::spit(dir_ + "/index.json.bak", cxr_test::slurp(dir_ + "/index.json"));
  cxr_test::spit(dir_ + "/index.json", "{\"format\": \"something else\"}");
  expect_error([&] { reg::Registry::open(dir_).list(); }, {"index.json", "not a valid registry index"});
  fs::rename(dir_ + "/index.json.bak", dir_ + "/index.json");

  expect_error([&] { r.register_model("../x", m1_); }, {"invalid model name '../x'"});
  expect_error([&] { r.register_model(std::string("a\0b", 3), m1_); }, {"NUL"});
  expect_error([&] { r.register_model("chest", tmp_.file("missing.safetensors")); },
               {"missing.safetensors", "no such model file"});
  cxr_test::spit(tmp_.file("junk.safetensors"), "not a model");
  expect_error([&] { r.register_model("chest", tmp_.file("junk.safetensors")); }, {"junk.safetensors"});
  reg::RegisterOptions o;
  o.version = "1.0";
  expect_error([&] { r.register_model("chest", m1_, o); }, {"invalid version '1.0'"});
  o = {};
  o.metadata = json::array();
  expect_error([&] { r.register_model("chest", m1_, o); }, {"metadata must be a JSON object"});
  EXPECT_FALSE(fs::exists(dir_ + "/models/chest"));  // nothing written by refused registrations
  r.register_model("chest", m1_);
  expect_error([&] { r.promote("chest", "9.9.9", reg::Stage::production); }, {"unknown version chest@9.9.9", "1.0.0"});
  expect_error([&] { r.promote("chest", "1.0", reg::Stage::production); }, {"invalid version"});
  expect_error([&] { r.promote("lung", "1.0.0", reg::Stage::production); }, {"unknown model 'lung'"});
  expect_error([&] { r.promote("chest", "1.0.0", reg::Stage::archived); }, {"staging or production"});
  expect_error([&] { r.resolve("chest@production"); }, {"no production version"});
  expect_error([&] { r.resolve("..@1.0.0"); }, {"invalid model name"});
  expect_error([&] { r.rollback("chest"); }, {"no production version"});
  expect_error([&] { r.audit("Bad Action", json::object()); }, {"a-z"});
  expect_error([&] { r.audit("note", {{"seq", 1}}); }, {"'seq' is set by the registry"});
  expect_error([&] { r.record_perf("chest", "3.0.0", json::object()); }, {"unknown version"});
  EXPECT_TRUE(r.verify().ok);
}

TEST_F(RegistryTest, AbRouting) {
  reg::Registry r = populated();
  expect_error([&] { r.ab_route("chest", "req-1"); }, {"no A/B test"});
  expect_error([&] { r.ab_set("chest", {"1.0.0", "1.0.0", 0.5}); }, {"the same version"});
  expect_error([&] { r.ab_set("chest", {"1.0.0", "1.1.0", 1.5}); }, {"[0, 1]"});
  expect_error([&] { r.ab_set("chest", {"1.0.0", "7.0.0", 0.5}); }, {"unknown version"});
  r.ab_set("chest", {"1.0.0", "1.1.0", 0.1}, "try 1.1.0");
  expect_error([&] { r.remove("chest", "1.1.0"); }, {"A/B test"});
  expect_error([&] { r.archive("chest", "1.1.0"); }, {"A/B test"});
  // Deterministic, and the split is exact to within 1% over 100,000 ids.
  const reg::AbConfig ab = *r.ab_get("chest");
  for (double split : {0.1, 0.25, 0.5, 0.9}) {
    reg::AbConfig c = ab;
    c.split = split;
    int treated = 0;
    for (int i = 0; i < 100000; ++i) treated += reg::ab_choose(c, "chest", "request-" + std::to_string(i)) == "1.1.0";
    const double frac = treated / 100000.0;
    std::printf("split %.2f: %d of 100000 ids routed to the treatment\n", split, treated);
    EXPECT_NEAR(frac, split, 0.01) << split;
    EXPECT_NEAR(frac / split, 1.0, 0.01) << "split " << split << ": " << treated << " treated";  // relative, too
  }
  for (int i = 0; i < 100; ++i) {
    const std::string id = "id-" + std::to_string(i);
    EXPECT_EQ(r.ab_route("chest", id), r.ab_route("chest", id));
    EXPECT_EQ(r.ab_route("chest", id), reg::ab_choose(ab, "chest", id));
    EXPECT_EQ(reg::ab_choose({"1.0.0", "1.1.0", 0.0}, "chest", id), "1.0.0");
    EXPECT_EQ(reg::ab_choose({"1.0.0", "1.1.0", 1.0}, "chest", id), "1.1.0");
  }
  // The routing rule: first 8 bytes of SHA-256(name \n id) as a fraction of 2^64.
  const std::string h = reg::sha256_hex("chest\nrequest-7");
  EXPECT_NEAR(reg::ab_fraction("chest", "request-7"),
              std::stoull(h.substr(0, 16), nullptr, 16) / 18446744073709551616.0, 1e-15);
  r.ab_clear("chest");
  EXPECT_FALSE(r.ab_get("chest").has_value());
  expect_error([&] { r.ab_clear("chest"); }, {"no A/B test"});
  const auto log = r.audit_log();
  EXPECT_EQ(log.at(log.size() - 2)["action"], "ab_set");
  EXPECT_EQ(log.at(log.size() - 2)["split"], 0.1);
  EXPECT_EQ(log.back()["action"], "ab_clear");
}

TEST_F(RegistryTest, EncryptionAtRest) {
  const reg::Key key = reg::Key::generate(), other = reg::Key::generate();
  expect_error([&] { reg::Registry::init(dir_, {.encrypt = true}); }, {"needs a key"});
  reg::Registry r = reg::Registry::init(dir_, {.encrypt = true}, {.key = key});
  const auto v = r.register_model("chest", m1_);
  EXPECT_TRUE(v.encrypted);
  EXPECT_EQ(v.key_id, key.id());
  const std::string stored = cxr_test::slurp(v.artifact_path);
  EXPECT_EQ(stored.find("cxr.model.v1"), std::string::npos);  // no plain text at rest
  EXPECT_NE(v.stored_sha256, v.sha256);
  EXPECT_EQ(r.artifact_bytes(v), cxr_test::slurp(m1_));
  r.promote("chest", "1.0.0", reg::Stage::production);
  EXPECT_EQ(r.load("chest@production").record.version, "1.0.0");
  EXPECT_TRUE(r.verify().ok);
  EXPECT_TRUE(r.verify().warnings.empty());

  reg::Registry wrong = reg::Registry::open(dir_, {.key = other});
  const std::string kid = key.id(), oid = other.id();
  expect_error([&] { wrong.load("chest@production"); }, {"wrong key", kid.c_str(), oid.c_str()});
  expect_error([&] { wrong.register_model("chest", m2_); }, {"wrong key"});
  reg::Registry none = reg::Registry::open(dir_);
  expect_error([&] { none.load("chest@production"); }, {"encrypted at rest", "CXR_REGISTRY_KEY"});
  EXPECT_TRUE(none.verify().ok);  // hashes of the stored files need no key
  ::setenv("CXR_REGISTRY_KEY", key.hex().c_str(), 1);
  EXPECT_EQ(none.load("chest@production").record.version, "1.0.0");
  ::unsetenv("CXR_REGISTRY_KEY");

  // The tag authenticates the bytes and the version they belong to.
  std::string bad = stored;
  bad[bad.size() - 3] ^= 0x40;
  expect_error([&] { reg::detail::decrypt(key, reg::detail::artifact_aad("chest", "1.0.0"), bad, "x"); },
               {"authentication failed"});
  expect_error([&] { reg::detail::decrypt(key, reg::detail::artifact_aad("chest", "1.0.1"), stored, "x"); },
               {"authentication failed"});
  expect_error([&] { reg::detail::decrypt(other, reg::detail::artifact_aad("chest", "1.0.0"), stored, "x"); },
               {"authentication failed"});
}

TEST(RegistryKeys, Parsing) {
  cxr_test::TempDir t;
  const reg::Key k = reg::Key::generate();
  EXPECT_EQ(reg::Key::from_hex(k.hex(), "k").bytes(), k.bytes());
  cxr_test::spit(t.file("hex"), k.hex() + "\n");
  EXPECT_EQ(reg::Key::from_file(t.file("hex")).id(), k.id());
  cxr_test::spit(t.file("raw"), std::string(reinterpret_cast<const char*>(k.bytes().data()), 32));
  EXPECT_EQ(reg::Key::from_file(t.file("raw")).id(), k.id());
  expect_error([] { reg::Key::from_hex("abcd", "CXR_REGISTRY_KEY"); }, {"CXR_REGISTRY_KEY", "64 hex digits"});
  expect_error([] { reg::Key::from_hex(std::string(64, 'g'), "k"); }, {"non-hex"});
  cxr_test::spit(t.file("short"), "0123");
  expect_error([&] { reg::Key::from_file(t.file("short")); }, {"short", "32 raw bytes or 64 hex digits"});
  expect_error([&] { reg::Key::from_file(t.file("missing")); }, {"missing"});
  EXPECT_NE(reg::Key::generate().id(), k.id());
}

TEST_F(RegistryTest, PerformanceLogRotation) {
  reg::Registry r = reg::Registry::init(dir_, {.perf_max_bytes = 1024, .perf_keep = 2});
  r.register_model("chest", m1_);
  for (int i = 0; i < 100; ++i) r.record_perf("chest", "1.0.0", {{"images", i}, {"ms_per_image", 1.5}});
  const std::string base = dir_ + "/models/chest/1.0.0/perf.log";
  for (const char* suffix : {"", ".1", ".2"}) {
    ASSERT_TRUE(fs::exists(base + suffix)) << suffix;
    EXPECT_LE(fs::file_size(base + suffix), 1024u) << suffix;
  }
  EXPECT_FALSE(fs::exists(base + ".3"));
  const auto entries = r.perf_log("chest", "1.0.0");
  ASSERT_GT(entries.size(), 10u);
  EXPECT_LT(entries.size(), 100u);
  EXPECT_EQ(entries.back()["images"], 99);
  for (size_t i = 1; i < entries.size(); ++i) EXPECT_EQ(entries[i]["images"], entries[i - 1]["images"].get<int>() + 1);
  EXPECT_TRUE(entries.back().contains("time"));
  EXPECT_TRUE(r.verify().ok);  // performance logs do not affect integrity
}

TEST_F(RegistryTest, RegisterModelFileCreatesTheRegistry) {
  reg::RegisterOptions o;
  o.metadata = {{"metrics", {{"val_auc", 0.9}}}};
  const auto v = reg::register_model_file(dir_, "chest", m1_, o);
  EXPECT_EQ(v.version, "1.0.0");
  EXPECT_EQ(reg::register_model_file(dir_, "chest", m2_).version, "1.0.1");
  EXPECT_EQ(reg::Registry::open(dir_).resolve("chest@1.0.0").metadata["metrics"]["val_auc"], 0.9);
}

}  // namespace
