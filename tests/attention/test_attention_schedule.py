"""The CPU attention kernels' schedules: forward query-tile groups with key chunks wider
than one chunk, and the backward's two-pass schedule (taken when there are fewer
(batch, query head) pairs than threads), which must give the same bits as the one pass."""

import math

import pytest
import torch

import pygen
from pygen import sparse
from tests.attention.test_attention import check_against_reference, qkv


@pytest.fixture
def threads():
    """Sets torch's thread count for a test and restores it after."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def long_layouts(n):
    heads = torch.rand(4, math.ceil(n / 16), math.ceil(n / 16)) > 0.3
    return {
        "dense": None,
        "fixed": sparse.fixed(n, 128, 32, block_size=32),
        "per_head": sparse.from_block_mask(heads, 16),
        "local_block64": sparse.local(n, 150, block_size=64),
    }


@pytest.mark.parametrize("name", list(long_layouts(600)))
def test_forward_groups_and_chunks(torch_seed, name):
    # 600 positions: groups of query tiles list more shared key tiles than one chunk holds,
    # and the last tile is ragged.
    layout = long_layouts(600)[name]
    check_against_reference(*qkv(1, 4, 2, 600, 600, 32, grad=True), causal=layout is None, layout=layout)


@pytest.mark.parametrize("name", ["dense", "fixed", "per_head"])
@pytest.mark.parametrize("heads_q,more_threads", [(1, 2), (2, 4)])
def test_backward_two_passes_match_one_pass(torch_seed, threads, name, heads_q, more_threads):
    # One kv head; one thread runs the one pass, more threads than query heads the two.
    layout = (
        sparse.from_block_mask(long_layouts(300)["per_head"].mask[:heads_q], 16)
        if name == "per_head"
        else None
    )
    layout = long_layouts(300)[name] if name == "fixed" else layout
    q, k, v = qkv(1, heads_q, 1, 300, 300, 32, grad=True)
    grad = torch.randn(1, heads_q, 300, 32)
    grads = []
    for n in (1, more_threads):
        threads(n)
        out = pygen.ops.attention(q, k, v, causal=layout is None, layout=layout)
        grads.append(torch.autograd.grad(out, (q, k, v), grad))
    for one, two in zip(*grads, strict=True):
        assert torch.equal(one, two)


def test_backward_two_passes_against_reference(torch_seed, threads):
    threads(2)
    check_against_reference(
        *qkv(1, 4, 1, 200, 200, 32, grad=True), layout=sparse.fixed(200, 64, 32, block_size=32)
    )
    check_against_reference(
        *qkv(1, 2, 1, 256, 256, 32, grad=True), layout=sparse.strided(256, 8, block_size=16)
    )
