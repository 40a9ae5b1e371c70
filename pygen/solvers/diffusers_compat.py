"""``from_diffusers_config``: the timesteps, sigmas and updates of diffusers' schedulers,
on pygen's fused steps, so a pipeline can switch without retraining or re-tuning.

Everything diffusers computes in float32 (betas, ``alphas_cumprod``, the sigmas of the
inference grid) is computed here the same way, so the model sees the same timesteps
and the deterministic solvers return the same sample to float32 rounding. Stochastic
ones (``sde-dpmsolver++``, DDIM with ``eta > 0``) draw pygen's Philox noise instead of
``torch.randn``: the same distribution, not the same draws.
"""

import math
from functools import partial

import numpy as np
import torch

from pygen.solvers import methods
from pygen.solvers.grids import Grid
from pygen.solvers.plan import SamplingLoop, run_loop
from pygen.solvers.schedules import VPDiscrete

_PREDICTION = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}

# The defaults of each scheduler's __init__ that differ between them.
_DEFAULTS = {
    "DDIMScheduler": {"timestep_spacing": "leading", "clip_sample": True},
    "DPMSolverMultistepScheduler": {"timestep_spacing": "linspace"},
    "EulerDiscreteScheduler": {"timestep_spacing": "linspace"},
    "HeunDiscreteScheduler": {"timestep_spacing": "linspace"},
    "DEISMultistepScheduler": {"timestep_spacing": "linspace", "final_sigmas_type": "sigma_min"},
    "UniPCMultistepScheduler": {"timestep_spacing": "linspace"},
}


def _betas(config) -> np.ndarray:
    n = config.get("num_train_timesteps", 1000)
    start, end = config.get("beta_start", 0.0001), config.get("beta_end", 0.02)
    kind = config.get("beta_schedule", "linear")
    if config.get("trained_betas") is not None:
        return torch.tensor(config["trained_betas"], dtype=torch.float32).numpy()
    if kind == "linear":
        return torch.linspace(start, end, n, dtype=torch.float32).numpy()
    if kind == "scaled_linear":
        return (torch.linspace(start**0.5, end**0.5, n, dtype=torch.float32) ** 2).numpy()
    if kind == "squaredcos_cap_v2":

        def alpha_bar(t):
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)]
        return torch.tensor(betas, dtype=torch.float32).numpy()
    raise ValueError(f"beta_schedule {kind!r} is not supported (linear, scaled_linear, squaredcos_cap_v2)")


def _karras(sigma_max, sigma_min, n, rho=7.0) -> np.ndarray:
    ramp = np.linspace(0, 1, n)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def _sigma_to_t(sigma, log_sigmas) -> np.ndarray:
    """diffusers' interpolation of a timestep from log sigma."""
    log_sigma = np.log(np.maximum(sigma, 1e-10))
    dists = log_sigma - log_sigmas[:, np.newaxis]
    low = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    w = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[low + 1]), 0, 1)
    return (1 - w) * low + w * (low + 1)


def _reject(config, **unsupported):
    for key, default in unsupported.items():
        if config.get(key, default) != default:
            raise ValueError(f"from_diffusers_config: {key}={config[key]!r} is not supported")


