#include "nn/summary.h"

#include <algorithm>
#include <cstdio>
#include <exception>
#include <functional>
#include <initializer_list>
#include <sstream>

#include "nn/autograd.h"
#include "nn/blocks.h"
#include "nn/functional.h"
#include "nn/layers.h"
#include "runtime/error.h"

namespace cxr::nn {

namespace {

// A failure already located at a layer: passed through the enclosing rows unchanged.
class LocatedError : public ValueError {
 public:
  using ValueError::ValueError;
};

std::string join_path(const std::string& parent, const std::string& child) {
  return parent.empty() ? child : parent + "." + child;
}

std::string where(const std::string& path, const Module& m) {
  return (path.empty() ? std::string("model") : path) + " (" + m.type_name() + ")";
}

int64_t own_params(const Module& m) {
  int64_t n = 0;
  for (const auto& [name, t] : m.named_parameters())
    if (name.find('.') == std::string::npos) n += t.numel();
  return n;
}

Module* direct_child(const Module& m, const std::string& name) {
  for (const auto& [n, c] : m.children())
    if (n == name) return c.get();
  return nullptr;
}

int64_t bytes_of(const Tensor& t) { return static_cast<int64_t>(t.nbytes()); }

// Walks the module tree alongside one forward pass, one row per module.
class Tracer {
 public:
  std::vector<LayerSummary> rows;
  int64_t kept_bytes = 0;  // the model-level activation estimate
  std::vector<std::string> notes;

  Tensor visit(Module& m, const std::string& path, const Tensor& x, int depth) {
    const size_t r = rows.size();
    LayerSummary row;
    row.name = path;
    row.type = m.type_name();
    row.describe = m.describe();
    row.depth = depth;
    row.leaf = m.children().empty();
    row.params = own_params(m);
    rows.push_back(std::move(row));

    int64_t flops = 0;
    Tensor y;
    if (dynamic_cast<Sequential*>(&m) != nullptr) {
      y = x;
      for (const auto& [name, child] : m.children()) y = visit(*child, join_path(path, name), y, depth + 1);
    } else if (m.children().empty()) {
      y = call(m, path, x);
      flops = leaf_flops(m, path, x, y);
      const bool view = y.same_storage(x) && dynamic_cast<Dropout*>(&m) == nullptr;  // Dropout allocates in training
      if (!view) kept_bytes += bytes_of(y);
    } else if (dynamic_cast<BasicBlock*>(&m) != nullptr && has_children(m, {"conv1", "bn1", "conv2", "bn2"})) {
      y = residual_block(m, path, x, depth, 2, flops);
    } else if (dynamic_cast<Bottleneck*>(&m) != nullptr &&
               has_children(m, {"conv1", "bn1", "conv2", "bn2", "conv3", "bn3"})) {
      y = residual_block(m, path, x, depth, 3, flops);
    } else if (dynamic_cast<InvertedResidual*>(&m) != nullptr && has_children(m, {"conv"})) {
      y = inverted_residual(m, path, x, depth, flops);
    } else {
      // A composite this summary does not know the wiring of: one opaque row.
      y = call(m, path, x);
      rows[r].leaf = true;
      rows[r].params = m.num_parameters();
      kept_bytes += bytes_of(y);
      notes.push_back("FLOPs inside " + where(path, m) +
                      " are not counted: the summary does not know how it calls its sub-modules");
    }
    rows[r].output = y.shape();
    rows[r].flops = flops;
    rows[r].activation_bytes = bytes_of(y);
    return y;
  }

 private:
  static bool has_children(const Module& m, std::initializer_list<const char*> names) {
    for (const char* n : names)
      if (direct_child(m, n) == nullptr) return false;
    return true;
  }

  // Runs a module or an op, attributing a failure to the layer at `path`.
  template <typename F>
  static Tensor guarded(const std::string& path, const Module& m, const Tensor& x, F&& fn) {
    try {
      return fn();
    } catch (const LocatedError&) {
      throw;
    } catch (const OutOfMemory&) {
      throw;
    } catch (const Error& e) {
      throw LocatedError(where(path, m) + " on input " + shape_str(x.shape()) + ": " + e.what());
    }
  }
  static Tensor call(Module& m, const std::string& path, const Tensor& x) {
    return guarded(path, m, x, [&] { return m.forward(x); });
  }

