"""Repository-wide pytest set-up."""

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # bench/ runs each benchmark once, as a smoke test, unless --benchmark-enable is
    # given. Set here rather than in addopts so pytest also runs where pytest-benchmark
    # is not installed (the GPU machines): bench/ is then skipped.
    if hasattr(config.option, "benchmark_disable"):
        config.option.benchmark_disable = True
