"""from_diffusers_config against diffusers' own schedulers on the same model function:
the same timesteps, in the same order, and the same sample to ~1e-6 relative (diffusers
computes its steps in float32)."""

import pytest
import torch

from pygen.solvers import from_diffusers_config

diffusers = pytest.importorskip("diffusers", reason="diffusers (a test dependency) is not installed")

SD = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
CONFIGS = [
    ("DPMSolverMultistepScheduler", {}),
    ("DPMSolverMultistepScheduler", dict(solver_order=3)),
    ("DPMSolverMultistepScheduler", dict(solver_order=1, final_sigmas_type="sigma_min")),
    ("DPMSolverMultistepScheduler", dict(use_karras_sigmas=True, timestep_spacing="trailing")),
    (
        "DPMSolverMultistepScheduler",
        dict(prediction_type="v_prediction", timestep_spacing="leading", steps_offset=1, **SD),
    ),
    ("DPMSolverMultistepScheduler", dict(solver_type="heun", thresholding=True, sample_max_value=1.5)),
    (
        "DPMSolverMultistepScheduler",
        dict(prediction_type="sample", beta_schedule="squaredcos_cap_v2", lower_order_final=False),
    ),
    ("DDIMScheduler", dict(clip_sample=False)),
    ("DDIMScheduler", dict(clip_sample=False, timestep_spacing="trailing", set_alpha_to_one=False, **SD)),
    ("EulerDiscreteScheduler", {}),
    (
        "EulerDiscreteScheduler",
        dict(use_karras_sigmas=True, timestep_spacing="leading", steps_offset=1, **SD),
    ),
    ("HeunDiscreteScheduler", {}),
    ("HeunDiscreteScheduler", dict(prediction_type="v_prediction", timestep_spacing="trailing")),
    ("DEISMultistepScheduler", {}),
    ("DEISMultistepScheduler", dict(solver_order=3, **SD)),
    ("DEISMultistepScheduler", dict(solver_order=1, timestep_spacing="trailing")),
    ("UniPCMultistepScheduler", {}),
    ("UniPCMultistepScheduler", dict(solver_order=3, prediction_type="v_prediction", **SD)),
    ("UniPCMultistepScheduler", dict(solver_order=3, disable_corrector=[0, 2], timestep_spacing="leading")),
    # bh1 with a last step to sigma = 0 is NaN in diffusers (B(h) = -inf times 0)
    ("UniPCMultistepScheduler", dict(solver_type="bh1", solver_order=3, final_sigmas_type="sigma_min")),
]


def model(x, t):
    """A smooth nonlinear stand-in for a UNet, depending on the timestep."""
    return 0.3 * torch.sin(3 * x) + 0.2 * x + 1e-4 * t.reshape(-1, *[1] * (x.dim() - 1)) * x


def run_diffusers(scheduler, steps, noise):
    scheduler.set_timesteps(steps)
    x, timesteps = noise * scheduler.init_noise_sigma, []
    for t in scheduler.timesteps:
        timesteps.append(float(t))
        inp = scheduler.scale_model_input(x, t)
        x = scheduler.step(model(inp, torch.full((x.shape[0],), float(t), dtype=x.dtype)), t, x).prev_sample
    return x, timesteps


@pytest.mark.parametrize("steps", [7, 20])
@pytest.mark.parametrize("name,config", CONFIGS)
def test_matches_diffusers(name, config, steps):
    scheduler = getattr(diffusers, name)(**config)
    noise = torch.randn(3, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(steps))
    ref, ref_timesteps = run_diffusers(scheduler, steps, noise)
    sampler = from_diffusers_config(dict(scheduler.config), solver=name)
    assert sampler.timesteps(steps).tolist() == pytest.approx(ref_timesteps, abs=1e-4)
    assert sampler.init_noise_sigma(steps) == pytest.approx(float(scheduler.init_noise_sigma), rel=1e-6)
    out = sampler.sample(model, noise * sampler.init_noise_sigma(steps), steps)
    assert ((out - ref).abs().max() / ref.abs().max()).item() < 1e-5


def test_pygen_solver_on_a_diffusers_config():
    noise = torch.randn(2, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    config = diffusers.DPMSolverMultistepScheduler(**SD)
    same = from_diffusers_config(config, solver="dpmpp_2m").sample(model, noise, 12)
    torch.testing.assert_close(
        same, from_diffusers_config(config).sample(model, noise, 12), rtol=1e-12, atol=1e-12
    )
    ddim = diffusers.DDIMScheduler(clip_sample=False, **SD)
    out = from_diffusers_config(ddim, solver="unipc_bh2").sample(model, noise, 12)
    assert torch.isfinite(out).all()
    assert from_diffusers_config(ddim, solver="unipc_bh2").timesteps(12).tolist() == pytest.approx(
        run_diffusers(diffusers.UniPCMultistepScheduler(timestep_spacing="leading", **SD), 12, noise)[1]
    )


def test_unipc_bh1_to_zero_is_finite():
    sampler = from_diffusers_config(diffusers.UniPCMultistepScheduler(solver_type="bh1"))
    assert torch.isfinite(sampler.sample(model, torch.randn(2, 8, dtype=torch.float64), 7)).all()


def test_sde_variant_is_seeded():
    sampler = from_diffusers_config(diffusers.DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++"))
    noise = torch.randn(2, 8, dtype=torch.float64)
    a, b = (sampler.sample(model, noise, 10, seed=3) for _ in range(2))
    assert torch.equal(a, b) and not torch.equal(a, sampler.sample(model, noise, 10, seed=4))


@pytest.mark.parametrize(
    "config,match",
    [
        (dict(_class_name="LMSDiscreteScheduler"), "not supported"),
        (dict(_class_name="DDIMScheduler"), "clip_sample"),
        (dict(_class_name="DPMSolverMultistepScheduler", algorithm_type="dpmsolver"), "algorithm_type"),
        (
            dict(_class_name="DPMSolverMultistepScheduler", prediction_type="flow_prediction"),
            "prediction_type",
        ),
        (dict(_class_name="EulerDiscreteScheduler", rescale_betas_zero_snr=True), "rescale_betas_zero_snr"),
        (dict(_class_name="EulerDiscreteScheduler", timestep_spacing="karras"), "timestep_spacing"),
        (dict(_class_name="UniPCMultistepScheduler", predict_x0=False), "predict_x0"),
        (dict(_class_name="DEISMultistepScheduler", use_karras_sigmas=True), "use_karras_sigmas"),
    ],
)
def test_unsupported_configs_raise(config, match):
    with pytest.raises(ValueError, match=match):
        from_diffusers_config(config).sample(model, torch.zeros(1, 2), 5)
