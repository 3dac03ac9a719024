// Define a small network in C++ and train it with the engine's building blocks: a
// synthetic X-ray folder, the threaded loader, AdamW with a cosine schedule, then save a
// model file that `cxr infer`, `classify` and `explain` can use.
//   train_custom OUT_DIR [EPOCHS]
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "data/dataset.h"
#include "data/loader.h"
#include "data/synth.h"
#include "nn/autograd.h"
#include "nn/functional.h"
#include "nn/layers.h"
#include "nn/lr_schedule.h"
#include "nn/optim.h"
#include "nn/serialize.h"
#include "nn/zoo.h"

using namespace cxr;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: train_custom OUT_DIR [EPOCHS]\n");
    return 2;
  }
  const std::string out = argv[1];
  const int epochs = argc > 2 ? std::atoi(argv[2]) : 3;
  try {
    // 1. Data: 400 synthetic radiographs in OUT_DIR/data/{train,val,test}/{NORMAL,PNEUMONIA}.
    data::SynthOptions so;
    so.size = 48;
    so.count = 400;
    so.masks = false;
    so.overwrite = true;
    data::write_synthetic_dataset(out + "/data", so);
    const data::Dataset train = data::Dataset::image_folder(out + "/data/train");

    // 2. The network, as a layer list (any layer of nn/zoo.h; a model file records it).
    const nlohmann::json spec = {
        {"in_channels", 1}, {"num_classes", 2}, {"input_size", {32, 32}},
        {"layers",
         {{{"type", "conv"}, {"out", 16}, {"kernel", 3}, {"padding", 1}, {"bias", false}},
          {{"type", "batchnorm"}}, {{"type", "relu"}}, {{"type", "maxpool"}, {"kernel", 2}},
          {{"type", "conv"}, {"out", 32}, {"kernel", 3}, {"padding", 1}, {"bias", false}},
          {{"type", "batchnorm"}}, {{"type", "relu"}}, {{"type", "global_avgpool"}}, {{"type", "flatten"}},
          {{"type", "linear"}, {"out", "num_classes"}}}}};
    std::shared_ptr<nn::Model> model = nn::build_model(spec, /*seed=*/1);

    // 3. Loader, optimizer, schedule.
    data::LoaderOptions lo;
    lo.batch_size = 32;
    lo.drop_last = true;
    lo.pipeline.height = lo.pipeline.width = 32;
    lo.pipeline.augment.rotation = 5;
    data::Loader loader(train, lo);
    nn::Adam opt(*model, {.lr = 3e-3, .weight_decay = 1e-4, .decoupled_weight_decay = true});
    nn::CosineWarmupLR sched(opt, 0, epochs * loader.batches_per_epoch(), 0.05);

    // 4. Train.
    for (int e = 0; e < epochs; ++e) {
      model->train();
      loader.start_epoch(e);
      data::Batch b;
      double loss_sum = 0;
      int64_t n = 0;
      while (loader.next(b)) {
        opt.zero_grad();
        Tensor loss = nn::cross_entropy(model->forward(b.images), b.labels);
        nn::backward(loss);
        opt.step();
        sched.step();
        loss_sum += loss.item() * static_cast<double>(b.indices.size());
        n += static_cast<int64_t>(b.indices.size());
      }
      std::printf("epoch %d: loss %.4f\n", e + 1, loss_sum / static_cast<double>(n));
    }

    // 5. Save: the file carries the spec, class names and normalisation.
    nn::ModelInfo info;
    info.class_names = train.class_names;
    info.mean = {0.5};
    info.stddev = {0.25};
    nn::save_model(out + "/model.safetensors", *model, info);
    std::printf("wrote %s/model.safetensors\n", out.c_str());
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "train_custom: %s\n", e.what());
    return 1;
  }
}
