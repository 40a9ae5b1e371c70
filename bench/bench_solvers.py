"""The solvers' fused update (pygen.ops.solver_update) against the same step in PyTorch
eager, written as diffusers writes DPM-Solver++ 2M (and its SDE variant with
torch.randn noise), and a whole sampling loop with the model left out against
diffusers' DPMSolverMultistepScheduler (set_timesteps + step), when diffusers is
installed."""

import math

import torch

import pygen
from pygen import solvers
from pygen.bench import Case

# A mid-loop DPM-Solver++ 2M step (lambda from -1 to -0.5, previous step 0.4).
ALPHA_S, SIGMA_S, ALPHA_T, SIGMA_T = 0.3, math.sqrt(1 - 0.09), 0.45, math.sqrt(1 - 0.2025)
H, R0 = 0.5, 0.8


def eager_2m(sample, model_output, m1, sde=False):
    x0 = (sample - SIGMA_S * model_output) / ALPHA_S
    d0, d1 = x0, (1.0 / R0) * (x0 - m1)
    if not sde:
        x_t = (
            (SIGMA_T / SIGMA_S) * sample
            - (ALPHA_T * (math.exp(-H) - 1.0)) * d0
            - 0.5 * (ALPHA_T * (math.exp(-H) - 1.0)) * d1
        )
    else:
        x_t = (
            (SIGMA_T / SIGMA_S * math.exp(-H)) * sample
            + (ALPHA_T * (1 - math.exp(-2.0 * H))) * d0
            + 0.5 * (ALPHA_T * (1 - math.exp(-2.0 * H))) * d1
            + SIGMA_T * math.sqrt(1.0 - math.exp(-2 * H)) * torch.randn_like(sample)
        )
    return x_t, x0


def coef_2m(batch, device, sde):
    """The same step's coefficients: x0 = cx x + co out, y = a x + bp x0 + b1 m1 (+ c z)."""
    e = math.exp(-H)
    if sde:
        a, phi = SIGMA_T / SIGMA_S * e, ALPHA_T * (1 - e * e)
        bp, b1, c = phi + 0.5 * phi / R0, -0.5 * phi / R0, SIGMA_T * math.sqrt(1 - e * e)
    else:
        a, phi = SIGMA_T / SIGMA_S, -ALPHA_T * (e - 1)
        bp, b1, c = phi + 0.5 * phi / R0, -0.5 * phi / R0, 0.0
    row = [0.0, 1 / ALPHA_S, -SIGMA_S / ALPHA_S, a, bp, c, b1]
    return torch.tensor(row, dtype=torch.float64, device=device).expand(batch, -1).contiguous()


def diffusers_loop(scheduler, steps, x, eps):
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        x = scheduler.step(eps, t, x).prev_sample
    return x


def cases(device: str, quick: bool = False) -> list[Case]:
    out = []
    for numel in [1 << 20] if quick else [1 << 20, 1 << 22]:
        shape = (4, numel // 4)
        x, model_output, m1 = (torch.randn(shape, device=device) for _ in range(3))
        for sde in (False, True):
            coef = coef_2m(4, device, sde)
            out.append(
                Case(
                    name=f"dpm++2m{'-sde' if sde else ''} step {numel >> 20}M fp32",
                    fn=lambda x=x, o=model_output, m1=m1, coef=coef, sde=sde: pygen.ops.solver_update(
                        x, coef, out=o, history=[m1], noise=sde, seed=0
                    ),
                    baseline="eager (diffusers' arithmetic)",
                    baseline_fn=lambda x=x, o=model_output, m1=m1, sde=sde: eager_2m(x, o, m1, sde),
                    params={"numel": numel, "sde": sde, "device": device},
                )
            )
    try:
        from diffusers import DPMSolverMultistepScheduler
    except ImportError:
        return out
    scheduler = DPMSolverMultistepScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    schedule = solvers.VPDiscrete.scaled_linear()
    for shape in [(1, 4, 64, 64)] if quick else [(1, 4, 64, 64), (4, 4, 128, 128)]:
        x, eps = torch.randn(shape, device=device), torch.randn(shape, device=device) * 0.1
        out.append(
            Case(
                name=f"dpm++2m 10-step loop {'x'.join(map(str, shape))}",
                fn=lambda x=x, eps=eps: solvers.sample(
                    lambda x, t, eps=eps: eps, x, schedule=schedule, solver="dpmpp_2m", steps=10
                ),
                baseline="diffusers scheduler",
                baseline_fn=lambda x=x, eps=eps: diffusers_loop(scheduler, 10, x, eps),
                params={"shape": list(shape), "steps": 10, "device": device},
            )
        )
    return out
