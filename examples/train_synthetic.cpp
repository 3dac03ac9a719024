// Trains simple_cnn on generated 1x28x28 images of four shape classes (horizontal bar,
// vertical bar, hollow square, diagonal cross at random positions and contrasts, with
// Gaussian noise), then saves the model, loads it back and checks the reloaded model
// gives the same predictions.
//
//   train_synthetic [--epochs N] [--samples N] [--batch N] [--threads N] [--seed N] [--out model.safetensors]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "nn/autograd.h"
#include "nn/functional.h"
#include "nn/lr_schedule.h"
#include "nn/optim.h"
#include "nn/serialize.h"
#include "nn/zoo.h"
#include "runtime/rng.h"
#include "runtime/thread_pool.h"

using namespace cxr;

namespace {

constexpr int64_t kSize = 28;
constexpr int64_t kClasses = 4;
const char* kClassNames[kClasses] = {"hbar", "vbar", "square", "cross"};

// One image of class `label` into px (kSize*kSize), values roughly in [0, 1].
void draw(int64_t label, Generator& gen, float* px) {
  const float bg = static_cast<float>(0.1 + 0.2 * gen.next_double());
  const float fg = static_cast<float>(0.6 + 0.4 * gen.next_double());
  for (int64_t i = 0; i < kSize * kSize; ++i) px[i] = bg;
  const int64_t len = 10 + static_cast<int64_t>(gen.next_below(8));
  const int64_t r0 = 2 + static_cast<int64_t>(gen.next_below(kSize - len - 4));
  const int64_t c0 = 2 + static_cast<int64_t>(gen.next_below(kSize - len - 4));
  auto set = [&](int64_t r, int64_t c) {
    if (r >= 0 && r < kSize && c >= 0 && c < kSize) px[r * kSize + c] = fg;
  };
  for (int64_t k = 0; k < len; ++k) {
    switch (label) {
      case 0: set(r0 + len / 2, c0 + k); set(r0 + len / 2 + 1, c0 + k); break;
      case 1: set(r0 + k, c0 + len / 2); set(r0 + k, c0 + len / 2 + 1); break;
      case 2: set(r0, c0 + k); set(r0 + len - 1, c0 + k); set(r0 + k, c0); set(r0 + k, c0 + len - 1); break;
      default: set(r0 + k, c0 + k); set(r0 + k, c0 + len - 1 - k); break;
    }
  }
  Tensor noise = rand_normal({kSize * kSize}, gen, 0.0, 0.08);
  for (int64_t i = 0; i < kSize * kSize; ++i) px[i] = (px[i] + noise.data<float>()[i] - 0.5f) / 0.5f;
}

struct Args {
  int64_t epochs = 3, samples = 4096, batch = 64, threads = 0;
  uint64_t seed = 1;
  std::string out = "simple_cnn_synthetic.safetensors";
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "error: %s needs a value\n", k.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (k == "--epochs") a.epochs = std::stoll(val());
    else if (k == "--samples") a.samples = std::stoll(val());
    else if (k == "--batch") a.batch = std::stoll(val());
    else if (k == "--threads") a.threads = std::stoll(val());
    else if (k == "--seed") a.seed = std::stoull(val());
    else if (k == "--out") a.out = val();
    else if (k == "--help" || k == "-h") {
      std::printf("usage: train_synthetic [--epochs N] [--samples N] [--batch N] [--threads N] [--seed N] [--out FILE]\n");
      std::exit(0);
    } else {
      std::fprintf(stderr, "error: unknown option '%s' (see --help)\n", k.c_str());
      std::exit(2);
    }
  }
  if (a.epochs < 1 || a.samples < a.batch || a.batch < 2) {
    std::fprintf(stderr, "error: need epochs >= 1, batch >= 2 and samples >= batch\n");
    std::exit(2);
  }
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse(argc, argv);
  try {
    if (args.threads > 0) set_num_threads(static_cast<int>(args.threads));
    const auto t0 = std::chrono::steady_clock::now();

    // Data set: samples images, labels cycling through the classes.
    Generator data_gen(args.seed * 7919 + 17);
    Tensor images = Tensor::empty({args.samples, 1, kSize, kSize});
    std::vector<int64_t> labels(args.samples);
    for (int64_t i = 0; i < args.samples; ++i) {
      labels[i] = i % kClasses;
      draw(labels[i], data_gen, images.data<float>() + i * kSize * kSize);
    }

    auto model = nn::build_model(nn::arch_spec("simple_cnn", 1, kClasses, kSize, kSize), args.seed);
    nn::Adam opt(*model, {.lr = 3e-3, .weight_decay = 1e-4});
    const int64_t steps_per_epoch = args.samples / args.batch;
    nn::CosineWarmupLR sched(opt, steps_per_epoch / 4, args.epochs * steps_per_epoch, 0.05, 0.1);
    std::printf("simple_cnn: %lld parameters, %lld images of %lldx%lld, %lld classes, %d threads\n",
                static_cast<long long>(model->num_parameters()), static_cast<long long>(args.samples),
                static_cast<long long>(kSize), static_cast<long long>(kSize), static_cast<long long>(kClasses),
                get_num_threads());

    Generator order_gen(args.seed);
    std::vector<int64_t> order(args.samples);
    Tensor xb = Tensor::empty({args.batch, 1, kSize, kSize});
    Tensor yb = Tensor::empty({args.batch}, DType::i64);
    const int64_t plane = kSize * kSize;
    double acc = 0;
    for (int64_t epoch = 1; epoch <= args.epochs; ++epoch) {
      for (int64_t i = 0; i < args.samples; ++i) order[i] = i;
      for (int64_t i = args.samples - 1; i > 0; --i)
        std::swap(order[i], order[order_gen.next_below(static_cast<uint64_t>(i + 1))]);
      model->train();
      double loss_sum = 0;
      int64_t correct = 0, seen = 0;
      for (int64_t s = 0; s < steps_per_epoch; ++s) {
        for (int64_t b = 0; b < args.batch; ++b) {
          const int64_t idx = order[s * args.batch + b];
          std::memcpy(xb.data<float>() + b * plane, images.data<float>() + idx * plane, sizeof(float) * plane);
          yb.data<int64_t>()[b] = labels[idx];
        }
        opt.zero_grad();
        Tensor logits = model->forward(xb);
        Tensor loss = nn::cross_entropy(logits, yb);
        nn::backward(loss);
        opt.step();
        sched.step();
        loss_sum += loss.item();
        const float* lp = logits.data<float>();
        for (int64_t b = 0; b < args.batch; ++b) {
          int64_t best = 0;
          for (int64_t c = 1; c < kClasses; ++c)
            if (lp[b * kClasses + c] > lp[b * kClasses + best]) best = c;
          correct += best == yb.data<int64_t>()[b];
        }
        seen += args.batch;
      }
      acc = static_cast<double>(correct) / static_cast<double>(seen);
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("epoch %lld/%lld  loss %.4f  train accuracy %.2f%%  lr %.2e  (%.1f s)\n",
                  static_cast<long long>(epoch), static_cast<long long>(args.epochs), loss_sum / steps_per_epoch,
                  100.0 * acc, opt.lr(), secs);
      std::fflush(stdout);
    }

    // Save, reload, and check the reloaded model predicts identically (eval mode).
    nn::ModelInfo info;
    info.class_names.assign(kClassNames, kClassNames + kClasses);
    info.training = {{"epochs", args.epochs}, {"train_accuracy", acc}, {"data", "generated shapes"}};
    model->eval();
    nn::save_model(args.out, *model, info);
    nn::LoadedModel loaded = nn::load_model(args.out);
    nn::NoGradGuard ng;
    Tensor probe = images.view({args.samples, 1, kSize, kSize});
    Tensor first = Tensor::empty({args.batch, 1, kSize, kSize});
    std::memcpy(first.data<float>(), probe.data<float>(), first.nbytes());
    const std::vector<double> a = model->forward(first).to_vector(), b = loaded.model->forward(first).to_vector();
    if (a != b) {
      std::fprintf(stderr, "error: the reloaded model's outputs differ from the trained model's\n");
      return 1;
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("saved %s (reloaded: identical outputs)\nfinal train accuracy %.2f%% in %.1f s\n", args.out.c_str(),
                100.0 * acc, secs);
    return acc >= 0.95 ? 0 : 3;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
