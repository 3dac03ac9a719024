/* The engine's C API: load a cxr model, classify and explain images, from C or anything
 * with a C FFI (Python ctypes, Rust, C#, Go).
 *
 *   cxr_model* m = NULL;
 *   if (cxr_model_load("model.safetensors", "auto", &m) != CXR_OK) { puts(cxr_last_error()); return 1; }
 *   double probs[2]; int label;
 *   if (cxr_predict_file(m, "xray.png", probs, 2, &label) == CXR_OK)
 *     printf("%s %.3f\n", cxr_model_class_name(m, label), probs[label]);
 *   cxr_model_free(m);
 *
 * Conventions: every function that can fail returns a cxr_status; on failure
 * cxr_last_error() holds a message for the calling thread (valid until its next call into
 * the library). No C++ exception crosses this boundary. Output buffers are the caller's;
 * sizes are given in elements. A cxr_model may be used by several threads at once for
 * prediction (cxr_gradcam_* calls on one model take turns). Pixels are planar (CHW)
 * floats in [0, 1] or interleaved (HWC) 8-bit, as named.
 */
#ifndef CXR_CXR_H
#define CXR_CXR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cxr_status {
  CXR_OK = 0,
  CXR_ERROR_INVALID_ARGUMENT = 1, /* a NULL handle, a bad size, a value out of range */
  CXR_ERROR_FILE = 2,             /* missing, unreadable or corrupt file (model or image) */
  CXR_ERROR_OUT_OF_MEMORY = 3,
  CXR_ERROR_DEVICE = 4,           /* no such CUDA device, or a CUDA failure */
  CXR_ERROR_INTERNAL = 5
} cxr_status;

typedef struct cxr_model cxr_model;

/* Version of the engine, e.g. "0.1.0". */
const char* cxr_version(void);
/* The message of the calling thread's last failed call ("" if none). */
const char* cxr_last_error(void);
/* Threads for CPU kernels (<= 0: one per core). */
cxr_status cxr_set_num_threads(int n);

/* A model file, or "registry:NAME[@VERSION|@production|@staging]" (registry directory from
 * $CXR_REGISTRY, else ./registry). device: "auto", "cpu", "cuda" or "cuda:N" (NULL: auto). */
cxr_status cxr_model_load(const char* path_or_ref, const char* device, cxr_model** out);
void cxr_model_free(cxr_model* model); /* NULL is fine */

int cxr_model_num_classes(const cxr_model* model);            /* 0 for NULL */
const char* cxr_model_class_name(const cxr_model* model, int index); /* NULL when out of range */
cxr_status cxr_model_input_shape(const cxr_model* model, int* channels, int* height, int* width);

/* Class probabilities of one image. probs has room for num_probs >= the number of
 * classes; label (may be NULL) receives the most probable class. */
cxr_status cxr_predict_file(const cxr_model* model, const char* image_path, double* probs, int num_probs, int* label);
/* Encoded PNG or JPEG bytes in memory. */
cxr_status cxr_predict_encoded(const cxr_model* model, const void* bytes, size_t size, double* probs, int num_probs,
                               int* label);
/* Planar float pixels in [0, 1]: channels (1 or 3) x height x width, any size (resized). */
cxr_status cxr_predict_pixels(const cxr_model* model, const float* pixels, int channels, int height, int width,
                              double* probs, int num_probs, int* label);
/* Interleaved 8-bit pixels (gray, RGB or RGBA; alpha ignored), rows `stride` bytes apart. */
cxr_status cxr_predict_u8(const cxr_model* model, const uint8_t* pixels, int channels, int height, int width,
                          size_t stride, double* probs, int num_probs, int* label);

/* Grad-CAM of class `target` (-1: the predicted one) for an image file. Writes the overlay
 * PNG to overlay_png_path unless it is NULL; copies the map (at the model's input size,
 * values in [0, 1], row-major) into `map` when it is not NULL and has room for map_size
 * >= height * width of the model input. target_out (may be NULL) receives the class. */
cxr_status cxr_gradcam_file(const cxr_model* model, const char* image_path, int target, const char* overlay_png_path,
                            float* map, size_t map_size, int* target_out);

#ifdef __cplusplus
}
#endif

#endif /* CXR_CXR_H */
