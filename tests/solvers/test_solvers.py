"""pygen.solvers on the Gaussian mixture with a closed-form denoiser: convergence orders,
equivalences between solvers, prediction types, per-sample times, guidance, noise."""

import functools
import math

import numpy as np
import pytest
import torch

from pygen import solvers as S
from pygen.solvers.analytic import GaussianMixture
from tests.helpers import DEVICES

GM = GaussianMixture.ring(variance=0.3, radius=1.5)
VP, EDM, FLOW = S.VPLinear(), S.EDM(), S.Flow()  # shared, so references are cached


def _start(schedule, batch=64, t_max=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    _, sigma = schedule.alpha_sigma(schedule.t_max if t_max is None else t_max)
    return torch.randn(batch, 2, dtype=torch.float64, generator=g) * float(sigma)


@functools.cache
def _reference(schedule, prediction):
    x = _start(schedule)
    model = GM.model(schedule, prediction)
    common = dict(schedule=schedule, prediction=prediction, final_zero=False, **_window(schedule))
    return x, model, common, S.sample(model, x, solver="dpm_solver_3", steps=300, **common)


def _window(schedule):
    return dict(t_min=0.05) if not isinstance(schedule, S.Flow) else dict(t_min=0.05, t_max=0.95)


def _observed_order(schedule, prediction, solver, **kw):
    x, model, common, ref = _reference(schedule, prediction)
    errs = [
        (S.sample(model, x, solver=solver, steps=n, **common, **kw) - ref).abs().max().item()
        for n in (20, 40, 80)
    ]
    return math.log2(errs[1] / errs[2])


@pytest.mark.parametrize(
    "schedule,prediction,solver,order",
    [
        (VP, "eps", "euler", 1),
        (VP, "eps", "dpm_solver_2", 2),
        (VP, "eps", "dpm_solver_3", 3),
        (VP, "eps", "dpmpp_2m", 2),
        (VP, "eps", "deis_2", 2),
        (VP, "eps", "deis_3", 3),
        (VP, "eps", "unipc_bh1", 3),
        (VP, "eps", "unipc_bh2", 3),
        (VP, "v", "heun", 2),
        (EDM, "x0", "heun", 2),
        (EDM, "x0", "dpmpp_2m", 2),
        (FLOW, "flow", "flow_euler", 1),
        (FLOW, "flow", "flow_midpoint", 2),
        (FLOW, "flow", "flow_heun", 2),
        (FLOW, "flow", "dpmpp_3m", 3),
    ],
)
def test_convergence_order(schedule, prediction, solver, order):
    kw = dict(lower_order_final=False) if solver.startswith(("dpmpp", "deis", "unipc")) else {}
    if solver.startswith("unipc"):
        kw["order"] = 2  # UniP-2 with UniC: order 3
    observed = _observed_order(schedule, prediction, solver, **kw)
    assert abs(observed - order) < 0.3, f"{solver}: observed order {observed:.2f}, nominal {order}"


def test_first_order_solvers_agree():
    sched = S.VPLinear()
    x, model = _start(sched), GM.model(sched, "eps")
    outs = [
        S.sample(model, x, schedule=sched, solver=s, steps=7)
        for s in ("euler", "ddim", "dpm_solver_1", "dpmpp_1")
    ]
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("solver", ["dpmpp_2m", "heun", "dpm_solver_2", "flow_midpoint"])
def test_prediction_types_agree(solver):
    sched = S.VPCosine()
    x = _start(sched)
    outs = [
        S.sample(GM.model(sched, p), x, schedule=sched, solver=solver, steps=8, prediction=p)
        for p in S.PREDICTIONS
    ]
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], rtol=1e-9, atol=1e-9)


def _data_radius() -> float:
    return GM.sample(100_000, torch.Generator().manual_seed(0)).norm(dim=1).mean().item()


