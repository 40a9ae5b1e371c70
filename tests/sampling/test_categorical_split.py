"""sample_categorical's CUDA kernels with each row spread over several thread blocks
(few long rows) against one block per row and against the CPU kernel: the same tokens and
log-probabilities, bit for bit. The GPU tests are skipped without one."""

import math

import pytest
import torch

import pygen
from pygen._build import _C
from pygen.ops.sampling import _cuda_split
from tests.helpers import DEVICES, debug_checks

needs_cuda = pytest.mark.skipif("cuda" not in DEVICES, reason="needs a GPU and a CUDA build")

# Blocks per row forced through the knob: one (the one-block kernel), the split kernels
# with 2 and 3 uneven parts, one chunk a block (1000 is capped at the chunk count), and
# the automatic choice.
SPLITS = [1, 2, 3, 1000, 0]


def _sample_each_way(logits: torch.Tensor, **params) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(label, token, logprob) on the CPU, then on the GPU for every entry of SPLITS."""
    out = [("cpu", *pygen.ops.sample_categorical(logits, return_logprob=True, **params))]
    gpu = logits.cuda()
    gpu_params = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in params.items()}
    for blocks in SPLITS:
        with _cuda_split(blocks):
            token, logprob = pygen.ops.sample_categorical(gpu, return_logprob=True, **gpu_params)
        out.append((f"cuda, {blocks} blocks per row", token.cpu(), logprob.cpu()))
    return out


def _assert_all_equal(results, rows=slice(None)):
    label, token, logprob = results[0]
    for other, t, lp in results[1:]:
        assert torch.equal(t[rows], token[rows]), f"{other} vs {label}: tokens differ"
        assert torch.equal(lp[rows], logprob[rows]), f"{other} vs {label}: log-probabilities differ"


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("vocab", [1, 7, 1000, 131072, 131073])
@pytest.mark.parametrize("batch", [1, 3, 64])
def test_split_matches_one_block_and_cpu(torch_seed, batch, vocab, dtype):
    logits = (torch.randn(batch, vocab) * 3).to(dtype)
    for params in [
        dict(seed=11),
        dict(seed=12, offset=5, temperature=0.7),
        dict(seed=13, temperature=1.6, min_p=0.05),
        dict(seed=torch.arange(batch, dtype=torch.int64), temperature=torch.linspace(0.0, 2.0, batch)),
        dict(seed=14, temperature=0.0),  # greedy
        dict(seed=15, temperature=1e-40),  # greedy: logits / temperature overflows
    ]:
        _assert_all_equal(_sample_each_way(logits, **params))


@needs_cuda
def test_split_with_per_row_cuts(torch_seed):
    # Rows with top-k or top-p are sampled by one block in the split kernels; rows without
    # cuts beside them are split. Between devices only the rows without those cuts are
    # bit-identical (the CPU selects top-k / top-p thresholds in another order).
    logits = torch.randn(6, 70000) * 3
    top_k = torch.tensor([70000, 50, 70000, 1, 70000, 70000])
    top_p = torch.tensor([1.0, 1.0, 0.9, 1.0, 1.0, 0.5])
    min_p = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.02, 0.0])
    results = _sample_each_way(logits, seed=3, temperature=0.9, top_k=top_k, top_p=top_p, min_p=min_p)
    _assert_all_equal(results[1:])
    _assert_all_equal(results, rows=torch.tensor([0, 4]))


@needs_cuda
def test_split_ties_and_signed_zeros():
    vocab = 131073
    # The maximum in several parts of the row: greedy takes its first occurrence.
    peaks = torch.randn(3, vocab)
    peaks[:, [100, 70000, 131072]] = 50.0
    # -0 before +0 as the maximum: equal floats, so the first (-0) is the greedy token.
    zeros = torch.full((2, vocab), -math.inf)
    zeros[:, 5] = -0.0
    zeros[:, 90000] = 0.0
    for logits in (peaks, zeros, torch.zeros(4, vocab)):
        for temperature in (0.0, 1.0):
            _assert_all_equal(_sample_each_way(logits, seed=21, temperature=temperature))
    with _cuda_split(4):
        assert pygen.ops.sample_categorical(peaks.cuda(), temperature=0.0, seed=0).tolist() == [100] * 3
        assert pygen.ops.sample_categorical(zeros.cuda(), temperature=0.0, seed=0).tolist() == [5] * 2


@needs_cuda
def test_split_rows_over_the_tail():
    # A dominant category and 2^17 - 1 of probability ~1e-8 each: the inversion crosses
    # many chunks summed by different blocks, at the rate of test_tail_rate_at_1e_8.
    logits = torch.full((8, 1 << 17), -math.log(1e8))
    logits[:, 0] = 0.0
    for offset in range(20):
        _assert_all_equal(_sample_each_way(logits, seed=2025, offset=offset))


@needs_cuda
def test_split_bad_rows_raise_with_debug_checks():
    logits = torch.zeros(3, 5000, device="cuda")
    logits[1, 4999] = math.inf
    with debug_checks(True), _cuda_split(4), pytest.raises(ValueError, match=r"NaN or \+inf \(row 1\)"):
        pygen.ops.sample_categorical(logits, seed=0)


def test_cuda_split_knob():
    assert _C._categorical_split() == 0
    with _cuda_split(3):
        assert _C._categorical_split() == 3
        with _cuda_split(1):
            assert _C._categorical_split() == 1
        assert _C._categorical_split() == 3
    assert _C._categorical_split() == 0
    for bad in (-1, 2.0, True):
        with pytest.raises(ValueError, match="blocks must be an int >= 0"), _cuda_split(bad):
            pass
    # The CPU kernel ignores it.
    logits = torch.randn(3, 5000)
    with _cuda_split(4):
        split = pygen.ops.sample_categorical(logits, seed=1)
    assert torch.equal(split, pygen.ops.sample_categorical(logits, seed=1))
