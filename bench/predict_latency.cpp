// Per-image latency of cxr::Model::predict (the application API, cxr/cxr.hpp) on one
// decoded image: preprocessing (resize, normalise) + eval-mode forward without autograd +
// softmax. Prints one JSON line (median and p90 milliseconds) like bench/torch_predict.py.
//   bench_predict --model simple_cnn|resnet18 [--size 224] [--iters 50] [--warmup 5] [--threads N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cxr/cxr.hpp"
#include "nn/zoo.h"
#include "runtime/rng.h"
#include "runtime/thread_pool.h"

int main(int argc, char** argv) {
  std::string model = "simple_cnn";
  int size = 224, iters = 50, warmup = 5, threads = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--model") model = v;
    else if (k == "--size") size = std::stoi(v);
    else if (k == "--iters") iters = std::stoi(v);
    else if (k == "--warmup") warmup = std::stoi(v);
    else if (k == "--threads") threads = std::stoi(v);
    else {
      std::fprintf(stderr, "usage: bench_predict --model simple_cnn|resnet18 [--size 224] [--iters 50] [--warmup 5] [--threads N]\n");
      return 2;
    }
  }
  if (threads > 0) cxr::set_num_threads(threads);
  const cxr::Model m = cxr::Model::from(cxr::nn::build_model(cxr::nn::arch_spec(model, 1, 2, size, size), 1),
                                        {"NORMAL", "PNEUMONIA"});
  cxr::data::Image img(1, size, size);
  cxr::Generator gen(3);
  for (float& v : img.data) v = static_cast<float>(gen.next_double());
  std::vector<double> ms;
  double sink = 0;
  for (int i = 0; i < warmup + iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    sink += m.predict(img).probabilities[0];
    const double dt = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (i >= warmup) ms.push_back(dt);
  }
  std::sort(ms.begin(), ms.end());
  std::printf("{\"engine\": \"cxr %s\", \"model\": \"%s\", \"size\": %d, \"threads\": %d, \"median_ms\": %.3f, "
              "\"p90_ms\": %.3f, \"min_ms\": %.3f, \"check\": %.3f}\n",
              CXR_VERSION_STRING, model.c_str(), size, cxr::get_num_threads(), ms[ms.size() / 2],
              ms[static_cast<size_t>(0.9 * (ms.size() - 1))], ms.front(), sink > 0 ? 1.0 : 0.0);
  return 0;
}
