"""ODE/SDE samplers for diffusion and flow-matching models, on one fused update op.

>>> x = pygen.solvers.sample(model_fn, torch.randn(8, 2), schedule=pygen.solvers.VPLinear(),
...                          solver="dpmpp_2m", steps=10, prediction="eps", seed=0)

``model_fn(x, t)`` gets the batch and a ``[B]`` tensor of times (the schedule's time
variable: continuous t, a training step index for :class:`VPDiscrete`, sigma for
:class:`EDM`) and returns the prediction named by ``prediction``.
"""

import functools
from collections.abc import Callable
from functools import partial

import numpy as np
import torch

from pygen.solvers import methods
from pygen.solvers.diffusers_compat import DiffusersSampler, from_diffusers_config
from pygen.solvers.grids import Grid, time_grid
from pygen.solvers.plan import SamplingLoop, Step, run_loop
from pygen.solvers.predictions import PREDICTIONS, conversion
from pygen.solvers.schedules import EDM, VE, Flow, Schedule, VPCosine, VPDiscrete, VPLinear

#: solver name -> builder of its plan (keyword options in parentheses in the docs).
SOLVERS: dict[str, Callable] = {
    "euler": partial(methods.ddim, eta=0.0),
    "ddim": methods.ddim,
    "heun": methods.heun,
    "dpm_solver_1": partial(methods.dpm_solver, order=1),
    "dpm_solver_2": partial(methods.dpm_solver, order=2),
    "dpm_solver_3": partial(methods.dpm_solver, order=3),
    "dpmpp_1": partial(methods.dpmpp, order=1),
    "dpmpp_2m": partial(methods.dpmpp, order=2),
    "dpmpp_3m": partial(methods.dpmpp, order=3),
    "dpmpp_2m_sde": partial(methods.dpmpp, order=2, sde=True),
    "dpmpp_3m_sde": partial(methods.dpmpp, order=3, sde=True),
    "deis_1": partial(methods.deis, order=1),
    "deis_2": partial(methods.deis, order=2),
    "deis_3": partial(methods.deis, order=3),
    "unipc_bh1": partial(methods.unipc, variant="bh1"),
    "unipc_bh2": partial(methods.unipc, variant="bh2"),
    "flow_euler": partial(methods.flow, method="euler"),
    "flow_midpoint": partial(methods.flow, method="midpoint"),
    "flow_heun": partial(methods.flow, method="heun"),
}


def default_spacing(schedule: Schedule) -> str:
    """EDM: Karras; flow: uniform time; discrete VP: uniform steps; else uniform logSNR."""
    if isinstance(schedule, EDM):
        return "karras"
    if isinstance(schedule, (Flow, VPDiscrete)):
        return "time"
    return "logsnr"