  int64_t leaf_flops(Module& m, const std::string& path, const Tensor& x, const Tensor& y) {
    const int64_t out = y.numel();
    if (auto* c = dynamic_cast<Conv2d*>(&m)) {
      const Conv2dConfig& cfg = c->config();
      const int64_t macs_per_output = cfg.in_channels / cfg.groups * cfg.kernel * cfg.kernel;
      return 2 * out * macs_per_output + (c->bias.defined() ? out : 0);
    }
    if (auto* l = dynamic_cast<Linear*>(&m)) {
      const int64_t in_features = x.dim() > 0 ? x.size(-1) : 0;
      return 2 * out * in_features + (l->bias.defined() ? out : 0);
    }
    if (dynamic_cast<BatchNorm2d*>(&m) != nullptr) return 4 * out;
    if (dynamic_cast<Activation*>(&m) != nullptr || dynamic_cast<MaxPool2d*>(&m) != nullptr ||
        dynamic_cast<AvgPool2d*>(&m) != nullptr)
      return out;
    if (dynamic_cast<GlobalAvgPool2d*>(&m) != nullptr) return x.numel();
    if (dynamic_cast<Dropout*>(&m) != nullptr || dynamic_cast<Flatten*>(&m) != nullptr ||
        dynamic_cast<Identity*>(&m) != nullptr)
      return 0;
    notes.push_back("FLOPs of " + where(path, m) + " are not counted: no formula for this layer type");
    return 0;
  }

  // A tensor a block makes itself (ReLU, residual sum): 1 FLOP per element, kept for backward.
  Tensor own_op(const std::string& path, const Module& m, const Tensor& in, int64_t& flops,
                const std::function<Tensor()>& fn) {
    Tensor t = guarded(path, m, in, fn);
    flops += t.numel();
    kept_bytes += bytes_of(t);
    return t;
  }

  // The block's own forward gives the row's output; the traced wiring must agree with it.
  static Tensor check_against_forward(Module& m, const std::string& path, const Tensor& x, const Tensor& traced) {
    Tensor real = call(m, path, x);
    if (real.shape() != traced.shape())
      throw LocatedError(where(path, m) + ": the summary's trace gives " + shape_str(traced.shape()) +
                         " but the block returns " + shape_str(real.shape()));
    return real;
  }

  // BasicBlock (n = 2) and Bottleneck (n = 3): conv-BN pairs with a ReLU between them,
  // the shortcut (identity or the downsample projection), sum, ReLU.
  Tensor residual_block(Module& m, const std::string& path, const Tensor& x, int depth, int n, int64_t& flops) {
    Tensor h = x;
    for (int i = 1; i <= n; ++i) {
      const std::string conv = "conv" + std::to_string(i), bn = "bn" + std::to_string(i);
      h = visit(*direct_child(m, conv), join_path(path, conv), h, depth + 1);
      h = visit(*direct_child(m, bn), join_path(path, bn), h, depth + 1);
      if (i < n) {
        const Tensor in = h;
        h = own_op(path, m, in, flops, [&] { return relu(in); });
      }
    }
    Tensor shortcut = x;
    if (Module* ds = direct_child(m, "downsample")) shortcut = visit(*ds, join_path(path, "downsample"), x, depth + 1);
    const Tensor sum = own_op(path, m, h, flops, [&] { return add(h, shortcut); });
    const Tensor out = own_op(path, m, sum, flops, [&] { return relu(sum); });
    return check_against_forward(m, path, x, out);
  }

  // InvertedResidual: its "conv" Sequential, plus the input when the block is residual
  // (stride 1 and the channel count unchanged).
  Tensor inverted_residual(Module& m, const std::string& path, const Tensor& x, int depth, int64_t& flops) {
    const Tensor y = visit(*direct_child(m, "conv"), join_path(path, "conv"), x, depth + 1);
    int64_t stride = 1;
    for (auto& [name, sub] : m.named_modules())
      if (auto* c = dynamic_cast<Conv2d*>(sub)) stride *= c->config().stride;
    Tensor out = y;
    if (stride == 1 && x.shape() == y.shape()) out = own_op(path, m, y, flops, [&] { return add(x, y); });
    return check_against_forward(m, path, x, out);
  }
};

// Restores every module's training flag (train() is recursive, so parents go first:
// named_modules() is pre-order and each child then resets its own flag).
class TrainingFlags {
 public:
  explicit TrainingFlags(Module& root) {
    for (auto& [name, m] : root.named_modules()) flags_.emplace_back(m, m->is_training());
  }
  ~TrainingFlags() {
    for (auto& [m, on] : flags_) m->train(on);
  }
  TrainingFlags(const TrainingFlags&) = delete;
  TrainingFlags& operator=(const TrainingFlags&) = delete;

