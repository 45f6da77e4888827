"""THE key table: every official CoDi checkpoint key -> our `CoDiModel` key, component by component.

Each row maps an official prefix onto the attribute of `CoDiModel` that holds the component; the per-component
rules (renames, splits, drops with reasons) live beside it in this package and are documented there.
"""

from __future__ import annotations

from codi.keymaps import clap, clip, optimus, unet, vae
from codi.loading import ComponentMap, drop

SCHEDULE_BUFFERS = (
    "betas|alphas_cumprod|alphas_cumprod_prev|sqrt_alphas_cumprod|sqrt_one_minus_alphas_cumprod|"
    "log_one_minus_alphas_cumprod|sqrt_recip_alphas_cumprod|sqrt_recipm1_alphas_cumprod|posterior_variance|"
    "posterior_log_variance_clipped|posterior_mean_coef1|posterior_mean_coef2"
)


def official_key_table(image_vae_levels: int = vae.SD_LEVELS, audio_vae_levels: int = vae.AUDIOLDM_LEVELS):
    """The table for a model whose VAEs have these numbers of levels (LDM and diffusers number decoder levels
    in opposite orders, so the VAE rules depend on it; the released model has 4 and 3)."""
    return (
        ComponentMap(unet.OFFICIAL_PREFIX, "diffusion.", unet.RULES),  # unet_{image,audio,text}.*
        ComponentMap("clip.model.", "clip.model.", clip.RULES),
        ComponentMap("clap.model.", "clap.", clap.RULES),
        ComponentMap("optimus.", "optimus.", optimus.RULES),
        ComponentMap("autokl.", "autokl.", vae.autokl_rules(image_vae_levels)),
        ComponentMap("audioldm.", "audioldm.", vae.audioldm_rules(audio_vae_levels)),
        ComponentMap(
            "",
            "",
            (drop(rf"({SCHEDULE_BUFFERS})", "DDPM schedule buffers: recomputed from the config (NoiseSchedule)"),),
        ),
    )


OFFICIAL_KEY_TABLE: tuple[ComponentMap, ...] = official_key_table()
