"""Normalizing-flow ops against eager PyTorch: pygen.ops.rq_spline (forward, inverse,
forward + backward) against normflows' unconstrained_rational_quadratic_spline
(tails="linear", the code of Neural Spline Flows) when normflows is installed, else
against pygen's eager reference of the same formulas (pygen/ops/reference.py)."""

import torch

import pygen
from pygen.bench import Case
from pygen.ops import reference

try:
    from normflows.utils.splines import unconstrained_rational_quadratic_spline as _normflows_spline
except ImportError:
    _normflows_spline = None

TAIL_BOUND = 3.0


def eager_spline(x, w, h, d, inverse=False):
    if _normflows_spline is None:
        return reference.rq_spline(x, w, h, d, inverse=inverse, tail_bound=TAIL_BOUND)
    return _normflows_spline(x, w, h, d, inverse=inverse, tails="linear", tail_bound=TAIL_BOUND)


def forward_backward(spline, x, w, h, d):
    tensors = [t.detach().requires_grad_() for t in (x, w, h, d)]
    y, lad = spline(*tensors)
    return torch.autograd.grad(y.sum() + lad.sum(), tensors)


def cases(device: str, quick: bool = False) -> list[Case]:
    baseline = "normflows eager" if _normflows_spline is not None else "eager reference"
    shapes = [(256, 3072)] if quick else [(256, 3072), (64, 64, 64)]
    out = []
    for shape in shapes:
        for K in [8] if quick else [8, 16]:
            g = torch.Generator().manual_seed(0)
            w, h, d = (torch.randn(*shape, n, generator=g).to(device) for n in (K, K, K - 1))
            x = (torch.randn(shape, generator=g) * 2).to(device)
            y = pygen.ops.rq_spline(x, w, h, d, tail_bound=TAIL_BOUND)[0]
            label = f"rq_spline {'x'.join(map(str, shape))} K={K}"
            params = {"shape": list(shape), "bins": K, "device": device}
            out += [
                Case(
                    name=f"{label} fwd",
                    fn=lambda x=x, w=w, h=h, d=d: pygen.ops.rq_spline(x, w, h, d, tail_bound=TAIL_BOUND),
                    baseline=baseline,
                    baseline_fn=lambda x=x, w=w, h=h, d=d: eager_spline(x, w, h, d),
                    params={**params, "direction": "forward"},
                ),
                Case(
                    name=f"{label} inv",
                    fn=lambda y=y, w=w, h=h, d=d: pygen.ops.rq_spline(
                        y, w, h, d, inverse=True, tail_bound=TAIL_BOUND
                    ),
                    baseline=baseline,
                    baseline_fn=lambda y=y, w=w, h=h, d=d: eager_spline(y, w, h, d, inverse=True),
                    params={**params, "direction": "inverse"},
                ),
                Case(
                    name=f"{label} fwd+bwd",
                    fn=lambda x=x, w=w, h=h, d=d: forward_backward(
                        lambda *t: pygen.ops.rq_spline(*t, tail_bound=TAIL_BOUND), x, w, h, d
                    ),
                    baseline=baseline,
                    baseline_fn=lambda x=x, w=w, h=h, d=d: forward_backward(eager_spline, x, w, h, d),
                    params={**params, "direction": "forward+backward"},
                ),
            ]
    return out
