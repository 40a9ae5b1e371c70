"""A sampler as a plan: every coefficient computed on the host in float64 before the
loop, then a loop of model calls and fused updates that never waits for the host (so
it can be captured in a CUDA graph).

A plan is a list of :class:`Step`. Each step optionally calls the model at the current
state, converts its output to a prediction (``pred = cx x + co out``), and replaces the
state by ``a x + bp pred + sum_j bh_j operand_j + c noise``, where the operands are
earlier predictions (multistep solvers) or saved states (Runge-Kutta stages).
"""

from dataclasses import dataclass, field

import numpy as np
import torch

from pygen.ops.random import philox_blocks, resolve_seed
from pygen.ops.solvers import solver_update


@dataclass
class Step:
    """One fused update. Coefficients are floats or float64 arrays of 1 or ``B`` values."""

    a: np.ndarray | float
    t: np.ndarray | None = None  # model time; None: no model call (pred unused)
    cx: np.ndarray | float = 0.0
    co: np.ndarray | float = 0.0
    bp: np.ndarray | float = 0.0
    c: np.ndarray | float = 0.0  # noise scale; noise is drawn unless it is 0
    operands: list[tuple[tuple[str, object], np.ndarray | float]] = field(default_factory=list)
    save: str | None = None  # keep the state before this step under this name

    @property
    def noisy(self) -> bool:
        return bool(np.any(self.c))


class SamplingLoop:
    """The step-level interface: drive the model calls yourself.

    ``loop.t`` is the ``[B]`` time of the next model call at state ``loop.x``; pass the
    model's output to ``loop.step(out)`` (or ``(cond, uncond)`` with guidance) until
    ``loop.done``; ``loop.x`` is then the sample. Steps that need no model call (noise
    injection) run on their own when ``done``, ``t`` or ``step`` is next used. The
    coefficient tables move to x's device at construction, so a loop built before
    ``torch.cuda.graph`` can be captured from its first ``done`` on.
    """

    def __init__(
        self,
        plan: list[Step],
        x: torch.Tensor,
        *,
        guidance=None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        offset: int = 0,
        threshold_ratio: float = 0.0,
        threshold_max: float = 1.0,
        return_trajectory: bool = False,
    ):
        if not isinstance(x, torch.Tensor) or x.dim() < 1:
            raise ValueError("x must be a tensor of shape [B, ...]")
        batch, device = x.shape[0], x.device
        self.guided = guidance is not None
        w = np.asarray(0.0 if guidance is None else torch.as_tensor(guidance).cpu(), dtype=np.float64)
        self._noisy = [s.noisy for s in plan]
        self._seed = resolve_seed(seed, generator) if any(self._noisy) else 0
        self._offset = offset
        self._blocks = philox_blocks(x.numel(), torch.float64 if x.dtype == torch.float64 else torch.float32)
        self._threshold = (float(threshold_ratio), float(threshold_max))

        def table_of(values) -> np.ndarray:
            table = np.empty((batch, len(values)))
            for j, v in enumerate(values):
                v = np.asarray(v, dtype=np.float64).reshape(-1)
                if v.size not in (1, batch):
                    raise ValueError(f"per-sample values must have {batch} entries, got {v.size}")
                table[:, j] = v
            return table

        # Everything the loop needs, on the device, before the loop.
        self._tables, self._times, self._last_use = [], [], {}
        for i, s in enumerate(plan):
            table = table_of([w, s.cx, s.co, s.a, s.bp, s.c] + [coef for _, coef in s.operands])
            if not np.isfinite(table).all():
                raise ValueError(
                    f"step {i} of the plan has a non-finite coefficient (a grid point repeated, "
                    "or a step the solver cannot take, such as eps at sigma = 0)"
                )
            self._tables.append(torch.from_numpy(table).to(device))
            self._times.append(
                None if s.t is None else torch.from_numpy(table_of([s.t])[:, 0]).to(device, x.dtype)
            )
            for ref, _ in s.operands:
                self._last_use[ref] = i
        self.plan, self.x, self.nfe, self._i = plan, x, 0, 0
        self._preds, self._states = {}, {}
        self.trajectory = [x] if return_trajectory else None

    @property
    def done(self) -> bool:
        self._advance()
        return self._i == len(self.plan)

    @property
    def t(self) -> torch.Tensor:
        if self.done:
            raise RuntimeError("the sampling loop is done")
        return self._times[self._i]

    def step(self, out) -> torch.Tensor:
        """Takes the model output at ``(x, t)``; returns the new state."""
        if self.done:
            raise RuntimeError("the sampling loop is done")
        uncond = None
        if self.guided:
            if not (isinstance(out, tuple) and len(out) == 2):
                raise TypeError("with guidance, the model output must be (conditional, unconditional)")
            out, uncond = out
        self._update(out, uncond)
        self.nfe += 1
        return self.x

    def _advance(self) -> None:
        while self._i < len(self.plan) and self.plan[self._i].t is None:
            self._update(None, None)

    def _update(self, out, uncond) -> None:
        i, s = self._i, self.plan[self._i]
        if ("state", s.save) in self._last_use:
            self._states[s.save] = self.x
        operands = [self._preds[k] if kind == "pred" else self._states[k] for (kind, k), _ in s.operands]
        ratio, tmax = self._threshold
        self.x, pred = solver_update(
            self.x,
            self._tables[i],
            out=out,
            uncond=uncond,
            history=operands,
            noise=self._noisy[i],
            seed=self._seed,
            offset=self._offset,
            threshold_ratio=ratio if out is not None else 0.0,
            threshold_max=tmax,
        )
        if self._noisy[i]:
            self._offset += self._blocks
        if out is not None and ("pred", self.nfe) in self._last_use:
            self._preds[self.nfe] = pred
        for kind, k in [r for r, last in self._last_use.items() if last == i]:
            (self._preds if kind == "pred" else self._states).pop(k, None)
        if self.trajectory is not None:
            self.trajectory.append(self.x)
        self._i += 1


def run_loop(loop: SamplingLoop, model_fn, progress: bool = False, desc: str = "sampling") -> SamplingLoop:
    """Calls ``model_fn(loop.x, loop.t)`` until the loop is done (a tqdm bar over the
    model calls with ``progress``); returns the loop."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(s.t is not None for s in loop.plan), desc=desc, unit="nfe")
    while not loop.done:
        loop.step(model_fn(loop.x, loop.t))
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    return loop
