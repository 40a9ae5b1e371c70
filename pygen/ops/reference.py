"""Pure-PyTorch references of pygen's ops: readable, slow, and the tests' oracle.

Words are uint32 values held in int64 tensors (torch has no uint32 arithmetic).
"""

import math

import torch

MASK32 = 0xFFFFFFFF
PHILOX_M0, PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
PHILOX_W0, PHILOX_W1 = 0x9E3779B9, 0xBB67AE85


def _mulhilo(a: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32-bit words of a * m, via 16-bit halves so int64 never overflows."""
    lo = (a & 0xFFFF) * m
    hi = (a >> 16) * m
    low = ((hi & 0xFFFF) << 16) + lo
    return ((hi >> 16) + (low >> 32)) & MASK32, low & MASK32


def philox4x32_10(counter: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """Philox4x32-10 on int64 ``counter [..., 4]`` and ``key [..., 2]`` words."""
    c0, c1, c2, c3 = counter.unbind(-1)
    k0, k1 = key.unbind(-1)
    for r in range(10):
        if r > 0:
            k0, k1 = (k0 + PHILOX_W0) & MASK32, (k1 + PHILOX_W1) & MASK32
        hi0, lo0 = _mulhilo(c0, PHILOX_M0)
        hi1, lo1 = _mulhilo(c2, PHILOX_M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return torch.stack([c0, c1, c2, c3], -1)


def philox_stream(seed: int, offset: int, nblocks: int) -> torch.Tensor:
    """Blocks offset .. offset + nblocks - 1 of stream ``seed`` (unsigned): int64 [nblocks, 4]."""
    n = offset + torch.arange(nblocks, dtype=torch.int64)
    zero = torch.zeros_like(n)
    counter = torch.stack([n & MASK32, n >> 32, zero, zero], -1)
    key = torch.tensor([seed & MASK32, (seed >> 32) & MASK32], dtype=torch.int64).expand(nblocks, 2)
    return philox4x32_10(counter, key)


SIGNIFICAND_BITS = {torch.float32: 24, torch.float64: 53, torch.float16: 11, torch.bfloat16: 8}


def uniform_grid(k: torch.Tensor, p: int) -> torch.Tensor:
    """Bin k of 2^p on (0, 1) as its midpoint rounded toward zero to p significant bits (float64)."""
    return (2 * k + (k < (1 << (p - 1))).long()).double() * 2.0 ** -(p + 1)


def rand(numel: int, seed: int, offset: int, dtype: torch.dtype) -> torch.Tensor:
    """Flat reference of ``pygen.ops.rand``."""
    p = SIGNIFICAND_BITS[dtype]
    per_block = 2 if dtype == torch.float64 else 4
    w = philox_stream(seed, offset, -(-numel // per_block))
    if dtype == torch.float64:
        k = torch.stack([(w[:, 0] << 21) | (w[:, 1] >> 11), (w[:, 2] << 21) | (w[:, 3] >> 11)], -1)
    else:
        k = w >> (32 - p)
    return uniform_grid(k.reshape(-1)[:numel], p).to(dtype)


def randn(numel: int, seed: int, offset: int, dtype: torch.dtype, compute: torch.dtype = torch.float64):
    """Flat reference of ``pygen.ops.randn``: Box-Muller on the kernel's inputs, in ``compute``.

    With compute=float64 it is the oracle; with float32 it is "the same computation by
    PyTorch in float32", the yardstick of the tolerance rule.
    """
    per_block = 2 if dtype == torch.float64 else 4
    w = philox_stream(seed, offset, -(-numel // per_block))
    if dtype == torch.float64:
        u = uniform_grid((w[:, 0] << 21) | (w[:, 1] >> 11), 53).to(compute)
        turns = uniform_grid((w[:, 2] << 21) | (w[:, 3] >> 11), 53).to(compute)
        pairs = [(u, turns)]
    else:
        pairs = []
        for i in (0, 2):
            u = ((w[:, i] >> 1).to(compute) + 0.5) * 2.0**-31
            turns = (((w[:, i + 1] >> 8) * 2 + 1).double() * 2.0**-25).to(compute)
            pairs.append((u, turns))
    out = []
    for u, turns in pairs:
        r = torch.sqrt(-2.0 * torch.log(u))
        angle = 2 * math.pi * turns
        out += [r * torch.cos(angle), r * torch.sin(angle)]
    return torch.stack(out, -1).reshape(-1)[:numel].to(dtype)


def substream_uniforms(seeds: torch.Tensor, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The two 53-bit uniforms of Philox block ``offset`` of substream r, for r < seeds.numel()
    (row r's key is seeds[r]): words 0-1 and words 2-3."""
    rows = seeds.numel()
    r = torch.arange(rows, dtype=torch.int64)
    counter = torch.stack(
        [torch.full_like(r, offset & MASK32), torch.full_like(r, offset >> 32), r & MASK32, r >> 32], -1
    )
    s = seeds.reshape(-1).to(torch.int64)
    key = torch.stack([s & MASK32, (s >> 32) & MASK32], -1)
    w = philox4x32_10(counter, key)
    return uniform_grid((w[:, 0] << 21) | (w[:, 1] >> 11), 53), uniform_grid(
        (w[:, 2] << 21) | (w[:, 3] >> 11), 53
    )


def categorical_uniform(seeds: torch.Tensor, offset: int) -> torch.Tensor:
    """Row r's 53-bit uniform of ``sample_categorical``: Philox block ``offset`` of substream r."""
    return substream_uniforms(seeds, offset)[0]


def sample_categorical(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    seeds: torch.Tensor,
    offset: int,
    top_k: torch.Tensor | None = None,
    top_p: torch.Tensor | None = None,
    min_p: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference of ``pygen.ops.sample_categorical``: float64 probabilities (sorting where
    it is clearest), inverted with the kernel's uniforms. Per-row parameters are tensors
    of shape ``logits.shape[:-1]``; returns (token, logprob) of that shape."""
    rows, vocab = logits.shape[:-1], logits.shape[-1]
    x = logits.reshape(-1, vocab).double()
    n = x.shape[0]
    t = temperature.reshape(-1).double()
    k = top_k.reshape(-1) if top_k is not None else torch.full((n,), vocab)
    p = top_p.reshape(-1).double() if top_p is not None else torch.ones(n, dtype=torch.float64)
    m = min_p.reshape(-1).double() if min_p is not None else torch.zeros(n, dtype=torch.float64)
    u = categorical_uniform(seeds, offset)
    tokens, logprobs = [], []
    for i in range(n):
        if t[i] == 0:
            tokens.append(int(torch.argmax(x[i])))
            logprobs.append(0.0)
            continue
        y = x[i] / t[i]
        keep = torch.ones(vocab, dtype=torch.bool)
        if k[i] < vocab:
            keep &= y >= torch.topk(y, int(k[i])).values[-1]
        if m[i] > 0:
            keep &= y >= y.max() + math.log(m[i])
        w = torch.where(keep, torch.exp(y - y.max()), 0.0)
        if p[i] < 1:
            desc = torch.sort(w, descending=True).values
            cut = desc[int(torch.searchsorted(torch.cumsum(desc, 0), p[i] * w.sum()))]
            w = torch.where(w >= cut, w, 0.0)
        cdf = torch.cumsum(w, 0)
        j = int(torch.searchsorted(cdf, u[i] * cdf[-1], right=True).clamp(max=vocab - 1))
        while w[j] == 0:  # rounding past the last category with weight
            j -= 1
        tokens.append(j)
        logprobs.append(float(torch.log(w[j] / cdf[-1])))
    return torch.tensor(tokens).reshape(rows), torch.tensor(logprobs, dtype=torch.float32).reshape(rows)


def _without_mask(logits: torch.Tensor, mask_id: int) -> torch.Tensor:
    """float64 logits with the mask token's set to -inf (it is never drawn)."""
    y = logits.double().clone()
    y[..., mask_id] = -math.inf
    return y


def _draw_positions(logits, mask_id, temperature, seeds, offset):
    """Every position's token as the masked-diffusion steps draw it (position b * L + l
    uses substream b * L + l of seeds[b]), and both uniforms of its block: [B, L] each."""
    batch, length, vocab = logits.shape
    seeds_pos = seeds.reshape(-1).repeat_interleave(length)
    token, _ = sample_categorical(
        _without_mask(logits, mask_id).reshape(-1, vocab),
        temperature.reshape(-1).double().repeat_interleave(length),
        seeds_pos,
        offset,
    )
    u_token, u_aux = substream_uniforms(seeds_pos, offset)
    return token.reshape(batch, length), u_aux.reshape(batch, length)


def unmask_ancestral(logits, x, mask_id, alpha_t, alpha_s, temperature, seeds, offset) -> torch.Tensor:
    """Reference of ``pygen.ops.unmask_ancestral`` (per-row tensors of shape [B])."""
    token, u_coin = _draw_positions(logits, mask_id, temperature, seeds, offset)
    a_t, a_s = alpha_t.double()[:, None], alpha_s.double()[:, None]
    p = torch.where(a_t < 1, (a_s - a_t) / (1 - a_t), 1.0)
    return torch.where((x == mask_id) & (u_coin < p), token, x)


def unmask_by_confidence(logits, x, mask_id, k, confidence, temperature, seeds, offset):
    """Reference of ``pygen.ops.unmask_by_confidence``: float64 confidences, a stable sort
    of each row's masked positions. Returns (new x, confidence)."""
    token, u_random = _draw_positions(logits, mask_id, temperature, seeds, offset)
    p = torch.softmax(_without_mask(logits, mask_id), -1)
    if confidence == "probability":
        score = p.gather(-1, token[..., None])[..., 0]
    elif confidence == "margin":
        top2 = p.topk(2, -1).values
        score = top2[..., 0] - top2[..., 1]
    else:
        score = u_random
    masked = x == mask_id
    score = torch.where(masked, score, -math.inf)
    out = x.clone()
    for b in range(x.shape[0]):
        order = sorted(torch.nonzero(masked[b])[:, 0].tolist(), key=lambda i: (-float(score[b, i]), i))
        for i in order[: int(k[b])]:
            out[b, i] = token[b, i]
    return out, score


def unmask_first_hitting(logits, x, mask_id, temperature, seeds, offset) -> torch.Tensor:
    """Reference of ``pygen.ops.unmask_first_hitting``: row b uses substream b of seeds[b]."""
    batch, length, vocab = logits.shape
    _, u_position = substream_uniforms(seeds.reshape(-1), offset)
    out = x.clone()
    chosen = []
    for b in range(batch):
        masked = torch.nonzero(x[b] == mask_id)[:, 0]
        n = len(masked)
        chosen.append(int(masked[min(int(u_position[b] * n), n - 1)]) if n else -1)
    rows = torch.stack([logits[b, max(pos, 0)] for b, pos in enumerate(chosen)])
    token, _ = sample_categorical(
        _without_mask(rows, mask_id), temperature.double(), seeds.reshape(-1), offset
    )
    for b, pos in enumerate(chosen):
        if pos >= 0:
            out[b, pos] = token[b]
    return out


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention with an element mask, computed in ``dtype``: ``(out, lse)``.

    q ``[B, Hq, Lq, D]``, k and v ``[B, Hkv, Lk, D]`` (``Hkv`` divides ``Hq``); ``mask``
    bool, broadcastable to ``[B, Hq, Lq, Lk]``, True where a query sees a key. A query
    that sees no key gets output 0 and log-sum-exp -inf (where softmax would give NaN).
    """
    group = q.shape[1] // k.shape[1]
    q, k, v = (t.to(dtype) for t in (q, k, v))
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = (q @ k.transpose(-1, -2)) * scale
    if mask is not None:
        s = s.masked_fill(~mask, -math.inf)
    lse = torch.logsumexp(s, -1)
    p = torch.exp(s - lse[..., None].clamp_min(torch.finfo(dtype).min))
    return (p @ v).nan_to_num(0.0), lse


def solver_update(
    x, coef, *, out=None, uncond=None, history=(), noise=None, threshold_ratio=0.0, threshold_max=1.0
):
    """``pygen.ops.solver_update`` in float64; ``noise`` is the normal tensor itself."""
    f64 = [t.double() if t is not None else None for t in (x, out, uncond, noise)]
    x, out, uncond, noise = f64
    shape = (-1,) + (1,) * (x.dim() - 1)
    col = [coef[:, j].double().reshape(shape) for j in range(coef.shape[1])]
    w, cx, co, a, bp, c = col[:6]
    y = a * x
    pred = None
    if out is not None:
        g = out if uncond is None else uncond + w * (out - uncond)
        pred = cx * x + co * g
        if threshold_ratio:
            s = torch.quantile(pred.flatten(1).abs(), threshold_ratio, dim=1)
            s = s.clamp(1.0, threshold_max).reshape(shape)
            pred = pred.clamp(-s, s) / s
        y = y + bp * pred
    for bh, h in zip(col[6:], history, strict=True):
        y = y + bh * h.double()
    if noise is not None:
        y = y + c * noise
    return y, pred


def affine_coupling(x, shift, raw_scale, scale_fn="exp", clamp=None, inverse=False):
    """``pygen.ops.affine_coupling`` in float64: ``(y, logabsdet)``."""
    x, shift, raw = (t.double() for t in (x, shift, raw_scale))
    if scale_fn == "sigmoid":
        log_scale = torch.nn.functional.logsigmoid(raw + 2)
    else:
        log_scale = raw if clamp is None else clamp * torch.tanh(raw / clamp)
    logdet = log_scale.flatten(1).sum(1)
    if inverse:
        return (x - shift) * torch.exp(-log_scale), -logdet
    return x * torch.exp(log_scale) + shift, logdet


def affine_coupling_layer(
    x, params, active_begin, active, interleaved=True, scale_fn="exp", clamp=None, inverse=False
):
    """``pygen.ops.affine_coupling_layer`` in float64: split, :func:`affine_coupling`,
    concatenate; ``(y, logabsdet)``."""
    x, params = x.double(), params.double()
    if interleaved:
        shift, raw = params[:, 0::2], params[:, 1::2]
    else:
        shift, raw = params[:, :active], params[:, active:]
    before, middle, after = x.split([active_begin, active, x.shape[1] - active_begin - active], 1)
    y, logdet = affine_coupling(middle, shift, raw, scale_fn, clamp, inverse)
    return torch.cat([before, y, after], 1), logdet


def mix_logistic_cdf(x, logits, means, log_scales, dtype=torch.float64):
    """``pygen.ops.mix_logistic_cdf`` forward in ``dtype``, in log space: ``(y, logabsdet)``."""
    x, logits, means, log_scales = (t.to(dtype) for t in (x, logits, means, log_scales))
    log_w = torch.log_softmax(logits, -1)
    z = (x[..., None] - means) * torch.exp(-log_scales)
    log_sig, log_sig_neg = torch.nn.functional.logsigmoid(z), torch.nn.functional.logsigmoid(-z)
    log_F = torch.logsumexp(log_w + log_sig, -1)
    log_G = torch.logsumexp(log_w + log_sig_neg, -1)
    log_f = torch.logsumexp(log_w + log_sig + log_sig_neg - log_scales, -1)
    return log_F - log_G, log_f - log_F - log_G


def mix_logistic_cdf_inverse(y, logits, means, log_scales, iters=200):
    """The inverse by plain bisection in float64 on the provable bracket: ``x``."""
    y, logits, means, log_scales = (t.double() for t in (y, logits, means, log_scales))
    roots = means + y[..., None] * torch.exp(log_scales)
    lo, hi = roots.min(-1).values, roots.max(-1).values
    for _ in range(iters):
        mid = (lo + hi) / 2
        above = mix_logistic_cdf(mid, logits, means, log_scales)[0] > y
        lo, hi = torch.where(above, lo, mid), torch.where(above, mid, hi)
    return (lo + hi) / 2


RQ_MIN_BIN_WIDTH = RQ_MIN_BIN_HEIGHT = RQ_MIN_DERIVATIVE = 1e-3


def rq_spline(x, widths, heights, derivatives, inverse=False, tail_bound=3.0):
    """``pygen.ops.rq_spline`` in ``x``'s dtype, written as nflows'
    ``unconstrained_rational_quadratic_spline`` with ``tails="linear"``: identity outside
    ``[-B, B]``, the boundary derivatives fixed to 1 by padding ``derivatives`` with
    ``log(e^(1 - min_derivative) - 1)`` before the softplus. Differentiable by autograd."""
    inside = (x >= -tail_bound) & (x <= tail_bound)
    outputs = torch.zeros_like(x)
    logabsdet = torch.zeros_like(x)
    constant = math.log(math.exp(1 - RQ_MIN_DERIVATIVE) - 1)
    derivatives = torch.nn.functional.pad(derivatives, pad=(1, 1), value=constant)
    outputs[~inside] = x[~inside]
    outputs[inside], logabsdet[inside] = _rq_spline_interval(
        x[inside], widths[inside], heights[inside], derivatives[inside], inverse, tail_bound
    )
    return outputs, logabsdet


def rq_spline_coupling_layer(x, params, active_begin, active, inverse=False, tail_bound=3.0):
    """``pygen.ops.rq_spline_coupling_layer`` in ``x``'s dtype: split, :func:`rq_spline` on
    the parameters viewed ``[B, active, 3K - 1, ...]``, concatenate; ``(y, logabsdet [B])``
    with the log-det summed in float64."""
    P = params.shape[1] // active
    K = (P + 1) // 3
    p = params.view(params.shape[0], active, P, *params.shape[2:]).movedim(2, -1)
    before, middle, after = x.split([active_begin, active, x.shape[1] - active_begin - active], 1)
    y, lad = rq_spline(middle, p[..., :K], p[..., K : 2 * K], p[..., 2 * K :], inverse, tail_bound)
    return torch.cat([before, y, after], 1), lad.double().flatten(1).sum(1)


def _rq_knots(unnormalized, min_size, bound):
    """Knots ``[..., K + 1]`` partitioning [-bound, bound] into bins of at least ``min_size``
    of it, and the bin sizes."""
    num_bins = unnormalized.shape[-1]
    sizes = torch.softmax(unnormalized, dim=-1)
    sizes = min_size + (1 - min_size * num_bins) * sizes
    knots = torch.nn.functional.pad(torch.cumsum(sizes, dim=-1), pad=(1, 0), value=0.0)
    knots = 2 * bound * knots - bound
    knots[..., 0] = -bound
    knots[..., -1] = bound
    return knots, knots[..., 1:] - knots[..., :-1]


def _rq_spline_interval(inputs, widths, heights, derivatives, inverse, bound):
    cumwidths, widths = _rq_knots(widths, RQ_MIN_BIN_WIDTH, bound)
    cumheights, heights = _rq_knots(heights, RQ_MIN_BIN_HEIGHT, bound)
    derivatives = RQ_MIN_DERIVATIVE + torch.nn.functional.softplus(derivatives)

    # The bin: how many interior knots are <= the input (nflows' searchsorted, whose
    # epsilon on the last knot only keeps the input at +bound in the last bin).
    knots = cumheights if inverse else cumwidths
    bin_idx = torch.sum(inputs[..., None] >= knots[..., 1:-1], dim=-1, keepdim=True)

    def at(t):
        return t.gather(-1, bin_idx)[..., 0]

    input_cumwidths, input_bin_widths = at(cumwidths), at(widths)
    input_cumheights, input_heights = at(cumheights), at(heights)
    input_delta = at(heights / widths)
    input_derivatives, input_derivatives_plus_one = at(derivatives), at(derivatives[..., 1:])
    curvature = input_derivatives + input_derivatives_plus_one - 2 * input_delta

    if inverse:
        a = (inputs - input_cumheights) * curvature + input_heights * (input_delta - input_derivatives)
        b = input_heights * input_derivatives - (inputs - input_cumheights) * curvature
        c = -input_delta * (inputs - input_cumheights)
        discriminant = (b.pow(2) - 4 * a * c).clamp_min(0)
        theta = (2 * c) / (-b - torch.sqrt(discriminant))
        outputs = theta * input_bin_widths + input_cumwidths
    else:
        theta = (inputs - input_cumwidths) / input_bin_widths
        numerator = input_heights * (input_delta * theta.pow(2) + input_derivatives * theta * (1 - theta))
        outputs = input_cumheights + numerator / (input_delta + curvature * theta * (1 - theta))

    denominator = input_delta + curvature * theta * (1 - theta)
    derivative_numerator = input_delta.pow(2) * (
        input_derivatives_plus_one * theta.pow(2)
        + 2 * input_delta * theta * (1 - theta)
        + input_derivatives * (1 - theta).pow(2)
    )
    logabsdet = torch.log(derivative_numerator) - 2 * torch.log(denominator)
    return outputs, -logabsdet if inverse else logabsdet
