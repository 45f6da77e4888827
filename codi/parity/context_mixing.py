"""Parity runner for `context_mixing.json`: the official weighted mix of condition embeddings."""

from __future__ import annotations

from torch import Tensor

from codi.models.joint import mix_conditions

UNET_DEFAULT_MIX_WEIGHT = {"audio": 1, "text": 1, "image": 1}
"""`UNetModelCoDi.forward`'s default, used when a case omits mix_weight (it has no 'video')."""


def run(spec: dict, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    outputs = {}
    for case in spec["cases"]:
        weights = case["mix_weight"]
        if not isinstance(weights, dict):  # "omitted -> ..." description
            weights = UNET_DEFAULT_MIX_WEIGHT
        conditions = [tensors[name].float() for name in case["condition_list"]]
        outputs[case["output"]] = mix_conditions(conditions, [weights[t] for t in case["condition_types"]])
    return outputs
