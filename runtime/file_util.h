// Durable file writes shared by every part of the engine (model files, images,
// registries).
#pragma once

#include <string>

namespace cxr {

// Writes `data` to `path` atomically: a temp file in the same directory, fsync, rename
// over `path`, fsync of the directory. A crash leaves either the old or the new file.
// Throws cxr::FileError naming the file on any failure (the temp file is removed).
void write_file_atomic(const std::string& path, const std::string& data);

}  // namespace cxr
