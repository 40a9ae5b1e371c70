// Attention launchers for head dims up to 32 (padded to 32), Half.
#include "cuda/attention/attention_kernels.cuh"

PYGEN_ATTENTION_INSTANTIATE(32, Half)
