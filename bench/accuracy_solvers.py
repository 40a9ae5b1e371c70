"""The analytic benchmark of the samplers: a Gaussian mixture whose exact denoiser is
known, so the probability-flow ODE's exact endpoint can be computed (pygen's adaptive
Dormand-Prince at tolerance 1e-10), and every solver's error to it measured, with no
network in the way.

For each solver and NFE budget (5, 10, 20, 50): the mean L2 distance of the samples to
the exact endpoint, and the sliced Wasserstein distance to fresh draws of the mixture;
pygen's solvers on three grids, diffusers' schedulers and torchdiffeq's fixed-step
methods on the same model in the same run, and the adaptive methods (pygen's and
torchdiffeq's dopri5) over a sweep of tolerances.

    python bench/accuracy_solvers.py [--quick]

writes bench/results/solvers-analytic.json and .png.
"""

import argparse
import json
from pathlib import Path

import torch

from pygen import solvers as S
from pygen.solvers.adaptive import solve_adaptive
from pygen.solvers.analytic import GaussianMixture, sliced_wasserstein

NFES = (5, 10, 20, 50)
RESULTS = Path(__file__).resolve().parent / "results"
SOLVERS = {  # name -> (steps for an NFE budget, options)
    "euler": (lambda n: n, {}),
    "heun": (lambda n: (n + 1) // 2, {}),
    "dpm_solver_2": (lambda n: (n + 1) // 2, {}),
    "dpm_solver_3": (lambda n: (n + 2) // 3, {}),
    "dpmpp_2m": (lambda n: n, {}),
    "dpmpp_3m": (lambda n: n, {}),
    "deis_3": (lambda n: n, {}),
    "unipc_bh1": (lambda n: n, dict(order=3)),
    "unipc_bh2": (lambda n: n, dict(order=2)),
}
DIFFUSERS = {  # label -> (class, config, steps for an NFE budget)
    "DPMSolverMultistep 2M": ("DPMSolverMultistepScheduler", {}, lambda n: n),
    "DPMSolverMultistep 3M": ("DPMSolverMultistepScheduler", dict(solver_order=3), lambda n: n),
    "DPMSolverMultistep 2M karras": (
        "DPMSolverMultistepScheduler",
        dict(use_karras_sigmas=True),
        lambda n: n,
    ),
    "UniPCMultistep bh2": ("UniPCMultistepScheduler", {}, lambda n: n),
    "UniPCMultistep bh2 order 3": ("UniPCMultistepScheduler", dict(solver_order=3), lambda n: n),
    "DEISMultistep 3": ("DEISMultistepScheduler", dict(solver_order=3), lambda n: n),
    "EulerDiscrete": ("EulerDiscreteScheduler", {}, lambda n: n),
    "HeunDiscrete": ("HeunDiscreteScheduler", {}, lambda n: (n + 1) // 2),
    "DDIM": ("DDIMScheduler", dict(clip_sample=False, timestep_spacing="trailing"), lambda n: n),
}


def diffusers_sample(name, config, steps, model, x):
    import diffusers

    scheduler = getattr(diffusers, name)(**config)
    scheduler.set_timesteps(steps)
    x, nfe = x * scheduler.init_noise_sigma, 0
    for t in scheduler.timesteps:
        inp = scheduler.scale_model_input(x, t)
        out = model(inp, torch.full((x.shape[0],), float(t), dtype=x.dtype))
        x, nfe = scheduler.step(out, t, x).prev_sample, nfe + 1
    return x, nfe


def torchdiffeq_sample(method, schedule, model, x, nfe=None, tol=None):
    """torchdiffeq on dx/dt in t, then the same last step to sigma = 0 (a data
    prediction at t_min)."""
    import numpy as np
    import torchdiffeq

    calls = [0]

    def velocity(t, xx):
        calls[0] += 1
        tn = np.float64(t.item())
        a, s = schedule.alpha_sigma(tn)
        da, ds = schedule.derivatives(tn)
        cx, co = S.conversion("eps", "velocity", a, s, da, ds)
        return float(cx) * xx + float(co) * model(xx, t.reshape(1).expand(xx.shape[0]))

    t0, t1 = schedule.t_max, schedule.t_min
    if tol is None:  # fixed steps: rk4 spends 4 calls a step, midpoint 2, euler 1
        per = {"rk4": 4, "midpoint": 2, "euler": 1}[method]
        steps = max(1, (nfe - 1) // per)
        times = torch.linspace(t0, t1, steps + 1, dtype=torch.float64)
        sol = torchdiffeq.odeint(velocity, x, times, method=method)
    else:
        times = torch.tensor([t0, t1], dtype=torch.float64)
        sol = torchdiffeq.odeint(velocity, x, times, method=method, rtol=tol, atol=tol)
    a, s = (float(v) for v in schedule.alpha_sigma(t1))
    end = sol[-1]
    return (end - s * model(end, torch.full((x.shape[0],), t1, dtype=x.dtype))) / a, calls[0] + 1


def run(quick: bool = False) -> dict:
    mixture = GaussianMixture.ring(k=8, radius=2.0, variance=0.02)
    schedule = S.VPDiscrete.linear()  # diffusers' default betas
    model = mixture.model(schedule, "eps")
    n = 256 if quick else 4000
    x = torch.randn(n, mixture.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    exact, exact_nfe = solve_adaptive(model, x, schedule=schedule, rtol=1e-10, atol=1e-10)
    data = mixture.sample(n, torch.Generator().manual_seed(2))
    rows = []

    def record(family, name, nfe, y):
        err = (y - exact).norm(dim=1).mean().item()
        rows.append(dict(family=family, solver=name, nfe=nfe, error=err, swd=sliced_wasserstein(y, data)))

    nfes = NFES[:2] if quick else NFES
    for solver, (steps_for, options) in SOLVERS.items():
        for spacing in ("time", "logsnr", "karras"):
            for budget in nfes:
                y, nfe = S.sample(
                    model,
                    x,
                    schedule=schedule,
                    solver=solver,
                    steps=steps_for(budget),
                    spacing=spacing,
                    return_nfe=True,
                    **options,
                )
                record("pygen", f"{solver} ({spacing})", nfe, y)
    for label, (name, config, steps_for) in DIFFUSERS.items():
        for budget in nfes:
            y, nfe = diffusers_sample(name, config, steps_for(budget), model, x)
            record("diffusers", label, nfe, y)
    for method in ("euler", "midpoint", "rk4"):
        for budget in nfes:
            if budget > {"rk4": 4, "midpoint": 2, "euler": 1}[method]:
                y, nfe = torchdiffeq_sample(method, schedule, model, x, nfe=budget)
                record("torchdiffeq", method, nfe, y)
    for tol in (1e-3, 1e-4) if quick else (1e-3, 1e-4, 1e-5, 1e-6, 1e-7):
        y, nfe = solve_adaptive(model, x, schedule=schedule, rtol=tol, atol=tol)
        record("pygen", "adaptive dopri5 (log sigma~)", nfe, y)
        y, nfe = torchdiffeq_sample("dopri5", schedule, model, x, tol=tol)
        record("torchdiffeq", "dopri5", nfe, y)
    floor = sliced_wasserstein(exact, data)
    return dict(
        problem="8-mode ring mixture in 2-D, variance 0.02, radius 2; DDPM linear betas",
        samples=n,
        exact_nfe=exact_nfe,
        exact_swd=floor,
        rows=rows,
    )


def best_at(rows, family, nfe_max):
    fit = [r for r in rows if r["family"] == family and r["nfe"] <= nfe_max]
    return min(fit, key=lambda r: r["error"]) if fit else None


def summary(report) -> str:
    rows, lines = report["rows"], []
    for budget in NFES:
        best = {f: best_at(rows, f, budget) for f in ("pygen", "diffusers", "torchdiffeq")}
        text = ", ".join(f"{f}: {r['solver']} {r['error']:.2e}" for f, r in best.items() if r)
        lines.append(f"NFE <= {budget}: {text}")
    for family, name in (("pygen", "adaptive dopri5 (log sigma~)"), ("torchdiffeq", "dopri5")):
        hits = [
            r["nfe"] for r in rows if r["solver"] == name and r["family"] == family and r["error"] <= 1e-4
        ]
        lines.append(f"{family} {name}: error <= 1e-4 at {min(hits) if hits else 'never'} NFE")
    return "\n".join(lines)


def plot(report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    names = sorted({(r["family"], r["solver"]) for r in report["rows"]})
    styles = {"pygen": "-", "diffusers": "--", "torchdiffeq": ":"}
    for family, name in names:
        pts = sorted(
            (r["nfe"], r["error"]) for r in report["rows"] if (r["family"], r["solver"]) == (family, name)
        )
        ax.loglog(*zip(*pts, strict=True), styles[family], marker="o", ms=3, label=f"{family}: {name}")
    ax.set_xlabel("NFE")
    ax.set_ylabel("mean L2 error to the exact ODE endpoint")
    ax.set_title(report["problem"])
    ax.legend(fontsize=5, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=150)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    report = run(quick=args.quick)
    print(summary(report))
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "solvers-analytic.json").write_text(json.dumps(report, indent=1))
        plot(report, RESULTS / "solvers-analytic.png")


if __name__ == "__main__":
    main()
