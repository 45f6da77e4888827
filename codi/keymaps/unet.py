"""Official -> our key table of the three diffusion UNets (and the joint denoiser holding them).

Our modules reuse the official submodule names (`input_blocks`, `middle_block`, `output_blocks`, `out`,
`time_embed`, `connecters_out`, `input_block_connecters_in`, `output_block_connecters_in`, the STA's
`temporal_attn` / `ff` / `frameshiftblock`, ...) and hold no persistent buffers, so every key maps to itself.
"""

from __future__ import annotations

from codi.loading import IDENTITY, ComponentMap, KeyRule

OFFICIAL_PREFIX = "model.diffusion_model."
"""Official prefix of the `UNetModelCoDi` that holds `unet_image`, `unet_audio` and `unet_text`."""

RULES: tuple[KeyRule, ...] = (IDENTITY,)
"""Rules relative to one UNet's prefix (`model.diffusion_model.unet_<name>.`) or to the joint prefix."""


def unet_map(name: str, our_prefix: str = "") -> ComponentMap:
    """The map of one UNet (`name` in image, audio, text) onto a UNet2D/UNet0D at `our_prefix`."""
    return ComponentMap(f"{OFFICIAL_PREFIX}unet_{name}.", our_prefix, RULES)


def joint_map(our_prefix: str = "") -> ComponentMap:
    """The map of all UNets onto a `JointDenoiser` at `our_prefix` (its keys are `unet_<name>.*`)."""
    return ComponentMap(OFFICIAL_PREFIX, our_prefix, RULES)
