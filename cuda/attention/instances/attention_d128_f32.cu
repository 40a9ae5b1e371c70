// Attention launchers for head dims up to 128 (padded to 128), float.
#include "cuda/attention/attention_kernels.cuh"

PYGEN_ATTENTION_INSTANTIATE(128, float)
