// The C API (cxr/cxr.h) over the C++ API (cxr/cxr.hpp): handles, status codes, and a
// per-thread error message; every exception is caught here.
#include "cxr/cxr.h"

#include <cstring>
#include <exception>
#include <new>
#include <string>

#include "cxr/cxr.hpp"
#include "data/image.h"
#include "runtime/thread_pool.h"

struct cxr_model {
  cxr::Model model;
};

namespace {

thread_local std::string t_error;

cxr_status fail(cxr_status s, const std::string& msg) {
  t_error = msg;
  return s;
}

// Runs fn, mapping exceptions to status codes and the thread's error message.
template <typename F>
cxr_status guarded(F&& fn) {
  try {
    t_error.clear();
    fn();
    return CXR_OK;
  } catch (const cxr::OutOfMemory& e) {
    return fail(CXR_ERROR_OUT_OF_MEMORY, e.what());
  } catch (const cxr::FileError& e) {
    return fail(CXR_ERROR_FILE, e.what());
  } catch (const cxr::ValueError& e) {
    return fail(CXR_ERROR_INVALID_ARGUMENT, e.what());
  } catch (const cxr::Error& e) {  // the library's other errors come from the CUDA runtime
    const std::string m = e.what();
    return fail(m.find("CUDA") != std::string::npos || m.find("cuda") != std::string::npos ? CXR_ERROR_DEVICE
                                                                                            : CXR_ERROR_INTERNAL,
                m);
  } catch (const std::bad_alloc&) {
    return fail(CXR_ERROR_OUT_OF_MEMORY, "out of host memory");
  } catch (const std::exception& e) {
    return fail(CXR_ERROR_INTERNAL, e.what());
  } catch (...) {
    return fail(CXR_ERROR_INTERNAL, "unknown error");
  }
}

void check_model(const cxr_model* m) {
  if (m == nullptr) throw cxr::ValueError("model handle is NULL");
}

// Copies a prediction out (check_probs has checked the buffer's size).
void deliver(const cxr::Prediction& p, double* probs, int* label) {
  for (size_t i = 0; i < p.probabilities.size(); ++i) probs[i] = p.probabilities[i];
  if (label != nullptr) *label = p.label;
}

void check_probs(const cxr_model* m, double* probs, int num_probs) {
  check_model(m);
  const int k = static_cast<int>(m->model.class_names().size());
  if (probs == nullptr) throw cxr::ValueError("probs is NULL");
  if (num_probs < k)
    throw cxr::ValueError("probs has room for " + std::to_string(num_probs) + " values; the model has " +
                          std::to_string(k) + " classes");
}

}  // namespace

