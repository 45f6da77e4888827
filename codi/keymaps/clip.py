"""Official `clip.model.*` keys -> our `CLIPEncoder.model` (a transformers `CLIPModel` + temporal blocks)."""

from __future__ import annotations

from codi.loading import IDENTITY, ComponentMap, KeyRule, drop

OFFICIAL_PREFIX = "clip.model."

RULES: tuple[KeyRule, ...] = (
    drop(
        r"(text|vision)_model\.embeddings\.position_ids",
        why="arange(positions) buffer, persistent in transformers 4.26 but recomputed (non-persistent) in 5.x",
    ),
    IDENTITY,  # transformers CLIPModel names + vision layers' `temporal_self_attn.*` + `logit_scale`
)


def clip_component_map(our_prefix: str = "") -> ComponentMap:
    """The map for a module whose `our_prefix` holds `CLIPEncoder.model` (e.g. "clip.model." in a pipeline)."""
    return ComponentMap(OFFICIAL_PREFIX, our_prefix, RULES)