def test_final_step_reaches_zero_noise():
    sched = S.VPLinear()
    x, model = _start(sched, batch=4000), GM.model(sched, "eps")
    y = S.sample(model, x, schedule=sched, solver="dpmpp_3m", steps=25)
    # the samples land on the data distribution: the same mean radius as true draws
    assert abs(y.norm(dim=1).mean().item() - _data_radius()) < 0.05


def test_per_sample_times_match_separate_runs():
    sched = S.EDM()
    t_max = torch.tensor([80.0, 10.0, 2.0])
    x = _start(sched, batch=3) * (t_max / 80)[:, None]
    model = GM.model(sched, "x0")
    together = S.sample(model, x, schedule=sched, solver="dpmpp_2m", steps=6, t_max=t_max)
    for b in range(3):
        alone = S.sample(
            model, x[b : b + 1], schedule=sched, solver="dpmpp_2m", steps=6, t_max=float(t_max[b])
        )
        torch.testing.assert_close(together[b : b + 1], alone, rtol=1e-12, atol=1e-12)


def test_guidance_is_fused_combination():
    sched = S.VPLinear()
    x = _start(sched)
    cond, uncond = GM.model(sched, "eps"), GaussianMixture.ring(k=3).model(sched, "eps")
    w = 3.0
    fused = S.sample(lambda x, t: (cond(x, t), uncond(x, t)), x, schedule=sched, steps=6, guidance=w)
    eager = S.sample(lambda x, t: uncond(x, t) + w * (cond(x, t) - uncond(x, t)), x, schedule=sched, steps=6)
    torch.testing.assert_close(fused, eager, rtol=1e-12, atol=1e-12)
    with pytest.raises(TypeError, match="cond"):
        S.sample(cond, x, schedule=sched, steps=6, guidance=w)


@pytest.mark.parametrize(
    "solver,options", [("dpmpp_2m_sde", {}), ("ddim", dict(eta=1.0)), ("heun", dict(s_churn=10.0))]
)
def test_stochastic_solvers_are_seeded(solver, options):
    sched = S.VPLinear()
    x, model = _start(sched), GM.model(sched, "eps")
    run = [S.sample(model, x, schedule=sched, solver=solver, steps=8, seed=s, **options) for s in (1, 1, 2)]
    assert torch.equal(run[0], run[1]) and not torch.equal(run[0], run[2])
    assert torch.isfinite(run[0]).all()


def test_sde_samples_the_data_distribution():
    sched = S.VPLinear()
    x, model = _start(sched, batch=4000), GM.model(sched, "eps")
    y = S.sample(model, x, schedule=sched, solver="dpmpp_2m_sde", steps=40, seed=0)
    angle = torch.atan2(y[:, 1], y[:, 0])
    counts = torch.bincount(((angle + math.pi / 8) % (2 * math.pi) // (math.pi / 4)).long(), minlength=8)
    assert counts.min() > 350 and counts.max() < 650  # 8 equal modes of 500
    assert abs(y.norm(dim=1).mean().item() - _data_radius()) < 0.05


def test_step_level_loop_matches_sample():
    sched = S.VPLinear()
    x, model = _start(sched), GM.model(sched, "eps")
    plan = S.build_plan(sched, "dpm_solver_3", steps=5)
    loop = S.SamplingLoop(plan, x)
    while not loop.done:
        loop.step(model(loop.x, loop.t))
    y, nfe, traj = S.sample(
        model, x, schedule=sched, solver="dpm_solver_3", steps=5, return_nfe=True, return_trajectory=True
    )
    assert torch.equal(loop.x, y) and loop.nfe == nfe == 13  # 4 intervals of 3 calls, then one to zero
    assert len(traj) == len(plan) + 1
    with pytest.raises(RuntimeError, match="done"):
        loop.step(y)


def test_thresholding_bounds_the_data_prediction():
    sched = S.VPLinear()
    x, model = _start(sched), GaussianMixture.ring(radius=4.0).model(sched, "eps")
    y = S.sample(model, x, schedule=sched, solver="ddim", steps=10, threshold_ratio=0.9, threshold_max=1.0)
    assert y.abs().max() <= 1.0 + 1e-12


def test_float32_state_close_to_float64():
    sched = S.VPLinear()
    x, model = _start(sched), GM.model(sched, "eps")
    y64 = S.sample(model, x, schedule=sched, steps=10)
    y32 = S.sample(model, x.float(), schedule=sched, steps=10)
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), y64, rtol=1e-4, atol=1e-4)


