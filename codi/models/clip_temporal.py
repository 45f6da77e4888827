"""CoDi's temporal block for the CLIP vision encoder: attention and feed-forward over the frame axis.

One `CLIPTemporalBlock` sits in every CLIP vision encoder layer (attribute `temporal_self_attn`) and is
only used for video input, between the layer's spatial self-attention and its MLP. Attribute names
follow the official checkpoint (`temporal_attn`, `temporal_rel_pos_bias`, `ff`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codi.models.temporal import ContinuousPositionBias, _eps_for, _var_mean
from codi.models.temporal import TimeAxisLayerNorm as FrameLayerNorm

MAX_FRAMES = 30  # length of the (unused in CLIP) positional / frame-rate embedding tables


class ChanLayerNorm(nn.Module):
    """LayerNorm over the channel axis (dim 1) of a [N,C,F] tensor, gain only."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.ones(1, dim, 1))

    def forward(self, x: Tensor) -> Tensor:
        """x [N,C,F] -> [N,C,F] in the dtype of `g`."""
        var, mean = _var_mean(x, dim=1)  # [N,1,F] each
        x = (x - mean) * var.clamp(min=_eps_for(x)).rsqrt()  # [N,C,F]
        return x.to(self.g.dtype) * self.g  # [N,C,F]


class GEGLU(nn.Module):
    """Gated GELU over channel halves, computed in float32: value * gelu(gate)."""

    def forward(self, x: Tensor) -> Tensor:
        """x [N,2D,F] -> [N,D,F] float32."""
        value, gate = x.float().chunk(2, dim=1)  # [N,D,F] each
        return value * F.gelu(gate)  # [N,D,F]


class TemporalAttention(nn.Module):
    """Multi-head self-attention over frames on frame-axis-normalised tokens (no biases)."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.scale = dim_head**-0.5
        # Present in the official checkpoint; CoDi's CLIP calls the block without a frame rate, so
        # neither table is added to the input.
        self.pos_embeds = nn.Parameter(torch.randn(1, MAX_FRAMES, dim))
        self.frame_rate_embeds = nn.Parameter(torch.randn(1, MAX_FRAMES, dim))
        self.norm = FrameLayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)
        nn.init.zeros_(self.to_out.weight)  # official init: the block starts as the identity

    def forward(self, x: Tensor, pos_bias: Tensor) -> Tensor:
        """x [N,F,C], pos_bias [heads,F,F] -> attention output [N,F,C] (no residual)."""
        n, f, _ = x.shape
        x = self.norm(x)  # [N,F,C]
        q = self.to_q(x)  # [N,F,inner]
        k, v = self.to_kv(x).chunk(2, dim=-1)  # [N,F,inner] each
        q, k, v = (t.view(n, f, self.heads, -1).transpose(1, 2) for t in (q, k, v))  # [N,h,F,d]
        sim = (q * self.scale) @ k.transpose(-1, -2)  # [N,h,F,F]
        sim = sim + pos_bias.to(sim.dtype)  # [N,h,F,F]
        attn = sim.softmax(dim=-1)  # [N,h,F,F]
        out = (attn @ v).transpose(1, 2).reshape(n, f, -1)  # [N,F,inner]
        return self.to_out(out)  # [N,F,C]


class TemporalFeedForward(nn.Module):
    """1x1 conv GEGLU feed-forward over [N,C,F] with a channel LayerNorm before the output conv."""

    def __init__(self, dim: int, mult: float = 4.0) -> None:
        super().__init__()
        inner = int(dim * mult * 2 / 3)
        self.proj_in = nn.Sequential(nn.Conv1d(dim, 2 * inner, 1, bias=False), GEGLU())
        self.proj_out = nn.Sequential(ChanLayerNorm(inner), nn.Conv1d(inner, dim, 1, bias=False))
        nn.init.zeros_(self.proj_out[1].weight)  # official init: the block starts as the identity

    def forward(self, x: Tensor) -> Tensor:
        """x [N,C,F] -> [N,C,F]."""
        return self.proj_out(self.proj_in(x))  # [N,C,F]


class CLIPTemporalBlock(nn.Module):
    """CoDi's spatio-temporal block for CLIP: residual attention over frames, then a residual feed-forward."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.temporal_attn = TemporalAttention(dim, heads=heads, dim_head=dim // heads)
        self.temporal_rel_pos_bias = ContinuousPositionBias(dim // 2, heads)
        self.ff = TemporalFeedForward(dim)

    def forward(self, x: Tensor, frames: int) -> Tensor:
        """Mixes every token with the same token of the other frames of its video.

        Args:
            x: [(B*F), L, C] tokens, frames of one video consecutive (b-major).
            frames: F.
        Returns:
            [(B*F), L, C].
        """
        bf, length, dim = x.shape
        b = bf // frames
        h = x.view(b, frames, length, dim).transpose(1, 2).reshape(b * length, frames, dim)  # [(B*L),F,C]
        attn = self.temporal_attn(h, self.temporal_rel_pos_bias(frames))  # [(B*L),F,C]
        h = h + torch.nan_to_num(attn)  # [(B*L),F,C]
        h = h + self.ff(h.transpose(1, 2)).transpose(1, 2).to(h.dtype)  # [(B*L),F,C]
        return h.view(b, length, frames, dim).transpose(1, 2).reshape(bf, length, dim)  # [(B*F),L,C]
