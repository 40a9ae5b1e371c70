"""Whole-model quantization: :func:`quantize_model` swaps a model's ``nn.Linear`` layers
(and, with ``convs=True``, its ``nn.Conv2d`` layers, as :class:`~pygen.nn.LinearConv2d`: a
linear layer over their input patches) for packed low-bit layers (:mod:`pygen.nn.quant`),
by round to nearest or GPTQ;
:func:`to_bitlinear` / :func:`pack_bitlinear` are the ternary training path (BitNet
b1.58: fine-tune with :class:`~pygen.nn.quant.BitLinear`, then pack).

The model records what was done in ``model.quantization`` (a JSON-serializable dict:
method, format and each replaced layer's :meth:`config`), which pygen's checkpoints
save, and :func:`restore_quantized` rebuilds the layers from before loading weights.
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from pygen.nn.linear_conv import LinearConv2d, conv_support
from pygen.nn.quant import (
    BitLinear,
    Int4Linear,
    MXFP4Linear,
    QuantLinear,
    TernaryLinear,
    check_in_features,
    layer_from_config,
)
from pygen.quant.gptq import GPTQ, Hessian, gptq_quantize

LAYER_OF_FORMAT = {"int4": Int4Linear, "mxfp4": MXFP4Linear, "ternary": TernaryLinear}
METHODS = ("rtn", "gptq")
Skip = str | Sequence[str] | Callable[[str, nn.Module], bool]


def quantize_model(
    model: nn.Module,
    format: str = "int4",
    *,
    method: str | GPTQ = "rtn",
    calibration: Iterable[Any] | None = None,
    forward: Callable[[nn.Module, Any], Any] | None = None,
    skip: Skip = (),
    strict: bool = False,
    convs: bool = False,
    seed: int = 0,
    compute_dtype: torch.dtype | str | None = None,
    **options,
) -> nn.Module:
    """Replaces the ``nn.Linear`` layers of ``model`` (in place) by packed low-bit layers.

    With ``convs=True``, ``nn.Conv2d`` layers (``groups=1``, zero padding) are quantized too:
    each becomes a :class:`~pygen.nn.LinearConv2d` whose linear layer (named
    ``<conv>.linear``; its ``in_features`` is ``C_in * kh * kw``) is quantized like any
    other, GPTQ calibrated on the input patches. Opt-in because the convolution then runs
    as a matmul over unfolded patches (``kh * kw`` times the input's memory), not as a
    convolution kernel. Other modules, whatever their math (a flow's ``ActNorm`` and
    ``Invertible1x1Conv``, norms, embeddings), are never touched.

    Args:
        model: any PyTorch model (a pygen family or not). Linear layers inside a
            ``torch.nn.MultiheadAttention`` are left alone (it reads their weights
            directly instead of calling them).
        format: ``"int4"`` (:class:`Int4Linear`), ``"mxfp4"`` (:class:`MXFP4Linear`) or
            ``"ternary"`` (:class:`TernaryLinear`; post-training ternary quantization loses
            much more than the others: train with :func:`to_bitlinear` for that).
        method: ``"rtn"`` (round to nearest, the default), ``"gptq"`` or a :class:`GPTQ`
            with options (int4 only; needs ``calibration``).
        calibration: GPTQ's calibration batches (a list is best: they are run once per
            layer in sequential mode).
        forward: how to run the model on a batch, ``forward(model, batch)``; default
            ``model(batch)``. A family's ``lambda m, b: m.loss(b)`` calibrates on the
            inputs its training sees (noise levels, masks).
        skip: layers to keep in float: a qualified name or glob pattern (``"head"``,
            ``"blocks.*.fc2"``), a list of them, or a predicate ``(name, module) -> bool``.
        strict: raise if a selected layer's shape does not fit the format (default: keep
            it in float and list it in ``model.quantization["kept"]``), or if no layer is
            replaced (default: a warning naming the model).
        convs: also quantize ``nn.Conv2d`` layers (see above). Glow's conditioners are
            convolutions only.
        seed: the global RNG seed set (and restored after) around each calibration pass,
            so every pass sees the same random draws of ``forward``.
        compute_dtype: the layers' ``compute_dtype``: None (float32 x computes in float32)
            or ``torch.bfloat16`` (``torch.float16`` on CUDA): a float32 model's layers then
            multiply in that dtype, x rounded to it inside the kernel (see
            :func:`pygen.quant.matmul` for the speed and the error), outputs still float32.
            Saved in ``model.quantization`` with each layer's config.
        **options: the layer's format options: int4 ``group_size`` (default 128),
            ``symmetric``, ``scale_dtype``; ternary ``per_channel``, ``activations``.

    Returns:
        ``model``, with ``model.quantization`` describing the layers replaced.

    Raises:
        ValueError: bad options; with ``strict``, a layer that does not fit or no layer to
            replace.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if format not in LAYER_OF_FORMAT:
        raise ValueError(f"format must be one of {tuple(LAYER_OF_FORMAT)}, got {format!r}")
    if isinstance(method, str):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS} or a pygen.quant.GPTQ, got {method!r}")
        method = GPTQ() if method == "gptq" else None
    elif not isinstance(method, GPTQ):
        raise TypeError(f"method must be a str or a pygen.quant.GPTQ, got {type(method).__name__}")
    if method is not None:
        if format != "int4":
            raise ValueError(f"GPTQ is implemented for format 'int4', got {format!r}")
        if calibration is None:
            raise ValueError("method 'gptq' needs calibration batches (calibration=...)")
    layer_class = LAYER_OF_FORMAT[format]
    # An empty layer now: bad options fail before any work, with the constructor's message.
    layer_class(128, 1, compute_dtype=compute_dtype, **options)

    targets, kept = _select(model, format, options.get("group_size", 128), skip, strict, convs)
    targets = _convs_as_linear(model, targets)
    if method is None:
        replaced = {
            name: layer_class.from_linear(linear, compute_dtype=compute_dtype, **options)
            for name, linear in targets.items()
        }
        for name, layer in replaced.items():
            _set(model, name, layer)
    else:
        replaced = _gptq_model(
            model, targets, list(calibration), forward, method, seed, options, compute_dtype
        )
    _record(model, "gptq" if method else "rtn", format, replaced, kept)
    return model


