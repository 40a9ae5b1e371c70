"""pygen.ops.sample_categorical against its float64 reference, statistics and bad inputs."""

import math

import pytest
import torch

import pygen
from pygen.ops import reference
from tests.helpers import DEVICES, binomial_interval, binomial_pmf, chi2_threshold, debug_checks, opcheck

CASES = [
    ((1, 1), dict(temperature=1.0)),
    ((7, 3), dict(temperature=0.5)),
    ((64, 1000), dict(temperature=1.0, min_p=0.1)),
    ((5, 1537), dict(temperature=2.0)),
    ((2, 3, 65), dict(temperature=1.3, min_p=0.3)),
    ((40, 777), dict(temperature=1.0, top_k=10)),
    ((40, 777), dict(temperature=0.7, top_p=0.9)),
    ((40, 2049), dict(temperature=1.2, top_k=50, top_p=0.8, min_p=0.02)),
    ((40, 100), dict(temperature=1.0, top_k=1)),
    ((8, 20000), dict(temperature=1.0, top_k=50)),
    ((4, 50000), dict(temperature=0.8, top_k=300, top_p=0.9)),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape,params", CASES)
def test_matches_reference(device, torch_seed, dtype, shape, params):
    logits = (torch.randn(shape) * 4).to(dtype)
    token, logprob = pygen.ops.sample_categorical(
        logits.to(device), seed=123, offset=7, return_logprob=True, **params
    )
    token, logprob = token.cpu(), logprob.cpu()
    rows = shape[:-1]
    per_row = {name: torch.full(rows, params[name]) for name in ("top_k", "top_p", "min_p") if name in params}
    ref_token, ref_logprob = reference.sample_categorical(
        logits.float(), torch.full(rows, params["temperature"]), torch.full(rows, 123), 7, **per_row
    )
    assert token.shape == rows and token.dtype == torch.int64 and logprob.dtype == torch.float32
    # float32 weights move the category boundaries by ~1e-7 relative: a rare mismatch.
    same = token == ref_token
    assert (~same).sum() <= 2
    torch.testing.assert_close(logprob[same], ref_logprob[same], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pattern", ["sampled peaks", "ties"])
def test_top_k_on_adversarial_rows(device, torch_seed, pattern):
    # Long rows where a look at a sample of the row misjudges the k-th largest logit: the
    # kernel samples runs of 16 logits every V/64, so peaks exactly there force its fallback.
    logits = torch.randn(6, 16384)
    if pattern == "sampled peaks":
        logits[:, torch.arange(16384) % 256 < 16] += 10
    else:
        logits = torch.randint(0, 5, logits.shape).float()
    rows = logits.shape[:-1]
    token, logprob = pygen.ops.sample_categorical(logits.to(device), top_k=50, seed=5, return_logprob=True)
    ref_token, ref_logprob = reference.sample_categorical(
        logits, torch.ones(rows), torch.full(rows, 5), 0, top_k=torch.full(rows, 50)
    )
    assert torch.equal(token.cpu(), ref_token)
    torch.testing.assert_close(logprob.cpu(), ref_logprob, rtol=1e-5, atol=1e-5)


def test_per_row_temperature_and_seed(device, torch_seed):
    logits = torch.randn(6, 40)
    temperature = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 0.0])
    seeds = torch.arange(6, dtype=torch.int64) * 1000
    token = pygen.ops.sample_categorical(
        logits.to(device), temperature=temperature.to(device), seed=seeds.to(device)
    ).cpu()
    ref, _ = reference.sample_categorical(logits, temperature, seeds, 0)
    assert torch.equal(token, ref)
    assert token[0] == logits[0].argmax() and token[5] == logits[5].argmax()


def test_rows_and_offsets_draw_independently():
    logits = torch.zeros(4096, 256)  # uniform over 256 categories
    a = pygen.ops.sample_categorical(logits, seed=1)
    assert len(a.unique()) > 200  # one shared uniform would give a single category
    b = pygen.ops.sample_categorical(logits, seed=1, offset=1)
    c = pygen.ops.sample_categorical(logits, seed=torch.arange(4096, dtype=torch.int64))
    assert (a == b).float().mean() < 0.02 and (a == c).float().mean() < 0.02
    assert torch.equal(a, pygen.ops.sample_categorical(logits, seed=1))