class DiffusersSampler:
    """A diffusers scheduler's sampling loop on pygen's fused steps (see
    :func:`from_diffusers_config`)."""

    def __init__(self, config: dict, solver: str, builder, threshold: tuple[float, float]):
        # builder(Context) -> plan; None for DDIM, whose steps land off the grid (see _grid)
        self.config, self.solver, self.builder = config, solver, builder
        self.threshold = threshold
        self.prediction = _PREDICTION[config.get("prediction_type", "epsilon")]
        betas = _betas(config)
        self.alphas_cumprod = torch.cumprod(1.0 - torch.from_numpy(betas), 0).numpy()
        self.schedule = VPDiscrete(betas.astype(np.float64))
        self.euler_type = solver in ("euler", "heun")

    def _timesteps(self, steps: int) -> np.ndarray:
        """``set_timesteps``' spacing, as each scheduler family writes it."""
        n, spacing = len(self.alphas_cumprod), self.config["timestep_spacing"]
        offset = self.config.get("steps_offset", 0)
        if spacing not in ("linspace", "leading", "trailing"):
            raise ValueError(f"timestep_spacing {spacing!r} is not supported (linspace, leading, trailing)")
        if self.solver in ("dpmpp", "deis", "unipc", "pygen"):  # steps + 1 points, the last dropped
            if spacing == "linspace":
                return np.linspace(0, n - 1, steps + 1).round()[::-1][:-1].copy().astype(np.int64)
            if spacing == "leading":
                return (np.arange(0, steps + 1) * (n // (steps + 1))).round()[::-1][:-1].astype(
                    np.int64
                ) + offset
            return np.arange(n, 0, -n / steps).round().astype(np.int64) - 1
        dtype = np.int64 if self.solver == "ddim" else np.float32
        if spacing == "linspace":
            if self.solver == "ddim":
                return np.linspace(0, n - 1, steps).round()[::-1].copy().astype(np.int64)
            return np.linspace(0, n - 1, steps, dtype=np.float32)[::-1].copy()
        if spacing == "leading":
            return (np.arange(0, steps) * (n // steps)).round()[::-1].copy().astype(dtype) + offset
        return np.round(np.arange(n, 0, -n / steps)).astype(dtype) - 1

    def grid(self, steps: int) -> tuple[Grid, np.ndarray]:
        """The grid (model timesteps, alpha, sigma) diffusers' ``set_timesteps(steps)``
        makes, and its Karras sigmas (float32 values, as diffusers holds them)."""
        grid, sig, _ = self._grid(steps)
        return grid, sig

    def _grid(self, steps: int):
        """``grid``, plus for DDIM the ``(alpha, sigma)`` where each step lands."""
        ends = None
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an int >= 1, got {steps!r}")
        ac, n = self.alphas_cumprod.astype(np.float64), len(self.alphas_cumprod)
        table = ((1 - ac) / ac) ** 0.5
        log_sigmas = np.log(table)
        karras = self.config.get("use_karras_sigmas", False)
        t = self._timesteps(steps)
        if self.solver == "ddim":
            if karras:
                raise ValueError("use_karras_sigmas is not a DDIMScheduler option")
            # Each step lands on t - T // steps, not always the next timestep.
            prev = t - n // steps
            final = 1.0 if self.config.get("set_alpha_to_one", True) else ac[0]
            abar_end = np.where(prev >= 0, ac[np.maximum(prev, 0)], final)
            ends = (np.sqrt(abar_end).reshape(-1, 1), np.sqrt(1 - abar_end).reshape(-1, 1))
            abar = np.concatenate([ac[t], abar_end[-1:]])
            sig = np.sqrt((1 - abar) / abar)
        else:
            if karras and self.euler_type:
                sig = _karras(
                    np.interp(t[0], np.arange(n), table), np.interp(t[-1], np.arange(n), table), steps
                )
                t = _sigma_to_t(sig, log_sigmas)
            elif karras:
                sig = _karras(table[-1], table[0], steps)
                t = _sigma_to_t(sig, log_sigmas)
                if self.config.get("beta_schedule") != "squaredcos_cap_v2":
                    t = t.round()
            else:
                sig = np.interp(t, np.arange(n), table)
            last = 0.0 if self.config.get("final_sigmas_type", "zero") == "zero" else table[0]
            sig = np.concatenate([sig, [last]]).astype(np.float32).astype(np.float64)
        alpha = 1 / np.sqrt(sig**2 + 1)
        times = np.concatenate([np.asarray(t, dtype=np.float64), [0.0]])
        grid = Grid(times.reshape(-1, 1), alpha.reshape(-1, 1), (sig * alpha).reshape(-1, 1))
        return grid, sig, ends

    def init_noise_sigma(self, steps: int) -> float:
        """What diffusers' pipelines multiply the initial ``randn`` by."""
        if not self.euler_type:
            return 1.0
        sigma_max = float(self.grid(steps)[1].max())
        if self.config["timestep_spacing"] in ("linspace", "trailing"):
            return sigma_max
        return (sigma_max**2 + 1) ** 0.5

    def timesteps(self, steps: int) -> torch.Tensor:
        """The model timesteps in call order (diffusers' ``scheduler.timesteps``; for Heun
        each inner one twice)."""
        return torch.tensor([float(s.t[0]) for s in self.plan(steps) if s.t is not None])

    def plan(self, steps: int):
        return self._plan(steps)[0]

    def _plan(self, steps: int):
        grid, _, ends = self._grid(steps)
        ctx = methods.Context(grid, self.schedule, self.prediction)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            plan = methods.ddim(ctx, ends=ends) if self.builder is None else self.builder(ctx)
        return plan, grid

    def sample(self, model_fn, x: torch.Tensor, steps: int, *, seed=None, generator=None, progress=False):
        """``model_fn(model_input, timestep)`` as a diffusers UNet is called (the input
        already scaled by ``scale_model_input``, the timestep a ``[B]`` tensor), from
        ``x`` as the pipeline prepares it (``randn * init_noise_sigma``)."""
        plan, grid = self._plan(steps)
        if self.euler_type:  # diffusers keeps x / alpha for these; pygen keeps x
            x = x * float(grid.alpha[0, 0])
        ratio, tmax = self.threshold
        loop = SamplingLoop(
            plan, x, seed=seed, generator=generator, threshold_ratio=ratio, threshold_max=tmax
        )
        run_loop(loop, model_fn, progress, f"sampling ({self.solver})")
        return loop.x


def from_diffusers_config(config: dict, solver: str | None = None) -> DiffusersSampler:
    """A sampler equivalent to the diffusers scheduler that ``config`` describes.

    Args:
        config: a diffusers scheduler, or its configuration (``scheduler.config``, the
            ``scheduler_config.json`` of a pipeline), with ``_class_name`` one of
            ``DPMSolverMultistepScheduler`` (``dpmsolver++`` and ``sde-dpmsolver++``,
            orders 1-3, midpoint/heun), ``DDIMScheduler``, ``EulerDiscreteScheduler``,
            ``HeunDiscreteScheduler``, ``DEISMultistepScheduler`` (orders 1-3),
            ``UniPCMultistepScheduler`` (bh1/bh2, orders 1-3, ``disable_corrector``);
            betas, ``prediction_type`` (epsilon, sample, v_prediction),
            ``timestep_spacing``, ``steps_offset``, ``use_karras_sigmas``,
            ``final_sigmas_type``, ``lower_order_final``, ``euler_at_final`` and
            ``thresholding`` are honored; options pygen does not implement raise.
        solver: None (the scheduler ``config`` names), a scheduler class name (for a
            dict without ``_class_name``), or a name in :data:`pygen.solvers.SOLVERS`:
            that solver on the config's betas, prediction type and timestep spacing
            (the multistep schedulers' timesteps, ending at sigma = 0), e.g. UniPC for
            a pipeline shipped with DDIM.

    Returns:
        a :class:`DiffusersSampler`: ``.sample(model_fn, x, steps)``,
        ``.init_noise_sigma(steps)``, ``.timesteps(steps)``.
    """
    from pygen.solvers import SOLVERS

    if hasattr(config, "config"):  # a scheduler object
        config = {"_class_name": type(config).__name__, **dict(config.config)}
    name = config.get("_class_name") if solver is None or solver in SOLVERS else solver
    config = {**_DEFAULTS.get(name, {}), **config}
    pred = config.get("prediction_type", "epsilon")
    if pred not in _PREDICTION:
        raise ValueError(f"prediction_type {pred!r} is not supported ({', '.join(_PREDICTION)})")
    _reject(
        config,
        rescale_betas_zero_snr=False,
        use_exponential_sigmas=False,
        use_beta_sigmas=False,
        use_lu_lambdas=False,
        use_flow_sigmas=False,
        variance_type=None,
        clip_sample=False,
        timestep_type="discrete",
        interpolation_type="linear",
    )
    threshold = (config.get("dynamic_thresholding_ratio", 0.995), config.get("sample_max_value", 1.0))
    threshold = threshold if config.get("thresholding", False) else (0.0, 1.0)
    if solver in SOLVERS:  # the config's noise schedule and timesteps, pygen's solver
        if config.get("use_karras_sigmas", False):
            raise ValueError("use_karras_sigmas is not supported with a pygen solver")
        config.setdefault("timestep_spacing", "linspace")
        return DiffusersSampler(config, "pygen", SOLVERS[solver], threshold)
    order, final = config.get("solver_order", 2), config.get("lower_order_final", True)
    if name == "DPMSolverMultistepScheduler":
        algo = config.get("algorithm_type", "dpmsolver++")
        if algo not in ("dpmsolver++", "sde-dpmsolver++"):
            raise ValueError(f"algorithm_type {algo!r} is not supported (dpmsolver++, sde-dpmsolver++)")
        if config.get("lambda_min_clipped", -math.inf) != -math.inf:
            raise ValueError("lambda_min_clipped is not supported")
        builder = partial(
            methods.dpmpp,
            order=order,
            sde=algo == "sde-dpmsolver++",
            solver_type=config.get("solver_type", "midpoint"),
            lower_order_final=final,
            euler_at_final=config.get("euler_at_final", False),
        )
        return DiffusersSampler(config, "dpmpp", builder, threshold)
    if name in ("DEISMultistepScheduler", "UniPCMultistepScheduler"):
        if config.get("use_karras_sigmas", False):
            raise ValueError(f"use_karras_sigmas is not supported for {name}")
    if name == "DEISMultistepScheduler":
        if config.get("algorithm_type", "deis") != "deis":
            raise ValueError(f"algorithm_type {config['algorithm_type']!r} is not supported (deis)")
        return DiffusersSampler(
            config, "deis", partial(methods.deis, order=order, lower_order_final=final), threshold
        )
    if name == "UniPCMultistepScheduler":
        _reject(config, predict_x0=True, solver_p=None)
        builder = partial(
            methods.unipc,
            order=order,
            variant=config.get("solver_type", "bh2"),
            lower_order_final=final,
            disable_corrector=tuple(config.get("disable_corrector", ())),
        )
        return DiffusersSampler(config, "unipc", builder, threshold)
    if name == "DDIMScheduler":
        return DiffusersSampler(config, "ddim", None, threshold)
    if name == "EulerDiscreteScheduler":
        return DiffusersSampler(config, "euler", methods.ddim, threshold)
    if name == "HeunDiscreteScheduler":
        return DiffusersSampler(config, "heun", methods.heun, threshold)
    raise ValueError(
        f"scheduler {name!r} is not supported (DPMSolverMultistepScheduler, DDIMScheduler, "
        "EulerDiscreteScheduler, HeunDiscreteScheduler, DEISMultistepScheduler, UniPCMultistepScheduler)"
    )
