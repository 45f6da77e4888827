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

OFFICIAL_KEY_TABLE: tuple[ComponentMap, ...] = (
    ComponentMap(unet.OFFICIAL_PREFIX, "diffusion.", unet.RULES),  # unet_{image,audio,text}.*
    ComponentMap("clip.model.", "clip.model.", clip.RULES),
    ComponentMap("clap.model.", "clap.", clap.RULES),
    ComponentMap("optimus.", "optimus.", optimus.RULES),
    ComponentMap("autokl.", "autokl.", vae.AUTOKL_RULES),
    ComponentMap("audioldm.", "audioldm.", vae.AUDIOLDM_RULES),
    ComponentMap(
        "",
        "",
        (drop(rf"({SCHEDULE_BUFFERS})", "DDPM schedule buffers: recomputed from the config (NoiseSchedule)"),),
    ),
)
