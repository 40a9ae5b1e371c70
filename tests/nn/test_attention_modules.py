"""Attention modules and the Sparse Transformer block against plain PyTorch."""

import pytest
import torch
import torch.nn.functional as F

from pygen import sparse
from pygen.nn import KVCache, MultiheadAttention, SparseTransformerBlock, sparse_transformer_layout


def sdpa_forward(mod: MultiheadAttention, x, mask=None):
    """The same module computed with torch's SDPA on an explicit element mask."""
    b, n, e = x.shape
    q = mod.q_proj(x).view(b, n, mod.num_heads, mod.head_dim).transpose(1, 2)
    kv = mod.kv_proj(x).view(b, n, 2, mod.kv_heads, mod.head_dim)
    k, v = (kv[:, :, i].transpose(1, 2).repeat_interleave(mod.num_heads // mod.kv_heads, 1) for i in (0, 1))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return mod.out_proj(out.transpose(1, 2).reshape(b, n, e))


def test_multihead_gqa_matches_sdpa(torch_seed):
    mod = MultiheadAttention(128, 8, kv_heads=2, causal=True)
    x = torch.randn(2, 77, 128)
    causal = torch.ones(77, 77, dtype=torch.bool).tril()
    torch.testing.assert_close(mod(x), sdpa_forward(mod, x, causal), atol=1e-5, rtol=1e-4)


def test_split_head_layouts(torch_seed):
    n = 256
    mod = MultiheadAttention(64, 4, layout=sparse_transformer_layout("strided", 16, block_size=16))
    x = torch.randn(1, n, 64)
    local, strided = sparse.local(n, 16, block_size=16), sparse.strided(n, 16, block_size=16)
    mask = torch.cat([local.dense_mask(n, n).expand(2, n, n), strided.dense_mask(n, n).expand(2, n, n)])
    torch.testing.assert_close(mod(x), sdpa_forward(mod, x, mask[None]), atol=1e-5, rtol=1e-4)


def test_block_recompute_same_gradients(torch_seed):
    block = SparseTransformerBlock(64, 4, depth=3, layout=sparse_transformer_layout("fixed", 64, 32, 32))
    x = torch.randn(2, 128, 64, requires_grad=True)
    block(x).square().sum().backward()
    grads = [p.grad.clone() for p in block.parameters()] + [x.grad.clone()]
    block.zero_grad()
    x.grad = None
    block.recompute = True
    block(x).square().sum().backward()
    for g, h in zip(grads, [p.grad for p in block.parameters()] + [x.grad], strict=True):
        torch.testing.assert_close(g, h)


def test_kv_cache_incremental_matches_full(torch_seed):
    block = SparseTransformerBlock(32, 2, depth=2)
    x = torch.randn(2, 9, 32)
    full = block(x)
    cache = KVCache()
    steps = [block(x[:, i : i + 1], cache=cache) for i in range(9)]
    assert len(cache) == 9
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    # Chunks after a prefix: causal among themselves, all of the cache before them.
    cache = KVCache()
    parts = [block(x[:, :4], cache=cache), block(x[:, 4:], cache=cache)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


def test_kv_cache_without_update_leaves_it(torch_seed):
    mod = MultiheadAttention(32, 2, causal=True)
    x = torch.randn(1, 6, 32)
    cache = KVCache()
    mod(x[:, :3], cache=cache)
    keys = cache.k.clone()
    out = mod(x[:, 3:], cache=cache, update_cache=False)
    assert torch.equal(cache.k, keys) and len(cache) == 3
    torch.testing.assert_close(out, mod(x)[:, 3:], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="KV cache"):
        mod(x, x, cache=cache)
