"""Loads the compiled extension and reports how it was built (``pygen.info()``)."""

import re

import torch  # loads libtorch before the extension that links against it

try:
    from pygen import _C
except ImportError as e:  # a source checkout that was never built
    raise ImportError(
        "pygen's compiled extension pygen._C is missing or does not load "
        f"({e}). Build it with `make build` (or `pip install --no-build-isolation -e .`)."
    ) from e


def _check_version() -> None:
    from pygen import __version__

    built = _C.build_info()["version"]
    if built != __version__:
        raise ImportError(
            f"pygen._C was built for pygen {built} but the Python package is {__version__}: rebuild it"
        )


_check_version()


def info() -> dict:
    """What this pygen build contains and how it runs here.

    Returns:
        dict with ``version``, ``torch``, ``torch_cuda`` (CUDA version torch was built
        with, or None), ``devices`` (devices with compiled kernels: ``"cpu"``, and
        ``"cuda"`` when built with CUDA), ``cuda_archs`` (list like ``["8.0", "9.0"]``),
        ``cuda_available`` (a GPU is usable now), ``cpu_isa`` (SIMD path the CPU kernels
        run: ``"scalar"``, ``"avx2"`` or ``"avx512"``), ``cpu_isa_detected`` (best the CPU
        supports; ``PYGEN_CPU_ISA`` may lower the chosen one), ``parallel_backend``
        (``"OpenMP"`` or ``"native"``), ``num_threads`` (``torch.get_num_threads()``,
        which the CPU kernels follow) and ``compiler``.
    """
    b = _C.build_info()
    backend = re.search(r"ATen parallel backend: (\S+)", b["parallel"])
    return {
        "version": b["version"],
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "devices": ["cpu", "cuda"] if b["cuda"] else ["cpu"],
        "cuda_archs": b["cuda_archs"].split(),
        "cuda_available": bool(b["cuda"]) and torch.cuda.is_available(),
        "cpu_isa": b["cpu_isa"],
        "cpu_isa_detected": b["cpu_isa_detected"],
        "parallel_backend": backend.group(1) if backend else "unknown",
        "num_threads": torch.get_num_threads(),
        "compiler": b["compiler"],
    }