 private:
  std::vector<std::pair<Module*, bool>> flags_;
};

std::string group_digits(int64_t n) {  // n >= 0
  const std::string digits = std::to_string(n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return out;
}

std::string dims_str(const Shape& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i > 0) out.push_back('x');
    out.append(std::to_string(s[i]));
  }
  return out.empty() ? "scalar" : out;
}

// Three significant digits of v (>= 1), e.g. 1.23, 12.3, 123.
std::string three_digits(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, v < 9.995 ? "%.2f" : v < 99.95 ? "%.1f" : "%.0f", v);
  return buf;
}

std::string scaled(double v, double base, const char* const* units, int n_units, const char* sep) {
  int u = 0;
  while (u + 1 < n_units && v >= base * 0.9995) {  // 999.6K prints as 1.00M
    v /= base;
    ++u;
  }
  return three_digits(v) + sep + units[u];
}

}  // namespace

std::string format_count(int64_t n) {
  if (n < 0) return std::string(1, '-').append(format_count(-n));
  if (n < 1000) return std::to_string(n);
  static const char* const units[] = {"", "K", "M", "G", "T", "P"};
  return scaled(static_cast<double>(n), 1000.0, units, 6, "");
}

std::string format_bytes(int64_t bytes) {
  if (bytes < 0) return std::string(1, '-').append(format_bytes(-bytes));
  if (bytes < 1024) return std::to_string(bytes) + " B";
  static const char* const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  return scaled(static_cast<double>(bytes), 1024.0, units, 6, " ");
}

ModelSummary summarize(Module& model, const Shape& input_shape, const SummaryOptions& opts) {
  CXR_CHECK(!input_shape.empty() && static_cast<int>(input_shape.size()) <= kMaxDims,
            "summarize: the input shape must have 1 to ", kMaxDims, " dimensions (batch first), got ",
            shape_str(input_shape));
  for (int64_t d : input_shape)
    CXR_CHECK(d > 0, "summarize: input dimensions must be positive, got ", shape_str(input_shape));

  ModelSummary s;
  s.input = input_shape;
  DType dtype = DType::f32;
  Device device = Device::cpu();
  bool first = true;
  for (const auto& [name, t] : model.named_parameters()) {
    if (first && (t.dtype() == DType::f32 || t.dtype() == DType::f64)) {
      dtype = t.dtype();
      device = t.device();
      first = false;
    }
    s.total_params += t.numel();
    if (t.requires_grad()) s.trainable_params += t.numel();
    s.param_bytes += bytes_of(t);
  }
  for (const auto& [name, t] : model.named_buffers()) s.buffer_bytes += bytes_of(t);

  const int64_t n = input_shape[0];
  auto trace = [&](const Shape& shape) {
    Tracer tracer;
    TrainingFlags restore(model);
    model.eval();
    NoGradGuard no_grad;
    const Tensor x = Tensor::zeros(shape, dtype, device);
    Tensor y;
    if (dynamic_cast<Sequential*>(&model) != nullptr) {
      y = x;
      for (const auto& [name, child] : model.children()) y = tracer.visit(*child, name, y, 0);
    } else {
      y = tracer.visit(model, "", x, 0);
    }
    s.output = y.shape();
    s.layers = std::move(tracer.rows);
    s.notes = std::move(tracer.notes);
    s.activation_bytes = tracer.kept_bytes;
  };
  bool scaled_up = false;
  if (opts.one_sample && n > 1) {
    Shape one = input_shape;
    one[0] = 1;
    trace(one);
    // Scaling is exact only when every output keeps the batch as its first dimension.
    scaled_up = !s.output.empty() && s.output[0] == 1 &&
                std::all_of(s.layers.begin(), s.layers.end(),
                            [](const LayerSummary& l) { return !l.output.empty() && l.output[0] == 1; });
    if (scaled_up) {
      s.output[0] = n;
      s.activation_bytes *= n;
      for (LayerSummary& l : s.layers) {
        l.output[0] = n;
        l.flops *= n;
        l.activation_bytes *= n;
      }
    }
  }
  if (!scaled_up) trace(input_shape);

  // Subtree totals: a row's descendants are the rows after it that are nested deeper.
  for (size_t i = 0; i < s.layers.size(); ++i) {
    LayerSummary& row = s.layers[i];
    row.total_params = row.params;
    row.total_flops = row.flops;
    for (size_t j = i + 1; j < s.layers.size() && s.layers[j].depth > row.depth; ++j) {
      row.total_params += s.layers[j].params;
      row.total_flops += s.layers[j].flops;
    }
    s.total_flops += row.flops;
  }
  return s;
}

