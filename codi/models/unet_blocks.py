"""Building blocks of CoDi's diffusion UNets: timestep embedding, residual blocks, resamplers, attention.

Module and parameter names follow the official checkpoint (`in_layers.0`, `emb_layers.1`, `to_q`,
`ff.net.0.proj`, ...) so that weights load key by key without renaming. Video tensors reach these
blocks with their frames folded into the batch, `[(B F), C, H, W]`: every block here is per frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GROUPS = 32  # GroupNorm groups everywhere in the UNets


def timestep_embedding(timesteps: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal timestep features, cosines first (the official order).

    Args:
        timesteps: [B] integer or float diffusion steps.
        dim: feature size (the UNet's `model_channels`).
        max_period: the longest wavelength.
    Returns:
        [B, dim] float32 features `[cos(t f_k), sin(t f_k)]` with f_k = max_period^(-k / (dim // 2)).
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    )  # [half]
    args = timesteps[:, None].float() * freqs[None]  # [B, half]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # [B, 2 half]
    if dim % 2:
        emb = F.pad(emb, (0, 1))  # [B, dim]
    return emb


def repeat_rows(t: Tensor, rows: int) -> Tensor:
    """`t` [N, ...] repeated to [rows, ...] (`rows` a multiple of N), in `t`'s memory format.

    A UNet's features stay as many rows as its latent until the first layer that reads the condition: under
    classifier-free guidance both halves share the latent, so everything before that layer is computed once."""
    return t if t.shape[0] == rows else torch.cat([t] * (rows // t.shape[0]))


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 and cast back (eps 1e-5), the UNets' `normalization()`."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__(GROUPS, channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        weight, bias = self.weight.float(), self.bias.float()
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)


MATMUL_CONV_MAX_PIXELS = 64  # output pixels (H W) up to which a CPU convolution runs as one matrix product
MATMUL_CONV_MIN_MACS = 10**8  # multiply-adds below which gathering the patches costs more than it saves


def use_matmul_conv(x: Tensor, weight: Tensor, out_pixels: int) -> bool:
    """Whether `matmul_conv` should run a convolution of `x` with `weight` and `out_pixels` output pixels: on a
    CPU without autograd, for maps of at most `MATMUL_CONV_MAX_PIXELS` (8x8) and at least `MATMUL_CONV_MIN_MACS`.
    There oneDNN's convolutions spend most of their call re-laying out the kernel (the released UNets' 3x3
    convolutions at 4x4 and 8x8: 1.4-5x slower than the matrix product below, in float32 and bfloat16); from
    16x16 up they are the faster ones, and so they are for the tiny model's narrow layers (at most 7.5e7
    multiply-adds: all four outputs 0.91x with them as products). GPUs keep cuDNN."""
    if x.device.type != "cpu" or torch.is_grad_enabled() or out_pixels > MATMUL_CONV_MAX_PIXELS:
        return False
    return x.shape[0] * out_pixels * weight[0].numel() * weight.shape[0] >= MATMUL_CONV_MIN_MACS


def matmul_conv(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int = 1, padding: int = 0) -> Tensor:
    """`F.conv2d(x, weight, bias, stride, padding)` as one matrix product: the patches gathered channels-last
    (im2col) times the kernel viewed [O, kh kw C] (a view of a channels-last kernel, no copy).

    Args:
        x: [N, C, H, W]; weight: [O, C, kh, kw]; bias: [O] or None.
    Returns:
        [N, O, Ho, Wo], channels-last.
    """
    n, c = x.shape[:2]
    o, _, kh, kw = weight.shape
    if padding:
        x = F.pad(x, (padding, padding, padding, padding))  # [N, C, H + 2p, W + 2p]
    rows = x.permute(0, 2, 3, 1)  # [N, Hp, Wp, C]
    ho, wo = (rows.shape[1] - kh) // stride + 1, (rows.shape[2] - kw) // stride + 1
    taps = [
        rows[:, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride]  # [N, Ho, Wo, C]
        for i in range(kh)
        for j in range(kw)
    ]
    patches = taps[0] if len(taps) == 1 else torch.stack(taps, dim=3)  # [N, Ho, Wo, (kh kw), C]
    kernel = weight.permute(0, 2, 3, 1).reshape(o, kh * kw * c)  # [O, (kh kw C)]
    y = F.linear(patches.reshape(n * ho * wo, kh * kw * c), kernel, bias)  # [N Ho Wo, O]
    return y.view(n, ho, wo, o).permute(0, 3, 1, 2)


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: int = 1, padding: int = 0) -> Tensor:
    """`F.conv2d` with square int stride and padding, as `matmul_conv` where `use_matmul_conv` says so."""
    out_pixels = ((x.shape[2] + 2 * padding - weight.shape[2]) // stride + 1) * (
        (x.shape[3] + 2 * padding - weight.shape[3]) // stride + 1
    )
    if use_matmul_conv(x, weight, out_pixels):
        return matmul_conv(x, weight, bias, stride, padding)
    return F.conv2d(x, weight, bias, stride, padding)


class Conv2d(nn.Conv2d):
    """nn.Conv2d (same parameters and keys) that runs through `conv2d`: a matrix product on small CPU maps."""

    def forward(self, x: Tensor) -> Tensor:
        plain = self.groups == 1 and self.dilation == (1, 1) and self.padding_mode == "zeros"
        square = not isinstance(self.padding, str) and len({*self.stride}) == 1 and len({*self.padding}) == 1
        if not (plain and square):  # string padding ('same'), rectangular strides or paddings: torch's own call
            return super().forward(x)
        return conv2d(x, self.weight, self.bias, self.stride[0], self.padding[0])


class ResBlock(nn.Module):
    """Residual block with an additive timestep embedding (`kernel_size` 1 gives the text FCBlock)."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.in_layers = nn.Sequential(
            GroupNorm32(channels), nn.SiLU(), Conv2d(channels, out_channels, kernel_size, padding=pad)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels),
            nn.SiLU(),
            nn.Identity(),  # dropout 0 in the official model; keeps the index of `out_layers.3`
            Conv2d(out_channels, out_channels, kernel_size, padding=pad),
        )
        same = out_channels == channels
        self.skip_connection = nn.Identity() if same else Conv2d(channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """Args: x [N, C, H, W], emb [N, E]. Returns [N, C_out, H, W]."""
        h = self.in_layers(x)  # [N, C_out, H, W]
        h = h + self.emb_layers(emb).to(h.dtype)[:, :, None, None]  # [N, C_out, H, W]
        h = self.out_layers(h)  # [N, C_out, H, W]
        return self.skip_connection(x) + h


class FCBlockMultiDim(ResBlock):
    """Text-UNet residual block on `[C, S, 1]` maps, flattened C-major to `C*S` channels of 1x1 convs."""

    def __init__(self, in_dims: Sequence[int], emb_channels: int, out_dims: Sequence[int]) -> None:
        super().__init__(math.prod(in_dims), emb_channels, math.prod(out_dims), kernel_size=1)
        self.in_dims, self.out_dims = tuple(in_dims), tuple(out_dims)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """Args: x [N, *in_dims], emb [N, E]. Returns [N, *out_dims].

        The 1x1 convolutions on [N, C, 1, 1] maps are run as the matrix products they are (same weights, viewed
        [out, in]): 2-3x faster on a CPU than the convolution kernels, same result within float rounding."""
        n = x.shape[0]
        x = x.reshape(n, -1)  # [N, C_in]
        h = _linear(self.in_layers[2], F.silu(self.in_layers[0](x)))  # [N, C_out]
        h = h + self.emb_layers(emb).to(h.dtype)
        h = _linear(self.out_layers[3], F.silu(self.out_layers[0](h)))  # [N, C_out]
        skip = x if isinstance(self.skip_connection, nn.Identity) else _linear(self.skip_connection, x)
        return (skip + h).view(n, *self.out_dims)


def _linear(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """A 1x1 convolution applied to [N, C_in] features as a linear layer: [N, C_out]."""
    return F.linear(x, conv.weight.view(conv.out_channels, conv.in_channels), conv.bias)


class LinearMultiDim(nn.Linear):
    """A Linear layer on the flattened trailing dims `in_dims`, reshaped to `out_dims` (`Linear_MultiDim`)."""

    def __init__(self, in_dims: Sequence[int], out_dims: Sequence[int]) -> None:
        super().__init__(math.prod(in_dims), math.prod(out_dims))
        self.in_dims, self.out_dims = tuple(in_dims), tuple(out_dims)

    def forward(self, x: Tensor) -> Tensor:
        """Args: x [N, *in_dims]. Returns [N, *out_dims]."""
        lead = x.shape[: x.ndim - len(self.in_dims)]
        y = super().forward(x.reshape(*lead, self.in_features))  # [*lead, prod(out_dims)]
        return y.view(*lead, *self.out_dims)


class Downsample(nn.Module):
    """Stride-2 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)  # [N, C, H/2, W/2]


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling followed by a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """Args: x [N, C, H, W]. Returns [N, C, 2H, 2W]."""
        if use_upsample_conv(x, self.conv.weight):
            return upsample_conv(x, self.conv.weight, self.conv.bias)
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


UPSAMPLE_CONV_MIN_MACS = 10**9  # multiply-adds of the plain convolution below which the call overheads win


def use_upsample_conv(x: Tensor, weight: Tensor) -> bool:
    """Whether `upsample_conv` should replace upsample-then-convolve for `x` [N, C, H, W] and a 3x3 `weight`: on a
    CPU without autograd (GPUs keep the plain path: it was measured on CPUs only), for convolutions of at least
    `UPSAMPLE_CONV_MIN_MACS` (the tiny model's are 1.5-4x slower by parity, all overhead). With the small-map
    matrix products under both paths, the released video UNet's upsamplers take 0.41-0.76x the plain time in
    bfloat16 and 0.42-0.59x in float32."""
    if torch.is_grad_enabled() or x.device.type != "cpu":
        return False
    n, c, h, w = x.shape
    return n * 4 * h * w * weight.shape[0] * c * 9 >= UPSAMPLE_CONV_MIN_MACS


# Which 3x3 taps fall on each of the 2 source pixels a nearest-x2 output row (or column) of parity 0/1 reads:
# parity 0 reads rows i-1 (tap 0) and i (taps 1, 2); parity 1 reads rows i (taps 0, 1) and i+1 (tap 2).
_PARITY_TAPS = ((1.0, 0.0, 0.0), (0.0, 1.0, 1.0)), ((1.0, 1.0, 0.0), (0.0, 0.0, 1.0))  # [parity][2 taps][3 taps]


def upsample_conv(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """`conv2d(interpolate(x, scale 2, nearest), weight, bias, padding=1)` for a 3x3 `weight`, by output parity.

    An output pixel (2i + a, 2j + b) of the convolution on the nearest-upsampled map sees only a 2x2 patch of `x`,
    whose pixels carry summed taps of the kernel. Each of the 4 parities is then a 2x2 convolution on `x` (padded by
    one): per pixel of `x` and pair of channels, 16 multiplications against the 36 on the upsampled map. The kernels
    are summed per call (a matrix product, cheap against the convolutions) and the parities interleaved into place.
    Same numbers up to float rounding (the taps are summed before multiplying).

    Args:
        x: [N, C, H, W]; weight: [O, C, 3, 3]; bias: [O] or None.
    Returns:
        [N, O, 2H, 2W] in `x`'s memory format.
    """
    n, _, h, w = x.shape
    o, c = weight.shape[:2]
    taps = torch.tensor(_PARITY_TAPS, dtype=weight.dtype, device=weight.device)  # [2, 2, 3]
    mix = torch.einsum("apk,bql->abpqkl", taps, taps).reshape(16, 9)  # rows (a, b, p, q), columns (k, l)
    kernels = torch.matmul(mix, weight.permute(0, 2, 3, 1).reshape(o, 9, c))  # [O, 16, C]
    kernels = kernels.view(o, 4, 2, 2, c).permute(1, 0, 4, 2, 3)  # [4 parities, O, C, 2, 2]
    layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    padded = F.pad(x, (1, 1, 1, 1))  # [N, C, H + 2, W + 2]
    out = torch.empty((n, o, 2 * h, 2 * w), dtype=x.dtype, device=x.device, memory_format=layout)
    grid = out.view(n, o, h, 2, w, 2)  # [N, O, H, a, W, b]
    for a in range(2):
        for b in range(2):
            grid[:, :, :, a, :, b] = conv2d(padded[:, :, a : a + h + 1, b : b + w + 1], kernels[2 * a + b], bias)
    return out


class CrossAttention(nn.Module):
    """Multi-head attention of `x` over `context` (self-attention when no context is given)."""

    def __init__(self, query_dim: int, context_dim: int | None, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        context_dim = context_dim or query_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Args: x [N, L, D], context [N, M, Dc] or None. Returns [N, L, D], or [N, 1, D] (the same for every
        query) when the context is one token: a softmax over one key is 1, so the output is that token's value,
        whatever the queries (CoDi's condition and environment are single tokens)."""
        if context is not None and context.shape[1] == 1:
            return self.to_out(self.to_v(context))  # [N, 1, D], broadcast by the residual sum
        context = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)  # [N, L|M, h d]
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))  # [N, h, L|M, d]
        out = F.scaled_dot_product_attention(q, k, v)  # [N, h, L, d], scale d^-0.5
        return self.to_out(out.transpose(1, 2).flatten(2))  # [N, L, D]


