"""The video UNet's SpatioTemporalAttention (STA): attention over frames, a token-shift feed-forward and a frame shift.

Video features travel with the frames folded into the batch, `[(B F), C, H, W]` (b-major), and every
STA gets the frame count; with no frame count (an image) the STA is the identity. The official fp32
islands are kept: the GEGLU, token shift and channel LayerNorm of the feed-forward run in float32, and
both custom LayerNorms use eps 1e-5 for float32 inputs and 1e-3 otherwise (clamping the variance).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codi.models.unet_blocks import Conv2d, GroupNorm32, ResBlock, conv2d

FRAME_RATE = 4  # the official forward's default; selects frame_rate_embeds[:, 3]
SHIFT_CHUNKS = 8  # channel chunks of the frame-shift block, chunk i moves i frames


def _eps_for(x: Tensor) -> float:
    return 1e-5 if x.dtype == torch.float32 else 1e-3


def _var_mean(x: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """Biased variance and mean over `dim` (two passes; torch.var_mean is ~20x slower on CPU for these shapes)."""
    mean = x.mean(dim=dim, keepdim=True)
    dev = x - mean
    return (dev * dev).mean(dim=dim, keepdim=True), mean


class TimeAxisLayerNorm(nn.Module):
    """Normalises `[N, T, C]` over the TIME axis (dim 1, the official quirk), then scales channels by `g`."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        var, mean = _var_mean(x, dim=1)  # [N, 1, C]
        return (x - mean) * var.clamp(min=_eps_for(x)).rsqrt() * self.g


class ChanLayerNorm(nn.Module):
    """Normalises `[N, C, H, W]` over channels, scales by `g` and casts to `g`'s dtype."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.ones(dim, 1, 1, 1))  # official 3-D-conv shape

    def forward(self, x: Tensor) -> Tensor:
        eps, g = _eps_for(x), self.g[:, 0, 0, 0]
        eager_cpu = x.device.type == "cpu" and not torch.compiler.is_compiling()
        if eager_cpu and x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last):
            # channels-last rows are contiguous: torch's fused layer norm with eps 0 is (x - mean) * rsqrt(var),
            # the official (x - mean) * rsqrt(clamp(var, eps)) wherever var >= eps (3-4x faster at 853 channels;
            # eager CPU only: the check below would wait for a GPU on every call, and under torch.compile it would
            # break the graph where the compiler fuses the formula below anyway)
            rows, _, rstd = torch.native_layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), g.float(), None, 0.0)
            if not bool((rstd > eps**-0.5).any()):  # no row with var < eps, where the clamp would act
                return rows.permute(0, 3, 1, 2).to(self.g.dtype)  # [N, C, H, W], channels-last
        var, mean = _var_mean(x, dim=1)  # [N, 1, H, W]
        y = (x - mean) * var.clamp(min=eps).rsqrt() * g[:, None, None]  # [N, C, H, W]
        return y.to(self.g.dtype)


class ContinuousPositionBias(nn.Module):
    """Per-head attention bias from signed log distances between frames (MLP 1 -> dim -> dim -> heads)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.net = nn.ModuleList(
            [
                nn.Sequential(nn.Linear(1, dim), nn.SiLU()),
                nn.Sequential(nn.Linear(dim, dim), nn.SiLU()),
                nn.Linear(dim, heads),
            ]
        )
        self._cached: tuple[tuple, Tensor] | None = None

    def forward(self, num_frames: int) -> Tensor:
        """Returns [heads, T, T]: bias[h, i, j] = MLP(sign(i - j) log(|i - j| + 1))[h]. Without gradients the bias
        is kept until the frame count or a parameter (its storage or version) changes: every step of a sampling
        call asks for the same one (2.5 % of a tiny text->video call)."""
        if torch.is_grad_enabled():
            return self._bias(num_frames)
        key = (num_frames, *((p.data_ptr(), p._version, p.dtype) for p in self.parameters()))
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, self._bias(num_frames))
        return self._cached[1]

    def _bias(self, num_frames: int) -> Tensor:
        weight = self.net[2].weight
        pos = torch.arange(num_frames, device=weight.device)
        rel = (pos[:, None] - pos[None, :])[..., None]  # [T, T, 1] int
        rel = (torch.sign(rel) * torch.log(rel.abs() + 1)).to(weight.dtype)  # [T, T, 1]
        for layer in self.net:
            rel = layer(rel)  # [T, T, dim] ... [T, T, heads]
        return rel.permute(2, 0, 1)


