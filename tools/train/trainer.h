// Supervised training of an image classifier, as `cxr train` runs it: data (ImageFolder
// or CSV lists), a model from the zoo or a JSON spec, an optimizer with a learning-rate
// schedule, per-epoch validation, best/last checkpoints, early stopping, and a run
// directory with everything a reviewer needs:
//
//   RUN/config.json             the resolved settings (tools/train/config.h)
//   RUN/model.safetensors       the best model (by --monitor), loadable by `cxr infer`
//   RUN/checkpoints/last.ckpt   state after the latest epoch (or every N steps)
//   RUN/checkpoints/best.ckpt   state at the best epoch
//   RUN/history.csv             one row per epoch: losses, accuracies, AUC, lr, time
//   RUN/metrics.json            the best model's evaluation on val (and test) data
//   RUN/report.html             curves, ROC, confusion matrix: one self-contained file
//
// Every file is replaced atomically, so a crash leaves the previous or the new version.
//
// Resume: a checkpoint holds the model, optimizer and schedule state, the position in the
// data (epoch and batch; the order of an epoch is a function of the seed), the running
// sums of the epoch in progress, the dropout generators, the best value, the early-stopping
// count and the history. Training resumed from it continues exactly: on the same machine
// and thread count, 2 epochs + resume 2 gives bit-identical weights to 4 straight.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace cxr::train {

enum class ProgressMode { automatic, bar, lines, none };

struct TrainOptions {
  ProgressMode progress = ProgressMode::automatic;  // automatic: a bar on a terminal, else lines
  // Resume from this checkpoint file, or a run directory (its checkpoints/last.ckpt). The
  // settings come from the checkpoint; `overrides` may change only epochs, patience,
  // device, threads, workers and checkpoint_every.
  std::string resume;
  nlohmann::json overrides = nlohmann::json::object();
  // Stop (with a checkpoint, as on SIGINT) after this many optimizer steps in this process;
  // 0: no limit. For tests and time-boxed jobs.
  int64_t max_steps = 0;
};

struct TrainResult {
  std::string run_dir, model_path, report_path;
  int64_t epochs_completed = 0, best_epoch = 0;  // 1-based; best_epoch 0 if none
  std::string monitor;
  double best_value = 0;
  bool stopped_early = false;
  bool interrupted = false;  // SIGINT/SIGTERM or max_steps: checkpoint written, resumable
};

// `config` is a resolved config (defaults merged with overrides; validated here).
// Throws cxr::Error for bad data, specs or files; nothing written before is lost.
TrainResult train(const nlohmann::json& config, const TrainOptions& options = {});

}  // namespace cxr::train