@pytest.mark.parametrize(
    "shape,params",
    [
        ((300, 2000), dict()),  # rows in parallel
        # Fewer long rows than threads: each row split over the threads.
        ((1, 40000), dict()),
        ((3, 40000), dict(temperature=0.7)),
        ((2, 40000), dict(min_p=0.01)),
        ((1, 40000), dict(top_k=50)),
        ((3, 40000), dict(top_p=0.9)),
        ((1, 40000), dict(temperature=1.2, top_k=2000, top_p=0.8, min_p=0.001)),
    ],
    ids=str,
)
def test_same_result_for_any_thread_count(torch_seed, shape, params):
    logits = torch.randn(shape) * 3
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3, 4):
            torch.set_num_threads(threads)
            results.append(pygen.ops.sample_categorical(logits, seed=9, return_logprob=True, **params))
    finally:
        torch.set_num_threads(before)
    for token, logprob in results[1:]:
        assert torch.equal(token, results[0][0]) and torch.equal(logprob, results[0][1])


@pytest.mark.parametrize(
    "params",
    [
        dict(),
        dict(temperature=0.6),
        dict(min_p=0.05),
        dict(temperature=2.0, min_p=0.2),
        dict(top_k=5),
        dict(top_p=0.7),
        dict(temperature=1.5, top_k=12, top_p=0.9),
    ],
    ids=str,
)
def test_chi_square(device, params):
    logits = torch.linspace(-4, 3, 16)
    n = 1 << 18
    token = pygen.ops.sample_categorical(logits.to(device).expand(n, 16), seed=2024, **params).cpu()
    # The exact truncated distribution, from the reference's cut rules in float64.
    y = logits.double() / params.get("temperature", 1.0)
    keep = torch.ones(16, dtype=torch.bool)
    if "top_k" in params:
        keep &= y >= torch.topk(y, params["top_k"]).values[-1]
    if "min_p" in params:
        keep &= y >= y.max() + math.log(params["min_p"])
    w = torch.where(keep, torch.exp(y - y.max()), 0.0)
    if "top_p" in params:
        desc = torch.sort(w, descending=True).values
        w = torch.where(w >= desc[int(torch.searchsorted(desc.cumsum(0), params["top_p"] * w.sum()))], w, 0.0)
    p = w / w.sum()
    counts = torch.bincount(token, minlength=16).double()
    assert (counts[p == 0] == 0).all()
    support = p > 0
    chi2 = ((counts[support] - n * p[support]) ** 2 / (n * p[support])).sum().item()
    assert chi2 < chi2_threshold(max(int(support.sum()) - 1, 1))


def test_tail_rate(device):
    # A category of probability 1e-5 over 2^22 draws: expected 42; a Poisson count
    # outside [14, 84] has probability < 1e-6.
    p_tail = 1e-5
    logits = torch.tensor([0.0, 0.0, 0.0, math.log(3 * p_tail / (1 - p_tail))])
    token = pygen.ops.sample_categorical(logits.to(device).expand(1 << 22, 4), seed=77).cpu()
    assert 14 <= int((token == 3).sum()) <= 84