def build_plan(
    schedule: Schedule,
    solver: str = "dpmpp_2m",
    steps: int = 10,
    prediction: str = "eps",
    *,
    grid: Grid | None = None,
    spacing: str | None = None,
    t_max=None,
    t_min=None,
    final_zero: bool = True,
    **options,
) -> list[Step]:
    """The plan of ``solver`` on a grid (``grid``, or ``time_grid(schedule, steps, spacing,
    t_max=, t_min=, final_zero=)``); ``options`` go to the solver (``eta`` for DDIM,
    ``s_churn`` ... for Heun, ``lower_order_final``, ``euler_at_final``, ``solver_type``
    for DPM-Solver++)."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {sorted(SOLVERS)}, got {solver!r}")
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    # Coefficients of steps that are not taken (orders above the one used, steps to
    # sigma = 0) may be inf or nan; SamplingLoop rejects non-finite ones that are used.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if grid is None:
            spacing = spacing or default_spacing(schedule)
            grid = time_grid(schedule, steps, spacing, t_max=t_max, t_min=t_min, final_zero=final_zero)
        return SOLVERS[solver](methods.Context(grid, schedule, prediction), **options)


def _frozen(options: dict) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in options.items()))


@functools.lru_cache(maxsize=64)
def _cached_plan(
    schedule, solver, steps, prediction, spacing, t_max, t_min, final_zero, options
) -> list[Step]:
    return build_plan(
        schedule,
        solver,
        steps,
        prediction,
        spacing=spacing,
        t_max=t_max,
        t_min=t_min,
        final_zero=final_zero,
        **dict(options),
    )


def sample(
    model_fn: Callable,
    x: torch.Tensor,
    *,
    schedule: Schedule,
    solver: str = "dpmpp_2m",
    steps: int = 10,
    prediction: str = "eps",
    guidance=None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    grid: Grid | None = None,
    spacing: str | None = None,
    t_max=None,
    t_min=None,
    final_zero: bool = True,
    threshold_ratio: float = 0.0,
    threshold_max: float = 1.0,
    return_nfe: bool = False,
    return_trajectory: bool = False,
    progress: bool = False,
    **options,
):
    """Samples by solving the probability-flow ODE (or an SDE) from noise ``x``.

    Args:
        model_fn: ``model_fn(x, t) -> prediction`` with ``x`` ``[B, ...]`` and ``t``
            ``[B]`` (x's dtype and device); with ``guidance`` it returns ``(cond,
            uncond)`` and pygen combines ``uncond + w (cond - uncond)`` in the update.
        x: ``[B, ...]`` the initial state at ``t_max`` (``sigma_max * randn`` scaled by
            ``alpha``: for VP schedules plain ``randn``), float32/float64 (fp16/bf16 are
            computed in float32).
        schedule: a :class:`Schedule` (VPLinear, VPCosine, VPDiscrete, VE, EDM, Flow).
        solver: a name in :data:`SOLVERS`.
        steps: grid intervals. NFE is ``steps`` for first-order and multistep
            solvers, about ``order * steps`` for single-step and Runge-Kutta ones.
        prediction: ``"eps"``, ``"x0"``, ``"v"`` or ``"flow"`` (velocity).
        guidance: classifier-free guidance scale ``w`` (a float or ``[B]``), or None.
        seed, generator: the noise of stochastic solvers (Philox; same on CPU and GPU).
        grid, spacing, t_max, t_min, final_zero: the time grid (see :func:`time_grid`);
            ``t_max``/``t_min`` may be ``[B]`` tensors: a time per sample.
        threshold_ratio, threshold_max: dynamic thresholding of the data prediction
            (Imagen), for solvers that predict data (DDIM, Euler, Heun, DPM-Solver++).
        return_nfe, return_trajectory: also return the number of model calls and the
            list of states after every update.
        progress: a tqdm progress bar over the steps.
        options: solver options (see :func:`build_plan`).

    Returns:
        the sample (x's shape and dtype), or a tuple with ``nfe`` and/or the trajectory.
    """
    if grid is None and all(v is None or isinstance(v, (int, float)) for v in (t_max, t_min)):
        # The same sampler again (every batch of a pipeline): reuse its plan.
        plan = _cached_plan(
            schedule, solver, steps, prediction, spacing, t_max, t_min, final_zero, _frozen(options)
        )
    else:
        plan = build_plan(
            schedule,
            solver,
            steps,
            prediction,
            grid=grid,
            spacing=spacing,
            t_max=t_max,
            t_min=t_min,
            final_zero=final_zero,
            **options,
        )
    loop = SamplingLoop(
        plan,
        x,
        guidance=guidance,
        seed=seed,
        generator=generator,
        threshold_ratio=threshold_ratio,
        threshold_max=threshold_max,
        return_trajectory=return_trajectory,
    )
    run_loop(loop, model_fn, progress, f"sampling ({solver})")
    result = (
        (loop.x,) + ((loop.nfe,) if return_nfe else ()) + ((loop.trajectory,) if return_trajectory else ())
    )
    return result[0] if len(result) == 1 else result


__all__ = [
    "EDM",
    "DiffusersSampler",
    "from_diffusers_config",
    "SOLVERS",
    "VE",
    "Flow",
    "Grid",
    "SamplingLoop",
    "Schedule",
    "Step",
    "VPCosine",
    "VPDiscrete",
    "VPLinear",
    "build_plan",
    "conversion",
    "default_spacing",
    "sample",
    "time_grid",
]
