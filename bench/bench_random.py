"""Philox random numbers (pygen.ops.rand / randn) against torch.rand / torch.randn.

torch's CPU generator is MT19937, its CUDA one Philox; both are the op a user would
call otherwise, on the same shape, dtype and device.
"""

import torch

import pygen
from pygen.bench import Case


def cases(device: str, quick: bool = False) -> list[Case]:
    # 2^10 shows the fixed cost of a call (torch.ops dispatch, ~4 us), the rest throughput.
    sizes = [1 << 10, 1 << 16, 1 << 20] if quick else [1 << 10, 1 << 16, 1 << 20, 1 << 24]
    dtypes = [torch.float32, torch.float64, torch.bfloat16]
    out = []
    for name, ours, theirs in [("rand", pygen.ops.rand, torch.rand), ("randn", pygen.ops.randn, torch.randn)]:
        for dtype in dtypes:
            for n in sizes:
                label = f"{name} {str(dtype).removeprefix('torch.')} n=2^{n.bit_length() - 1}"
                out.append(
                    Case(
                        name=label,
                        fn=lambda ours=ours, n=n, dtype=dtype: ours((n,), seed=1, dtype=dtype, device=device),
                        baseline=f"torch.{name}",
                        baseline_fn=lambda theirs=theirs, n=n, dtype=dtype: theirs(
                            n, dtype=dtype, device=device
                        ),
                        params={"op": name, "numel": n, "dtype": str(dtype), "device": device},
                    )
                )
    return out
