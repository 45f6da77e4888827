"""Official CLAP keys (LAION-CLAP / HTSAT names under "clap.model.") -> `CLAPEncoder` keys.

The HTSAT audio branch is transformers' `ClapAudioModel` (held as `audio_branch`, whose modules live
under `audio_encoder.`); `audio_projection` keeps the official names.
"""

from __future__ import annotations

from codi.loading import IDENTITY, KeyRule, drop, rename, split

OFFICIAL_PREFIX = "clap.model."

_BLOCK = r"audio_branch\.layers\.(\d+)\.blocks\.(\d+)\."
_OUR_BLOCK = r"audio_branch.audio_encoder.layers.\1.blocks.\2."

# Swin block leaf: official (LAION-CLAP HTSAT) name -> transformers ClapAudioLayer name
_BLOCK_LEAVES: dict[str, str] = {
    r"norm1": "layernorm_before",
    r"attn\.relative_position_bias_table": "attention.self.relative_position_bias_table",
    r"attn\.relative_position_index": "attention.self.relative_position_index",
    r"attn\.proj": "attention.output.dense",
    r"norm2": "layernorm_after",
    r"mlp\.fc1": "intermediate.dense",
    r"mlp\.fc2": "output.dense",
}

RULES: tuple[KeyRule, ...] = (
    drop(
        _BLOCK + r"attn_mask",
        "shifted-window mask; transformers' ClapAudioLayer.get_attn_mask recomputes it (tested equal)",
    ),
    drop(r"audio_branch\.(tscam_conv|head)\.(weight|bias)", "unused at inference: HTSAT's AudioSet classifier"),
    drop(r"audio_transform\..*", "unused at inference: CLAP's training-time audio transform MLP"),
    split(
        _BLOCK + r"attn\.qkv\.(weight|bias)",
        [_OUR_BLOCK + rf"attention.self.{name}.\3" for name in ("query", "key", "value")],
    ),
    *(rename(_BLOCK + rf"{leaf}(\.weight|\.bias|)", _OUR_BLOCK + rf"{ours}\3") for leaf, ours in _BLOCK_LEAVES.items()),
    rename(r"audio_branch\.bn0\.(.*)", r"audio_branch.audio_encoder.batch_norm.\1"),
    rename(r"audio_branch\.(.*)", r"audio_branch.audio_encoder.\1"),  # patch_embed, downsample, norm
    IDENTITY,  # audio_projection.{0,2}
)
