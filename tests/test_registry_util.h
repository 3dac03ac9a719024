// Shared helpers of the registry tests: tiny model files, reading and rewriting the audit
// log's lines.
#pragma once

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "nn/serialize.h"
#include "nn/zoo.h"

namespace cxr_test {

// A small simple_cnn (1x32x32, 2 classes) saved under `dir`; `seed` makes it distinct.
inline std::string make_model_file(const std::filesystem::path& dir, int seed) {
  nlohmann::json spec = cxr::nn::arch_spec("simple_cnn", 1, 2, 32, 32);
  spec["channels"] = {4, 8};
  spec["hidden"] = 8;
  auto model = cxr::nn::build_model(spec, static_cast<uint64_t>(seed));
  cxr::nn::ModelInfo info;
  info.class_names = {"NORMAL", "PNEUMONIA"};
  const std::string path = (dir / ("model" + std::to_string(seed) + ".safetensors")).string();
  cxr::nn::save_model(path, *model, info);
  return path;
}

inline std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void spit(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

// Lines of a file without their newlines (a last line without one is kept).
inline std::vector<std::string> read_lines(const std::string& path) {
  std::vector<std::string> out;
  std::istringstream in(slurp(path));
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

inline void write_lines(const std::string& path, const std::vector<std::string>& lines) {
  std::string s;
  for (const auto& l : lines) s += l + "\n";
  spit(path, s);
}

}  // namespace cxr_test
