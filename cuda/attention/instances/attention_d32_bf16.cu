// Attention launchers for head dims up to 32 (padded to 32), BFloat16.
#include "cuda/attention/attention_kernels.cuh"

PYGEN_ATTENTION_INSTANTIATE(32, BFloat16)
