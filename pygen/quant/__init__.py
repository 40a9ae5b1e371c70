"""Low-bit weights: INT4 groups, MXFP4 and ternary (BitNet b1.58), with fused
dequantize-matmul kernels.

>>> qw = pygen.quant.quantize(linear.weight, "int4", group_size=128)
>>> y = pygen.quant.matmul(x, qw, linear.bias)          # x @ W^T + b, W never unpacked
"""

from pygen.quant.ops import matmul, quantize_activations
from pygen.quant.weight import FORMATS, QuantizedWeight, dequantize, quantize

__all__ = ["FORMATS", "QuantizedWeight", "dequantize", "matmul", "quantize", "quantize_activations"]
