"""Official -> ours key tables of the latent autoencoders (`autokl.` SD kl-f8, `audioldm.` mel VAE + HiFi-GAN).

Official keys use the LDM `Encoder`/`Decoder` naming; ours are a diffusers `AutoencoderKL` held as `vae`
(and, for audio, a transformers `SpeechT5HifiGan` held as `vocoder`). Two differences need care:

* LDM numbers decoder levels from the highest resolution (`decoder.up.0` is the LAST stage run), diffusers
  in execution order (`decoder.up_blocks.0` is the FIRST), so `up.L` -> `up_blocks.{levels-1-L}`; the rule
  list therefore depends on the number of levels (`len(ch_mult)`): 4 for SD, 3 for AudioLDM.
* The mid-block attention's q/k/v/proj_out are 1x1 convolutions `[C,C,1,1]` in LDM and `nn.Linear` `[C,C]`
  in diffusers.

Official (under the component prefix) -> ours:

  {encoder,decoder}.{conv_in,conv_out}           -> vae.{encoder,decoder}.{conv_in,conv_out}
  {encoder,decoder}.norm_out                     -> vae.{encoder,decoder}.conv_norm_out
  quant_conv, post_quant_conv                    -> vae.quant_conv, vae.post_quant_conv
  encoder.down.L.block.B.{norm1,conv1,norm2,conv2} -> vae.encoder.down_blocks.L.resnets.B.<same>
  encoder.down.L.block.B.nin_shortcut            -> vae.encoder.down_blocks.L.resnets.B.conv_shortcut
  encoder.down.L.downsample.conv                 -> vae.encoder.down_blocks.L.downsamplers.0.conv
  decoder.up.L.block.B.{norm1,...,conv2}         -> vae.decoder.up_blocks.{levels-1-L}.resnets.B.<same>
  decoder.up.L.block.B.nin_shortcut              -> vae.decoder.up_blocks.{levels-1-L}.resnets.B.conv_shortcut
  decoder.up.L.upsample.conv                     -> vae.decoder.up_blocks.{levels-1-L}.upsamplers.0.conv
  {encoder,decoder}.mid.block_1 / mid.block_2    -> vae.{encoder,decoder}.mid_block.resnets.0 / .1
  {encoder,decoder}.mid.attn_1.norm              -> vae.{encoder,decoder}.mid_block.attentions.0.group_norm
  {encoder,decoder}.mid.attn_1.{q,k,v,proj_out}  -> ...mid_block.attentions.0.{to_q,to_k,to_v,to_out.0}
                                                    (weight [C,C,1,1] -> [C,C])
  vocoder.{conv_pre,conv_post}, vocoder.resblocks.N.{convs1,convs2}.M -> vocoder.<same>
  vocoder.ups.N                                  -> vocoder.upsampler.N
  fn_STFT.{mel_basis,stft_fn.forward_basis,stft_fn.inverse_basis} -> dropped (recomputed by MelFrontend)
"""

from __future__ import annotations

from torch import Tensor

from codi.loading import KeyRule, drop, rename

SD_LEVELS = 4  # len(ch_mult) of configs/model/sd.yaml: [1, 2, 4, 4]
AUDIOLDM_LEVELS = 3  # len(ch_mult) of configs/model/audioldm.yaml: [1, 2, 4]

