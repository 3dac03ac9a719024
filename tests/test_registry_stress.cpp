// Multi-process tests of the model registry: 16 forked processes doing 100 random
// operations each against one registry while a reader checks the stage invariants under
// the lock (no lost or duplicated version, one production version per name, every change
// in the audit log exactly once, verify passes); and 200 writers killed with SIGKILL at
// random moments, the registry opening and verifying after each kill.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "registry/internal.h"
#include "registry/registry.h"
#include "runtime/thread_pool.h"
#include "temp_dir.h"
#include "test_registry_util.h"

namespace {

namespace fs = std::filesystem;
namespace reg = cxr::registry;
using nlohmann::json;

const std::vector<std::string> kNames = {"chest", "lung", "bone"};

// Forks a child running `body`; its exit code is body's result (2 on an exception).
template <typename F>
pid_t spawn(F&& body) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    int code = 2;
    try {
      code = body();
    } catch (...) {
    }
    ::_exit(code);
  }
  return pid;
}

int wait_code(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string random_version(const reg::Registry& r, const std::string& name, std::mt19937& rng) {
  const auto models = r.list(name);
  if (models.empty() || models[0].versions.empty()) return "1.0.0";
  const auto& vs = models[0].versions;
  return vs[std::uniform_int_distribution<size_t>(0, vs.size() - 1)(rng)].version;
}

// Stage invariants of one snapshot: the production / staging entry matches the versions'
// stages, one version at most in each.
bool stages_consistent(const std::vector<reg::ModelSummary>& models, std::string& why) {
  for (const auto& m : models) {
    int prod = 0, staging = 0;
    for (const auto& v : m.versions) {
      prod += v.stage == reg::Stage::production;
      staging += v.stage == reg::Stage::staging;
      if (v.stage == reg::Stage::production && m.production != v.version)
        why = m.name + ": stray production " + v.version;
    }
    if (prod != (m.production ? 1 : 0) || staging != (m.staging ? 1 : 0))
      why = m.name + ": " + std::to_string(prod) + " production versions";
  }
  return why.empty();
}

class RegistryStress : public ::testing::Test {
 protected:
  void SetUp() override {
    // No worker threads in this process: forked children must not inherit a pool whose
    // threads do not exist in them.
    cxr::set_num_threads(1);
    dir_ = tmp_.str("reg");
    for (int i = 0; i < 3; ++i) models_.push_back(cxr_test::make_model_file(tmp_.path(), 10 + i));
    reg::Registry r = reg::Registry::init(dir_);
    for (const auto& n : kNames) r.register_model(n, models_[0]);
  }
  cxr_test::TempDir tmp_{"cxr_test_registry_stress_"};
  std::string dir_;
  std::vector<std::string> models_;
};

TEST_F(RegistryStress, SixteenProcessesHundredOpsEach) {
  constexpr int kProcs = 16, kOps = 100;
  const std::string stop = tmp_.file("stop");
  // The reader: snapshots under the shared lock, checked for stage invariants throughout.
  const pid_t reader = spawn([&] {
    reg::Registry r = reg::Registry::open(dir_);
    int snapshots = 0;
    while (!fs::exists(stop) || snapshots < 10) {
      std::string why;
      if (!stages_consistent(r.list(), why)) {
        std::ofstream(tmp_.file("reader_error")) << why;
        return 1;
      }
      ++snapshots;
    }
    std::ofstream(tmp_.file("reader_snapshots")) << snapshots;
    return 0;
  });
  std::vector<pid_t> pids;
  for (int p = 0; p < kProcs; ++p)
    pids.push_back(spawn([&, p] {
      std::mt19937 rng(1000 + p);
      reg::Registry r = reg::Registry::open(dir_);
      std::ofstream out(tmp_.file("ops" + std::to_string(p)));
      for (int i = 0; i < kOps; ++i) {
        const std::string reason = "p" + std::to_string(p) + "-op" + std::to_string(i);
        const std::string name = kNames[rng() % kNames.size()];
        const int kind = static_cast<int>(rng() % 5);
        json rec = {{"reason", reason}, {"kind", kind}, {"name", name}, {"ok", true}};
        try {
          if (kind == 0) {
            rec["version"] = r.register_model(name, models_[rng() % models_.size()], {.reason = reason}).version;
          } else if (kind == 1) {
            r.promote(name, random_version(r, name, rng), rng() % 3 ? reg::Stage::production : reg::Stage::staging,
                      reason);
          } else if (kind == 2) {
            r.rollback(name, reason);
          } else if (kind == 3) {
            const std::string a = random_version(r, name, rng), b = random_version(r, name, rng);
            r.ab_set(name, {a, b, (rng() % 101) / 100.0}, reason);
          } else {
            const std::string id = "req-" + std::to_string(rng());
            rec["routed"] = r.ab_route(name, id);
            reg::SemVer::parse(rec["routed"].get<std::string>());
          }
        } catch (const cxr::Error& e) {
          rec["ok"] = false;  // legitimately refused (no history, same version, no A/B test, ...)
          rec["error"] = e.what();
        }
        out << rec.dump() << "\n";
      }
      return out.good() ? 0 : 3;
    }));
  for (pid_t pid : pids) EXPECT_EQ(wait_code(pid), 0);
  std::ofstream(stop) << "1";
  EXPECT_EQ(wait_code(reader), 0) << cxr_test::slurp(tmp_.file("reader_error"));

  // What the processes did.
  std::map<std::string, bool> reasons;  // reason -> the operation changed the registry
  std::set<std::pair<std::string, std::string>> registered;
  int mutations = 0, failures = 0, routes = 0;
  for (int p = 0; p < kProcs; ++p) {
    const auto lines = cxr_test::read_lines(tmp_.file("ops" + std::to_string(p)));
    ASSERT_EQ(lines.size(), static_cast<size_t>(kOps));
    for (const auto& l : lines) {
      const json rec = json::parse(l);
      const bool ok = rec["ok"];
      const int kind = rec["kind"];
      if (kind == 4) {
        routes += ok;
        continue;  // routing reads; it is not an audited change
      }
      reasons[rec["reason"]] = ok;
      mutations += ok;
      failures += !ok;
      if (kind == 0 && ok) {
        const auto key = std::make_pair(rec["name"].get<std::string>(), rec["version"].get<std::string>());
        EXPECT_FALSE(registered.count(key)) << "version registered twice: " << key.first << "@" << key.second;
        registered.insert(key);
      }
    }
  }
  EXPECT_GT(mutations, 300);
  EXPECT_GT(routes, 10);
  EXPECT_GT(registered.size(), 50u);

  // No lost or duplicated version.
  reg::Registry r = reg::Registry::open(dir_);
  std::set<std::pair<std::string, std::string>> in_index;
  for (const auto& m : r.list())
    for (const auto& v : m.versions) in_index.insert({m.name, v.version});
  for (const auto& n : kNames) registered.insert({n, "1.0.0"});
  EXPECT_EQ(in_index, registered);
  std::string why;
  EXPECT_TRUE(stages_consistent(r.list(), why)) << why;
  for (const auto& m : r.list()) EXPECT_TRUE(m.production.has_value()) << m.name;  // each was promoted many times

  // Every change in the audit log exactly once; refused operations not at all.
  std::map<std::string, int> seen;
  const auto log = r.audit_log();
  for (const auto& rec : log)
    if (rec.contains("reason")) ++seen[rec["reason"].get<std::string>()];
  for (const auto& [reason, ok] : reasons) EXPECT_EQ(seen[reason], ok ? 1 : 0) << reason;
  EXPECT_EQ(log.size(), 1 + kNames.size() + static_cast<size_t>(mutations));  // init + setup + changes

  const auto rep = r.verify();
  EXPECT_TRUE(rep.ok) << rep.to_json().dump(1);
  EXPECT_TRUE(rep.warnings.empty()) << rep.to_json().dump(1);
  std::printf("%d changes, %d refused, %d routes; %zu versions; reader took %s snapshots\n", mutations, failures,
              routes, in_index.size(), cxr_test::slurp(tmp_.file("reader_snapshots")).c_str());
}

TEST_F(RegistryStress, SigkillDuringWritesTwoHundredTimes) {
  std::mt19937 rng(7);
  int verified = 0, max_versions = 0, leftovers = 0, pending = 0;
  for (int round = 0; round < 200; ++round) {
    int ready[2];
    ASSERT_EQ(::pipe(ready), 0);
    const pid_t child = spawn([&, round] {
      std::mt19937 crng(round);
      reg::Registry r = reg::Registry::open(dir_);
      const char go = 1;
      if (::write(ready[1], &go, 1) != 1) return 4;
      for (;;) {
        const std::string name = kNames[crng() % kNames.size()];
        try {
          switch (crng() % 8) {
            case 0:
            case 1:
              r.register_model(name, models_[crng() % models_.size()]);
              break;
            case 2:
              r.promote(name, random_version(r, name, crng), reg::Stage::production);
              break;
            case 3:
              r.promote(name, random_version(r, name, crng), reg::Stage::staging);
              break;
            case 4:
              r.rollback(name);
              break;
            case 5:
              r.remove(name, random_version(r, name, crng));
              break;
            case 6:
              r.ab_set(name, {random_version(r, name, crng), random_version(r, name, crng), 0.5});
              break;
            default:
              r.record_perf(name, random_version(r, name, crng), {{"images", 1}});
              break;
          }
        } catch (const cxr::Error&) {
        }
      }
      return 0;
    });
    // The delay counts from the start of the child's write loop.
    char go = 0;
    ASSERT_EQ(::read(ready[0], &go, 1), 1);
    ::close(ready[0]);
    ::close(ready[1]);
    std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(0, 20000)(rng)));
    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "round " << round;
    // Was the kill between an index commit and its audit append? (open completes it)
    pending += reg::detail::check_tail(dir_, reg::detail::audit_head(reg::detail::read_index(dir_))) ==
               reg::detail::TailState::pending;
    // The registry opens and verifies after every kill.
    reg::Registry r = reg::Registry::open(dir_);
    const auto rep = r.verify();
    ASSERT_TRUE(rep.ok) << "round " << round << ": " << rep.to_json().dump(1);
    leftovers += !rep.warnings.empty();
    std::string why;
    ASSERT_TRUE(stages_consistent(r.list(), why)) << "round " << round << ": " << why;
    int n = 0;
    for (const auto& m : r.list()) n += static_cast<int>(m.versions.size());
    max_versions = std::max(max_versions, n);
    ++verified;
  }
  EXPECT_EQ(verified, 200);
  const auto rep = reg::Registry::open(dir_).verify();
  // The writers committed changes between kills (how many depends on the disk's fsync
  // latency: a slow disk means fewer changes per 20 ms).
  EXPECT_GT(rep.audit_records, 1 + static_cast<int64_t>(kNames.size()));
  std::printf(
      "200 kills: %lld audit records, up to %d versions; %d kills left an audit record pending, %d left "
      "files of an interrupted write (warnings)\n",
      static_cast<long long>(rep.audit_records), max_versions, pending, leftovers);
}

}  // namespace
