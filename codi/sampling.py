"""Samplers as plain functions over a joint denoiser: `denoiser(latents, t) -> prediction` for every modality.

The prediction is eps (CoDi) or v = sqrt(a_t) eps - sqrt(1 - a_t) x0 (Salimans & Ho 2022; the tiny preset), as
the schedule's `prediction` says. A joint state is a `dict[Modality, Tensor]` of latents updated together, one
denoiser call per step.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum

import torch
from torch import Tensor

from codi.modality import Modality

Latents = dict[Modality, Tensor]
Denoiser = Callable[[Latents, Tensor], Latents]  # (x_t per modality, t [B] long) -> eps (or v) per modality
StepCallback = Callable[[int, int, int], None]  # (step index from 0, total steps, timestep)


class Sampler(str, Enum):
    """Which solver integrates the reverse diffusion."""

    DDIM = "ddim"  # DDIM, eta 0, on CoDi's timestep grid (the official sampler)
    DPM = "dpm"  # DPM-Solver++(2M) from diffusers: good images in fewer steps


class Prediction(str, Enum):
    """What the denoiser predicts."""

    EPSILON = "epsilon"  # the noise (CoDi, as released)
    V = "v"  # v = sqrt(a_t) eps - sqrt(1 - a_t) x0: well defined where a_t = 0 (zero terminal SNR)


@dataclass(frozen=True)
class NoiseSchedule:
    """The DDPM training schedule shared by all modalities (CoDi: SD 'scaled linear', 1000 steps, eps).

    `zero_terminal_snr` rescales sqrt(alphas_cumprod) linearly so that the last step keeps no signal and the first
    is unchanged (Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed"): CoDi's schedule
    still holds the latent at SNR 0.0047 per value at t = 999, which a small world's latents give their content
    away through (the UNet learns to read it instead of the condition). It needs `prediction='v'` (eps carries no
    information about x0 where a_t = 0) and samplers start at t = N - 1 ('trailing' timesteps).
    """

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    zero_terminal_snr: bool = False
    prediction: str = Prediction.EPSILON.value

    def __post_init__(self) -> None:
        Prediction(self.prediction)  # raises on an unknown kind
        if self.zero_terminal_snr and self.prediction != Prediction.V.value:
            raise ValueError("a zero-terminal-SNR schedule needs prediction='v' (eps says nothing at a_t = 0)")

    def betas(self) -> Tensor:
        """[N] float64: (linspace(sqrt(start), sqrt(end), N))^2 (before any zero-terminal-SNR rescale)."""
        n = self.num_train_timesteps
        return torch.linspace(self.beta_start**0.5, self.beta_end**0.5, n, dtype=torch.float64) ** 2

    def alphas_cumprod(self) -> Tensor:
        """[N] float32, as the official buffers store it (cumprod taken in float64)."""
        ab = torch.cumprod(1.0 - self.betas(), dim=0)  # [N] float64
        if self.zero_terminal_snr:
            s = ab.sqrt()
            s = (s - s[-1]) * s[0] / (s[0] - s[-1])  # first value kept, last 0
            ab = s**2
        return ab.to(torch.float32)

    def timesteps(self, steps: int, official_grid: bool = False) -> list[int]:
        """The sampler's visiting order: 'trailing' (from N - 1) for a zero-terminal-SNR schedule, else CoDi's
        'leading' grid (`exact_timesteps`, or `official_timesteps` when `official_grid`)."""
        n = self.num_train_timesteps
        if official_grid:
            return official_timesteps(steps, n)
        return trailing_timesteps(steps, n) if self.zero_terminal_snr else exact_timesteps(steps, n)


def official_timesteps(steps: int, num_train_timesteps: int = 1000) -> list[int]:
    """The official DDIM grid in visiting order: range(0, N, N // steps) + 1, reversed.

    When `steps` does not divide N this visits MORE than `steps` timesteps (30 -> 31), as the released code does.
    """
    if not 1 <= steps <= num_train_timesteps:
        raise ValueError(f"steps must be in [1, {num_train_timesteps}], got {steps}")
    c = num_train_timesteps // steps
    grid = [t + 1 for t in range(0, num_train_timesteps, c)][::-1]
    if grid[0] >= num_train_timesteps:  # e.g. 3 steps: 999 + 1 (the released sampler fails with an IndexError)
        raise ValueError(
            f"the released DDIM grid for {steps} steps starts at t = {grid[0]}, past the schedule's last step "
            f"({num_train_timesteps - 1}); choose another step count or the exact grid"
        )
    return grid


def exact_timesteps(steps: int, num_train_timesteps: int = 1000) -> list[int]:
    """Exactly `steps` timesteps with 'leading' spacing: floor(k * N / steps) + 1, reversed.

    Equals `official_timesteps` whenever `steps` divides N (e.g. 50 -> 981, 961, ..., 1).
    """
    if not 1 <= steps <= num_train_timesteps:
        raise ValueError(f"steps must be in [1, {num_train_timesteps}], got {steps}")
    return [(k * num_train_timesteps) // steps + 1 for k in range(steps)][::-1]


def trailing_timesteps(steps: int, num_train_timesteps: int = 1000) -> list[int]:
    """Exactly `steps` timesteps ending the grid at N - 1: round(N - k * N / steps) - 1 (25 -> 999, 959, ..., 39)."""
    if not 1 <= steps <= num_train_timesteps:
        raise ValueError(f"steps must be in [1, {num_train_timesteps}], got {steps}")
    return [round(num_train_timesteps - k * num_train_timesteps / steps) - 1 for k in range(steps)]


def split_prediction(out: Tensor, x_t: Tensor, a_t: Tensor, prediction: Prediction) -> tuple[Tensor, Tensor]:
    """(x0, eps) from a denoiser output at x_t, with a_t = alphas_cumprod[t] (a scalar tensor of x_t's dtype)."""
    if prediction is Prediction.V:
        return a_t.sqrt() * x_t - (1.0 - a_t).sqrt() * out, (1.0 - a_t).sqrt() * x_t + a_t.sqrt() * out
    return (x_t - (1.0 - a_t).sqrt() * out) / a_t.sqrt(), out


def _batch_t(t: int, like: Tensor) -> Tensor:
    return torch.full((like.shape[0],), t, device=like.device, dtype=torch.long)


@torch.no_grad()
def sample_ddim(
    denoiser: Denoiser,
    x_T: Mapping[Modality, Tensor],
    alphas_cumprod: Tensor,
    timesteps: list[int],
    callback: StepCallback | None = None,
    prediction: str | Prediction = Prediction.EPSILON,
) -> Latents:
    """DDIM with eta 0 (Song et al. 2021, eq. 12), all modalities stepped together.

    Args:
        denoiser: eps (or v) predictor for the whole joint state (guidance already applied).
        x_T: initial noise per modality, used as given.
        alphas_cumprod: [N] float32 training schedule.
        timesteps: visiting order (descending). The last step targets alphas_cumprod[0], as CoDi does.
        callback: called after every step.
        prediction: what the denoiser predicts ('epsilon' or 'v').
    Returns:
        the final latents per modality.
    """
    kind = Prediction(prediction)
    x = dict(x_T)
    ac = alphas_cumprod.to(torch.float32).cpu()
    for i, t in enumerate(timesteps):
        a_t = ac[t]
        a_prev = ac[timesteps[i + 1]] if i + 1 < len(timesteps) else ac[0]
        first = next(iter(x.values()))
        out = denoiser(x, _batch_t(t, first))
        for m, x_m in x.items():
            a_t_m, a_prev_m = (c.to(device=x_m.device, dtype=x_m.dtype) for c in (a_t, a_prev))
            pred_x0, eps = split_prediction(out[m], x_m, a_t_m, kind)  # [B,...] each
            x[m] = a_prev_m.sqrt() * pred_x0 + (1.0 - a_prev_m).sqrt() * eps
        if callback is not None:
            callback(i, len(timesteps), t)
    return x


def dpm_solver_scheduler(schedule: NoiseSchedule, steps: int):
    """A diffusers DPM-Solver++(2M) scheduler for the schedule (no thresholding): CoDi's eps prediction on the
    'leading' grid, or v prediction, zero terminal SNR and the 'trailing' grid."""
    from diffusers import DPMSolverMultistepScheduler

    ztsnr = schedule.zero_terminal_snr
    sched = DPMSolverMultistepScheduler(
        num_train_timesteps=schedule.num_train_timesteps,
        beta_start=schedule.beta_start,
        beta_end=schedule.beta_end,
        beta_schedule="scaled_linear",
        algorithm_type="dpmsolver++",
        solver_order=2,
        prediction_type="v_prediction" if Prediction(schedule.prediction) is Prediction.V else "epsilon",
        rescale_betas_zero_snr=ztsnr,
        timestep_spacing="trailing" if ztsnr else "leading",
        steps_offset=0 if ztsnr else 1,
        lower_order_final=True,
    )
    sched.set_timesteps(steps)
    return sched


@torch.no_grad()
def sample_dpm(
    denoiser: Denoiser,
    x_T: Mapping[Modality, Tensor],
    schedule: NoiseSchedule,
    steps: int,
    callback: StepCallback | None = None,
) -> Latents:
    """DPM-Solver++(2M) (Lu et al. 2022) through diffusers, one scheduler state per modality."""
    base = dpm_solver_scheduler(schedule, steps)
    scheds = {m: copy.deepcopy(base) for m in x_T}
    x = {m: v * base.init_noise_sigma for m, v in x_T.items()}
    timesteps = [int(t) for t in base.timesteps]
    for i, t in enumerate(timesteps):
        first = next(iter(x.values()))
        out = denoiser(x, _batch_t(t, first))
        x = {m: scheds[m].step(out[m], t, x_m).prev_sample for m, x_m in x.items()}
        if callback is not None:
            callback(i, len(timesteps), t)
    return x


def combine_guidance(e_u: Tensor, e_c: Tensor, guidance_scale: float) -> Tensor:
    """Classifier-free guidance of one prediction: e_u + s (e_c - e_u)."""
    return e_u + guidance_scale * (e_c - e_u)


def guided(
    predict: Callable[[Latents, Tensor, Tensor], Latents],
    context: Tensor,
    uncond_context: Tensor | None,
    guidance_scale: float,
) -> Denoiser:
    """Classifier-free guidance: e = e_u + s (e_c - e_u), one batched call with rows [uncond; cond].

    Args:
        predict: (latents [B, ...], t [B], context [G B,1,D]) -> eps [G B, ...]: the G conditions share the
            latents (G = 2 here), so that a model can work on them once until the condition enters.
        context, uncond_context: [B,1,D] each; with guidance_scale == 1 (or no uncond) the uncond half is skipped.
    """
    if uncond_context is None or math.isclose(guidance_scale, 1.0):
        return lambda x, t: predict(x, t, context)

    both = torch.cat([uncond_context, context])  # [2B,1,D], uncond first as in CoDi

    def denoise(x: Latents, t: Tensor) -> Latents:
        eps = predict(x, t, both)  # [2B, ...] each
        return {m: combine_guidance(*e.chunk(2), guidance_scale) for m, e in eps.items()}

    return denoise
