"""Layouts: each builder's element mask is the paper's definition, and blocks are really skipped."""

import pytest
import torch

from pygen import sparse


def positions(n):
    i = torch.arange(n)
    return i[:, None], i[None, :]


def test_local_is_previous_window():
    n, w = 200, 37
    i, j = positions(n)
    m = sparse.local(n, w, block_size=16).dense_mask(n, n)[0]
    assert torch.equal(m, (j <= i) & (j >= i - w))


def test_local_not_causal_is_symmetric_band():
    n, w = 150, 20
    i, j = positions(n)
    m = sparse.local(n, w, block_size=16, causal=False).dense_mask(n, n)[0]
    assert torch.equal(m, (i - j).abs() <= w)


@pytest.mark.parametrize("n,stride,block", [(1024, 16, 64), (512, 32, 16), (256, 4, 64)])
def test_strided_is_every_stride_th_position(n, stride, block):
    layout = sparse.strided(n, stride, block_size=block)
    i, j = positions(n)
    assert torch.equal(layout.dense_mask(n, n)[0], (j <= i) & ((i - j) % stride == 0))
    # Block diagonal on the transposed arrangement: one residue per n / stride rows.
    assert layout.density <= (n // stride) / n + 1e-9


@pytest.mark.parametrize("n", [512, 500])
def test_fixed_is_own_block_and_summaries(n):
    stride, c = 128, 32
    i, j = positions(n)
    m = sparse.fixed(n, stride, c, block_size=32).dense_mask(n, n)[0]
    assert torch.equal(m, (j <= i) & ((i // stride == j // stride) | (j % stride >= stride - c)))


def test_causal_and_dense():
    n = 100
    i, j = positions(n)
    assert torch.equal(sparse.causal(n, block_size=16).dense_mask(n, n)[0], j <= i)
    assert sparse.dense(n, 70, block_size=32).dense_mask(n, 70).all()


def test_union_and_block_mask():
    a = sparse.fixed(512, 128, 64, block_size=64)
    b = sparse.causal(512, block_size=64)
    assert torch.equal((a | b).mask, b.mask)
    heads = torch.rand(3, 4, 5) > 0.5
    layout = sparse.from_block_mask(heads, 32)
    assert layout.heads == 3 and layout.dense_mask(128, 160).shape == (3, 128, 160)
    row_ptr, col_idx, perm = layout.index_tensors()
    assert row_ptr.dtype == torch.int32 and row_ptr[-1] == heads.sum() and perm is None
    assert torch.equal(col_idx, heads.reshape(-1, 5).nonzero()[:, 1].int())


def test_bad_layouts():
    with pytest.raises(ValueError, match="power of two"):
        sparse.dense(64, block_size=48)
    with pytest.raises(ValueError, match="multiple of stride"):
        sparse.strided(1000, 16, block_size=64)
    with pytest.raises(ValueError, match="multiples of block_size"):
        sparse.fixed(512, 100, 32, block_size=64)
    with pytest.raises(ValueError, match="different heads"):
        sparse.local(1024, 64) | sparse.strided(1024, 16)
    with pytest.raises(ValueError, match="build it for"):
        sparse.causal(128).check_lengths(256, 256)
    with pytest.raises(TypeError, match="bool"):
        sparse.from_block_mask(torch.ones(2, 2), 16)
