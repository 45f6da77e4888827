"""Training losses: KL of diagonal Gaussians, soft-target InfoNCE, multi-resolution STFT, loudness envelope,
the diffusion forward process and its eps or v targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

STFT_RESOLUTIONS: tuple[tuple[int, int], ...] = ((256, 64), (512, 128), (1024, 256))  # (n_fft, hop)


def gaussian_kl(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) summed over all but the batch axis, averaged over the batch."""
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)  # [B,...]
    return kl.flatten(1).sum(1).mean()


def soft_info_nce(a: Tensor, b: Tensor, match: Tensor, temperature: float = 0.1) -> Tensor:
    """Symmetric InfoNCE whose targets spread over every pair that agrees on the stated attributes.

    Args:
        a: [B,D] L2-normalised embeddings (e.g. captions); b: [B,D] L2-normalised embeddings (e.g. images).
        match: [B,B] 1 where a_i and b_j agree (diagonal 1): identical captions are not false negatives.
        temperature: softmax temperature.
    Returns:
        scalar loss.
    """
    logits = a @ b.t() / temperature  # [B,B]
    ta = match / match.sum(1, keepdim=True)  # [B,B]
    tb = match.t() / match.t().sum(1, keepdim=True)  # [B,B]
    la = -(ta * logits.log_softmax(1)).sum(1).mean()
    lb = -(tb * logits.t().log_softmax(1)).sum(1).mean()
    return 0.5 * (la + lb)


def distinct_penalty(embeds: Tensor, uncond: Tensor, margin: float = 0.2) -> Tensor:
    """Keeps the unconditional embedding away from real ones: mean relu(cos - margin). embeds [B,D], uncond [D]."""
    return F.relu(embeds @ uncond - margin).mean()


def stft_loss(pred: Tensor, target: Tensor, floor: float = 0.1) -> Tensor:
    """Multi-resolution STFT magnitude loss (spectral convergence + log-magnitude L1), pred/target [B,T].

    The log is taken of |S| + floor: pure tones leave most bins empty, and a tiny floor would make matching
    those empty bins (by outputting silence) the cheapest way down.
    """
    total = pred.new_zeros(())
    for n_fft, hop in STFT_RESOLUTIONS:
        window = torch.hann_window(n_fft, device=pred.device)
        sp = torch.stft(pred, n_fft, hop, window=window, return_complex=True).abs()  # [B,F,T']
        st = torch.stft(target, n_fft, hop, window=window, return_complex=True).abs()  # [B,F,T']
        sc = torch.linalg.norm(st - sp) / torch.linalg.norm(st)
        total = total + sc + F.l1_loss((sp + floor).log(), (st + floor).log())
    return total / len(STFT_RESOLUTIONS)


def envelope_loss(pred: Tensor, target: Tensor, frame: int = 400) -> Tensor:
    """L1 between log frame RMS (25 ms frames at 16 kHz) of pred and target [B,T]: the loudness contour, which
    the STFT terms weigh little next to pitch and timbre."""
    n = pred.shape[-1] // frame * frame
    rms = lambda x: x[..., :n].unflatten(-1, (-1, frame)).pow(2).mean(-1).add(1e-6).sqrt()  # noqa: E731 [B,frames]
    return F.l1_loss((rms(pred) + 1e-3).log(), (rms(target) + 1e-3).log())


def _alpha_at(alphas_cumprod: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """a_t per row, shaped to broadcast over `like` [B,...]: [B,1,...]."""
    return alphas_cumprod.to(like.device)[t].view(-1, *([1] * (like.ndim - 1)))


def add_noise(x0: Tensor, noise: Tensor, t: Tensor, alphas_cumprod: Tensor) -> Tensor:
    """q(x_t | x_0) of the DDPM schedule: sqrt(a_t) x0 + sqrt(1 - a_t) eps; t [B] long."""
    a = _alpha_at(alphas_cumprod, t, x0)
    return a.sqrt() * x0 + (1.0 - a).sqrt() * noise


def v_target(x0: Tensor, noise: Tensor, t: Tensor, alphas_cumprod: Tensor) -> Tensor:
    """The v-prediction target sqrt(a_t) eps - sqrt(1 - a_t) x0 (Salimans & Ho 2022); t [B] long."""
    a = _alpha_at(alphas_cumprod, t, x0)
    return a.sqrt() * noise - (1.0 - a).sqrt() * x0
