"""pygen.ops.attention against the float64 reference: forward, gradients, layouts, errors."""

import math

import pytest
import torch

import pygen
from pygen import sparse
from pygen.ops import reference
from tests.helpers import DEVICES, assert_error_within, opcheck


def qkv(b, hq, hkv, lq, lk, d, dtype=torch.float32, device="cpu", grad=False):
    q = torch.randn(b, hq, lq, d, device=device).to(dtype)
    k = torch.randn(b, hkv, lk, d, device=device).to(dtype)
    v = torch.randn(b, hkv, lk, d, device=device).to(dtype)
    return [t.requires_grad_(grad) for t in (q, k, v)]


def element_mask(lq, lk, causal, layout):
    mask = torch.ones(1, lq, lk, dtype=torch.bool)
    if layout is not None:
        mask = layout.dense_mask(lq, lk)
    if causal:
        mask = mask & torch.ones(lq, lk, dtype=torch.bool).tril()
    return mask[None]


def check_against_reference(q, k, v, causal=False, layout=None, scale=None, dtype_factor=2.0):
    """Forward and all three gradients against float64; low precision by the 2x rule."""
    mask = element_mask(q.shape[2], k.shape[2], causal or (layout is not None and layout.causal), layout)
    mask = mask.to(q.device)
    out, lse = pygen.ops.attention(q, k, v, causal=causal, layout=layout, scale=scale, return_lse=True)
    grad = torch.randn_like(out)
    gq, gk, gv = torch.autograd.grad(out, (q, k, v), grad)
    leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref, ref_lse = reference.attention(*leaves, mask, scale)
    ref_grads = torch.autograd.grad(ref, leaves, grad.double())
    seen = ref_lse > -math.inf
    assert torch.equal(lse > -math.inf, seen)
    torch.testing.assert_close(lse[seen].double(), ref_lse[seen], atol=1e-4, rtol=1e-5)
    if q.dtype in (torch.float32, torch.float64):
        tol = dict(atol=2e-5, rtol=1e-4) if q.dtype == torch.float32 else dict(atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(out.double(), ref, **tol)
        for g, r in zip((gq, gk, gv), ref_grads, strict=True):
            torch.testing.assert_close(g.double(), r, **tol)
        return
    # Low precision: at most twice the error of PyTorch doing it in the same dtype.
    leaves_lp = [t.detach().requires_grad_() for t in (q, k, v)]
    same, _ = reference.attention(*leaves_lp, mask, scale, dtype=q.dtype)
    same_grads = torch.autograd.grad(same, leaves_lp, grad)
    assert_error_within(out, ref, same, dtype_factor)
    for g, r, s in zip((gq, gk, gv), ref_grads, same_grads, strict=True):
        assert_error_within(g, r, s, dtype_factor)


SHAPES = [  # b, hq, hkv, lq, lk, d
    (1, 1, 1, 1, 1, 16),
    (2, 4, 4, 65, 65, 32),
    (1, 4, 2, 100, 37, 64),
    (2, 2, 1, 33, 130, 128),
    (1, 2, 2, 70, 70, 256),
    (1, 3, 1, 17, 300, 48),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("causal", [False, True])
def test_dense_fp32(device, torch_seed, shape, causal):
    check_against_reference(*qkv(*shape, device=device, grad=True), causal=causal)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("causal", [False, True])
def test_dense_low_precision(device, torch_seed, dtype, causal):
    check_against_reference(*qkv(2, 4, 2, 130, 97, 64, dtype, device, grad=True), causal=causal)


def test_float64_gradcheck(torch_seed):
    q, k, v = qkv(1, 2, 1, 19, 23, 16, torch.float64, grad=True)
    layout = sparse.local(19, 5, block_size=16, causal=False)
    for kwargs in (dict(causal=True), dict(layout=sparse.from_block_mask(torch.ones(2, 2, dtype=bool), 16))):
        assert torch.autograd.gradcheck(lambda *t, kw=kwargs: pygen.ops.attention(*t, **kw), (q, k, v))
    q2, k2, v2 = qkv(1, 2, 1, 19, 19, 16, torch.float64, grad=True)
    assert torch.autograd.gradcheck(
        lambda *t: pygen.ops.attention(*t, layout=layout, return_lse=True), (q2, k2, v2)
    )


def layouts(n):
    heads = torch.rand(4, math.ceil(n / 32), math.ceil(n / 32)) > 0.4
    return {
        "dense": sparse.dense(n, block_size=32),
        "causal": sparse.causal(n, block_size=16),
        "local": sparse.local(n, 45, block_size=16),
        "local_bidirectional": sparse.local(n, 30, block_size=32, causal=False),
        "strided": sparse.strided(n, 8, block_size=16),
        "fixed": sparse.fixed(n, 64, 32, block_size=32),
        "union": sparse.fixed(n, 64, 32, block_size=32) | sparse.causal(n, block_size=32),
        "per_head": sparse.from_block_mask(heads, 32),
        "local_block128": sparse.local(n, 100, block_size=128),
    }


@pytest.mark.parametrize("name", list(layouts(256)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_layouts(device, torch_seed, name, dtype):
    layout = layouts(256)[name]
    check_against_reference(*qkv(1, 4, 2, 256, 256, 32, dtype, device, grad=True), layout=layout)


def test_fully_masked_rows_are_zero(device):
    q, k, v = qkv(1, 1, 1, 64, 64, 16, device=device, grad=True)
    mask = torch.zeros(2, 2, dtype=torch.bool)
    mask[1, 0] = True  # queries 0..31 see nothing
    out, lse = pygen.ops.attention(q, k, v, layout=sparse.from_block_mask(mask, 32), return_lse=True)
    assert (out[..., :32, :] == 0).all() and (lse[..., :32] == -math.inf).all()
    assert out[..., 32:, :].abs().sum() > 0
    out.sum().backward()
    assert torch.isfinite(q.grad).all() and (q.grad[..., :32, :] == 0).all()


def test_strides_and_scale(device, torch_seed):
    # [B, L, H, D] storage viewed as [B, H, L, D], as attention modules produce it.
    x = torch.randn(2, 50, 3, 4, 32, device=device)
    q, k, v = (x[:, :, i].transpose(1, 2).requires_grad_() for i in range(3))
    check_against_reference(q, k, v, causal=True, scale=0.3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rows_not_16_byte_aligned(device, torch_seed, dtype):
    # Rows 33 elements apart from an offset of 1: CUDA copies them element by element
    # instead of by 16 bytes; the result must not depend on that.
    x = torch.randn(3, 2, 2, 50, 33, device=device).to(dtype)
    q, k, v = (x[i, ..., 1:].requires_grad_() for i in range(3))
    dense = [t.detach().contiguous().requires_grad_() for t in (q, k, v)]
    out = pygen.ops.attention(q, k, v, causal=True)
    ref = pygen.ops.attention(*dense, causal=True)
    grad = torch.randn_like(out)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(out, ref, **tol)
    grads, ref_grads = torch.autograd.grad(out, (q, k, v), grad), torch.autograd.grad(ref, dense, grad)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, **tol)


def test_opcheck_and_compile(device, torch_seed):
    q, k, v = qkv(1, 2, 1, 40, 40, 32, device=device, grad=True)
    layout = sparse.local(40, 20, block_size=16)
    row_ptr, col_idx, perm = layout.index_tensors(device)
    opcheck(torch.ops.pygen.attention_forward.default, (q, k, v, row_ptr, col_idx, perm, 16, True, 20, 0.2))
    opcheck(torch.ops.pygen.attention_forward.default, (q, k, v, None, None, None, 64, False, -1, 0.2))
    compiled = torch.compile(lambda *t: pygen.ops.attention(*t, causal=True), fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v), pygen.ops.attention(q, k, v, causal=True))


@pytest.mark.cuda  # its last check mixes devices: make gpu-test runs it too
def test_bad_input():
    q, k, v = qkv(1, 4, 2, 32, 32, 64)
    att = pygen.ops.attention
    with pytest.raises(ValueError, match="must divide"):
        att(q, k[:, :1].expand(1, 3, 32, 64), v[:, :1].expand(1, 3, 32, 64))
    with pytest.raises(ValueError, match="head_dim must be a multiple of 16"):
        att(q[..., :40], k[..., :40], v[..., :40])
    with pytest.raises(ValueError, match="share head_dim"):
        att(q, k, v[..., :32])
    with pytest.raises(TypeError, match="share a dtype"):
        att(q, k.double(), v)
    with pytest.raises(TypeError, match="float32, float64"):
        att(q.int(), k.int(), v.int())
    with pytest.raises(ValueError, match=r"\[batch, heads, len, head_dim\]"):
        att(q[0], k[0], v[0])
    with pytest.raises(ValueError, match="build it for"):
        att(q, k, v, layout=sparse.causal(64, block_size=16))
    with pytest.raises(ValueError, match="layout has 3 heads"):
        att(q, k, v, layout=sparse.from_block_mask(torch.ones(3, 2, 2, dtype=bool), 16))
    with pytest.raises(ValueError, match="increasing key blocks"):
        torch.ops.pygen.attention_forward(
            q,
            k,
            v,
            torch.tensor([0, 1], dtype=torch.int32),
            torch.tensor([5], dtype=torch.int32),
            None,
            32,
            False,
            -1,
            1.0,
        )
    with pytest.raises(ValueError, match="permutation"):
        torch.ops.pygen.attention_forward(
            q, k, v, None, None, torch.zeros(32, dtype=torch.long), 32, False, -1, 1.0
        )
    if not torch.cuda.is_available():
        return
    with pytest.raises(RuntimeError, match="one device"):
        att(q, k.cuda(), v)


cuda = pytest.mark.skipif("cuda" not in DEVICES, reason="no CUDA device, or pygen built without CUDA")


@cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("d", [32, 64, 128, 256])
@pytest.mark.parametrize("causal", [False, True])
def test_cuda_head_dims_against_sdpa(torch_seed, dtype, d, causal):
    """Every instantiated head dim, GQA, odd lengths: error at most 2x that of torch's own
    SDPA in the same dtype (flash or efficient kernel), forward and gradients."""
    import torch.nn.functional as F

    q, k, v = qkv(2, 4, 2, 77, 77 if causal else 130, d, dtype, "cuda", grad=True)
    out = pygen.ops.attention(q, k, v, causal=causal)
    grad = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), grad)
    leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref = F.scaled_dot_product_attention(*leaves, is_causal=causal, enable_gqa=True)
    ref_grads = torch.autograd.grad(ref, leaves, grad.double())
    lp = [t.detach().requires_grad_() for t in (q, k, v)]
    same = F.scaled_dot_product_attention(*lp, is_causal=causal, enable_gqa=True)
    same_grads = torch.autograd.grad(same, lp, grad)
    assert_error_within(out, ref, same)
    for g, r, sg in zip(grads, ref_grads, same_grads, strict=True):
        assert_error_within(g, r, sg)


@cuda
def test_cuda_matches_cpu_and_is_deterministic(torch_seed):
    """Block-sparse with a permuted layout (strided), GQA and lse gradients: the CUDA
    kernels (float32, no TF32) agree with the CPU ones, and repeat bit for bit."""
    layout = sparse.strided(256, 16, block_size=16)
    q, k, v = qkv(1, 4, 2, 256, 256, 64, device="cuda", grad=True)

    def run(*t):
        out, lse = pygen.ops.attention(*t, layout=layout, return_lse=True)
        return (out, lse, *torch.autograd.grad((out * out).sum() + lse.sum(), t))

    first = run(q, k, v)
    assert all(torch.equal(a, b) for a, b in zip(first, run(q, k, v), strict=True))
    cpu = run(*(t.detach().cpu().requires_grad_() for t in (q, k, v)))
    for a, b in zip(first, cpu, strict=True):
        torch.testing.assert_close(a.cpu(), b, atol=2e-5, rtol=1e-4)


@cuda
def test_cuda_memory_is_linear_in_length():
    """L = 16k, forward and backward: peak memory far below the L^2 bytes of a score matrix."""
    n, d = 16384, 64
    q, k, v = qkv(1, 1, 1, n, n, d, torch.bfloat16, "cuda", grad=True)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = pygen.ops.attention(q, k, v, causal=True)
    torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    assert peak < n * n / 16, f"peak {peak} bytes for L={n}"


@cuda
def test_cuda_bad_input():
    q, k, v = qkv(1, 2, 1, 32, 32, 64, torch.float64, "cuda")
    with pytest.raises(TypeError, match="cpu only"):
        pygen.ops.attention(q, k, v)
    # A cpu q with a cuda argument dispatches to the CUDA kernel, which must name the
    # argument rather than fail on its device guard.
    q, k, v = qkv(1, 2, 1, 32, 32, 64)
    out, lse = pygen.ops.attention(q, k, v, return_lse=True)
    with pytest.raises(RuntimeError, match="grad_out must be on cpu"):
        torch.ops.pygen.attention_backward(
            out.cuda(), None, q, k, v, out, lse, None, None, None, 64, False, -1, 0.125
        )
