"""pygen: hand-written C++/CUDA kernels for generative models, callable from PyTorch.

Importing pygen loads the compiled extension ``pygen._C``, which registers every op
under ``torch.ops.pygen``; ``pygen.ops`` holds the documented wrappers.
"""

__version__ = "0.1.0"

from pygen import ops, quant, sparse
from pygen._build import info
from pygen.debug import debug_checks, set_debug_checks
from pygen.quant import quantize_model

__all__ = [
    "__version__",
    "debug_checks",
    "info",
    "ops",
    "quant",
    "quantize_model",
    "set_debug_checks",
    "sparse",
]