nlohmann::json summary_to_json(const ModelSummary& s) {
  using nlohmann::json;
  json layers = json::array();
  for (const LayerSummary& l : s.layers)
    layers.push_back({{"name", l.name},
                      {"type", l.type},
                      {"describe", l.describe},
                      {"depth", l.depth},
                      {"leaf", l.leaf},
                      {"output", l.output},
                      {"params", l.params},
                      {"flops", l.flops},
                      {"activation_bytes", l.activation_bytes},
                      {"total_params", l.total_params},
                      {"total_flops", l.total_flops}});
  return {{"input", s.input},
          {"output", s.output},
          {"batch", s.batch()},
          {"layers", layers},
          {"totals",
           {{"params", s.total_params},
            {"trainable_params", s.trainable_params},
            {"param_bytes", s.param_bytes},
            {"buffer_bytes", s.buffer_bytes},
            {"flops", s.total_flops},
            {"flops_per_sample", s.flops_per_sample()},
            {"activation_bytes", s.activation_bytes}}},
          {"notes", s.notes}};
}

std::string format_summary(const ModelSummary& s, const SummaryFormat& fmt) {
  struct Cells {
    std::string name, type, config, output, params, flops, memory;
  };
  std::vector<Cells> cells;
  cells.push_back({"layer", "type", "config", "output", "params", "FLOPs", "out memory"});
  for (const LayerSummary& l : s.layers) {
    if (fmt.max_depth >= 0 && l.depth > fmt.max_depth) continue;
    const int64_t p = l.leaf ? l.params : l.total_params;
    const int64_t f = l.leaf ? l.flops : l.total_flops;
    cells.push_back({std::string(2 * static_cast<size_t>(l.depth), ' ') + (l.name.empty() ? "(model)" : l.name),
                     l.type, l.describe, dims_str(l.output), p ? format_count(p) : "-", f ? format_count(f) : "-",
                     format_bytes(l.activation_bytes)});
  }
  size_t w[7] = {};
  for (const Cells& c : cells) {
    const std::string* f[7] = {&c.name, &c.type, &c.config, &c.output, &c.params, &c.flops, &c.memory};
    for (int i = 0; i < 7; ++i) w[i] = std::max(w[i], f[i]->size());
  }
  std::ostringstream os;
  auto pad = [&os](const std::string& v, size_t width, bool right) {
    if (right) os << std::string(width - v.size(), ' ') << v;
    else os << v << std::string(width - v.size(), ' ');
  };
  size_t total_width = 0;
  for (size_t x : w) total_width += x;
  total_width += 2 * 6;
  for (size_t r = 0; r < cells.size(); ++r) {
    const Cells& c = cells[r];
    pad(c.name, w[0], false);
    os << "  ";
    pad(c.type, w[1], false);
    os << "  ";
    pad(c.config, w[2], false);
    os << "  ";
    pad(c.output, w[3], false);
    os << "  ";
    pad(c.params, w[4], true);
    os << "  ";
    pad(c.flops, w[5], true);
    os << "  ";
    pad(c.memory, w[6], true);
    os << "\n";
    if (r == 0) os << std::string(total_width, '-') << "\n";
  }
  os << std::string(total_width, '-') << "\n";
  const int64_t n = s.batch();
  os << "input        " << dims_str(s.input) << " (batch " << n << "), output " << dims_str(s.output) << "\n";
  os << "parameters   " << group_digits(s.total_params) << " (" << format_count(s.total_params) << "; trainable "
     << group_digits(s.trainable_params) << "), " << format_bytes(s.param_bytes) << " (buffers "
     << format_bytes(s.buffer_bytes) << ")\n";
  os << "FLOPs        " << format_count(s.flops_per_sample()) << " per sample, " << format_count(s.total_flops)
     << " per batch of " << n << " (" << group_digits(s.total_flops) << "; a multiply-add counts 2)\n";
  os << "activations  " << format_bytes(s.activation_bytes) << " per batch of " << n
     << " (layer outputs a training step keeps for backward)\n";
  if (std::any_of(s.layers.begin(), s.layers.end(), [](const LayerSummary& l) { return !l.leaf; }))
    os << "Rows of containers and blocks show the totals of their sub-layers.\n";
  for (const std::string& note : s.notes) os << "note: " << note << "\n";
  return os.str();
}

}  // namespace cxr::nn
