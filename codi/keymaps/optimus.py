"""Official `optimus.*` keys -> our OptimusVAE (codi/models/optimus.py): identity except two rules."""

from __future__ import annotations

from codi.loading import IDENTITY, ComponentMap, KeyRule, drop

OFFICIAL_PREFIX = "optimus."

RULES: tuple[KeyRule, ...] = (
    drop(
        r"decoder\.transformer\.h\.\d+\.attn\.bias",
        "GPT-2 causal-mask buffer (tril of ones, [1,1,n_ctx,n_ctx]); transformers 5 builds its masks per call",
    ),
    # lm_head is tied to wte: the official lm_head tensor fills both of our names, so the loader checks
    # that it equals the official wte tensor (two official keys landing on one of ours must be equal).
    KeyRule(
        r"decoder\.lm_head\.weight",
        ("decoder.lm_head.weight", "decoder.transformer.wte.weight"),
        lambda t: (t, t),
    ),
    IDENTITY,
)

OPTIMUS_MAP = ComponentMap(OFFICIAL_PREFIX, "", RULES)
