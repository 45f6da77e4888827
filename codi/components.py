"""The parts of a CoDi model that load separately, and which of them a request needs.

A component is a set of our state-dict keys (by prefix). A request materialises only its components:
text -> image needs `clip_text`, `unet_image` and `image_decoder`, never the text UNet, CLAP, the audio
VAE/vocoder, Optimus or the CLIP vision tower. The encoders of the two VAEs and Optimus's BERT are only used
in training; they load only when asked for by name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from codi.modality import Modality

# component -> the prefixes of our state-dict keys it owns (longest matching prefix wins)
COMPONENTS: dict[str, tuple[str, ...]] = {
    "clip_text": ("clip.model.text_model.", "clip.model.text_projection.", "clip.model.logit_scale"),
    "clip_vision": ("clip.model.vision_model.", "clip.model.visual_projection."),
    "clap": ("clap.",),
    "optimus_encoder": ("optimus.encoder.",),
    "optimus_decoder": ("optimus.decoder.",),
    "image_encoder": ("autokl.vae.encoder.", "autokl.vae.quant_conv."),
    "image_decoder": ("autokl.vae.decoder.", "autokl.vae.post_quant_conv."),
    "audio_encoder": ("audioldm.vae.encoder.", "audioldm.vae.quant_conv."),
    "audio_decoder": ("audioldm.vae.decoder.", "audioldm.vae.post_quant_conv.", "audioldm.vocoder."),
    "unet_image": ("diffusion.unet_image.",),
    "unet_audio": ("diffusion.unet_audio.",),
    "unet_text": ("diffusion.unet_text.",),
}

# what a person reads for each component (e.g. "Loading the audio UNet")
COMPONENT_LABELS: dict[str, str] = {
    "clip_text": "CLIP text encoder",
    "clip_vision": "CLIP image encoder",
    "clap": "CLAP audio encoder",
    "optimus_encoder": "Optimus text encoder",
    "optimus_decoder": "Optimus text decoder",
    "image_encoder": "image VAE encoder",
    "image_decoder": "image VAE decoder",
    "audio_encoder": "audio VAE encoder",
    "audio_decoder": "audio VAE decoder and vocoder",
    "unet_image": "image and video UNet",
    "unet_audio": "audio UNet",
    "unet_text": "text UNet",
}

ENCODER_FOR_INPUT: dict[Modality, str] = {
    Modality.TEXT: "clip_text",
    Modality.IMAGE: "clip_vision",
    Modality.VIDEO: "clip_vision",
    Modality.AUDIO: "clap",
}
UNET_FOR_OUTPUT: dict[Modality, str] = {
    Modality.TEXT: "unet_text",
    Modality.IMAGE: "unet_image",
    Modality.VIDEO: "unet_image",
    Modality.AUDIO: "unet_audio",
}
DECODER_FOR_OUTPUT: dict[Modality, str] = {
    Modality.TEXT: "optimus_decoder",
    Modality.IMAGE: "image_decoder",
    Modality.VIDEO: "image_decoder",
    Modality.AUDIO: "audio_decoder",
}


def component_of(key: str) -> str:
    """The component that owns one of our state-dict keys; KeyError when none does."""
    best, length = None, -1
    for name, prefixes in COMPONENTS.items():
        for prefix in prefixes:
            if key.startswith(prefix) and len(prefix) > length:
                best, length = name, len(prefix)
    if best is None:
        raise KeyError(f"{key!r} belongs to no component of codi.components.COMPONENTS")
    return best


def group_keys(keys: Iterable[str]) -> dict[str, list[str]]:
    """Our state-dict keys grouped by component (components in COMPONENTS order, keys in the given order)."""
    groups: dict[str, list[str]] = {name: [] for name in COMPONENTS}
    for key in keys:
        groups[component_of(key)].append(key)
    return {name: ks for name, ks in groups.items() if ks}


def stages_for(inputs: Iterable[Modality], outputs: Iterable[Modality]) -> dict[str, list[str]]:
    """The components each stage of a request needs: 'encode', 'denoise', 'decode'.

    Args:
        inputs: the condition modalities (none: the empty prompt, encoded by the CLIP text tower).
        outputs: the output modalities.
    """
    inputs, outputs = list(inputs), list(outputs)
    encode = [ENCODER_FOR_INPUT[m] for m in inputs] or ["clip_text"]
    return {
        "encode": _unique(encode),
        "denoise": _unique(UNET_FOR_OUTPUT[m] for m in outputs),
        "decode": _unique(DECODER_FOR_OUTPUT[m] for m in outputs),
    }


def needed_components(stages: Mapping[str, list[str]]) -> list[str]:
    return _unique(name for names in stages.values() for name in names)


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))
