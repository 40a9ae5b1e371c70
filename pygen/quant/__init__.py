"""Low-bit weights: INT4 groups, MXFP4 and ternary (BitNet b1.58), with fused
dequantize-matmul kernels, and whole-model quantization (round to nearest, GPTQ).

>>> qw = pygen.quant.quantize(linear.weight, "int4", group_size=128)
>>> y = pygen.quant.matmul(x, qw, linear.bias)          # x @ W^T + b, W never unpacked
>>> pygen.quantize_model(model, "int4", method="gptq", calibration=batches)
"""

from pygen.quant.gptq import GPTQ, gptq_quantize
from pygen.quant.interop import from_torch_int4pack, to_torch_int4pack
from pygen.quant.model import (
    pack_bitlinear,
    quantize_model,
    restore_quantized,
    to_bitlinear,
    weight_nbytes,
)
from pygen.quant.ops import matmul, quantize_activations
from pygen.quant.weight import FORMATS, QuantizedWeight, dequantize, quantize

__all__ = [
    "FORMATS",
    "GPTQ",
    "QuantizedWeight",
    "dequantize",
    "from_torch_int4pack",
    "gptq_quantize",
    "matmul",
    "pack_bitlinear",
    "quantize",
    "quantize_activations",
    "quantize_model",
    "restore_quantized",
    "to_bitlinear",
    "to_torch_int4pack",
    "weight_nbytes",
]
