#include "nn/serialize.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

namespace cxr::nn {

using nlohmann::json;

namespace {

bool parse_st_dtype(const std::string& s, DType& t) {
  if (s == "F32") t = DType::f32;
  else if (s == "F64") t = DType::f64;
  else if (s == "I64") t = DType::i64;
  else return false;
  return true;
}

std::string errno_text() { return std::strerror(errno); }

static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

}  // namespace

const char* safetensors_dtype(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::i64: return "I64";
  }
  return "?";
}

std::string safetensors_encode(const std::map<std::string, Tensor>& tensors,
                               const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    CXR_CHECK(name != "__metadata__" && !name.empty(), "safetensors: invalid tensor name '", name, "'");
    CXR_CHECK(t.defined(), "safetensors: tensor '", name, "' is undefined");
    const uint64_t n = t.nbytes();
    header[name] = {{"dtype", safetensors_dtype(t.dtype())}, {"shape", t.shape()}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string h = header.dump();
  // Pad the header with spaces so the data starts 8-byte aligned (as the reference
  // implementation does).
  while ((8 + h.size()) % 8) h.push_back(' ');
  std::string out;
  out.reserve(8 + h.size() + offset);
  const uint64_t hl = h.size();
  out.append(reinterpret_cast<const char*>(&hl), 8);
  out += h;
  for (const auto& [name, t] : tensors) {
    const Tensor h = t.to(Device::cpu());  // device tensors are copied out
    out.append(static_cast<const char*>(h.raw_data()), h.nbytes());
  }
  return out;
}

void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  write_file_atomic(path, safetensors_encode(tensors, metadata));
}

SafetensorsFile safetensors_decode(const std::string& bytes, const std::string& what, const SafetensorsLimits& lim) {
  auto fail = [&](const std::string& why) -> void { throw FileError("'" + what + "' is not a valid safetensors file: " + why); };
  if (bytes.size() < 8) fail("only " + std::to_string(bytes.size()) + " bytes, shorter than the 8-byte header length");
  uint64_t hl = 0;
  std::memcpy(&hl, bytes.data(), 8);
  if (hl > lim.max_header_bytes)
    fail("header length " + std::to_string(hl) + " exceeds the limit of " + std::to_string(lim.max_header_bytes));
  if (hl > bytes.size() - 8)
    fail("header length " + std::to_string(hl) + " runs past the end of the " + std::to_string(bytes.size()) +
         "-byte file (truncated?)");
  json header;
  try {
    header = json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(hl));
  } catch (const json::exception& e) {
    fail(std::string("header is not valid JSON (") + e.what() + ")");
  }
  if (!header.is_object()) fail("header is not a JSON object");
  const uint64_t data_size = bytes.size() - 8 - hl;
  const char* data = bytes.data() + 8 + hl;
  SafetensorsFile out;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& e = it.value();
    if (name == "__metadata__") {
      if (!e.is_object()) fail("__metadata__ is not an object");
      for (auto m = e.begin(); m != e.end(); ++m) {
        if (!m.value().is_string()) fail("__metadata__ value for '" + m.key() + "' is not a string");
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string at = "tensor '" + name + "'";
    if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets"))
      fail(at + " needs dtype, shape and data_offsets");
    DType dt;
    if (!e["dtype"].is_string() || !parse_st_dtype(e["dtype"].get<std::string>(), dt))
      fail(at + " has unsupported dtype " + e["dtype"].dump() + " (supported: F32, F64, I64)");
    const json& sh = e["shape"];
    if (!sh.is_array() || sh.size() > static_cast<size_t>(kMaxDims))
      fail(at + " shape " + sh.dump() + " must be an array of at most " + std::to_string(kMaxDims) + " dims");
    Shape shape;
    // Product of the non-zero dimensions, saturated at 2^62 so it cannot overflow. A zero
    // dimension makes the tensor empty whatever the others are (the encoder writes such
    // tensors with a data section smaller than their other dimensions).
    constexpr uint64_t kSaturated = 1ull << 62;
    uint64_t prod = 1;
    bool empty = false;
    for (const json& d : sh) {
      if (!d.is_number_unsigned()) fail(at + " shape " + sh.dump() + " must hold non-negative integers");
      const uint64_t v = d.get<uint64_t>();
      if (v == 0) empty = true;
      else prod = prod > kSaturated / v ? kSaturated : prod * v;
      shape.push_back(static_cast<int64_t>(std::min(v, kSaturated)));
    }
    if (empty && prod >= kSaturated) fail(at + " shape " + sh.dump() + " has dimensions too large to represent");
    if (!empty && prod > data_size)
      fail(at + " shape " + sh.dump() + " needs more than the " + std::to_string(data_size) + "-byte data section");
    const uint64_t numel = empty ? 0 : prod;
    const json& off = e["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      fail(at + " data_offsets " + off.dump() + " must be [begin, end]");
    const uint64_t b = off[0].get<uint64_t>(), en = off[1].get<uint64_t>();
    if (b > en || en > data_size)
      fail(at + " data_offsets [" + std::to_string(b) + ", " + std::to_string(en) + "] are outside the " +
           std::to_string(data_size) + "-byte data section");
    if (en - b != numel * dtype_size(dt))
      fail(at + " holds " + std::to_string(en - b) + " bytes but " + e["dtype"].get<std::string>() + " " + sh.dump() +
           " needs " + std::to_string(numel * dtype_size(dt)));
    ranges.emplace_back(b, en);
    Tensor t = Tensor::empty(shape, dt);
    if (en > b) std::memcpy(t.raw_data(), data + b, en - b);
    out.tensors[name] = t;
  }
  // Sorted by start, a non-empty range overlaps an earlier one exactly when it starts
  // before the furthest end seen so far (comparing neighbours only would let an empty
  // range in between hide the overlap). Empty ranges hold no bytes and never overlap.
  std::sort(ranges.begin(), ranges.end());
  uint64_t furthest_end = 0;
  for (const auto& [b, en] : ranges) {
    if (en == b) continue;
    if (b < furthest_end) fail("tensor data ranges overlap at byte " + std::to_string(b));
    furthest_end = en;
  }
  return out;
}

SafetensorsFile load_safetensors(const std::string& path, const SafetensorsLimits& limits) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw FileError("cannot read '" + path + "': it is a directory");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw FileError("cannot open '" + path + "': " + errno_text());
  std::string bytes;
  try {
    bytes.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  } catch (const std::exception& e) {
    // libstdc++ reports read errors (EIO, EISDIR) by throwing from the stream buffer.
    throw FileError("error reading '" + path + "': " + e.what());
  }
  if (f.bad()) throw FileError("error reading '" + path + "'");
  return safetensors_decode(bytes, path, limits);
}

