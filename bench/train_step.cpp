// Times one training step (forward, cross-entropy, backward, Adam update) of a zoo
// model on random data, the same work bench/torch_train_step.py does in PyTorch.
//
//   bench_train_step --model simple_cnn --batch 64 --size 28 [--channels 1] [--classes 2]
//                    [--warmup 3] [--iters 20] [--threads N] [--stem auto|small|imagenet]
//                    [--device cpu|cuda[:i]] [--tf32 1|0] [--deterministic 0|1]
// Prints one JSON line: {"engine": "cxr", "model": ..., "median_ms": ..., ...}. On a CUDA
// device each step ends with a synchronize, so a step's time is its full GPU time.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "nn/autograd.h"
#include "nn/functional.h"
#include "nn/optim.h"
#include "nn/zoo.h"
#include "runtime/cuda.h"
#include "runtime/rng.h"
#include "runtime/thread_pool.h"

using namespace cxr;

int main(int argc, char** argv) {
  std::string model_name = "simple_cnn", stem = "auto", device_name = "cpu";
  int64_t batch = 64, size = 28, channels = 1, classes = 2, warmup = 3, iters = 20, threads = 0, tf32 = 1,
          deterministic = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--model") model_name = v;
    else if (k == "--batch") batch = std::stoll(v);
    else if (k == "--size") size = std::stoll(v);
    else if (k == "--channels") channels = std::stoll(v);
    else if (k == "--classes") classes = std::stoll(v);
    else if (k == "--warmup") warmup = std::stoll(v);
    else if (k == "--iters") iters = std::stoll(v);
    else if (k == "--threads") threads = std::stoll(v);
    else if (k == "--stem") stem = v;
    else if (k == "--device") device_name = v;
    else if (k == "--tf32") tf32 = std::stoll(v);
    else if (k == "--deterministic") deterministic = std::stoll(v);
    else {
      std::fprintf(stderr, "error: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  try {
    if (threads > 0) set_num_threads(static_cast<int>(threads));
    const Device device = Device::parse(device_name);
    if (device.is_cuda()) {
      cuda::set_allow_tf32(tf32 != 0, device.index);
      cuda::set_deterministic(deterministic != 0, device.index);
    }
    nlohmann::json spec = nn::arch_spec(model_name, channels, classes, size, size);
    if (model_name.rfind("resnet", 0) == 0) spec["stem"] = stem;
    auto model = nn::build_model(spec, 1);
    model->train();
    model->to(device);
    nn::Adam opt(nn::single_param_group(*model, 1e-3), {});
    Generator gen(7);
    Tensor x = rand_normal({batch, channels, size, size}, gen).to(device);
    std::vector<int64_t> labels(batch);
    for (int64_t i = 0; i < batch; ++i) labels[i] = i % classes;
    Tensor y = Tensor::from_vector(labels, {batch}).to(device);
    std::vector<double> ms;
    for (int64_t it = 0; it < warmup + iters; ++it) {
      const auto t0 = std::chrono::steady_clock::now();
      opt.zero_grad();
      Tensor loss = nn::cross_entropy(model->forward(x), y);
      nn::backward(loss);
      opt.step();
      if (device.is_cuda()) cuda::synchronize(device.index);
      const double dt = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (it >= warmup) ms.push_back(dt);
    }
    std::sort(ms.begin(), ms.end());
    std::printf(
        "{\"engine\": \"cxr\", \"device\": \"%s\", \"tf32\": %d, \"model\": \"%s\", \"batch\": %lld, \"size\": %lld, \"channels\": %lld, "
        "\"threads\": %d, \"iters\": %lld, \"median_ms\": %.3f, \"min_ms\": %.3f, \"images_per_s\": %.1f}\n",
        (device.is_cuda() ? cuda::device_description(device.index) : std::string("cpu")).c_str(),
        device.is_cuda() ? static_cast<int>(cuda::allow_tf32(device.index)) : 0, model_name.c_str(),
        static_cast<long long>(batch), static_cast<long long>(size),
        static_cast<long long>(channels), get_num_threads(), static_cast<long long>(iters), ms[ms.size() / 2], ms[0],
        1000.0 * static_cast<double>(batch) / ms[ms.size() / 2]);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
