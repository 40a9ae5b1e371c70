"""Normalizing-flow coupling ops against the same arithmetic in PyTorch eager.

affine_coupling: ``y = x * exp(log_s) + shift`` and ``log_s.sum`` as nflows / normflows /
FrEIA write it (forward, inverse, forward + backward). mix_logistic_cdf: Flow++'s
logistic-mixture CDF in log space (forward), and its inverse against Flow++'s own
bisection (the PyTorch port's ``mixture_inv_cdf``: 100 halvings of the bracket
``means -+ 20 * sum(scales)`` at most, stopping when no element moves by more than 1e-10).

TarFlow sampling: the blocks of a digits TarFlow inverted by GS-Jacobi (pygen's plan:
groups and initialization per block from ``groups="auto"``) against the exact sequential
inverse with a KV cache, at the same output error: the tolerance is set so that the
largest difference to the sequential result stays below 1e-4 (fp32), and each row
records it with the sweeps per block and the work in sequential-inverse units. The
model is a fixed-seed initialization whose zero-initialized output heads and position
embeddings are drawn at the scales of a trained digits TarFlow (output weights std
0.04, biases 0.03, positions 0.17): its blocks need as many Jacobi sweeps as the trained
one's or more (16 tokens: 11-14 of 15 against the trained 8/9/11/15), so the rows do
not flatter GS-Jacobi. 16 tokens is the digits model (2x2 patches); 64 tokens (1x1
patches) the longer sequences TarFlow uses on larger images.

rq_spline: forward, inverse and forward + backward against normflows'
unconstrained_rational_quadratic_spline (tails="linear", the code of Neural Spline Flows)
when normflows is installed, else against pygen's eager reference of the same formulas.

Coupling layers (pygen.nn AffineCoupling, SplineCoupling K=8), forward + backward, 1k to 1M
elements, against normflows' layers around the same conditioner module (rows named
"transform": the conditioner's output given, 1k to 1M; "layer": with a small conv
conditioner, 1k to 256k).
"""

import warnings

import torch
import torch.nn.functional as F

import pygen
from pygen.bench import Case
from pygen.models.tarflow import TarFlow, TarFlowConfig
from pygen.nn import AffineCoupling, SplineCoupling
from pygen.ops import reference

try:
    from normflows.utils.splines import unconstrained_rational_quadratic_spline as _normflows_spline
except ImportError:
    _normflows_spline = None

TAIL_BOUND = 3.0


def eager_affine(x, shift, raw, inverse=False):
    if inverse:
        return (x - shift) * torch.exp(-raw), -raw.flatten(1).sum(1)
    return x * torch.exp(raw) + shift, raw.flatten(1).sum(1)


def eager_mix_forward(x, logits, means, log_scales):
    log_w = torch.log_softmax(logits, -1)
    z = (x.unsqueeze(-1) - means) * torch.exp(-log_scales)
    log_sig, log_sig_neg = F.logsigmoid(z), F.logsigmoid(-z)
    log_F = torch.logsumexp(log_w + log_sig, -1)
    log_G = torch.logsumexp(log_w + log_sig_neg, -1)
    log_f = torch.logsumexp(log_w + log_sig + log_sig_neg - log_scales, -1)
    return log_F - log_G, log_f - log_F - log_G


def flowpp_inverse(y, logits, means, log_scales, eps=1e-10, max_iters=100):
    """Flow++'s inverse (github.com/chrischute/flowplusplus, mixture_inv_cdf) on sigmoid(y)."""
    u = torch.sigmoid(y)
    log_w = torch.log_softmax(logits, -1)

    def cdf(v):
        z = (v.unsqueeze(-1) - means) * torch.exp(-log_scales)
        return torch.logsumexp(log_w + F.logsigmoid(z), -1).exp()

    x = torch.zeros_like(u)
    max_scales = torch.exp(log_scales).sum(-1, keepdim=True)
    lb = (means - 20 * max_scales).min(-1).values
    ub = (means + 20 * max_scales).max(-1).values
    diff, i = float("inf"), 0
    while diff > eps and i < max_iters:
        gt = (cdf(x) > u).to(u.dtype)
        lt = 1 - gt
        new_x = gt * (x + lb) / 2 + lt * (x + ub) / 2
        lb, ub = gt * lb + lt * x, gt * x + lt * ub
        diff = (new_x - x).abs().max().item()
        x = new_x
        i += 1
    return x


