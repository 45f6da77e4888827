"""The `tiny` preset: CoDi's own classes at a size that trains and runs on 2 CPU cores (Shapes & Tones world)."""

from __future__ import annotations

from codi.config import CoDiConfig, MediaConfig, SamplingDefaults
from codi.models.audio_vae import AudioVAEConfig, HifiGanConfig, MelConfig
from codi.models.clap import CLAPAudioConfig
from codi.models.clip import CLIPEncoderConfig, CLIPTextTowerConfig, CLIPVisionTowerConfig
from codi.models.optimus import OptimusConfig
from codi.models.unet import UNetConfig
from codi.models.vae import ImageVAEConfig, KLAutoencoderConfig
from codi.sampling import NoiseSchedule

EMBED = 64  # the shared prompt-embedding space (official: 768)
ENV = 64  # environment-vector width (official: 1280)
TEXT_LATENT = 32  # Optimus latent (official: 768)


def tiny_config(zero_terminal_snr: bool = True) -> CoDiConfig:
    """Sizes of the embedded model: 64 px images, 8-frame 8 fps video, 0.96 s of 16 kHz audio, short captions.

    `zero_terminal_snr` (default): CoDi's schedule rescaled to zero terminal SNR, with v prediction (see
    NoiseSchedule: CoDi's own leaks the latent through the last step, and the UNets followed that leak instead of
    the text's motion; docs/tiny-model-history.md). False: CoDi's schedule and eps prediction, as released."""
    schedule = NoiseSchedule(zero_terminal_snr=True, prediction="v") if zero_terminal_snr else NoiseSchedule()
    clip = CLIPEncoderConfig(
        text=CLIPTextTowerConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2),
        vision=CLIPVisionTowerConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=64,
            patch_size=8,
        ),
        projection_dim=EMBED,
    )
    clap = CLAPAudioConfig(
        embed_dim=16,
        depths=(1, 1, 1),
        num_heads=(1, 2, 4),
        window_size=4,
        spec_size=64,
        patch_size=4,
        patch_stride=(4, 4),
        freq_ratio=2,
        joint_embed_shape=EMBED,
        input_sample_rate=16000,
        sample_rate=16000,
        clip_samples=16000,
        n_fft=512,
        hop_length=160,
        n_mels=32,
        f_min=50.0,
        f_max=7000.0,
    )
    optimus = OptimusConfig(
        encoder={
            "vocab_size": 28996,
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 128,
            "max_position_embeddings": 32,
            "type_vocab_size": 2,
        },
        decoder={"vocab_size": 50260, "n_embd": 64, "n_layer": 2, "n_head": 2, "n_positions": 32},
        latent_size=TEXT_LATENT,
        scale_factor=1.0,
        max_length=16,
    )
    image_vae = ImageVAEConfig(
        autoencoder=KLAutoencoderConfig(ch=16, ch_mult=(1, 2, 2, 2), num_res_blocks=1, embed_dim=4, norm_groups=8),
        scale_factor=1.0,
    )
    audio_vae = AudioVAEConfig(
        autoencoder=KLAutoencoderConfig(
            in_channels=1, out_channels=1, ch=16, ch_mult=(1, 2, 2), num_res_blocks=1, embed_dim=8, norm_groups=8
        ),
        vocoder=HifiGanConfig(upsample_initial_channel=128),
        waveform_decoder="griffin_lim",  # a HiFi-GAN cannot hold a steady tone's pitch: see codi/models/griffin_lim.py
        mel=MelConfig(frames_per_second=100.0),
        scale_factor=1.0,
    )

    def unet(
        channels: int, model: int, mult: tuple[int, int] = (1, 1), attn: tuple[bool, bool] = (True, True), **kw
    ) -> UNetConfig:
        return UNetConfig(
            channels,
            model,
            channels,
            num_noattn_blocks=(1, 1),
            channel_mult=mult,
            with_attn=attn,
            channel_mult_connector=(1, 2),
            num_noattn_blocks_connector=(1, 1),
            with_connector=attn,
            connector_output_channel=ENV,
            num_heads=4,
            context_dim=EMBED,
            second_dim=(4, 4),
            second_dim_connector=(4, 4),
            **kw,
        )

    return CoDiConfig(
        name="tiny",
        description="codi-tiny: a small CoDi trained on the Shapes & Tones world (colored shapes, tones, captions).",
        clip=clip,
        clap=clap,
        optimus=optimus,
        image_vae=image_vae,
        audio_vae=audio_vae,
        unet_image=unet(4, 64, use_video_architecture=True),
        unet_audio=unet(8, 64, attn=(False, True)),  # no attention over the 24x16 grid
        unet_text=unet(TEXT_LATENT, 32, mult=(1, 2)),
        media=MediaConfig(
            image_size=64,
            num_frames=8,
            video_fps=8.0,
            audio_seconds=0.96,
            cond_image_size=64,
            cond_video_size=64,
            cond_video_frames=8,
            cond_video_seconds=1.0,
            cond_audio_seconds=1.0,
        ),
        schedule=schedule,
        defaults=SamplingDefaults(
            steps=15, guidance_scale=4.0, sampler="dpm", coupling="paper", text_temperature=0.5, partner_weight=10.0
        ),
    )