class GEGLU(nn.Module):
    """Linear projection to twice the width, then value * gelu(gate)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)  # [N, L, dim_out] each
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward of the transformer block (`net.0.proj`, `net.2`), width x4."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # [N, L, dim]


class BasicTransformerBlock(nn.Module):
    """Self-attention, cross-attention on the context, GEGLU feed-forward; pre-LayerNorm residuals."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int) -> None:
        super().__init__()
        self.attn1 = CrossAttention(dim, None, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim, heads, dim_head)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        """Args: x [N, L, D], context [G N, M, Dc] (G conditions sharing x). Returns [G N, L, D]."""
        x = self.attn1(self.norm1(x)) + x  # [N, L, D]
        x = repeat_rows(x, context.shape[0])  # [G N, L, D]: the condition enters here
        x = self.attn2(x if context.shape[1] == 1 else self.norm2(x), context) + x  # [G N, L, D]; one token: no queries
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """SD-v1 transformer on a feature map: GroupNorm (eps 1e-6), 1x1 in, one transformer block, 1x1 out, residual."""

    def __init__(self, channels: int, heads: int, dim_head: int, context_dim: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(GROUPS, channels, eps=1e-6)
        self.proj_in = Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(inner, heads, dim_head, context_dim)])
        self.proj_out = Conv2d(inner, channels, 1)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        """Args: x [N, C, H, W], context [G N, M, Dc] (G conditions sharing x). Returns [G N, C, H, W]."""
        _, _, h, w = x.shape
        tokens = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)  # [N, H W, inner]
        for block in self.transformer_blocks:
            tokens = block(tokens, context)  # [G N, H W, inner]
        y = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)  # [G N, inner, H, W]
        return self.proj_out(y) + repeat_rows(x, y.shape[0])