class TemporalAttention(nn.Module):
    """Multi-head self-attention along the frame axis with learned frame and frame-rate embeddings."""

    def __init__(self, dim: int, dim_head: int, heads: int) -> None:
        super().__init__()
        inner = dim_head * heads
        self.heads = heads
        self.norm = TimeAxisLayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)
        self.pos_embeds = nn.Parameter(torch.zeros(1, 30, dim))
        self.frame_rate_embeds = nn.Parameter(torch.zeros(1, 30, dim))

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        """Args: x [N, T, C] (N = B H W), bias [heads, T, T]. Returns the update [N, T, C] (no residual)."""
        t = x.shape[1]
        x = x + self.pos_embeds[:, :t]  # [N, T, C]
        x = x + self.frame_rate_embeds[:, FRAME_RATE - 1 : FRAME_RATE]  # constant over T
        x = self.norm(x)  # [N, T, C]
        q = self.to_q(x)  # [N, T, h d]
        k, v = self.to_kv(x).chunk(2, dim=-1)  # [N, T, h d] each
        q, k, v = (u.unflatten(-1, (self.heads, -1)).transpose(1, 2) for u in (q, k, v))  # [N, h, T, d]
        # Spelled out, as the released code does: with T = 8 frames the fused CPU kernel's per-call overhead
        # dominates (1.2x slower in float32, 2.4x in bfloat16, from tiny to released sizes; bench/unet_step.py).
        scores = torch.matmul(q, k.transpose(-1, -2)).mul_(q.shape[-1] ** -0.5).add_(bias.to(q.dtype))  # [N, h, T, T]
        out = torch.matmul(scores.softmax(dim=-1), v)  # [N, h, T, d]
        return self.to_out(out.transpose(1, 2).flatten(2))  # [N, T, C]


class GEGLU32(nn.Module):
    """Channel-split GEGLU computed in float32: first half * gelu(second half)."""

    def forward(self, x: Tensor) -> Tensor:
        value, gate = x.chunk(2, dim=1)  # [N, inner, H, W] each
        return geglu32(value, gate)


def geglu32(value: Tensor, gate: Tensor, out: Tensor | None = None) -> Tensor:
    """value * gelu(gate) computed in float32 (the official island), written into `out` when given."""
    return torch.mul(value.float(), F.gelu(gate.float()), out=out)