_ATTN = {"q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def _conv1x1_to_linear(weight: Tensor) -> Tensor:
    """[C_out, C_in, 1, 1] 1x1-conv kernel -> [C_out, C_in] Linear weight."""
    return weight.reshape(weight.shape[0], weight.shape[1])


def ldm_autoencoder_rules(levels: int, ours: str = "vae.") -> tuple[KeyRule, ...]:
    """Rules for an LDM `Encoder`/`Decoder`/`quant_conv`/`post_quant_conv` onto a diffusers AutoencoderKL.

    Args:
        levels: number of resolution levels (`len(ddconfig["ch_mult"])`).
        ours: the attribute path of the AutoencoderKL inside our module.
    Returns:
        the ordered rules (first match wins).
    """
    rules: list[KeyRule] = [
        rename(r"(encoder|decoder)\.(conv_in|conv_out)\.(weight|bias)", ours + r"\1.\2.\3"),
        rename(r"(encoder|decoder)\.norm_out\.(weight|bias)", ours + r"\1.conv_norm_out.\2"),
        rename(r"(quant_conv|post_quant_conv)\.(weight|bias)", ours + r"\1.\2"),
        rename(r"(encoder|decoder)\.mid\.block_1\.(\w+)\.(weight|bias)", ours + r"\1.mid_block.resnets.0.\2.\3"),
        rename(r"(encoder|decoder)\.mid\.block_2\.(\w+)\.(weight|bias)", ours + r"\1.mid_block.resnets.1.\2.\3"),
        rename(
            r"(encoder|decoder)\.mid\.attn_1\.norm\.(weight|bias)", ours + r"\1.mid_block.attentions.0.group_norm.\2"
        ),
    ]
    for official, diffusers_name in _ATTN.items():
        attn = rf"(encoder|decoder)\.mid\.attn_1\.{official}"
        target = ours + rf"\1.mid_block.attentions.0.{diffusers_name}"
        rules.append(rename(attn + r"\.weight", target + ".weight", _conv1x1_to_linear))
        rules.append(rename(attn + r"\.bias", target + ".bias"))
    rules += [
        rename(
            r"encoder\.down\.(\d+)\.block\.(\d+)\.nin_shortcut\.(weight|bias)",
            ours + r"encoder.down_blocks.\1.resnets.\2.conv_shortcut.\3",
        ),
        rename(
            r"encoder\.down\.(\d+)\.block\.(\d+)\.(norm1|conv1|norm2|conv2)\.(weight|bias)",
            ours + r"encoder.down_blocks.\1.resnets.\2.\3.\4",
        ),
        rename(
            r"encoder\.down\.(\d+)\.downsample\.conv\.(weight|bias)",
            ours + r"encoder.down_blocks.\1.downsamplers.0.conv.\2",
        ),
    ]
    for level in range(levels):  # LDM decoder.up.L runs last-to-first: diffusers index is reversed
        up = ours + f"decoder.up_blocks.{levels - 1 - level}."
        rules += [
            rename(
                rf"decoder\.up\.{level}\.block\.(\d+)\.nin_shortcut\.(weight|bias)",
                up + r"resnets.\1.conv_shortcut.\2",
            ),
            rename(
                rf"decoder\.up\.{level}\.block\.(\d+)\.(norm1|conv1|norm2|conv2)\.(weight|bias)",
                up + r"resnets.\1.\2.\3",
            ),
            rename(rf"decoder\.up\.{level}\.upsample\.conv\.(weight|bias)", up + r"upsamplers.0.conv.\1"),
        ]
    return tuple(rules)


VOCODER_RULES: tuple[KeyRule, ...] = (
    rename(r"vocoder\.ups\.(\d+)\.(weight|bias)", r"vocoder.upsampler.\1.\2"),
    rename(r"vocoder\.(conv_pre|conv_post)\.(weight|bias)", r"vocoder.\1.\2"),
    rename(r"vocoder\.resblocks\.(\d+)\.(convs1|convs2)\.(\d+)\.(weight|bias)", r"vocoder.resblocks.\1.\2.\3.\4"),
)

FN_STFT_RULES: tuple[KeyRule, ...] = (
    drop(
        r"fn_STFT\.mel_basis",
        "librosa Slaney mel basis (16 kHz, n_fft 1024, 64 mels, 0-8000 Hz): MelFrontend recomputes it "
        "with transformers' mel_filter_bank",
    ),
    drop(
        r"fn_STFT\.stft_fn\.(forward_basis|inverse_basis)",
        "Hann-windowed DFT bases of TacotronSTFT: MelFrontend uses torch.stft with the same window "
        "(tested equal); the inverse STFT is never used",
    ),
)


def autokl_rules(levels: int = SD_LEVELS) -> tuple[KeyRule, ...]:
    """Rules for the official `autokl.` prefix (SD kl-f8 image VAE) with `levels` resolution levels."""
    return ldm_autoencoder_rules(levels)


def audioldm_rules(levels: int = AUDIOLDM_LEVELS) -> tuple[KeyRule, ...]:
    """Rules for the official `audioldm.` prefix (mel VAE + HiFi-GAN + STFT buffers)."""
    return ldm_autoencoder_rules(levels) + VOCODER_RULES + FN_STFT_RULES


AUTOKL_RULES: tuple[KeyRule, ...] = autokl_rules()
AUDIOLDM_RULES: tuple[KeyRule, ...] = audioldm_rules()
