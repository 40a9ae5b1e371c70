// Attention launchers for head dims up to 256 (padded to 256), float.
#include "cuda/attention/attention_kernels.cuh"

PYGEN_ATTENTION_INSTANTIATE(256, float)