def test_schedules_invert_lambda():
    for sched in (S.VPLinear(), S.VPCosine(), S.VPDiscrete.linear(), S.VE(), S.EDM(), S.Flow()):
        t = np.linspace(sched.t_min, sched.t_max, 9)[1:-1]
        np.testing.assert_allclose(sched.t_of_lambda(sched.lam(t)), t, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("spacing", S.grids.SPACINGS)
def test_grids(spacing):
    g = S.time_grid(S.VPLinear(), 10, spacing)
    assert g.t.shape == (11, 1) and g.sigma[-1, 0] == 0 and g.alpha[-1, 0] == 1
    assert (g.lam[1:] > g.lam[:-1]).all()
    assert g.t[0, 0] == 1.0 and abs(g.t[-2, 0] - 1e-3) < 1e-15


def test_bad_input():
    sched = S.VPLinear()
    x, model = _start(sched), GM.model(sched, "eps")
    with pytest.raises(ValueError, match="solver must be one of"):
        S.sample(model, x, schedule=sched, solver="dpm++")
    with pytest.raises(ValueError, match="prediction must be one of"):
        S.sample(model, x, schedule=sched, prediction="score")
    with pytest.raises(ValueError, match="steps must be"):
        S.sample(model, x, schedule=sched, steps=0)
    with pytest.raises(ValueError, match="alpha > 0"):
        S.sample(model, x, schedule=S.Flow(), solver="heun", prediction="flow")
    with pytest.raises(ValueError, match="per-sample"):
        S.sample(model, x, schedule=sched, t_max=torch.tensor([1.0, 0.5]))


def _smooth_model(x, t):
    return torch.tanh(x) * 0.5 + 0.1 * t.reshape(-1, *[1] * (x.dim() - 1)) * x


@pytest.mark.skipif("cuda" not in DEVICES, reason="no CUDA device, or pygen built without CUDA")
def test_sde_sample_same_on_cpu_and_cuda():
    sched = S.VPLinear()
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    cpu = S.sample(_smooth_model, x, schedule=sched, solver="dpmpp_2m_sde", steps=12, seed=5)
    cuda = S.sample(_smooth_model, x.cuda(), schedule=sched, solver="dpmpp_2m_sde", steps=12, seed=5)
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif("cuda" not in DEVICES, reason="no CUDA device, or pygen built without CUDA")
@pytest.mark.parametrize("solver", ["dpmpp_2m_sde", "unipc_bh2", "heun"])
def test_loop_captures_in_a_cuda_graph(solver):
    sched = S.VPLinear()
    plan = (
        S.build_plan(sched, solver, steps=8, s_churn=5.0)
        if solver == "heun"
        else S.build_plan(sched, solver, 8)
    )
    x = torch.randn(4, 256, device="cuda")

    def run(x):
        loop = S.SamplingLoop(plan, x, seed=3)
        while not loop.done:
            loop.step(_smooth_model(loop.x, loop.t))
        return loop.x

    eager = run(x)
    static_x = x.clone()
    loop = S.SamplingLoop(plan, static_x, seed=3)  # tables go to the device here, not in the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        while not loop.done:
            loop.step(_smooth_model(loop.x, loop.t))
    graph.replay()
    torch.testing.assert_close(loop.x, eager)
    static_x.copy_(x * 0.5)
    graph.replay()
    torch.testing.assert_close(loop.x, run(x * 0.5))