def float32_gumbel_tail_probability(gap: torch.Tensor, n_tail: int) -> float:
    """The exact probability that Gumbel-max with float32 noise, as MDLM writes it
    (``argmax(logits - log(-log(torch.rand(..., dtype=float32))))``), draws one of
    ``n_tail`` categories of logit ``-gap`` (float32) rather than the one of logit 0
    before them. torch.rand's float32 values are k / 2^24 for k in [0, 2^24), equally
    likely, so the noises are enumerated, computed by the same float32 ops."""
    u = torch.arange(1, 1 << 24, dtype=torch.float32) / (1 << 24)
    noise = torch.log(-torch.log(u))
    first = torch.zeros((), dtype=torch.float32) - noise
    tail = -gap - noise
    # Only the first category's values that some tail value beats, and those tail values.
    first = first[first < tail.max()]
    tail = torch.sort(tail[tail > first.min()]).values
    above = len(tail) - torch.searchsorted(tail, first, right=True)  # argmax keeps the first of ties
    # Given the first's noise, a tail category wins unless all n_tail stay at or below it.
    # k = 0 gives the first category -inf, beaten by every tail value but -inf: the 1.
    return float((1 - torch.expm1(n_tail * torch.log1p(-above.double() / (1 << 24))).sum()) / (1 << 24))


def test_tail_rate_at_1e_8(device):
    # Many categories of probability ~1e-8 each behind a dominant one, so their total mass
    # (1.3e-3) gives a count that tests their rate. Gumbel-max with float32 noise cannot
    # give them that: its noise is at most -log(-log(1 - 2^-24)) ~ 16.6 < log(1e8), so a
    # tail category wins only when the dominant one's noise is far below its mean.
    vocab, rows, calls = 1 << 17, 64, 400
    n_tail = vocab - 1
    gap = torch.tensor(math.log(1e8), dtype=torch.float32)
    logits = torch.full((rows, vocab), -float(gap))
    logits[:, 0] = 0.0
    w = math.exp(-float(gap))  # the exact probabilities of these float32 logits
    p_tail = n_tail * w / (1 + n_tail * w)
    logits = logits.to(device)
    draws = (pygen.ops.sample_categorical(logits, seed=2025, offset=call) for call in range(calls))
    hits = sum(int((token != 0).sum()) for token in draws)
    n = rows * calls
    lo, hi = binomial_interval(n, p_tail)  # a correct sampler falls outside w.p. < 1e-6
    assert lo <= hits <= hi, (hits, lo, hi, n * p_tail)
    # The float32 Gumbel sampler's rate is ~1.8% of the exact one: it would pass this test
    # with probability < 1e-6.
    p_gumbel = float32_gumbel_tail_probability(gap, n_tail)
    assert p_gumbel < p_tail / 20
    assert float(binomial_pmf(n, p_gumbel)[lo : hi + 1].sum()) < 1e-6


def test_greedy_and_logprob(device):
    logits = torch.tensor([[1.0, 3.0, 3.0, -2.0]], device=device)
    token, logprob = pygen.ops.sample_categorical(logits, temperature=0.0, seed=0, return_logprob=True)
    assert token.tolist() == [1] and logprob.tolist() == [0.0]
    token, logprob = pygen.ops.sample_categorical(logits, seed=0, return_logprob=True)
    assert logprob.item() == pytest.approx(torch.log_softmax(logits, -1)[0, token.item()].item(), abs=1e-6)


@pytest.mark.parametrize("temperature", [1e-30, 1e-38, 1e-45])
@pytest.mark.parametrize("top_k", [None, 2])
def test_tiny_temperature_is_greedy(device, temperature, top_k):
    # logits / temperature overflows float32: the distribution is the point mass on the maximum.
    logits = torch.tensor([[1e10, -3e38, 2e10, 0.0], [-1e30, -2e30, -1e30, -3e30]])
    token, logprob = pygen.ops.sample_categorical(
        logits.to(device), temperature=temperature, top_k=top_k, seed=3, return_logprob=True
    )
    assert token.tolist() == [2, 0] and logprob.tolist() == [0.0, 0.0]


@pytest.mark.skipif("cuda" not in DEVICES, reason="needs a GPU and a CUDA build")
def test_cpu_and_cuda_agree(torch_seed):
    logits = torch.randn(512, 3001) * 3
    params = dict(temperature=0.9, top_k=100, top_p=0.95, min_p=0.01, seed=8, return_logprob=True)
    cpu = pygen.ops.sample_categorical(logits, **params)
    gpu = pygen.ops.sample_categorical(logits.cuda(), **params)
    # Top-k / top-p thresholds are selected in another order (without them the devices
    # agree bit for bit: test_categorical_split.py).
    assert (cpu[0] != gpu[0].cpu()).sum() <= 1
    torch.testing.assert_close(cpu[1], gpu[1].cpu(), rtol=1e-6, atol=1e-6)


