"""Composable conditioning and joint (multi-output) denoising with CoDi's three UNets.

`mix_conditions` composes several condition tokens into one context (official weighted sum).
`JointDenoiser` predicts the noise of every requested output modality; with several outputs each
UNet's connecter-in transformers attend to an environment vector, either the output's OWN
(`CouplingMode.OFFICIAL`, what the released code does) or the mean of the OTHER outputs'
(`CouplingMode.PAPER`, the paper's latent alignment). With a `partner_weight` (our addition, for models whose
environment vectors are trained into the prompt space) an output's condition also takes in the environments of
the outputs that settle before it (`SETTLE_ORDER`), as those leaders offer them (`leader_env`: the pipeline reads
them from each leader's predicted clean latent).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from enum import Enum

import torch
from torch import Tensor, nn

from codi.modality import Modality
from codi.models.unet_blocks import repeat_rows

UNET_NAMES: tuple[str, ...] = ("image", "audio", "text")
UNET_FOR_MODALITY: dict[Modality, str] = {
    Modality.IMAGE: "image",
    Modality.VIDEO: "image",  # video shares the image UNet (its STA blocks are active on 5-D input)
    Modality.AUDIO: "audio",
    Modality.TEXT: "text",
}


# The order in which outputs settle their content while being denoised, measured on the tiny model
# (docs/tiny-model-history.md, `python -m training.probe`): the video's motion is decided by t = 700, the audio's by
# t = 600, the text's later.
# With partner composition an output follows the outputs that settle before it (an output whose partner has not
# yet decided would follow noise: composing both ways lowered the joint agreement from 77 % to 65 %).
SETTLE_ORDER: dict[Modality, int] = {Modality.IMAGE: 0, Modality.VIDEO: 0, Modality.AUDIO: 1, Modality.TEXT: 2}

# (modality, its latent x_t, timesteps, its UNet's output at x_t) -> [B, 1, C_env] environment a leader offers
# its followers (the pipeline reads it from the leader's predicted clean latent; see `JointDenoiser.forward`).
LeaderEnv = Callable[[Modality, Tensor, Tensor, Tensor], Tensor]


def mix_conditions(conditions: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """Official condition mixing: `0.0 + sum_k cond_k * (w_k / sum(w))`, in order, not re-normalised.

    Args:
        conditions: K tensors [B, 1, D] (the same modality may appear more than once).
        weights: K non-negative weights with a positive sum (normalised in float64).
    Returns:
        [B, 1, D] mixed context.
    """
    if len(conditions) != len(weights) or not conditions:
        raise ValueError(f"need one weight per condition, got {len(conditions)} conditions, {len(weights)} weights")
    total = float(sum(float(w) for w in weights))
    if total <= 0:
        raise ValueError(f"condition weights must have a positive sum, got {list(weights)}")
    context: Tensor | float = 0.0
    for cond, weight in zip(conditions, weights):
        context = context + cond * (float(weight) / total)  # [B, 1, D]
    assert isinstance(context, Tensor)
    return context


class CouplingMode(str, Enum):
    """Which environment vector the connecter-in transformers of a joint call attend to."""

    OFFICIAL = "official"  # each output its own environment (released code)
    PAPER = "paper"  # each output the mean of the other outputs' environments (paper)


class JointDenoiser(nn.Module):
    """The image/video, audio and text UNets behind one eps-prediction call over a dict of latents."""

    def __init__(self, unets: Mapping[str, nn.Module]) -> None:
        super().__init__()
        unknown = sorted(set(unets) - set(UNET_NAMES))
        if unknown or not unets:
            raise ValueError(f"unets must be keyed by some of {UNET_NAMES}, got {sorted(unets)}")
        for name in UNET_NAMES:
            if name in unets:
                self.add_module(f"unet_{name}", unets[name])
        channels = {name: unet.config.connector_output_channel for name, unet in unets.items()}
        if len(set(channels.values())) > 1:
            raise ValueError(f"all UNets must share connector_output_channel to couple outputs, got {channels}")
        self.env_dim = next(iter(channels.values()))  # C_env, one width for every UNet

    def unet_for(self, modality: Modality | str) -> nn.Module:
        """The UNet that denoises `modality` (IMAGE and VIDEO share `unet_image`)."""
        name = UNET_FOR_MODALITY[Modality.parse(modality)]
        unet = getattr(self, f"unet_{name}", None)
        if unet is None:
            raise KeyError(f"this model has no unet_{name}, needed for {Modality.parse(modality).value} output")
        return unet

    def forward(
        self,
        latents: Mapping[Modality, Tensor],
        timesteps: Tensor,
        context: Tensor,
        mode: CouplingMode = CouplingMode.OFFICIAL,
        envs: Mapping[Modality, Tensor] | None = None,
        partner_weight: float | Tensor = 0.0,
        leader_env: LeaderEnv | None = None,
    ) -> dict[Modality, Tensor]:
        """Predicts eps for every output latent.

        Args:
            latents: output modality -> noisy latent (image [B,4,h,w], video [B,4,F,h,w], audio [B,8,T,Fq],
                text [B,768]); the insertion order is kept.
            timesteps: [B] diffusion steps (shared by all outputs).
            context: [G B, 1, D] mixed condition context (see `mix_conditions`); G > 1 conditions share the
                latents (classifier-free guidance's halves, G = 2), and the environments are computed once.
            mode: environment coupling of joint calls (ignored with one output).
            envs: `environments(latents, timesteps)` when the caller already has them (training reuses them).
            partner_weight: w >= 0, scalar or [G B] per row (0 on guidance's unconditional rows): each output of a
                joint call is conditioned on (context + w * leaders) / (1 + w), leaders being the mean of the
                environment vectors of the outputs that settle before it (SETTLE_ORDER; an output with none keeps
                its context); the vectors must then live in the prompt space (see `check_partner_composition`).
                0 = CoDi as published.
            leader_env: what a leader offers its followers, computed from its output (leaders are then run
                first); default its environment vector at x_t, the one its connectors see. [B] or [G B] rows.
        Returns:
            modality -> eps prediction [G B, ...] shaped like its latent otherwise.
        """
        mode = CouplingMode(mode)
        items = [(Modality.parse(m), x) for m, x in latents.items()]
        if len(items) == 1:
            ((modality, x),) = items
            return {modality: self.unet_for(modality)(x, timesteps, context)}
        own = self.environments(latents, timesteps) if envs is None else envs  # modality -> [B, 1, C_env]
        w = torch.as_tensor(partner_weight, dtype=context.dtype, device=context.device).reshape(-1, 1, 1)
        compose = bool((w > 0).any())
        if compose:
            self.check_partner_composition(context.shape[-1])
        offered: dict[Modality, Tensor] = {}  # leaders' environments for their followers, [B, 1, C_env]
        out: dict[Modality, Tensor] = {}
        for modality, x in sorted(items, key=lambda kv: SETTLE_ORDER[kv[0]]):  # leaders before their followers
            if mode is CouplingMode.OFFICIAL:
                env = own[modality]  # [B, 1, C_env]
            else:
                env = torch.stack([e for m, e in own.items() if m is not modality]).mean(0)  # [B, 1, C_env]
            ctx = context  # [G B, 1, D]
            leaders = [e for m, e in offered.items() if SETTLE_ORDER[m] < SETTLE_ORDER[modality]]
            if compose and leaders:
                lead = repeat_rows(torch.stack(leaders).mean(0), context.shape[0])  # [G B, 1, C_env]
                ctx = (context + w * lead.to(context.dtype)) / (1 + w)
            out[modality] = self.unet_for(modality)(x, timesteps, ctx, env_context=env)
            if compose and any(SETTLE_ORDER[m] > SETTLE_ORDER[modality] for m, _ in items):  # it leads someone
                lead = own[modality] if leader_env is None else leader_env(modality, x, timesteps, out[modality])
                offered[modality] = lead  # [B, 1, C_env]
        return {m: out[m] for m, _ in items}

    def check_partner_composition(self, context_dim: int) -> None:
        """Raises ValueError unless environment vectors can be read as prompts (same width as the context)."""
        if self.env_dim != context_dim:
            raise ValueError(
                f"partner composition needs environment vectors as wide as the prompt embedding ({context_dim}); "
                f"this model's are [{self.env_dim}] (the released CoDi weights: 1280 vs 768)"
            )

    def environments(self, latents: Mapping[Modality, Tensor], timesteps: Tensor) -> dict[Modality, Tensor]:
        """Each output's environment vector [B, 1, C_env], from its own UNet's encoder on its own noisy latent."""
        return {Modality.parse(m): self.unet_for(m).environment(x, timesteps) for m, x in latents.items()}
