/* Classify image files from C through the C API (cxr/cxr.h).
 *   classify_c MODEL IMAGE...        prints: path  class  probability */
#include <stdio.h>

#include "cxr/cxr.h"

int main(int argc, char** argv) {
  cxr_model* model = NULL;
  double probs[64];
  int i, label, failed = 0;
  if (argc < 3) {
    fprintf(stderr, "usage: classify_c MODEL.safetensors IMAGE...\n");
    return 2;
  }
  if (cxr_model_load(argv[1], "auto", &model) != CXR_OK) {
    fprintf(stderr, "classify_c: %s\n", cxr_last_error());
    return 1;
  }
  if (cxr_model_num_classes(model) > 64) {
    fprintf(stderr, "classify_c: too many classes for this example\n");
    cxr_model_free(model);
    return 1;
  }
  for (i = 2; i < argc; ++i) {
    if (cxr_predict_file(model, argv[i], probs, 64, &label) != CXR_OK) {
      fprintf(stderr, "classify_c: %s\n", cxr_last_error());
      ++failed;
      continue;
    }
    printf("%s\t%s\t%.4f\n", argv[i], cxr_model_class_name(model, label), probs[label]);
  }
  cxr_model_free(model);
  return failed > 0 ? 1 : 0;
}
