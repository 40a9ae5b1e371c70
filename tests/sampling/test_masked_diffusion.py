"""The masked-diffusion steps against their float64 references, statistics, the
sampling loops with RADD caching, and bad inputs."""

import math

import pytest
import torch

import pygen
from pygen.ops import masked_diffusion as md
from pygen.ops import reference
from tests.helpers import DEVICES, chi2_threshold, debug_checks, opcheck

# Shapes [B, L, V] with mask ids at either end, inside and at a chunk boundary (512).
SHAPES = [((1, 1, 2), 0), ((3, 17, 37), 5), ((2, 9, 1537), 512), ((4, 13, 600), 599), ((2, 40, 64), 63)]
# A two-sided normal tail beyond this many sigmas has probability < 1e-6.
Z_1E6 = 5.0


def masked_input(shape, mask_id, fraction=0.6, dtype=torch.float32):
    batch, length, vocab = shape
    logits = (torch.randn(shape) * 3).to(dtype)
    x = torch.randint(0, vocab, (batch, length))
    x[torch.rand(batch, length) < fraction] = mask_id
    return logits, x


def rows(value, batch, dtype=torch.float32):
    return torch.full((batch,), value, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape,mask_id", SHAPES)
@pytest.mark.parametrize("temperature", [1.0, 0.6, 0.0])
def test_ancestral_matches_reference(device, torch_seed, dtype, shape, mask_id, temperature):
    logits, x = masked_input(shape, mask_id, dtype=dtype)
    batch = shape[0]
    alpha_t, alpha_s = torch.linspace(0.0, 0.5, batch).double(), torch.linspace(0.3, 1.0, batch).double()
    seeds = torch.arange(batch, dtype=torch.int64) * 7919 + 3
    out = pygen.ops.unmask_ancestral(
        logits.to(device),
        x.to(device),
        mask_id,
        alpha_t.to(device),
        alpha_s.to(device),
        temperature=temperature,
        seed=seeds.to(device),
        offset=5,
    ).cpu()
    ref = reference.unmask_ancestral(
        logits.float(), x, mask_id, alpha_t, alpha_s, rows(temperature, batch), seeds, 5
    )
    assert out.dtype == torch.int64 and out.shape == x.shape
    # float32 weights move the token boundaries by ~1e-7 relative: a rare mismatch.
    assert (out != ref).sum() <= 1
    assert torch.equal(out[x != mask_id], x[x != mask_id])


@pytest.mark.parametrize("confidence", ["probability", "margin", "random"])
@pytest.mark.parametrize("shape,mask_id", SHAPES)
@pytest.mark.parametrize("temperature", [1.0, 0.6, 0.0])
def test_by_confidence_matches_reference(device, torch_seed, confidence, shape, mask_id, temperature):
    logits, x = masked_input(shape, mask_id)
    batch, length, _ = shape
    k = torch.randint(0, length + 1, (batch,))
    out, score = pygen.ops.unmask_by_confidence(
        logits.to(device),
        x.to(device),
        mask_id,
        k.to(device),
        confidence=confidence,
        temperature=temperature,
        seed=99,
        offset=2,
        return_confidence=True,
    )
    out, score = out.cpu(), score.cpu()
    ref, ref_score = reference.unmask_by_confidence(
        logits, x, mask_id, k, confidence, rows(temperature, batch), torch.full((batch,), 99), 2
    )
    masked = x == mask_id
    assert (out != ref).sum() <= 1
    assert torch.equal(out[~masked], x[~masked]) and (score[~masked] == -math.inf).all()
    torch.testing.assert_close(score[masked], ref_score[masked].float(), rtol=1e-5, atol=1e-6)
    unmasked_now = (masked & (out != mask_id)).sum(-1)
    assert torch.equal(unmasked_now, torch.minimum(k, masked.sum(-1)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape,mask_id", SHAPES)
@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_first_hitting_matches_reference(device, torch_seed, dtype, shape, mask_id, temperature):
    logits, x = masked_input(shape, mask_id, dtype=dtype)
    x[0] = torch.where(x[0] == mask_id, 1 if mask_id == 0 else 0, x[0])  # a row with nothing masked
    batch = shape[0]
    seeds = torch.arange(batch, dtype=torch.int64) + 40
    out = pygen.ops.unmask_first_hitting(
        logits.to(device), x.to(device), mask_id, temperature=temperature, seed=seeds.to(device), offset=9
    ).cpu()
    ref = reference.unmask_first_hitting(logits.float(), x, mask_id, rows(temperature, batch), seeds, 9)
    assert (out != ref).sum() <= 1
    changed = (out != x).sum(-1)
    assert changed[0] == 0 and torch.equal(changed, ((x == mask_id).sum(-1) > 0).long())


def test_never_the_mask_token(device):
    # The mask token's logit dominates; it must still never be drawn.
    batch, length, vocab, mask_id = 4, 256, 8, 6
    logits = torch.zeros(batch, length, vocab)
    logits[..., mask_id] = 80.0
    x = torch.full((batch, length), mask_id)
    logits, x = logits.to(device), x.to(device)
    for temperature in (1.0, 0.0, 5.0):
        out = pygen.ops.unmask_ancestral(logits, x, mask_id, 0.0, 1.0, temperature=temperature, seed=1)
        assert (out != mask_id).all()
        out = pygen.ops.unmask_by_confidence(logits, x, mask_id, length, temperature=temperature, seed=1)
        assert (out != mask_id).all()
        out = pygen.ops.unmask_first_hitting(logits, x, mask_id, temperature=temperature, seed=1)
        assert ((out != mask_id).sum(-1) == 1).all()


def test_unmasked_positions_are_not_read(device):
    logits = torch.randn(2, 6, 10)
    x = torch.tensor([[3, 9, 9, 1, 9, 0], [9, 9, 2, 2, 2, 9]])
    logits[x != 9] = math.nan  # would raise if read
    logits, x = logits.to(device), x.to(device)
    pygen.ops.unmask_ancestral(logits, x, 9, 0.2, 0.7, seed=0)
    pygen.ops.unmask_by_confidence(logits, x, 9, 2, seed=0)
    pygen.ops.unmask_by_confidence(logits, x, 9, 2, confidence="margin", seed=0)


# A NaN with the sign bit set: the scan's order keys put it below -inf, not above +inf.
NEGATIVE_NAN = torch.tensor([-(1 << 22)], dtype=torch.int32).view(torch.float32).item()


@pytest.mark.parametrize("bad", [math.nan, NEGATIVE_NAN, math.inf])
@pytest.mark.parametrize("at", [0, 20, 36])  # first, the mask token, last (past the 16-lane groups)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_scan_flags_nan_of_either_sign_and_inf(device, bad, at, dtype):
    logits = torch.zeros(2, 3, 37)
    logits[1, 2, at] = bad
    logits = logits.to(device, dtype)
    x = torch.full((2, 3), 20, device=device)
    match = r"NaN or \+inf \(row 1, position 2\)"
    with debug_checks(device != "cpu"):
        with pytest.raises(ValueError, match=match):  # alpha_s = alpha_t: the check alone
            pygen.ops.unmask_ancestral(logits, x, 20, 0.5, 0.5, seed=0)
        with pytest.raises(ValueError, match=match):
            pygen.ops.unmask_by_confidence(logits, x, 20, 1, confidence="margin", seed=0)


def test_margin_of_tied_and_signed_zero_maxima(device):
    # Position 0: +0 and -0 tie for the maximum; 1: a tied maximum of 2; 2: one token
    # besides the mask (no second: margin 1); 3: an ordinary top two.
    logits = torch.full((1, 4, 6), -math.inf)
    logits[0, 0, :5] = torch.tensor([-0.0, 0.0, -0.0, -1.0, -math.inf])
    logits[0, 1, :5] = torch.tensor([1.0, 2.0, -3.0, 2.0, 0.5])
    logits[0, 2, 3] = 4.0
    logits[0, 3, :5] = torch.tensor([0.0, 1.0, 3.0, 2.0, 0.0])
    logits[..., 5] = 9.0  # the mask token's logit, excluded
    x = torch.full((1, 4), 5)
    _, margin = pygen.ops.unmask_by_confidence(
        logits.to(device), x.to(device), 5, 0, confidence="margin", seed=0, return_confidence=True
    )
    z3 = torch.tensor([0.0, 1.0, 3.0, 2.0, 0.0]).exp().sum()
    expect = torch.tensor([0.0, 0.0, 1.0, ((math.exp(3) - math.exp(2)) / z3).item()])
    torch.testing.assert_close(margin.cpu()[0], expect, rtol=1e-6, atol=0)


def chi_square_ok(counts: torch.Tensor, p: torch.Tensor) -> bool:
    n = counts.sum()
    support = p > 0
    assert (counts[~support] == 0).all()
    chi2 = ((counts[support] - n * p[support]) ** 2 / (n * p[support])).sum().item()
    return chi2 < chi2_threshold(max(int(support.sum()) - 1, 1))


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_ancestral_chi_square(device, temperature):
    # Every position unmasks (alpha_s = 1): 2^18 draws from one softmax without the mask.
    vocab, mask_id = 16, 3
    row = torch.linspace(-3, 2, vocab)
    logits = row.expand(64, 4096, vocab).to(device)
    x = torch.full((64, 4096), mask_id, device=device)
    out = pygen.ops.unmask_ancestral(logits, x, mask_id, 0.25, 1.0, temperature=temperature, seed=2024).cpu()
    y = row.double() / temperature
    y[mask_id] = -math.inf
    assert chi_square_ok(torch.bincount(out.reshape(-1), minlength=vocab).double(), torch.softmax(y, 0))


@pytest.mark.parametrize("alpha_t,alpha_s", [(0.0, 0.01), (0.3, 0.65), (0.9, 0.99)])
def test_ancestral_unmask_rate(device, alpha_t, alpha_s):
    # Unmasked count of n masked positions: Binomial(n, (alpha_s - alpha_t) / (1 - alpha_t)).
    batch, length, mask_id = 8, 32768, 0
    logits = torch.zeros(1, 1, 4, device=device).expand(batch, length, 4)
    x = torch.full((batch, length), mask_id, device=device)
    x[:, ::3] = 2  # unmasked positions stay as they are
    out = pygen.ops.unmask_ancestral(logits, x, mask_id, alpha_t, alpha_s, seed=5).cpu()
    x = x.cpu()
    assert torch.equal(out[x != mask_id], x[x != mask_id])
    n = int((x == mask_id).sum())
    p = (alpha_s - alpha_t) / (1 - alpha_t)
    unmasked = int(((x == mask_id) & (out != mask_id)).sum())
    assert abs(unmasked - n * p) < Z_1E6 * math.sqrt(n * p * (1 - p))


def test_first_hitting_chi_square(device):
    # Rows with the same 5 masked positions: the position is uniform, its token softmax.
    batch, length, vocab, mask_id = 1 << 16, 12, 6, 5
    x = torch.randint(0, mask_id, (length,))
    masked = torch.tensor([0, 3, 4, 8, 11])
    x[masked] = mask_id
    row = torch.tensor([0.5, -1.0, 2.0, 0.0, -3.0, 9.0])
    logits = row.expand(batch, length, vocab).to(device)
    out = pygen.ops.unmask_first_hitting(logits, x.expand(batch, length).to(device), mask_id, seed=31).cpu()
    changed = out != x
    assert (changed.sum(-1) == 1).all()
    position = changed.long().argmax(-1)
    p_position = torch.zeros(length, dtype=torch.float64)
    p_position[masked] = 0.2
    assert chi_square_ok(torch.bincount(position, minlength=length).double(), p_position)
    y = row.double()
    y[mask_id] = -math.inf
    token = out[torch.arange(batch), position]
    assert chi_square_ok(torch.bincount(token, minlength=vocab).double(), torch.softmax(y, 0))


def test_random_confidence_chooses_uniformly(device):
    # k = 1 of 7 masked positions with random confidence: a uniform choice.
    batch, length, mask_id = 1 << 16, 10, 0
    x = torch.full((length,), 1)
    masked = torch.tensor([0, 1, 2, 5, 6, 8, 9])
    x[masked] = mask_id
    logits = torch.randn(1, length, 3).expand(batch, length, 3).to(device)
    out = pygen.ops.unmask_by_confidence(
        logits, x.expand(batch, length).to(device), mask_id, 1, confidence="random", seed=8
    ).cpu()
    changed = out != x
    assert (changed.sum(-1) == 1).all()
    p = torch.zeros(length, dtype=torch.float64)
    p[masked] = 1 / len(masked)
    assert chi_square_ok(torch.bincount(changed.long().argmax(-1), minlength=length).double(), p)


def test_greedy_confidence_keeps_the_surest(device):
    # Greedy: each masked position's candidate is its argmax; the k most peaked win.
    vocab, mask_id = 5, 4
    peaks = torch.tensor([1.0, 4.0, 2.0, 8.0, 3.0, 0.5])
    logits = torch.zeros(1, 6, vocab)
    logits[0, torch.arange(6), torch.arange(6) % 4] = peaks
    x = torch.full((1, 6), mask_id)
    out = pygen.ops.unmask_by_confidence(logits.to(device), x.to(device), mask_id, 3, temperature=0.0, seed=0)
    expect = torch.full((6,), mask_id)
    for position in (3, 1, 4):
        expect[position] = position % 4
    assert out.cpu()[0].tolist() == expect.tolist()


def test_tiny_temperature_is_greedy(device):
    # logits / temperature overflows float32: each position takes its maximum (never the mask's).
    mask_id = 4
    logits = torch.tensor([[[1e10, 3e10, -3e38, 0.0, 5e10], [-1e30, -3e30, -1e30, -2e30, 0.0]]]).to(device)
    x = torch.full((1, 2), mask_id, device=device)
    out = pygen.ops.unmask_by_confidence(logits, x, mask_id, 2, temperature=1e-30, seed=0)
    assert out.cpu()[0].tolist() == [1, 0]
    out = pygen.ops.unmask_ancestral(logits, x, mask_id, 0.0, 1.0, temperature=1e-45, seed=0)
    assert out.cpu()[0].tolist() == [1, 0]


def test_same_result_for_any_thread_count(torch_seed):
    logits, x = masked_input((6, 64, 700), 7)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(
                (
                    pygen.ops.unmask_ancestral(logits, x, 7, 0.2, 0.5, seed=4),
                    *pygen.ops.unmask_by_confidence(logits, x, 7, 9, seed=4, return_confidence=True),
                    pygen.ops.unmask_first_hitting(logits, x, 7, seed=4),
                )
            )
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_offsets_and_rows_draw_independently():
    logits = torch.zeros(4, 1024, 64)
    x = torch.full((4, 1024), 0)
    a = pygen.ops.unmask_ancestral(logits, x, 0, 0.0, 1.0, seed=1)
    b = pygen.ops.unmask_ancestral(logits, x, 0, 0.0, 1.0, seed=1, offset=1)
    assert (a == b).float().mean() < 0.05 and (a[0] == a[1]).float().mean() < 0.05
    assert torch.equal(a, pygen.ops.unmask_ancestral(logits, x, 0, 0.0, 1.0, seed=1))


@pytest.mark.skipif("cuda" not in DEVICES, reason="needs a GPU and a CUDA build")
def test_cpu_and_cuda_agree(torch_seed):
    logits, x = masked_input((8, 128, 3001), 100)
    for confidence in ("probability", "margin", "random"):
        cpu = pygen.ops.unmask_by_confidence(
            logits, x, 100, 50, confidence=confidence, seed=3, return_confidence=True
        )
        gpu = pygen.ops.unmask_by_confidence(
            logits.cuda(), x.cuda(), 100, 50, confidence=confidence, seed=3, return_confidence=True
        )
        assert (cpu[0] != gpu[0].cpu()).sum() <= 1
        torch.testing.assert_close(cpu[1], gpu[1].cpu(), rtol=1e-6, atol=1e-7)
    cpu = pygen.ops.unmask_ancestral(logits, x, 100, 0.1, 0.4, temperature=0.8, seed=3)
    assert (
        cpu
        != pygen.ops.unmask_ancestral(logits.cuda(), x.cuda(), 100, 0.1, 0.4, temperature=0.8, seed=3).cpu()
    ).sum() <= 1
    cpu = pygen.ops.unmask_first_hitting(logits, x, 100, seed=3)
    assert (cpu != pygen.ops.unmask_first_hitting(logits.cuda(), x.cuda(), 100, seed=3).cpu()).sum() <= 1


@pytest.mark.skipif("cuda" not in DEVICES, reason="needs a GPU and a CUDA build")
def test_more_positions_than_a_grid_holds_raise():
    # A thread block per position: 2^31 positions pass gridDim.x's 2^31 - 1 (and 2^32
    # would wrap to a partial step). Expanded inputs: the check comes before any copy.
    logits = torch.zeros(1, 1, 2, device="cuda").expand(1 << 16, 1 << 15, 2)
    x = torch.zeros(1, 1, dtype=torch.int64, device="cuda").expand(1 << 16, 1 << 15)
    match = r"at most 2\^31 - 1 positions \(batch \* length\) on CUDA, got 2147483648"
    with pytest.raises(ValueError, match=match):
        pygen.ops.unmask_ancestral(logits, x, 0, 0.0, 1.0, seed=0)
    with pytest.raises(ValueError, match=match):
        pygen.ops.unmask_by_confidence(logits, x, 0, 1, seed=0)


def test_opcheck(device):
    logits, x = masked_input((3, 5, 11), 2)
    logits, x = logits.to(device), x.to(device)

    def per_row(value, dtype):
        return torch.full((3,), value, dtype=dtype, device=device)

    temperature, seed = per_row(0.9, torch.float32), per_row(6, torch.int64)
    alpha_t, alpha_s = per_row(0.2, torch.float64), per_row(0.6, torch.float64)
    opcheck(torch.ops.pygen.unmask_ancestral.default, (logits, x, 2, alpha_t, alpha_s, temperature, seed, 1))
    k = per_row(2, torch.int64)
    for confidence in ("probability", "margin", "random"):
        opcheck(
            torch.ops.pygen.unmask_by_confidence.default, (logits, x, 2, k, confidence, temperature, seed, 1)
        )
    opcheck(torch.ops.pygen.unmask_first_hitting.default, (logits, x, 2, temperature, seed, 1))


def test_compile_fullgraph():
    logits, x = masked_input((2, 7, 9), 1)

    def f(logits, x):
        y = pygen.ops.unmask_ancestral(logits * 2, x, 1, 0.1, 0.5, seed=3)
        return pygen.ops.unmask_by_confidence(logits, y, 1, 2, seed=3, offset=1)

    assert torch.equal(torch.compile(f, fullgraph=True, backend="aot_eager")(logits, x), f(logits, x))


def test_first_hitting_time():
    n = torch.tensor([1, 5, 100, 0])
    t = torch.tensor([1.0, 0.5, 0.8, 0.3], dtype=torch.float64)
    s = pygen.ops.first_hitting_time(t, n, seed=12, offset=4)
    # Row b's uniform: Philox block 4 of substream 2**63 + b (counter words 2-3), key 12.
    w = reference.philox4x32_10(torch.tensor([[4, 0, b, 1 << 31] for b in range(4)]), torch.tensor([12, 0]))
    u = reference.uniform_grid((w[:, 0] << 21) | (w[:, 1] >> 11), 53)
    # Linear schedule: s = t u^(1/n), so (s / t)^n is the uniform; no masked token: 0.
    torch.testing.assert_close((s[:3] / t[:3]) ** n[:3], u[:3], rtol=1e-12, atol=0)
    assert s[3] == 0 and (s[:3] <= t[:3]).all()
    # The linear schedule given as a pair of functions is the same.
    linear = pygen.ops.first_hitting_time(
        t, n, alpha=lambda t: 1 - t, alpha_inverse=lambda a: 1 - a, seed=12, offset=4
    )
    torch.testing.assert_close(linear, s, rtol=1e-12, atol=1e-15)
    # Cosine schedule alpha = cos(pi t / 2): P(next <= s) = ((1 - alpha(s)) / (1 - alpha(t)))^n.
    alpha = lambda t: torch.cos(math.pi / 2 * t)  # noqa: E731
    alpha_inverse = lambda a: 2 / math.pi * torch.acos(a)  # noqa: E731
    c = pygen.ops.first_hitting_time(t, n, alpha=alpha, alpha_inverse=alpha_inverse, seed=12, offset=4)
    ratio = (1 - alpha(c[:3])) / (1 - alpha(t[:3]))
    torch.testing.assert_close(ratio ** n[:3], u[:3], rtol=1e-9, atol=0)
    with pytest.raises(ValueError, match="both alpha= and alpha_inverse="):
        pygen.ops.first_hitting_time(t, n, alpha=alpha, seed=0)


class CountingModel:
    """A toy time-agnostic denoiser: logits depend on how many tokens are unmasked."""

    def __init__(self, vocab: int):
        self.vocab, self.calls = vocab, 0

    def __call__(self, x):
        self.calls += 1
        g = torch.Generator().manual_seed(int((x != 0).sum()))
        return torch.randn(*x.shape, self.vocab, generator=g)


def test_ancestral_loop_caches_unchanged_steps():
    x = torch.zeros(2, 6, dtype=torch.int64)  # mask_id 0, all masked
    model = CountingModel(9)
    out = md.sample_ancestral(model, x, 0, 64, seed=5)
    assert (out != 0).all()
    # 12 positions over 64 steps: most steps unmask nothing and reuse the logits.
    assert model.calls <= 13
    # The same as calling the model every step.
    y, uncached = x, CountingModel(9)
    for i in range(64):
        t, s = 1 - i / 64, 1 - (i + 1) / 64
        y = pygen.ops.unmask_ancestral(uncached(y), y, 0, 1 - t, 1 - s, seed=5, offset=i)
    assert torch.equal(out, y) and uncached.calls == 64


def test_confidence_and_first_hitting_loops():
    x = torch.zeros(3, 10, dtype=torch.int64)
    x[:, :2] = 4  # a prompt
    assert md.unmask_schedule(torch.tensor([8, 3]), 4).tolist() == [[2, 2, 2, 2], [1, 1, 1, 0]]
    model = md.CachedDenoiser(CountingModel(7))
    out = md.sample_by_confidence(model, x, 0, 16, seed=2)
    assert (out != 0).all() and torch.equal(out[:, :2], x[:, :2])
    assert model.calls == 8  # 8 masked positions, 16 steps: half of them unmask nothing
    model = md.CachedDenoiser(CountingModel(7))
    out = md.sample_first_hitting(model, x, 0, seed=2)
    assert (out != 0).all() and model.calls == 8


@pytest.mark.parametrize(
    "op,kwargs,error,match",
    [
        (
            "ancestral",
            {"logits": torch.zeros(2, 3)},
            ValueError,
            r"logits must have shape \[batch, length, vocab\]",
        ),
        ("ancestral", {"logits": torch.zeros(2, 3, 1)}, ValueError, "vocab >= 2"),
        (
            "ancestral",
            {"logits": torch.zeros(2, 3, 5, dtype=torch.int32)},
            TypeError,
            "logits must be float32",
        ),
        ("ancestral", {"x": torch.zeros(2, 3, dtype=torch.int32)}, TypeError, "x must be int64"),
        (
            "ancestral",
            {"x": torch.zeros(2, 4, dtype=torch.int64)},
            ValueError,
            r"x must have shape \[batch, length\]",
        ),
        ("ancestral", {"mask_id": 5}, ValueError, r"mask_id must be in \[0, vocab = 5\)"),
        ("ancestral", {"mask_id": -1}, ValueError, "mask_id must be in"),
        ("ancestral", {"alpha_t": 1.5}, ValueError, r"alpha_t must be in \[0, 1\]"),
        ("ancestral", {"alpha_s": -0.1, "alpha_t": -0.2}, ValueError, r"alpha_t must be in \[0, 1\]"),
        ("ancestral", {"alpha_t": 0.6, "alpha_s": 0.5}, ValueError, "alpha_s must be >= alpha_t"),
        ("ancestral", {"alpha_t": torch.ones(3)}, ValueError, "does not broadcast"),
        ("ancestral", {"temperature": -1.0}, ValueError, "temperature must be finite and >= 0"),
        ("ancestral", {"seed": torch.zeros(2, dtype=torch.int32)}, TypeError, "seed tensor must be int64"),
        ("ancestral", {"offset": -1}, ValueError, "offset must be an int"),
        ("ancestral", {"nan_at": (1, 2)}, ValueError, r"NaN or \+inf \(row 1, position 2\)"),
        ("ancestral", {"inf_at": (0, 1)}, ValueError, r"NaN or \+inf \(row 0, position 1\)"),
        (
            "ancestral",
            {"only_mask_at": (1, 0)},
            ValueError,
            r"-inf for every token but the mask token.*\(row 1, position 0\)",
        ),
        ("ancestral", {"token": 7}, ValueError, r"token ids in \[0, vocab\).*row 0, position 0"),
        ("ancestral", {"token": -2}, ValueError, r"token ids in \[0, vocab\)"),
        ("confidence", {"k": -1}, ValueError, r"k must be in \[0, length\]"),
        ("confidence", {"k": 4}, ValueError, r"k must be in \[0, length\]"),
        ("confidence", {"k": 1.5}, TypeError, "k must be an int"),
        ("confidence", {"confidence": "entropy"}, ValueError, "confidence must be one of"),
        ("confidence", {"nan_at": (0, 2)}, ValueError, r"NaN or \+inf \(row 0, position 2\)"),
        ("first_hitting", {"mask_id": 9}, ValueError, "mask_id must be in"),
        ("first_hitting", {"only_mask_at": (0, 0), "one_masked": True}, ValueError, "-inf for every token"),
    ],
)
def test_bad_inputs(device, op, kwargs, error, match):
    mask_id = kwargs.pop("mask_id", 4)
    logits = kwargs.pop("logits", torch.zeros(2, 3, 5))
    x = kwargs.pop("x", torch.full((2, 3), 4, dtype=torch.int64))
    if "token" in kwargs:
        x[0, 0] = kwargs.pop("token")
    for name, value in (("nan_at", math.nan), ("inf_at", math.inf)):
        if name in kwargs:
            logits[kwargs.pop(name)] = torch.tensor([0.0, value, 0.0, 0.0, 0.0])
    if "only_mask_at" in kwargs:
        logits[kwargs.pop("only_mask_at")] = torch.tensor([-math.inf] * 4 + [0.0])
    if kwargs.pop("one_masked", False):
        x[0] = torch.tensor([4, 0, 0])
    kwargs.setdefault("seed", 0)
    kwargs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    logits, x = logits.to(device), x.to(device)
    # As in test_categorical.py: on a GPU, the Python errors of debug checks.
    with debug_checks(device != "cpu"), pytest.raises(error, match=match):
        if op == "ancestral":
            alpha_t, alpha_s = kwargs.pop("alpha_t", 0.2), kwargs.pop("alpha_s", 0.5)
            pygen.ops.unmask_ancestral(logits, x, mask_id, alpha_t, alpha_s, **kwargs)
        elif op == "confidence":
            pygen.ops.unmask_by_confidence(logits, x, mask_id, kwargs.pop("k", 1), **kwargs)
        else:
            pygen.ops.unmask_first_hitting(logits, x, mask_id, **kwargs)
