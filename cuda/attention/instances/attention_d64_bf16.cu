// Attention launchers for head dims up to 64 (padded to 64), BFloat16.
#include "cuda/attention/attention_kernels.cuh"

PYGEN_ATTENTION_INSTANTIATE(64, BFloat16)