extern "C" {

const char* cxr_version(void) { return CXR_VERSION_STRING; }

const char* cxr_last_error(void) { return t_error.c_str(); }

cxr_status cxr_set_num_threads(int n) {
  return guarded([&] { cxr::set_num_threads(n); });
}

cxr_status cxr_model_load(const char* path_or_ref, const char* device, cxr_model** out) {
  if (out != nullptr) *out = nullptr;
  return guarded([&] {
    if (path_or_ref == nullptr || out == nullptr) throw cxr::ValueError("cxr_model_load: path and out must not be NULL");
    cxr::LoadOptions o;
    if (device != nullptr) o.device = device;
    auto* m = new cxr_model{cxr::Model::load(path_or_ref, o)};
    *out = m;
  });
}

void cxr_model_free(cxr_model* model) { delete model; }

int cxr_model_num_classes(const cxr_model* model) {
  return model == nullptr ? 0 : static_cast<int>(model->model.class_names().size());
}

const char* cxr_model_class_name(const cxr_model* model, int index) {
  if (model == nullptr || index < 0 || index >= static_cast<int>(model->model.class_names().size())) return nullptr;
  return model->model.class_names()[static_cast<size_t>(index)].c_str();
}

cxr_status cxr_model_input_shape(const cxr_model* model, int* channels, int* height, int* width) {
  return guarded([&] {
    check_model(model);
    if (channels != nullptr) *channels = model->model.channels();
    if (height != nullptr) *height = model->model.height();
    if (width != nullptr) *width = model->model.width();
  });
}

cxr_status cxr_predict_file(const cxr_model* model, const char* image_path, double* probs, int num_probs, int* label) {
  return guarded([&] {
    check_probs(model, probs, num_probs);
    if (image_path == nullptr) throw cxr::ValueError("image_path is NULL");
    deliver(model->model.predict(std::string(image_path)), probs, label);
  });
}

cxr_status cxr_predict_encoded(const cxr_model* model, const void* bytes, size_t size, double* probs, int num_probs,
                               int* label) {
  return guarded([&] {
    check_probs(model, probs, num_probs);
    if (bytes == nullptr || size == 0) throw cxr::ValueError("no image bytes given");
    cxr::data::DecodeOptions o;
    o.channels = model->model.channels();
    o.min_width = model->model.width();
    o.min_height = model->model.height();
    deliver(model->model.predict(cxr::data::decode_image_memory(bytes, size, "image in memory", o)), probs, label);
  });
}

cxr_status cxr_predict_pixels(const cxr_model* model, const float* pixels, int channels, int height, int width,
                              double* probs, int num_probs, int* label) {
  return guarded([&] {
    check_probs(model, probs, num_probs);
    if (pixels == nullptr) throw cxr::ValueError("pixels is NULL");
    if ((channels != 1 && channels != 3) || height < 1 || width < 1 || height > 65536 || width > 65536)
      throw cxr::ValueError("image of " + std::to_string(channels) + "x" + std::to_string(height) + "x" +
                            std::to_string(width) + ": need 1 or 3 channels and a size of 1 to 65536 pixels per side");
    cxr::data::Image img(channels, height, width);
    std::memcpy(img.data.data(), pixels, img.data.size() * sizeof(float));
    deliver(model->model.predict(img), probs, label);
  });
}

cxr_status cxr_predict_u8(const cxr_model* model, const uint8_t* pixels, int channels, int height, int width,
                          size_t stride, double* probs, int num_probs, int* label) {
  return guarded([&] {
    check_probs(model, probs, num_probs);
    if (pixels == nullptr) throw cxr::ValueError("pixels is NULL");
    if ((channels != 1 && channels != 3 && channels != 4) || height < 1 || width < 1 || height > 65536 || width > 65536)
      throw cxr::ValueError("image of " + std::to_string(height) + "x" + std::to_string(width) + "x" +
                            std::to_string(channels) + ": need 1, 3 or 4 channels and 1 to 65536 pixels per side");
    if (stride < static_cast<size_t>(width) * channels)
      throw cxr::ValueError("stride " + std::to_string(stride) + " is shorter than a row of " +
                            std::to_string(static_cast<size_t>(width) * channels) + " bytes");
    const int c = channels == 4 ? 3 : channels;
    cxr::data::Image img(c, height, width);
    const size_t plane = static_cast<size_t>(height) * width;
    for (int y = 0; y < height; ++y)
      for (int x = 0; x < width; ++x)
        for (int k = 0; k < c; ++k)
          img.data[k * plane + static_cast<size_t>(y) * width + x] =
              pixels[static_cast<size_t>(y) * stride + static_cast<size_t>(x) * channels + k] / 255.0f;
    deliver(model->model.predict(img), probs, label);
  });
}

cxr_status cxr_gradcam_file(const cxr_model* model, const char* image_path, int target, const char* overlay_png_path,
                            float* map, size_t map_size, int* target_out) {
  return guarded([&] {
    check_model(model);
    if (image_path == nullptr) throw cxr::ValueError("image_path is NULL");
    const size_t need = static_cast<size_t>(model->model.height()) * model->model.width();
    if (map != nullptr && map_size < need)
      throw cxr::ValueError("map has room for " + std::to_string(map_size) + " values; the map has " + std::to_string(need));
    if (target < -1 || target >= static_cast<int>(model->model.class_names().size()))
      throw cxr::ValueError("target class " + std::to_string(target) + " out of range");
    const cxr::Explanation e = model->model.explain(std::string(image_path), target);
    if (overlay_png_path != nullptr) cxr::data::write_png(overlay_png_path, e.overlay);
    if (map != nullptr) std::memcpy(map, e.map.data(), need * sizeof(float));
    if (target_out != nullptr) *target_out = e.target;
  });
}

}  // extern "C"
