/* The C API from C: load the model consumer_cpp wrote, classify its image, print the
 * probabilities in the same format, and check an error path. Usage: consumer_c WORK_DIR */
#include <stdio.h>
#include <string.h>

#include <cxr/cxr.h>

int main(int argc, char** argv) {
  char model_path[4096], image_path[4096];
  cxr_model* m = NULL;
  double probs[2];
  int label = -1;
  if (argc != 2) {
    fprintf(stderr, "usage: consumer_c WORK_DIR\n");
    return 2;
  }
  snprintf(model_path, sizeof model_path, "%s/model.safetensors", argv[1]);
  snprintf(image_path, sizeof image_path, "%s/xray.png", argv[1]);
  if (cxr_model_load("/nonexistent/model.safetensors", "cpu", &m) != CXR_ERROR_FILE || m != NULL ||
      strlen(cxr_last_error()) == 0) {
    fprintf(stderr, "consumer_c: a missing model was not reported\n");
    return 1;
  }
  if (cxr_model_load(model_path, "cpu", &m) != CXR_OK) {
    fprintf(stderr, "consumer_c: %s\n", cxr_last_error());
    return 1;
  }
  if (cxr_predict_file(m, image_path, probs, 2, &label) != CXR_OK) {
    fprintf(stderr, "consumer_c: %s\n", cxr_last_error());
    cxr_model_free(m);
    return 1;
  }
  printf("c: %s %.6f %.6f (cxr %s)\n", cxr_model_class_name(m, label), probs[0], probs[1], cxr_version());
  cxr_model_free(m);
  return 0;
}