def token_shift(x: Tensor, num_frames: int) -> Tensor:
    """Moves the second `chunk(2)` half of the channels one frame forward (zeros at frame 0).

    Args:
        x: [(B F), C, H, W] per-frame features.
        num_frames: F.
    Returns:
        [(B F), C, H, W].
    """
    n, c, h, w = x.shape
    video = x.view(n // num_frames, num_frames, c, h, w)  # [B, F, C, H, W]
    keep = (c + 1) // 2  # torch.chunk(2) puts the larger half first
    moved = video[:, :, keep:]  # [B, F, C - keep, H, W]
    moved = torch.cat([torch.zeros_like(moved[:, :1]), moved[:, :-1]], dim=1)  # [B, F, C - keep, H, W]
    return torch.cat([video[:, :, :keep], moved], dim=2).view(n, c, h, w)


def frame_shift(x: Tensor, num_frames: int, chunks: int = SHIFT_CHUNKS) -> Tensor:
    """Splits channels into `chunks` (torch.chunk) and moves chunk i forward by i frames with zero fill.

    Args:
        x: [(B F), C, H, W] per-frame features.
        num_frames: F; chunks with i >= F become all zeros.
        chunks: number of channel chunks.
    Returns:
        [(B F), C, H, W].
    """
    n, c, h, w = x.shape
    video = x.view(n // num_frames, num_frames, c, h, w)  # [B, F, C, H, W]
    parts = []
    for i, part in enumerate(video.chunk(chunks, dim=2)):  # [B, F, c_i, H, W]
        s = min(i, num_frames)
        parts.append(torch.cat([torch.zeros_like(part[:, :s]), part[:, : num_frames - s]], dim=1))
    return torch.cat(parts, dim=2).view(n, c, h, w)


class TemporalFeedForward(nn.Module):
    """Pointwise GEGLU feed-forward with a one-frame token shift (`proj_in.0`, `proj_out.{0,1}`)."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        inner = int(dim * mult * 2 / 3)
        self.proj_in = nn.Sequential(nn.Conv3d(dim, inner * 2, 1, bias=False), GEGLU32())
        self.proj_out = nn.Sequential(ChanLayerNorm(inner), nn.Conv3d(inner, dim, 1, bias=False))

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        """Args: x [(B F), C, H, W]. Returns the update [(B F), C, H, W] (no residual).

        Without autograd, `token_shift(GEGLU32(h))` is written straight into one float32 buffer in `h`'s memory
        format, the moved half's GEGLU only for the frames that move (the last frame's would be dropped), so that
        the channel LayerNorm reads channels-last rows (at the released sizes the GEGLU, the shift and the norm had
        taken half of this block's time)."""
        conv_in, norm, conv_out = self.proj_in[0], self.proj_out[0], self.proj_out[1]
        h = conv2d(x, conv_in.weight[..., 0])  # [(B F), 2 inner, H, W]; 1x1x1 conv per frame
        h = (
            token_shift(self.proj_in[1](h), num_frames)
            if torch.is_grad_enabled()
            else self._shifted_geglu(h, num_frames)
        )
        h = norm(h)  # [(B F), inner, H, W] in the parameter dtype
        return conv2d(h.to(conv_out.weight.dtype), conv_out.weight[..., 0])  # [(B F), C, H, W]

    @staticmethod
    def _shifted_geglu(h: Tensor, num_frames: int) -> Tensor:
        """`token_shift(GEGLU32(h))` without autograd, [(B F), inner, H, W] float32 in `h`'s memory format."""
        n, c2, hh, ww = h.shape
        b, inner = n // num_frames, c2 // 2
        keep = (inner + 1) // 2  # torch.chunk(2) puts the larger half first
        value = h[:, :inner].view(b, num_frames, inner, hh, ww)  # [B, F, inner, H, W]
        gate = h[:, inner:].view(b, num_frames, inner, hh, ww)
        layout = torch.channels_last if h.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        out = torch.empty((n, inner, hh, ww), dtype=torch.float32, device=h.device, memory_format=layout)
        video = out.view(b, num_frames, inner, hh, ww)
        geglu32(value[:, :, :keep], gate[:, :, :keep], out=video[:, :, :keep])  # the kept half, every frame
        geglu32(value[:, :-1, keep:], gate[:, :-1, keep:], out=video[:, 1:, keep:])  # the moved half: f -> f + 1
        video[:, :1, keep:] = 0
        return out


class FrameShiftBlock(nn.Module):
    """GroupNorm, SiLU, 3x3 conv per frame, then the progressive frame shift; added to the input."""

    MIN_PIXELS = 512  # pixels per convolution call below which splitting by frame costs more than it saves

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.out_layers = nn.Sequential(GroupNorm32(dim), nn.SiLU(), Conv2d(dim, dim, 3, padding=1))

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        """Args: x [(B F), C, H, W]. Returns `x + frame_shift(conv(silu(norm(x))))`, [(B F), C, H, W].

        The shift drops what chunk i's convolution gives for the last i frames (44 % of the outputs at 8 frames
        and 8 chunks), so those are not computed: frame f needs only the output channels of chunks 0..F-1-f, a
        prefix of the kernel. On a CPU without autograd, frames go through the convolution in groups (at least
        `MIN_PIXELS` pixels per call), each with the prefix its first frame needs, and each chunk is added into
        place (GPUs keep the one call: the split was measured on CPUs only)."""
        norm, act, conv = self.out_layers
        h = act(norm(x))  # [(B F), C, H, W]
        n, c, hh, ww = h.shape
        b = n // num_frames
        group = min(num_frames, -(-self.MIN_PIXELS // (b * hh * ww)))
        if group >= num_frames or torch.is_grad_enabled() or x.device.type != "cpu":  # one call: all frames, channels
            return x + frame_shift(conv(h), num_frames)
        size = -(-c // SHIFT_CHUNKS)  # torch.chunk's chunk width
        out = x.clone()  # [(B F), C, H, W], x's memory format
        target, frames = out.view(b, num_frames, c, hh, ww), h.view(b, num_frames, c, hh, ww)
        for f0 in range(0, num_frames, group):
            f1 = min(f0 + group, num_frames)
            k = min(c, (num_frames - f0) * size)  # the chunks that frame f0 still moves into the clip
            part = frames[:, f0:f1].permute(0, 1, 3, 4, 2).reshape(-1, hh, ww, c).permute(0, 3, 1, 2)  # CL copy
            bias = None if conv.bias is None else conv.bias[:k]
            y = conv2d(part, conv.weight[:k], bias, padding=1).view(b, f1 - f0, k, hh, ww)
            for i, lo in enumerate(range(0, k, size)):  # chunk i moves i frames forward
                last = min(f1, num_frames - i)  # frames f0 .. last-1 land inside the clip
                if last > f0:
                    target[:, f0 + i : last + i, lo : lo + size] += y[:, : last - f0, lo : lo + size]
        return out


class SpatioTemporalAttention(nn.Module):
    """Make-A-Video style temporal block of the video UNet; the identity for images."""

    def __init__(self, dim: int, dim_head: int, heads: int = 8) -> None:
        super().__init__()
        self.frameshiftblock = FrameShiftBlock(dim)
        self.temporal_attn = TemporalAttention(dim, dim_head, heads)
        self.temporal_rel_pos_bias = ContinuousPositionBias(dim // 2, heads)
        self.ff = TemporalFeedForward(dim)

    def forward(self, x: Tensor, num_frames: int | None) -> Tensor:
        """Args: x [(B F), C, H, W]; num_frames F, or None for images. Returns [(B F), C, H, W]."""
        if num_frames is None:
            return x
        n, c, h, w = x.shape
        b = n // num_frames
        seq = x.view(b, num_frames, c, h, w).permute(0, 3, 4, 1, 2).reshape(b * h * w, num_frames, c)
        seq = seq + self.temporal_attn(seq, self.temporal_rel_pos_bias(num_frames))  # [(B H W), F, C]
        # back to [(B F), C, H, W], channels-last (the layout the convolutions and the feed-forward's norm want)
        x = torch.empty((n, c, h, w), dtype=seq.dtype, device=seq.device, memory_format=torch.channels_last)
        x.permute(0, 2, 3, 1).view(b, num_frames, h, w, c).copy_(
            seq.view(b, h, w, num_frames, c).permute(0, 3, 1, 2, 4)
        )
        x = x + self.ff(x, num_frames)  # [(B F), C, H, W]
        return self.frameshiftblock(x, num_frames)


class ResBlockWithTemporal(nn.ModuleList):
    """The video UNet's `[ResBlock, STA]` pair (official keys `<blk>.0.0.*` and `<blk>.0.1.*`)."""

    def __init__(self, res: ResBlock, sta: SpatioTemporalAttention) -> None:
        super().__init__([res, sta])

    def forward(self, x: Tensor, emb: Tensor, num_frames: int | None) -> Tensor:
        """Args: x [(B F), C, H, W], emb [(B F), E]. Returns [(B F), C_out, H, W]."""
        res, sta = self[0], self[1]
        return sta(res(x, emb), num_frames)