// ---------------------------------------------------------------- model files

namespace {
constexpr const char* kFormat = "cxr.model.v1";
}

void save_model(const std::string& path, const Model& model, const ModelInfo& info) {
  std::vector<std::string> names = info.class_names;
  if (names.empty())
    for (int64_t i = 0; i < model.num_classes(); ++i) names.push_back("class_" + std::to_string(i));
  CXR_CHECK(static_cast<int64_t>(names.size()) == model.num_classes(), "save_model: ", names.size(),
            " class names for a model with ", model.num_classes(), " classes");
  CXR_CHECK(!info.mean.empty() && info.mean.size() == info.stddev.size(),
            "save_model: normalisation mean and std must be non-empty and of the same length");
  std::map<std::string, std::string> meta;
  meta["format"] = kFormat;
  meta["cxr.architecture"] = model.spec().dump();
  meta["cxr.class_names"] = json(names).dump();
  meta["cxr.in_channels"] = std::to_string(model.in_channels());
  meta["cxr.input_size"] = json({model.input_height(), model.input_width()}).dump();
  meta["cxr.normalization"] = json({{"mean", info.mean}, {"std", info.stddev}}).dump();
  meta["cxr.training"] = info.training.dump();
  meta["cxr.engine_version"] = CXR_VERSION_STRING;
  save_safetensors(path, model.state_dict(), meta);
}

LoadedModel load_model(const std::string& path) { return load_model_from(load_safetensors(path), path); }

LoadedModel load_model_bytes(const std::string& bytes, const std::string& what) {
  return load_model_from(safetensors_decode(bytes, what), what);
}

LoadedModel load_model_from(SafetensorsFile f, const std::string& what) {
  auto need = [&](const char* key) -> const std::string& {
    auto it = f.metadata.find(key);
    if (it == f.metadata.end())
      throw FileError("'" + what + "' is a safetensors file but not a cxr model: metadata '" + key + "' is missing");
    return it->second;
  };
  if (need("format") != kFormat)
    throw FileError("'" + what + "': unsupported model format '" + need("format") + "' (expected " + kFormat + ")");
  LoadedModel out;
  try {
    out.model = build_model(json::parse(need("cxr.architecture")), 0);
    out.info.class_names = json::parse(need("cxr.class_names")).get<std::vector<std::string>>();
    const json norm = json::parse(need("cxr.normalization"));
    out.info.mean = norm.at("mean").get<std::vector<double>>();
    out.info.stddev = norm.at("std").get<std::vector<double>>();
    auto tr = f.metadata.find("cxr.training");
    if (tr != f.metadata.end()) out.info.training = json::parse(tr->second);
  } catch (const json::exception& e) {
    throw FileError("'" + what + "': malformed model metadata (" + e.what() + ")");
  } catch (const ValueError& e) {
    throw FileError("'" + what + "': " + e.what());
  }
  out.engine_version = f.metadata.count("cxr.engine_version") ? f.metadata["cxr.engine_version"] : "";
  if (static_cast<int64_t>(out.info.class_names.size()) != out.model->num_classes())
    throw FileError("'" + what + "': " + std::to_string(out.info.class_names.size()) + " class names for " +
                    std::to_string(out.model->num_classes()) + " classes");
  try {
    out.model->load_state_dict(f.tensors, true);
  } catch (const ValueError& e) {
    throw FileError("'" + what + "': weights do not match the architecture: " + e.what());
  }
  out.model->eval();
  return out;
}

}  // namespace cxr::nn