def _affine_cases(device, quick):
    out = []
    for shape in [(256, 3, 32, 32)] if quick else [(256, 3, 32, 32), (64, 4096)]:
        x, shift, raw = (torch.randn(shape, device=device) for _ in range(3))
        label = "x".join(map(str, shape))
        for inverse in (False, True):
            out.append(
                Case(
                    name=f"affine {'inverse' if inverse else 'forward'} {label}",
                    fn=lambda x=x, s=shift, r=raw, inv=inverse: pygen.ops.affine_coupling(
                        x, s, r, inverse=inv
                    ),
                    baseline="eager (nflows)",
                    baseline_fn=lambda x=x, s=shift, r=raw, inv=inverse: eager_affine(x, s, r, inv),
                    params={"shape": list(shape), "inverse": inverse, "device": device},
                )
            )
        leaves = [t.clone().requires_grad_() for t in (x, shift, raw)]
        gy, gl = torch.randn(shape, device=device), torch.randn(shape[0], device=device)

        def fwd_bwd(f, leaves=leaves, gy=gy, gl=gl):
            y, ld = f(*leaves)
            return torch.autograd.grad((y, ld), leaves, (gy, gl))

        out.append(
            Case(
                name=f"affine fwd+bwd {label}",
                fn=lambda fb=fwd_bwd: fb(pygen.ops.affine_coupling),
                baseline="eager (nflows)",
                baseline_fn=lambda fb=fwd_bwd: fb(eager_affine),
                params={"shape": list(shape), "backward": True, "device": device},
            )
        )
    return out


def _mix_cases(device, quick):
    out = []
    shape = (4, 3, 32, 32) if quick else (16, 3, 32, 32)
    for k in (4, 32):
        x = torch.randn(shape, device=device) * 2
        logits, means = torch.randn(*shape, k, device=device), torch.randn(*shape, k, device=device)
        log_scales = torch.randn(*shape, k, device=device) * 0.5
        y = eager_mix_forward(x, logits, means, log_scales)[0]
        params = {"shape": list(shape), "k": k, "device": device}
        out.append(
            Case(
                name=f"mixture forward K={k} {'x'.join(map(str, shape))}",
                fn=lambda x=x, a=(logits, means, log_scales): pygen.ops.mix_logistic_cdf(x, *a),
                baseline="eager (log space)",
                baseline_fn=lambda x=x, a=(logits, means, log_scales): eager_mix_forward(x, *a),
                params=params,
            )
        )
        out.append(
            Case(
                name=f"mixture inverse K={k} {'x'.join(map(str, shape))}",
                fn=lambda y=y, a=(logits, means, log_scales): pygen.ops.mix_logistic_cdf(y, *a, inverse=True),
                baseline="eager (Flow++ bisection)",
                baseline_fn=lambda y=y, a=(logits, means, log_scales): flowpp_inverse(y, *a),
                params={**params, "inverse": True},
            )
        )
    return out


def eager_spline(x, w, h, d, inverse=False):
    if _normflows_spline is None:
        return reference.rq_spline(x, w, h, d, inverse=inverse, tail_bound=TAIL_BOUND)
    return _normflows_spline(x, w, h, d, inverse=inverse, tails="linear", tail_bound=TAIL_BOUND)


def forward_backward(spline, x, w, h, d):
    tensors = [t.detach().requires_grad_() for t in (x, w, h, d)]
    y, lad = spline(*tensors)
    return torch.autograd.grad(y.sum() + lad.sum(), tensors)


def _spline_cases(device, quick):
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


TARFLOW_TOL = 1e-5  # per block: the four blocks' output stays within 1e-4 of sequential


def trained_like_tarflow(patch: int, device: str) -> TarFlow:
    """A digits TarFlow, fixed seed, its output heads and positions at trained scales."""
    torch.manual_seed(0)
    model = TarFlow(TarFlowConfig(patch=patch)).to(device).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for block in model.flow_blocks():
            for p, std in ((block.out.weight, 0.04), (block.out.bias, 0.03), (block.pos, 0.17)):
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def invert_blocks(model: TarFlow, z: torch.Tensor, plans=None):
    """The blocks inverted last to first: sequentially, or by GS-Jacobi with ``plans``;
    returns the tokens and each block's stats (first block first)."""
    stats = []
    for i, block in reversed(list(enumerate(model.flow_blocks()))):
        if plans is None:
            z = block.inverse(z)
        else:
            z, s = block.inverse_gs_jacobi(z, groups=plans[i].groups, tol=TARFLOW_TOL, init=plans[i].init)
            stats.insert(0, s)
    return z, stats


def _tarflow_cases(device, quick):
    out = []
    shapes = [(1, 1), (2, 64)] if quick else [(2, 1), (2, 64), (1, 1), (1, 64)]
    for patch, batch in shapes:
        model = trained_like_tarflow(patch, device)
        g = torch.Generator().manual_seed(2)
        z = torch.randn((batch, *model.flow.event_shape), generator=g).to(device)
        plans = model.plan_gs_jacobi(TARFLOW_TOL, batch=batch)
        exact, _ = invert_blocks(model, z)
        approx, stats = invert_blocks(model, z, plans)
        steps = model.flow_blocks()[0].tokens - 1
        out.append(
            Case(
                name=f"tarflow sample L={steps + 1} B={batch} gs-jacobi",
                fn=lambda m=model, z=z, p=plans: invert_blocks(m, z, p),
                baseline="sequential (KV cache)",
                baseline_fn=lambda m=model, z=z: invert_blocks(m, z),
                params={
                    "tokens": steps + 1,
                    "batch": batch,
                    "tol": TARFLOW_TOL,
                    "max_abs_err": (approx - exact).abs().max().item(),
                    "groups": [p.groups for p in plans],
                    "init": [p.init for p in plans],
                    "crm": [round(p.crm, 3) for p in plans],
                    "sweeps": [s.iterations for s in stats],
                    "calls_vs_sequential": sum(s.iterations for s in stats) / (len(stats) * steps),
                    "nfe_equivalents": sum(s.positions for s in stats) / steps,
                    "device": device,
                },
            )
        )
    return out