def test_minus_inf_is_never_drawn(device):
    logits = torch.full((20000, 5), -math.inf)
    logits[:, 1] = 0.0
    logits[:, 3] = -1.0
    token = pygen.ops.sample_categorical(logits.to(device), seed=3).cpu()
    assert set(token.unique().tolist()) == {1, 3}


def test_opcheck(device):
    logits = torch.randn(3, 4, 17, device=device)

    def rows(value, dtype):
        return torch.full((3, 4), value, dtype=dtype, device=device)

    args = (
        logits,
        rows(1.0, torch.float32),
        rows(5, torch.int64),
        rows(0.9, torch.float32),
        rows(0.01, torch.float32),
        rows(0, torch.int64),
        5,
    )
    opcheck(torch.ops.pygen.sample_categorical.default, args)


def test_compile_fullgraph():
    def f(logits):
        return pygen.ops.sample_categorical(logits * 2, seed=11, offset=2)

    logits = torch.randn(8, 33)
    assert torch.equal(torch.compile(f, fullgraph=True, backend="aot_eager")(logits), f(logits))


@pytest.mark.parametrize(
    "logits,kwargs,error,match",
    [
        (torch.tensor([[0.0, math.nan]]), {}, ValueError, r"NaN or \+inf \(row 0\)"),
        (torch.tensor([[0.0, 1.0], [0.0, math.inf]]), {}, ValueError, r"NaN or \+inf \(row 1\)"),
        (torch.full((2, 3), -math.inf), {}, ValueError, r"all -inf: no category can be drawn \(row 0\)"),
        (torch.zeros(2, 0), {}, ValueError, "V >= 1"),
        (torch.tensor(1.0), {}, ValueError, "got a scalar"),
        (torch.zeros(2, 3), {"temperature": -1.0}, ValueError, "temperature must be finite and >= 0"),
        (torch.zeros(2, 3), {"temperature": math.inf}, ValueError, "temperature must be finite and >= 0"),
        (torch.zeros(2, 3), {"temperature": torch.ones(3)}, ValueError, "does not broadcast"),
        (torch.zeros(2, 3), {"min_p": 1.5}, ValueError, r"min_p must be in \[0, 1\]"),
        (torch.zeros(2, 3), {"top_k": 0}, ValueError, "top_k must be >= 1"),
        (torch.zeros(2, 3), {"top_k": 2.5}, TypeError, "top_k must be an int"),
        (torch.zeros(2, 3), {"top_p": 0.0}, ValueError, r"top_p must be in \(0, 1\]"),
        (torch.zeros(2, 3), {"top_p": 1.01}, ValueError, r"top_p must be in \(0, 1\]"),
        (torch.zeros(2, 3), {"top_p": torch.ones(3)}, ValueError, "does not broadcast"),
        (
            torch.zeros(2, 3),
            {"seed": torch.zeros(2, dtype=torch.int32)},
            TypeError,
            "seed tensor must be int64",
        ),
        (torch.zeros(2, 3), {"seed": -1}, ValueError, r"seed must be in \[0, 2\*\*64\)"),
        (torch.zeros(2, 3), {"offset": -1}, ValueError, "offset must be an int"),
        (torch.zeros(2, 3, dtype=torch.int64), {}, TypeError, "logits must be float32"),
    ],
)
def test_bad_inputs(device, logits, kwargs, error, match):
    kwargs.setdefault("seed", 0)
    kwargs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    # The CPU raises with or without debug checks; a GPU raises a Python error with them
    # (without, see test_device_checks.py).
    with debug_checks(device != "cpu"), pytest.raises(error, match=match):
        pygen.ops.sample_categorical(logits.to(device), **kwargs)