def to_bitlinear(
    model: nn.Module, *, skip: Skip = (), strict: bool = False, convs: bool = False, **options
) -> nn.Module:
    """Replaces ``model``'s ``nn.Linear`` layers (in place) by :class:`BitLinear` layers
    starting from their weights, for ternary quantization-aware training (``options``:
    ``per_channel``, ``norm``); with ``convs=True`` ``nn.Conv2d`` layers become
    :class:`~pygen.nn.LinearConv2d` with a BitLinear inside, as in :func:`quantize_model`.
    Layers whose ``in_features`` is not a multiple of 64 stay in float (listed in
    ``model.quantization["kept"]``) unless ``strict``; no layer to replace warns
    (``strict``: raises)."""
    targets, kept = _select(model, "ternary", None, skip, strict, convs)
    targets = _convs_as_linear(model, targets)
    replaced = {name: BitLinear.from_linear(linear, **options) for name, linear in targets.items()}
    for name, layer in replaced.items():
        _set(model, name, layer)
    _record(model, "bitlinear", "ternary", replaced, kept)
    return model


def pack_bitlinear(model: nn.Module) -> nn.Module:
    """Replaces every :class:`BitLinear` of ``model`` (in place) by its packed
    :class:`TernaryLinear` (:meth:`BitLinear.to_packed`: W1.58A8, same outputs)."""
    bit = {name: m for name, m in model.named_modules() if isinstance(m, BitLinear)}
    if not bit:
        raise ValueError("model has no BitLinear layer to pack (see pygen.quant.to_bitlinear)")
    replaced = {name: layer.to_packed() for name, layer in bit.items()}
    for name, layer in replaced.items():
        _set(model, name, layer)
    kept = getattr(model, "quantization", {}).get("kept", [])
    _record(model, "bitlinear", "ternary", replaced, kept)
    return model


def restore_quantized(model: nn.Module, quantization: dict) -> nn.Module:
    """Rebuilds the layers ``quantization`` (a ``model.quantization`` dict) describes,
    empty, in a freshly built float ``model``, so its ``load_state_dict`` takes the
    quantized checkpoint."""
    layers = quantization.get("layers") if isinstance(quantization, dict) else None
    if not isinstance(layers, dict):
        raise ValueError("quantization must be a model.quantization dict with a 'layers' entry")
    for name, config in layers.items():
        _set(model, name, layer_from_config(config).to(_device_of(model)))
    model.quantization = quantization
    return model


def weight_nbytes(model: nn.Module) -> int:
    """Bytes of the weights of ``model``'s linear layers and 2-D convolutions (the layers
    :func:`quantize_model` replaces): packed for quantized layers, ``numel * element_size``
    for float ones (biases and other parameters aside)."""
    total = 0
    for m in model.modules():
        if isinstance(m, QuantLinear):
            total += m.weight_nbytes
        elif isinstance(m, nn.Linear | nn.Conv2d):
            total += m.weight.numel() * m.weight.element_size()
    return total


