"""Builds pygen._C with CMake + Ninja (the cmake_build_ext pattern of vLLM).

Environment:
  PYGEN_CUDA=auto|0|1     build the CUDA kernels (auto: when torch has CUDA and nvcc exists)
  TORCH_CUDA_ARCH_LIST    CUDA architectures, default "8.0;9.0"
  MAX_JOBS                parallel compile jobs (default: all cores)
  CMAKE_BUILD_TYPE        Release (default) or Debug / RelWithDebInfo
  CMAKE_ARGS              extra arguments for the CMake configure step
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent.resolve()
VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "pygen" / "__init__.py").read_text()).group(1)


class CMakeExtension(Extension):
    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class cmake_build_ext(build_ext):
    def build_extension(self, ext: Extension) -> None:
        out_dir = Path(self.get_ext_fullpath(ext.name)).parent.resolve()
        # An editable install (make build) would configure in a fresh temporary directory each
        # time and so recompile everything; a fixed folder keeps its rebuilds incremental.
        editable = getattr(self, "editable_mode", False)
        build_dir = ROOT / "build" / "editable" if editable else Path(self.build_temp).resolve()
        build_dir.mkdir(parents=True, exist_ok=True)
        cuda = os.environ.get("PYGEN_CUDA", "auto")
        if cuda not in ("auto", "0", "1"):
            raise ValueError(f"PYGEN_CUDA must be auto, 0 or 1, got {cuda!r}")
        config = [
            f"-DCMAKE_BUILD_TYPE={os.environ.get('CMAKE_BUILD_TYPE', 'Release')}",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DPYGEN_CUDA={cuda}",
            f"-DPYGEN_VERSION={VERSION}",
            "-GNinja",
            *shlex.split(os.environ.get("CMAKE_ARGS", "")),
        ]
        jobs = os.environ.get("MAX_JOBS") or str(os.cpu_count() or 1)
        subprocess.check_call(["cmake", str(ROOT), *config], cwd=build_dir)
        subprocess.check_call(["cmake", "--build", ".", "-j", jobs], cwd=build_dir)


setup(
    version=VERSION,
    ext_modules=[CMakeExtension("pygen._C")],
    cmdclass={"build_ext": cmake_build_ext},
)
