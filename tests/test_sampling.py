"""Samplers over toy denoisers whose exact answers are known."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import PARITY_DIR, parity_dir

from codi.modality import Modality
from codi.sampling import (
    NoiseSchedule,
    Prediction,
    exact_timesteps,
    guided,
    official_timesteps,
    sample_ddim,
    sample_dpm,
    split_prediction,
    trailing_timesteps,
)

IMG, AUD = Modality.IMAGE, Modality.AUDIO


def test_official_grid_matches_released_code() -> None:
    assert official_timesteps(50)[:3] == [981, 961, 941] and official_timesteps(50)[-1] == 1
    assert len(official_timesteps(50)) == 50
    thirty = official_timesteps(30)  # the released grid runs 31 steps for 30
    assert len(thirty) == 31 and thirty[0] == 991 and thirty[-1] == 1
    if (PARITY_DIR / "ddim_sampler.json").exists():
        for run in json.loads((PARITY_DIR / "ddim_sampler.json").read_text())["runs"]:
            assert official_timesteps(run["steps_requested"]) == run["timesteps_visited"]


@pytest.mark.parametrize("steps", [1, 7, 10, 25, 30, 33, 50, 999])
def test_exact_grid_has_requested_steps(steps: int) -> None:
    ts = exact_timesteps(steps)
    assert len(ts) == steps and len(set(ts)) == steps
    assert ts == sorted(ts, reverse=True) and ts[-1] == 1 and ts[0] <= 1000
    if 1000 % steps == 0:
        assert ts == official_timesteps(steps)


def test_schedule_values() -> None:
    ac = NoiseSchedule().alphas_cumprod()
    assert ac.dtype == torch.float32 and ac.shape == (1000,)
    assert abs(ac[0].item() - 0.99915) < 1e-6
    assert abs(ac[981].item() - 0.0057755) < 1e-6
    assert abs(ac[999].item() - 0.0046601) < 1e-6


def test_schedule_equals_official_buffers() -> None:
    from safetensors.torch import load_file

    buffers = load_file(str(parity_dir() / "ddim_sampler.safetensors"))
    sched = NoiseSchedule()
    assert torch.equal(sched.alphas_cumprod(), buffers["alphas_cumprod"])
    assert torch.allclose(sched.betas().float(), buffers["betas"], atol=0, rtol=1e-6)


def _point_mass(c: dict[Modality, torch.Tensor], ac: torch.Tensor):
    """The exact eps-predictor when all data sits at c."""

    def denoise(x, t):
        a = ac[t[0].item()]
        return {m: (x[m] - a.sqrt() * c[m]) / (1 - a).sqrt() for m in x}

    return denoise


def test_ddim_with_exact_denoiser_keeps_eps_and_stops_at_alpha0() -> None:
    g = torch.Generator().manual_seed(0)
    ac = NoiseSchedule().alphas_cumprod()
    c = {IMG: torch.randn(2, 4, 3, 3, generator=g), AUD: torch.randn(2, 8, 4, 2, generator=g)}
    x_T = {m: torch.randn(v.shape, generator=g) for m, v in c.items()}
    ts = official_timesteps(10)
    calls = []
    out = sample_ddim(_point_mass(c, ac), x_T, ac, ts, callback=lambda i, n, t: calls.append((i, n, t)))
    assert calls == [(i, 10, t) for i, t in enumerate(ts)]
    for m in c:
        eps0 = (x_T[m] - ac[ts[0]].sqrt() * c[m]) / (1 - ac[ts[0]]).sqrt()
        expected = ac[0].sqrt() * c[m] + (1 - ac[0]).sqrt() * eps0  # last step targets alpha_0, not 1
        assert torch.allclose(out[m], expected, atol=1e-5)


def test_dpm_solver_reaches_the_data_point() -> None:
    g = torch.Generator().manual_seed(1)
    sched = NoiseSchedule()
    ac = sched.alphas_cumprod()
    c = {IMG: torch.randn(1, 4, 2, 2, generator=g), AUD: torch.randn(1, 8, 2, 2, generator=g)}
    x_T = {m: torch.randn(v.shape, generator=g) for m, v in c.items()}
    steps = []
    out = sample_dpm(_point_mass(c, ac), x_T, sched, 12, callback=lambda i, n, t: steps.append(i))
    assert steps == list(range(12))
    for m in c:
        assert torch.allclose(out[m], c[m], atol=2e-2), (out[m] - c[m]).abs().max()


ZTSNR = NoiseSchedule(zero_terminal_snr=True, prediction="v")


def test_zero_terminal_snr_schedule_matches_diffusers_rescale() -> None:
    from diffusers import DDPMScheduler

    ac = ZTSNR.alphas_cumprod()
    assert ac[-1].item() == 0.0 and abs(ac[0].item() - NoiseSchedule().alphas_cumprod()[0].item()) < 1e-7
    assert bool((ac[1:] < ac[:-1]).all())
    ref = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, rescale_betas_zero_snr=True)
    torch.testing.assert_close(ac, ref.alphas_cumprod.float(), atol=2e-6, rtol=0)
    with pytest.raises(ValueError, match="prediction='v'"):
        NoiseSchedule(zero_terminal_snr=True)
    with pytest.raises(ValueError):
        NoiseSchedule(prediction="x0")


@pytest.mark.parametrize("steps", [1, 7, 25, 50])
def test_trailing_grid_starts_at_the_last_step_like_diffusers(steps: int) -> None:
    from diffusers import DDIMScheduler

    ref = DDIMScheduler(timestep_spacing="trailing")
    ref.set_timesteps(steps)
    ts = trailing_timesteps(steps)
    assert ts == [int(t) for t in ref.timesteps] and ts[0] == 999 and len(set(ts)) == steps
    assert ZTSNR.timesteps(steps) == ts and NoiseSchedule().timesteps(steps) == exact_timesteps(steps)
    assert ZTSNR.timesteps(steps, official_grid=True) == official_timesteps(steps)


def test_v_and_eps_split_into_the_same_x0_and_eps() -> None:
    g = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)
    for a in (torch.tensor(0.7), torch.tensor(1e-3)):
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
        v = a.sqrt() * eps - (1 - a).sqrt() * x0
        for out, kind in ((v, Prediction.V), (eps, Prediction.EPSILON)):
            got_x0, got_eps = split_prediction(out, x_t, a, kind)
            torch.testing.assert_close(got_x0, x0, atol=2e-4, rtol=0)
            torch.testing.assert_close(got_eps, eps, atol=1e-5, rtol=0)


def _point_mass_v(c: dict[Modality, torch.Tensor], ac: torch.Tensor):
    """The exact v-predictor when all data sits at c (at a_t = 0 it is -c: all it can say is the data)."""

    def denoise(x, t):
        a = ac[t[0].item()]
        eps = {m: x[m] if a == 0 else (x[m] - a.sqrt() * c[m]) / (1 - a).sqrt() for m in x}
        return {m: a.sqrt() * eps[m] - (1 - a).sqrt() * c[m] for m in x}

    return denoise


def test_ddim_v_prediction_from_signal_free_start() -> None:
    g = torch.Generator().manual_seed(4)
    ac = ZTSNR.alphas_cumprod()
    c = {IMG: torch.randn(2, 4, 3, 3, generator=g), AUD: torch.randn(2, 8, 4, 2, generator=g)}
    x_T = {m: torch.randn(v.shape, generator=g) for m, v in c.items()}
    out = sample_ddim(_point_mass_v(c, ac), x_T, ac, ZTSNR.timesteps(10), prediction="v")
    for m in c:  # the first step (a_t = 0) already knows x0; eps stays x_T
        torch.testing.assert_close(out[m], ac[0].sqrt() * c[m] + (1 - ac[0]).sqrt() * x_T[m], atol=1e-5, rtol=0)


def test_dpm_solver_v_prediction_reaches_the_data_point() -> None:
    g = torch.Generator().manual_seed(5)
    c = {IMG: torch.randn(1, 4, 2, 2, generator=g)}
    x_T = {IMG: torch.randn(1, 4, 2, 2, generator=g)}
    out = sample_dpm(_point_mass_v(c, ZTSNR.alphas_cumprod()), x_T, ZTSNR, 12)
    torch.testing.assert_close(out[IMG], c[IMG], atol=2e-2, rtol=0)


def test_guidance_combines_halves_and_skips_uncond_at_one() -> None:
    calls = []

    def predict(x, t, context):  # the latents' rows are shared by the context's groups
        calls.append((next(iter(x.values())).shape[0], t.shape[0], context.shape[0]))
        return {m: v.repeat(context.shape[0] // v.shape[0], 1, 1, 1) * 0 + context.mean(dim=(1, 2)).view(-1, 1, 1, 1)
                for m, v in x.items()}  # fmt: skip

    cond, uncond = torch.full((2, 1, 3), 2.0), torch.full((2, 1, 3), 0.5)
    x = {IMG: torch.zeros(2, 1, 2, 2)}
    t = torch.tensor([5, 5])
    e = guided(predict, cond, uncond, 7.5)(x, t)[IMG]
    assert calls == [(2, 2, 4)] and e.shape == (2, 1, 2, 2)  # the latents once, both halves of the context
    assert torch.allclose(e, torch.full_like(e, 0.5 + 7.5 * 1.5))
    calls.clear()
    e1 = guided(predict, cond, uncond, 1.0)(x, t)[IMG]
    assert calls == [(2, 2, 2)] and torch.allclose(e1, torch.full_like(e1, 2.0))
    calls.clear()
    guided(predict, cond, None, 7.5)(x, t)  # no unconditional context: guidance is off
    assert calls == [(2, 2, 2)]


def test_official_grid_past_the_schedule_is_refused() -> None:
    """3 steps: the released grid starts at t = 1000, which the schedule lacks (the released sampler crashes)."""
    from codi.sampling import official_timesteps

    assert official_timesteps(50)[0] == 981
    with pytest.raises(ValueError, match="for 3 steps starts at t = 1000"):
        official_timesteps(3)