def _select(model, format, group_size, skip, strict, convs) -> tuple[dict[str, nn.Module], list[str]]:
    """The layers to replace (qualified name -> ``nn.Linear`` or ``nn.Conv2d``) and the
    ones kept in float for their shape."""
    skip_fn = _skip_predicate(skip)
    inside_mha = {
        f"{name}.{child}" if name else child
        for name, m in model.named_modules()
        if isinstance(m, nn.MultiheadAttention)
        for child, _ in m.named_modules()
    }
    targets, kept, candidates, unselected_convs = {}, [], 0, 0
    for name, m in model.named_modules():
        linear = isinstance(m, nn.Linear) and not isinstance(m, BitLinear)
        if not (linear or isinstance(m, nn.Conv2d)) or name in inside_mha or skip_fn(name, m):
            continue
        if not (linear or convs):
            unselected_convs += 1
            continue
        candidates += 1
        try:
            reason = None if linear else conv_support(m)
            if reason is not None:
                raise ValueError(f"a Conv2d with {reason} is not supported")
            in_features = m.in_features if linear else m.weight[0].numel()
            check_in_features(format, in_features, group_size if format == "int4" else None)
        except ValueError as e:
            if strict:
                raise ValueError(f"layer {name!r}: {e}") from None
            kept.append(name)
            continue
        targets[name] = m
    if not targets:
        layers = "nn.Linear or nn.Conv2d" if convs else "nn.Linear"
        why = f"it has no {layers} layer outside skip and nn.MultiheadAttention"
        if candidates:
            why = f"every candidate was kept in float: {kept} (strict=True says why)"
        elif unselected_convs:
            why += f" (convs=True would quantize its {unselected_convs} nn.Conv2d layers)"
        message = f"no layer of {type(model).__name__} can be quantized to {format}: {why}"
        if strict:
            raise ValueError(message)
        warnings.warn(message, stacklevel=3)
    return targets, kept


def _convs_as_linear(model: nn.Module, targets: dict[str, nn.Module]) -> dict[str, nn.Linear]:
    """``targets`` with every ``nn.Conv2d`` swapped (in ``model``) for the exact float
    :class:`LinearConv2d`, its linear layer the target in its place."""
    linears = {}
    for name, m in targets.items():
        if isinstance(m, nn.Conv2d):
            wrapper = LinearConv2d.from_conv(m)
            _set(model, name, wrapper)
            name, m = f"{name}.linear", wrapper.linear
        linears[name] = m
    return linears


def _skip_predicate(skip: Skip) -> Callable[[str, nn.Module], bool]:
    if callable(skip):
        return skip
    patterns = [skip] if isinstance(skip, str) else skip
    if not all(isinstance(p, str) for p in patterns):
        raise TypeError("skip must be a name pattern, a list of them, or a predicate (name, module) -> bool")
    return lambda name, _: any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _set(model: nn.Module, name: str, layer: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, layer)


def _device_of(model: nn.Module) -> torch.device:
    tensor = next(iter(model.parameters()), None)
    if tensor is None:
        tensor = next(iter(model.buffers()), torch.empty(0))
    return tensor.device


def _record(model, method, format, replaced, kept) -> None:
    """``model.quantization``: merged with an earlier record (a second call, or packing).
    A layer inside a :class:`LinearConv2d` is recorded as the wrapper (under the
    convolution's name), which :func:`restore_quantized` puts in the convolution's place."""
    previous = getattr(model, "quantization", None) or {"layers": {}}
    entries = {}
    for name, layer in replaced.items():
        parent, _, child = name.rpartition(".")
        wrapper = model.get_submodule(parent)
        if isinstance(wrapper, LinearConv2d) and child == "linear":
            name, layer = parent, wrapper
        entries[name] = layer.config()
    layers = {**previous["layers"], **entries}
    model.quantization = {"method": method, "format": format, "layers": layers, "kept": sorted(kept)}


def _run_calibration(model, batches, forward, seed) -> None:
    forward = forward or (lambda m, b: m(b))
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for batch in batches:
            forward(model, batch)


def _gptq_model(
    model, targets, batches, forward, method: GPTQ, seed, options, compute_dtype
) -> dict[str, nn.Module]:
    """GPTQ every target layer from Hessians of its inputs on the calibration batches."""
    if not batches:
        raise ValueError("calibration is empty")
    was_training = model.training
    model.eval()
    hessians: dict[str, Hessian] = {}
    order: list[str] = []  # the layers in the order the forward pass first calls them

    def collect(names, accumulate):
        def hook(name):
            def fn(module, args):
                if name not in order:
                    order.append(name)
                if accumulate:
                    hessians[name].add(args[0])

            return fn

        for n in names if accumulate else ():
            hessians[n] = Hessian(targets[n].in_features)
        handles = [targets[n].register_forward_pre_hook(hook(n)) for n in names]
        try:
            _run_calibration(model, batches, forward, seed)
        finally:
            for h in handles:
                h.remove()

    int4_options = {"group_size": 128, **options}
    replaced = {}

    def quantize_layer(name):
        linear = targets[name]
        qw = gptq_quantize(
            linear.weight,
            hessians[name].matrix(),
            damp=method.damp,
            block_size=method.block_size,
            act_order=method.act_order,
            **int4_options,
        )
        replaced[name] = Int4Linear.from_quantized(qw, linear.bias, compute_dtype=compute_dtype)
        _set(model, name, replaced[name])

    try:
        # One pass for the call order (and, not sequential, every layer's Hessian); in
        # sequential mode then one pass per layer, through the layers quantized before it,
        # so only one Hessian is held at a time.
        collect(list(targets), accumulate=not method.sequential)
        uncalled = [name for name in targets if name not in order]
        if uncalled:
            raise ValueError(f"layers {uncalled} were not called on the calibration data: skip them")
        for name in order:
            if method.sequential:
                collect([name], accumulate=True)
            quantize_layer(name)
            hessians.pop(name)
    finally:
        model.train(was_training)
    return replaced