# Coupling layers, forward + backward of loss = z.sum() + logdet.sum() into the input and
# the conditioner's parameters, against normflows' layers around the same conditioner
# module (normflows' AffineCouplingBlock; for the spline its PiecewiseRationalQuadraticCoupling,
# nflows' layer). "transform" rows give both layers the conditioner's output as a leaf
# tensor (the split, transform, log-det, merge and their backward: what the kernels
# replace); "layer" rows run the whole layer with a small conditioner in front.
LAYER_SIZES = {"1k": (4, 4, 8, 8), "16k": (16, 4, 16, 16), "256k": (64, 4, 32, 32), "1M": (256, 4, 32, 32)}
LAYER_BINS = 8
# nflows' layer warns on every call when its conditioner has no hidden_features attribute
# to scale the softmax inputs by; here the conditioner is pygen's, which does not need it.
warnings.filterwarnings("ignore", message="Inputs to the softmax are not scaled down")


class _Given(torch.nn.Module):
    """A conditioner that returns a fixed output (a leaf the backward reaches)."""

    def __init__(self, out: torch.Tensor):
        super().__init__()
        self.out = out

    def forward(self, x, context=None):
        return self.out


class _Context(torch.nn.Module):
    """nflows' conditioners take (x, context)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x, context=None):
        return self.net(x)


def _layer_pair(kind, shape, device):
    """A pygen coupling layer and normflows' layer around the same conditioner."""
    import normflows

    channels = shape[1]
    passive = channels // 2
    if kind == "affine":
        ours = AffineCoupling(channels, 8, scale_fn="exp", clamp=None).to(device)
        return ours, normflows.flows.AffineCouplingBlock(ours.net, scale_map="exp").to(device)
    ours = SplineCoupling(channels, 8, bins=LAYER_BINS, tail_bound=TAIL_BOUND).to(device)
    mask = torch.tensor([0] * passive + [1] * (channels - passive))
    theirs = normflows.flows.neural_spline.coupling.PiecewiseRationalQuadraticCoupling(
        mask, lambda i, o: _Context(ours.net), num_bins=LAYER_BINS, tails="linear", tail_bound=TAIL_BOUND
    )
    return ours, theirs.to(device)


def _layer_fwd_bwd(layer, x, leaves):
    z, logdet = layer(x)
    return torch.autograd.grad(z.sum() + logdet.sum(), [x, *leaves])


def _layer_cases(device, quick):
    try:
        import normflows  # noqa: F401
    except ImportError:
        return []
    sizes = ("1k", "16k") if quick else tuple(LAYER_SIZES)
    out = []
    for kind in ("affine", "spline"):
        for size in sizes:
            shape = LAYER_SIZES[size]
            g = torch.Generator().manual_seed(0)
            x = (torch.randn(shape, generator=g) * 2).to(device).requires_grad_()
            # At 1M the whole layer's time is the conditioner's, and its rows would take
            # half of the family's two minutes.
            for what in ("transform", "layer") if size != "1M" else ("transform",):
                ours, theirs = _layer_pair(kind, shape, device)
                if what == "transform":
                    # The conditioner's output, away from the identity it starts as.
                    h = ours.net(x[:, : shape[1] // 2]).detach()
                    h = (h + 0.5 * torch.randn(h.shape, generator=g).to(device)).requires_grad_()
                    ours.net = theirs_net = _Given(h)
                    if kind == "affine":
                        theirs.flows[1].param_map = theirs_net
                    else:
                        theirs.transform_net = theirs_net
                    leaves = [h]
                else:
                    leaves = list(ours.net.parameters())
                out.append(
                    Case(
                        name=f"{kind} {what} fwd+bwd {size} ({'x'.join(map(str, shape))})",
                        fn=lambda m=ours, x=x, p=leaves: _layer_fwd_bwd(m, x, p),
                        baseline="normflows",
                        baseline_fn=lambda m=theirs, x=x, p=leaves: _layer_fwd_bwd(m, x, p),
                        params={"shape": list(shape), "layer": kind, "what": what, "device": device},
                    )
                )
    return out


def cases(device: str, quick: bool = False) -> list[Case]:
    return (
        _affine_cases(device, quick)
        + _mix_cases(device, quick)
        + _spline_cases(device, quick)
        + _tarflow_cases(device, quick)
        + _layer_cases(device, quick)
    )
