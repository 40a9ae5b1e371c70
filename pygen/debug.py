"""pygen's one debug switch: checks that would synchronize with a GPU.

Some input checks read a value on the device back to the host: the sampling ops' per-row
parameters and the status their kernels record per row (NaN or +inf logits, a row with
nothing to draw, a token id out of range), the flow layers' value ranges. On the CPU
they cost nothing and always run. On a GPU, reading back waits for the GPU (10-20 us and
a pipeline bubble per call) and breaks CUDA-graph capture, so by default they do not:

- the sampling ops (:func:`pygen.ops.sample_categorical`, the masked-diffusion steps)
  check on the device instead: a bad row fails a device-side assertion whose message,
  on stderr, names the op, the row and the cause. As with PyTorch's own device-side
  asserts, the error surfaces at the next synchronizing call and leaves the CUDA
  context unusable, so the process must restart;
- the flow layers skip them (out-of-range levels give NaN, not an error).

With debug checks on (:func:`set_debug_checks`, or ``PYGEN_DEBUG_CHECKS=1`` in the
environment) every device runs the host checks, and raises a Python ``ValueError``
naming the argument, row and cause, as the CPU does: for development, not for CUDA
graphs. The flow layers' checks never run while ``torch.compile`` traces.
"""

import os

from pygen._build import _C


def set_debug_checks(enabled: bool) -> None:
    """Turns the synchronizing checks on or off for every device (see the module
    docstring). Also reachable as ``pygen.set_debug_checks`` and
    ``pygen.nn.flows.set_debug_checks``."""
    _C.set_debug_checks(bool(enabled))


def debug_checks() -> bool:
    """Whether the synchronizing checks run on devices other than the CPU."""
    return _C.debug_checks()


set_debug_checks(os.environ.get("PYGEN_DEBUG_CHECKS", "0") == "1")

__all__ = ["debug_checks", "set_debug_checks"]
