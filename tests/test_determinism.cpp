// Training is reproducible: the same seed and thread count give bit-identical weights
// (dropout masks, BatchNorm statistics, parallel reductions and optimizer updates
// included). Different thread counts are not promised to agree; that comparison is only
// reported.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "nn/autograd.h"
#include "nn/functional.h"
#include "nn/optim.h"
#include "nn/zoo.h"
#include "runtime/rng.h"
#include "runtime/thread_pool.h"

namespace cxr {
namespace {

struct RunResult {
  std::vector<std::string> names;
  std::vector<std::vector<char>> bytes;  // every state-dict entry after training
  std::vector<double> losses;
};

// Ten AdamW steps of a simple CNN with dropout on fixed random data, using `threads`
// CPU threads. The model seed picks the initial weights and the dropout stream.
RunResult train(uint64_t seed, int threads) {
  set_num_threads(threads);
  auto model = nn::build_model({{"arch", "simple_cnn"},
                                {"in_channels", 1},
                                {"num_classes", 3},
                                {"input_size", 32},
                                {"channels", {8, 16}},
                                {"hidden", 32},
                                {"dropout", 0.3}},
                               seed);
  model->train();
  nn::AdamOptions o;
  o.lr = 1e-2;
  auto opt = nn::make_adamw(nn::make_param_groups(*model, o.lr, 1e-2), o);
  // Large enough batches that the kernels split work across threads.
  Generator data(2024);
  const Tensor x = rand_normal({32, 1, 32, 32}, data);
  std::vector<int64_t> labels;
  for (int i = 0; i < 32; ++i) labels.push_back(static_cast<int64_t>(data.next_below(3)));
  const Tensor y = Tensor::from_vector(labels, {32});

  RunResult r;
  for (int step = 0; step < 10; ++step) {
    const Tensor loss = nn::cross_entropy((*model)(x), y);
    r.losses.push_back(loss.item());
    nn::backward(loss);
    nn::clip_grad_norm(model->parameters(), 5.0);
    opt->step();
    opt->zero_grad();
  }
  for (const auto& [name, t] : model->state_dict()) {
    r.names.push_back(name);
    const char* p = static_cast<const char*>(t.raw_data());
    r.bytes.emplace_back(p, p + t.nbytes());
  }
  set_num_threads(0);
  return r;
}

// Names of the entries whose bytes differ (empty: bit-identical).
std::vector<std::string> differing(const RunResult& a, const RunResult& b) {
  std::vector<std::string> out;
  EXPECT_EQ(a.names, b.names);
  for (size_t i = 0; i < a.bytes.size() && i < b.bytes.size(); ++i)
    if (a.bytes[i] != b.bytes[i]) out.push_back(a.names[i]);
  return out;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

TEST(Determinism, SameSeedSameThreadCountIsBitIdentical) {
  for (int threads : {2, 1, 3}) {
    SCOPED_TRACE("threads " + std::to_string(threads));
    const RunResult a = train(7, threads), b = train(7, threads);
    EXPECT_EQ(a.losses, b.losses);
    const auto diff = differing(a, b);
    EXPECT_TRUE(diff.empty()) << "entries differ: " << join(diff);
    // The run really trained: the loss moved.
    EXPECT_NE(a.losses.front(), a.losses.back());
  }
}

TEST(Determinism, DifferentSeedsGiveDifferentWeights) {
  const RunResult a = train(7, 2), b = train(8, 2);
  const auto diff = differing(a, b);
  // Every trainable tensor and running statistic depends on the seed.
  for (const auto& n : a.names) {
    if (n.find("num_batches_tracked") != std::string::npos) continue;
    EXPECT_NE(std::find(diff.begin(), diff.end(), n), diff.end()) << n << " is the same for two seeds";
  }
}

TEST(Determinism, AcrossThreadCountsIsReportedNotRequired) {
  const RunResult one = train(7, 1), two = train(7, 2), three = train(7, 3);
  auto report = [&](const char* what, const RunResult& a, const RunResult& b) {
    const auto diff = differing(a, b);
    double max_rel = 0;
    for (size_t i = 0; i < a.bytes.size(); ++i) {
      if (a.bytes[i] == b.bytes[i] || a.names[i].find("num_batches_tracked") != std::string::npos) continue;
      const size_t n = a.bytes[i].size() / sizeof(float);
      const auto* x = reinterpret_cast<const float*>(a.bytes[i].data());
      const auto* y = reinterpret_cast<const float*>(b.bytes[i].data());
      for (size_t k = 0; k < n; ++k)
        max_rel = std::max(max_rel, std::abs(double(x[k]) - y[k]) / (std::abs(double(x[k])) + 1e-6));
    }
    const std::string summary = diff.empty()
                                    ? "bit-identical"
                                    : std::to_string(diff.size()) + " of " + std::to_string(a.names.size()) +
                                          " entries differ, max relative difference " + std::to_string(max_rel);
    std::cout << "[ info     ] " << what << ": " << summary << std::endl;
    RecordProperty(what, summary);
  };
  report("threads_1_vs_2", one, two);
  report("threads_2_vs_3", two, three);
}

}  // namespace
}  // namespace cxr
