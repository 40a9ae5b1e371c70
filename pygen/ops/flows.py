"""Elementwise transforms of normalizing-flow coupling layers, with fused log-determinants.

``affine_coupling`` is the map of RealNVP / Glow affine couplings (``affine_coupling_layer``
the whole layer's split, map and merge in one pass); ``rq_spline`` the
rational-quadratic spline of Neural Spline Flows (``rq_spline_packed`` with its
parameters in one tensor, ``rq_spline_coupling_layer`` the whole spline coupling layer
in one pass); ``mix_logistic_cdf`` Flow++'s
logistic-mixture CDF transform. All run forward and inverse on CPU and
CUDA, and are differentiable in every tensor input through registered backward kernels
(autograd in C++, bindings/flows_autograd.cpp: a coupling layer's per-call cost at small
sizes is mostly this glue).
"""

import torch

from pygen._build import _C

SCALE_FNS = ("exp", "sigmoid")


def _check_tensors(**tensors):
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")


def affine_coupling(
    x: torch.Tensor,
    shift: torch.Tensor,
    raw_scale: torch.Tensor,
    *,
    scale_fn: str = "exp",
    clamp: float | None = None,
    inverse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``y = x * scale + shift`` (or the inverse) and its per-sample log-determinant.

    The scale comes from the network's ``raw_scale``:

    - ``scale_fn="exp"``: ``log scale = raw_scale``, or with ``clamp`` the soft clamp
      ``clamp * tanh(raw_scale / clamp)`` (``clamp > 0``);
    - ``scale_fn="sigmoid"`` (Glow): ``scale = sigmoid(raw_scale + 2)``.

    Args:
        x: ``[B, ...]``, float32, float64, float16 or bfloat16 (16-bit inputs compute
            in float32). With ``inverse=True`` this is the ``y`` to invert.
        shift, raw_scale: x's shape, dtype and device (no broadcasting).
        scale_fn: ``"exp"`` or ``"sigmoid"``.
        clamp: soft clamp of the log scale for ``"exp"``; None for none.
        inverse: compute ``x = (y - shift) / scale`` instead.

    Returns:
        ``(y, logabsdet)``: y of x's shape and dtype; logabsdet ``[B]``, float32
        (float64 for float64 x), the sum of ``log scale`` over all non-batch dims, negated
        for the inverse (the log-determinant of the map applied).
    """
    _check_tensors(x=x, shift=shift, raw_scale=raw_scale)
    if scale_fn not in SCALE_FNS:
        raise ValueError(f"scale_fn must be 'exp' or 'sigmoid', got {scale_fn!r}")
    # torch.compile traces the registered op; eager calls skip torch.ops' overhead.
    op = torch.ops.pygen.affine_coupling if torch.compiler.is_compiling() else _C.affine_coupling
    return op(x, shift, raw_scale, scale_fn, None if clamp is None else float(clamp), bool(inverse))


def affine_coupling_layer(
    x: torch.Tensor,
    params: torch.Tensor,
    active_begin: int,
    active: int,
    *,
    interleaved: bool = True,
    scale_fn: str = "exp",
    clamp: float | None = None,
    inverse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole affine coupling layer's map: channels ``[active_begin, active_begin +
    active)`` of ``x`` go through :func:`affine_coupling` with shift and raw scale read
    in place from the conditioner's output ``params``; the other channels are copied.

    Equal to splitting ``x`` and ``params``, calling :func:`affine_coupling` and
    concatenating, without the copies: one pass writes all of ``y``, and the backward
    writes ``x``'s gradient whole and ``params``' gradient in its own layout.

    Args:
        x: ``[B, C, ...]``, float32, float64, float16 or bfloat16. With ``inverse=True``
            this is the ``y`` to invert.
        params: ``[B, 2 * active, ...]`` (x's other dims), x's dtype and device.
            ``interleaved=True``: shift of active channel ``c`` at channel ``2c``, raw
            scale at ``2c + 1`` (a ``[B, active, 2, ...]`` view's order, normflows' and
            Glow's ``h[:, 0::2], h[:, 1::2]``); False: shift ``params[:, :active]``, raw
            scale ``params[:, active:]``.
        active_begin, active: the transformed channels, ``active >= 1``,
            ``active_begin + active <= C``.
        scale_fn, clamp, inverse: as :func:`affine_coupling`.

    Returns:
        ``(y, logabsdet)``: y of x's shape and dtype; logabsdet ``[B]``, float32 (float64
        for float64 x), summed over the transformed elements.
    """
    _check_tensors(x=x, params=params)
    if scale_fn not in SCALE_FNS:
        raise ValueError(f"scale_fn must be 'exp' or 'sigmoid', got {scale_fn!r}")
    for name, v in (("active_begin", active_begin), ("active", active)):
        if not isinstance(v, int):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    op = torch.ops.pygen.affine_coupling_layer if torch.compiler.is_compiling() else _C.affine_coupling_layer
    return op(
        x,
        params,
        active_begin,
        active,
        bool(interleaved),
        scale_fn,
        None if clamp is None else float(clamp),
        bool(inverse),
    )


def mix_logistic_cdf(
    x: torch.Tensor,
    logits: torch.Tensor,
    means: torch.Tensor,
    log_scales: torch.Tensor,
    *,
    inverse: bool = False,
    tol: float | None = None,
    max_iters: int = 100,
    validate: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flow++'s elementwise transform ``y = logit F(x)``, or its inverse, with ``log |dy/dx|``.

    ``F(x) = sum_k softmax(logits)_k * sigmoid((x - means_k) * exp(-log_scales_k))``.
    ``F`` and ``1 - F`` are summed separately from positive terms (``1 - F`` never
    comes from a rounded ``F``), and where a sum nears underflow, ``F``, ``1 - F`` and
    the density are evaluated as log-sum-exps of log-sigmoids instead, so ``y`` and the
    log-derivative stay finite and accurate far in the tails.

    The inverse solves ``logit F(x) = y`` by safeguarded Newton-bisection inside the
    bracket ``[min_k(means_k + y e^{log_scales_k}), max_k(...)]``, which provably contains
    the root. It stops when ``|x - root| <= tol * max(1, |root|)`` is guaranteed (or no
    floating-point number is left between the bracket's ends), which takes a few Newton
    steps; ``max_iters`` bounds the steps (bisection alone would need about
    ``log2(bracket width / tol)``). ``y = +-inf`` gives ``x = +-inf``, NaN gives NaN.

    Args:
        x: any shape ``[...]``, float32, float64, float16 or bfloat16 (16-bit inputs
            compute in float32). With ``inverse=True`` this is the ``y`` to invert.
        logits, means, log_scales: ``[..., K]`` (x's shape plus the components), x's
            dtype and device; must be finite.
        inverse: compute ``x = F^{-1}(sigmoid(y))``.
        tol: the inverse's tolerance, relative above 1 and absolute below; default
            ``1e-6`` (float32 and 16-bit) or ``1e-12`` (float64).
        max_iters: the inverse's iteration cap.
        validate: raise ``ValueError`` when a parameter is NaN or infinite. The kernel
            writes a flag that is read back: on CUDA a host synchronization per call.
            With False the affected elements give NaN instead (what the flow layers do
            on GPU unless ``pygen.nn.flows.set_debug_checks`` is on).

    Returns:
        ``(y, logabsdet)``, both of x's shape: y in x's dtype, logabsdet
        ``log |dy/dx|`` of the map applied (``-log |dy/dx|`` at the solution for the
        inverse), float32 (float64 for float64 x). At ``x = +-inf`` the forward gives
        ``y = +-inf`` and logabsdet's limit ``-max_k log_scales_k``.

    Differentiable in ``x``, ``logits``, ``means`` and ``log_scales`` in both directions.
    """
    _check_tensors(x=x, logits=logits, means=means, log_scales=log_scales)
    if tol is None:
        tol = 1e-12 if x.dtype == torch.float64 else 1e-6
    if not isinstance(max_iters, int):
        raise TypeError(f"max_iters must be an int, got {type(max_iters).__name__}")
    op = torch.ops.pygen.mix_logistic_cdf if torch.compiler.is_compiling() else _C.mix_logistic_cdf
    return op(x, logits, means, log_scales, bool(inverse), float(tol), max_iters, bool(validate))


def rq_spline(
    x: torch.Tensor,
    widths: torch.Tensor,
    heights: torch.Tensor,
    derivatives: torch.Tensor,
    *,
    inverse: bool = False,
    tail_bound: float = 3.0,
    validate: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Monotone rational-quadratic spline with linear tails (Durkan et al., 2019, "Neural
    Spline Flows"), one spline per element of ``x``.

    The parameters are unnormalized, as the paper's reference implementation (nflows'
    ``unconstrained_rational_quadratic_spline`` with ``tails="linear"``, also in normflows)
    takes them, and give its numbers: bin widths ``2B * (1e-3 + (1 - 1e-3 K)
    softmax(widths))`` partition ``[-B, B]`` (heights likewise), knot derivatives
    ``1e-3 + softplus(derivatives)`` at the ``K - 1`` interior knots and exactly 1 at
    ``-B`` and ``B``, so the spline meets the identity tails with slope 1.

    Domain: elements outside ``[-B, B]`` (and NaN) pass through unchanged with
    ``logabsdet`` 0 and no gradient into the parameters; the map is a bijection of the
    real line, continuous with a continuous derivative at ``+-B``. ``inverse=True``
    inverts it: ``rq_spline(rq_spline(x, ...)[0], ..., inverse=True)[0] == x`` up to
    rounding, and its ``logabsdet`` is minus the forward one at that point.

    Args:
        x: any shape ``S``; float32, float64, float16 or bfloat16 (computed in float32,
            or float64 for float64).
        widths: ``[*S, K]`` unnormalized bin widths, ``1 <= K <= 1000``; x's dtype and
            device. Any strides: read in place when the leading dims flatten to at most
            two strides (slices of one network output ``[..., 3K - 1]``, also a conv
            output ``[B, C, 3K - 1, H, W]`` with its parameter dim moved last), else copied.
        heights: ``[*S, K]`` unnormalized bin heights.
        derivatives: ``[*S, K - 1]`` unnormalized derivatives at the interior knots.
        inverse: evaluate the inverse map (``x`` is then a spline output).
        tail_bound: ``B > 0``, the half-width of the spline's interval.
        validate: raise ``ValueError`` when a parameter is NaN or infinite. On CUDA this
            reads a flag back to the host (a synchronization); with False the affected
            elements give NaN instead.

    Returns:
        ``(y, logabsdet)``, both of x's shape and dtype: the spline's value and
        ``log|dy/dx|`` per element (sum it over a coupling layer's dimensions).

    Differentiable in ``x``, ``widths``, ``heights`` and ``derivatives`` in both
    directions (a fused backward kernel recomputes the spline; nothing is saved but the
    inputs).
    """
    _check_tensors(x=x, widths=widths, heights=heights, derivatives=derivatives)
    op = torch.ops.pygen.rq_spline if torch.compiler.is_compiling() else _C.rq_spline
    return op(x, widths, heights, derivatives, bool(inverse), float(tail_bound), bool(validate))


def rq_spline_packed(
    x: torch.Tensor,
    params: torch.Tensor,
    *,
    inverse: bool = False,
    tail_bound: float = 3.0,
    validate: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`rq_spline` with its parameters in one tensor, as a coupling's network
    outputs them: ``params [*S, 3K - 1]`` is ``widths | heights | derivatives`` along the
    last dim, so ``rq_spline_packed(x, p)`` equals
    ``rq_spline(x, p[..., :K], p[..., K:2K], p[..., 2K:])``.

    The difference is the gradient: ``params`` gets one tensor back from the backward
    kernel, where three slices would each cost autograd a zero-filled tensor of
    ``params``' size, a copy and a sum (more time than the spline's own backward).
    Any strides: a conv output ``[B, C, 3K - 1, H, W]`` with its parameter dim moved last
    is read in place and its gradient comes back in that layout (no transposing copy);
    parameters whose leading dims do not flatten to two strides are copied once.

    Args:
        x: any shape ``S``; float32, float64, float16 or bfloat16.
        params: ``[*S, 3K - 1]``, ``1 <= K <= 1000``; x's dtype and device.
        inverse, tail_bound, validate: as :func:`rq_spline`.

    Returns:
        ``(y, logabsdet)``, both of x's shape and dtype.
    """
    _check_tensors(x=x, params=params)
    op = torch.ops.pygen.rq_spline_packed if torch.compiler.is_compiling() else _C.rq_spline_packed
    return op(x, params, bool(inverse), float(tail_bound), bool(validate))


def rq_spline_coupling_layer(
    x: torch.Tensor,
    params: torch.Tensor,
    active_begin: int,
    active: int,
    *,
    inverse: bool = False,
    tail_bound: float = 3.0,
    validate: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole spline coupling layer's map: channels ``[active_begin, active_begin +
    active)`` of ``x`` go through :func:`rq_spline` with their parameters read in place
    from the conditioner's output ``params``; the other channels are copied.

    Equal to splitting ``x``, viewing ``params`` as ``[B, active, 3K - 1, ...]``, calling
    :func:`rq_spline_packed` with the parameter dim moved last, summing the log-dets per
    sample and concatenating, without the copies: one pass writes all of ``y`` and the
    per-sample log-det (summed in the kernel, in float32 or float64, in a fixed order:
    the same for any thread count), and the backward writes ``x``'s gradient whole and
    ``params``' gradient in its own layout.

    Args:
        x: ``[B, C, ...]``, float32, float64, float16 or bfloat16 (16-bit inputs compute
            in float32). With ``inverse=True`` this is the ``y`` to invert.
        params: ``[B, active * (3K - 1), ...]`` (x's other dims), x's dtype and device,
            ``1 <= K <= 1000``: active channel ``c``'s unnormalized widths, heights and
            derivatives at channels ``c (3K - 1) + [0, K)``, ``+ [K, 2K)`` and
            ``+ [2K, 3K - 1)`` (a conv or linear conditioner's output, as
            :class:`pygen.nn.flows.SplineCoupling` produces it).
        active_begin, active: the transformed channels, ``active >= 1``,
            ``active_begin + active <= C``.
        inverse, tail_bound, validate: as :func:`rq_spline`.

    Returns:
        ``(y, logabsdet)``: y of x's shape and dtype; logabsdet ``[B]``, float32 (float64
        for float64 x), ``log |det dy/dx|`` summed over the transformed elements (the
        inverse map's, minus the forward one's at the solution, for ``inverse=True``).
    """
    _check_tensors(x=x, params=params)
    for name, v in (("active_begin", active_begin), ("active", active)):
        if not isinstance(v, int):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    op = (
        torch.ops.pygen.rq_spline_coupling_layer
        if torch.compiler.is_compiling()
        else _C.rq_spline_coupling_layer
    )
    return op(x, params, active_begin, active, bool(inverse), float(tail_bound), bool(validate))


def _logdet_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


@torch.library.register_fake("pygen::affine_coupling")
def _affine_coupling_fake(x, shift, raw_scale, scale_fn, clamp, inverse):
    return torch.empty_like(x), x.new_empty(x.shape[:1], dtype=_logdet_dtype(x))


@torch.library.register_fake("pygen::affine_coupling_backward")
def _affine_coupling_backward_fake(grad_y, grad_logdet, x, shift, raw_scale, scale_fn, clamp, inverse):
    return torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)


@torch.library.register_fake("pygen::affine_coupling_layer")
def _affine_coupling_layer_fake(x, params, active_begin, active, interleaved, scale_fn, clamp, inverse):
    return x.new_empty(x.shape), x.new_empty(x.shape[:1], dtype=_logdet_dtype(x))


@torch.library.register_fake("pygen::affine_coupling_layer_backward")
def _affine_coupling_layer_backward_fake(
    grad_y, grad_logdet, x, params, active_begin, active, interleaved, scale_fn, clamp, inverse
):
    return x.new_empty(x.shape), x.new_empty(params.shape)


@torch.library.register_fake("pygen::mix_logistic_cdf")
def _mix_logistic_cdf_fake(x, logits, means, log_scales, inverse, tol, max_iters, validate):
    return torch.empty_like(x), torch.empty_like(x, dtype=_logdet_dtype(x))


@torch.library.register_fake("pygen::mix_logistic_cdf_backward")
def _mix_logistic_cdf_backward_fake(grad_y, grad_logdet, x, logits, means, log_scales, inverse):
    return (torch.empty_like(x),) + tuple(torch.empty_like(logits) for _ in range(3))


@torch.library.register_fake("pygen::rq_spline")
def _rq_spline_fake(x, widths, heights, derivatives, inverse, tail_bound, validate):
    return x.new_empty(x.shape), x.new_empty(x.shape)


@torch.library.register_fake("pygen::rq_spline_backward")
def _rq_spline_backward_fake(grad_y, grad_logabsdet, x, widths, heights, derivatives, inverse, tail_bound):
    return (
        x.new_empty(x.shape),
        x.new_empty(widths.shape),
        x.new_empty(heights.shape),
        x.new_empty(derivatives.shape),
    )


@torch.library.register_fake("pygen::rq_spline_packed")
def _rq_spline_packed_fake(x, params, inverse, tail_bound, validate):
    return x.new_empty(x.shape), x.new_empty(x.shape)


def _spline_layout_ok(t: torch.Tensor, lead: int) -> bool:
    """Whether the kernels read or write ``t [*S, size]`` in place (bindings/rq_spline.cpp's
    spline_layout): its leading dims, those of size 1 left out, flatten to two strides."""
    dims: list[list[int]] = []
    for size, stride in zip(t.shape[:lead], t.stride()[:lead], strict=True):
        if size == 1:
            continue
        if dims and dims[-1][1] == stride * size:
            dims[-1] = [dims[-1][0] * size, stride]
        else:
            dims.append([size, stride])
    return len(dims) <= 2


@torch.library.register_fake("pygen::rq_spline_packed_backward")
def _rq_spline_packed_backward_fake(grad_y, grad_logabsdet, x, params, inverse, tail_bound):
    grad_params = torch.empty_like(params)
    if not _spline_layout_ok(grad_params, x.dim()):
        grad_params = params.new_empty(params.shape)
    return x.new_empty(x.shape), grad_params


@torch.library.register_fake("pygen::rq_spline_coupling_layer")
def _rq_spline_coupling_layer_fake(x, params, active_begin, active, inverse, tail_bound, validate):
    return x.new_empty(x.shape), x.new_empty(x.shape[:1], dtype=_logdet_dtype(x))


@torch.library.register_fake("pygen::rq_spline_coupling_layer_backward")
def _rq_spline_coupling_layer_backward_fake(
    grad_y, grad_logabsdet, x, params, active_begin, active, inverse, tail_bound
):
    return x.new_empty(x.shape), params.new_empty(params.shape)
