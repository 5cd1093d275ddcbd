"""The WorldFM frame model: a PixArt-Sigma-style DiT with tri-condition width concatenation.

Three latents, each (B, C, H, W) -- the noisy target, the anchor render at the target pose and the reference view --
are placed side by side along the width into one (B, C, H, 3W) image, patch-embedded, given 2-D sin-cos positions
for that whole grid, and run through full self-attention with adaLN-single timestep conditioning. Only the tokens of
the first (target) panel are decoded, so the output is (B, out_channels, H, W).

Parameter names and shapes follow the published checkpoint so that its state dict loads strictly. Published source
read for this file (repository ``inspatio/worldfm``):

* ``worldfm/diffusion/model/nets/PixArtWorldFMMS.py`` -- the model class used at inference (width concatenation,
  positional embedding recomputed per input size, output split, ``plucker_proj``),
* ``worldfm/diffusion/model/nets/PixArtWorldFM.py`` -- base class, sin-cos position formula, ``pos_embed`` buffer,
  initialisation, the XL/2 config,
* ``worldfm/diffusion/model/nets/PixArtWorldFM_blocks.py`` -- attention, cross-attention, final layer, timestep and
  caption embedders,
* ``worldfm/diffusion/model/nets/plucker.py`` and ``worldfm/diffusion/model/nets/prope.py`` -- the optional camera
  encodings (re-derived here, not copied),
* ``modules/worldfm_infer.py`` -- how the model is built and called at inference (cross-attention disabled,
  300 caption tokens, ``pe_interpolation = image_size / 512``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from worldfm_env._config import strict_kwargs

__all__ = [
    "DiTConfig",
    "MODEL_CONFIGS",
    "PanelCameras",
    "PixelRefiner",
    "WorldFMDiT",
    "build_model",
    "plucker_rays",
    "sincos_pos_embed_2d",
    "timestep_embedding",
]

CAMERA_ENCODINGS = ("none", "prope", "plucker")
TARGETS = ("image", "anchor_residual")
FREQUENCY_EMBEDDING_SIZE = 256  # sinusoidal timestep features before the t_embedder MLP
LAYER_NORM_EPS = 1e-6


# ----------------------------------------------------------------------------------------------------------------------
# Functional pieces
# ----------------------------------------------------------------------------------------------------------------------
def timestep_embedding(
    t: torch.Tensor, dim: int = FREQUENCY_EMBEDDING_SIZE, max_period: float = 10000.0
) -> torch.Tensor:
    """Sinusoidal timestep features ``[cos(t * f_k), sin(t * f_k)]`` with ``f_k = max_period ** (-k / (dim / 2))``.

    Cosines come first, as in the published ``TimestepEmbedder`` (GLIDE ordering); computed in float32.
    ``t``: (B,) -> (B, dim).
    """
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(-math.log(max_period) * k / half)  # (half,)
    args = t[:, None].float() * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, 2 * half)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def _sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """(M,) positions -> (M, dim) ``[sin(pos * w_k), cos(pos * w_k)]``, ``w_k = 10000 ** (-k / (dim / 2))``."""
    omega = torch.arange(dim // 2, dtype=torch.float64, device=pos.device) / (dim / 2.0)
    omega = 1.0 / 10000.0**omega  # (dim/2,)
    out = pos.to(torch.float64)[:, None] * omega[None]  # (M, dim/2)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)  # (M, dim)


def sincos_pos_embed_2d(
    dim: int,
    grid_h: int,
    grid_w: int,
    base_size: int,
    pe_interpolation: float = 1.0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """2-D sin-cos positional embedding for a ``grid_h x grid_w`` token grid, row-major, float64, (grid_h*grid_w, dim).

    Same formula as the published ``get_2d_sincos_pos_embed``: coordinates are rescaled so that each axis spans
    ``[0, base_size / pe_interpolation)`` whatever the grid length (for the (H/p) x (3W/p) tri-condition grid the width
    coordinates therefore advance by 1/3 per token), the grids are formed in float32 like the published numpy code,
    the first half of the channels encodes the WIDTH coordinate and the second half the height coordinate (the
    MAE/DiT quirk of ``np.meshgrid(grid_w, grid_h)``), and the frequencies are float64.
    """
    if dim % 4:
        raise ValueError(f"positional embedding needs dim divisible by 4, got {dim}")
    f32 = torch.float32
    ys = torch.arange(grid_h, dtype=f32, device=device) / torch.tensor(grid_h / base_size, dtype=f32, device=device)
    xs = torch.arange(grid_w, dtype=f32, device=device) / torch.tensor(grid_w / base_size, dtype=f32, device=device)
    ys = ys / torch.tensor(pe_interpolation, dtype=f32, device=device)
    xs = xs / torch.tensor(pe_interpolation, dtype=f32, device=device)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")  # (gh, gw) each
    emb_x = _sincos_1d(dim // 2, xx.reshape(-1))  # (T, D/2): width coordinate first
    emb_y = _sincos_1d(dim // 2, yy.reshape(-1))  # (T, D/2)
    return torch.cat([emb_x, emb_y], dim=1)  # (T, D)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation ``x * (1 + scale) + shift`` (shift/scale broadcast over tokens)."""
    return x * (1 + scale) + shift


def _layer_norm(x: torch.Tensor) -> torch.Tensor:
    # Parameter-free LayerNorm (elementwise_affine=False): adaLN supplies the affine part.
    return F.layer_norm(x, (x.shape[-1],), eps=LAYER_NORM_EPS)


# ----------------------------------------------------------------------------------------------------------------------
# Cameras (optional extension; the published weights take no camera input)
# ----------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PanelCameras:
    """One camera per panel (target, anchor, reference), used only by the optional camera encodings.

    ``c2w``: (B, 3, 4, 4) camera-to-world, OpenCV axes. ``K``: (B, 3, 3, 3) pinhole intrinsics in pixels of an image of
    size ``image_hw`` = (height, width) -- the pixel images the latents were made from. The anchor is rendered at
    the target pose, so panels 0 and 1 normally share a camera.
    """

    c2w: torch.Tensor
    K: torch.Tensor
    image_hw: tuple[int, int]

    def validate(self, batch: int, panels: int) -> None:
        """Raise ValueError naming ``cameras`` when shapes do not fit a batch of ``batch`` x ``panels`` views."""
        if tuple(self.c2w.shape) != (batch, panels, 4, 4):
            raise ValueError(f"cameras.c2w must be {(batch, panels, 4, 4)}, got {tuple(self.c2w.shape)}")
        if tuple(self.K.shape) != (batch, panels, 3, 3):
            raise ValueError(f"cameras.K must be {(batch, panels, 3, 3)}, got {tuple(self.K.shape)}")
        if len(self.image_hw) != 2 or min(self.image_hw) <= 0:
            raise ValueError(f"cameras.image_hw must be (height, width) > 0, got {self.image_hw}")


def plucker_rays(cameras: PanelCameras, token_h: int, token_w: int, dtype: torch.dtype) -> torch.Tensor:
    """Per-token Plücker coordinates ``(o x d, d)`` in world space at patch centres: (B, P, token_h, token_w, 6).

    Rays go through patch centres ``u = (x + 0.5) * W / token_w`` (same for v), ``d`` is the unit world direction and
    ``o`` the camera centre. Geometry runs in float32 at least (fp16 inverses are unreliable).
    """
    with torch.autocast(cameras.c2w.device.type, enabled=False):  # geometry stays in float32 under autocast
        return _plucker_rays(cameras, token_h, token_w, dtype)


def _plucker_rays(cameras: PanelCameras, token_h: int, token_w: int, dtype: torch.dtype) -> torch.Tensor:
    cdt = torch.promote_types(dtype, torch.float32)
    c2w = cameras.c2w.to(cdt)  # (B, P, 4, 4)
    K = cameras.K.to(cdt)  # (B, P, 3, 3)
    img_h, img_w = cameras.image_hw
    dev = c2w.device
    us = (torch.arange(token_w, dtype=cdt, device=dev) + 0.5) * (img_w / token_w)  # (w,)
    vs = (torch.arange(token_h, dtype=cdt, device=dev) + 0.5) * (img_h / token_h)  # (h,)
    vv, uu = torch.meshgrid(vs, us, indexing="ij")  # (h, w)
    pix = torch.stack([uu, vv, torch.ones_like(uu)], dim=-1)  # (h, w, 3)
    d_cam = torch.einsum("bpij,hwj->bphwi", torch.linalg.inv(K), pix)  # (B, P, h, w, 3)
    d_world = torch.einsum("bpij,bphwj->bphwi", c2w[..., :3, :3], d_cam)
    d_world = d_world / d_world.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    origin = c2w[..., :3, 3][:, :, None, None, :].expand_as(d_world)  # (B, P, h, w, 3)
    return torch.cat([torch.cross(origin, d_world, dim=-1), d_world], dim=-1).to(dtype)  # (B, P, h, w, 6)


class ProjectiveEncoding:
    """PRoPE (projective positional encoding, "Cameras as Relative Positional Encoding", arXiv 2507.10496).

    Every token carries its panel's camera projection ``P = K~ @ w2c`` (4x4, intrinsics normalised by the image size)
    and its (x, y) patch index inside the panel. Along the head dimension, the first half is transformed in groups of
    4 by ``P^T`` for queries, ``P^-1`` for keys and values and ``P`` for the attention output; the next quarter gets a
    1-D RoPE over the in-panel x index and the last quarter over the y index. The attention logits then depend only
    on ``P_i P_j^-1`` (relative cameras), so the output is invariant to any change of world frame. Built once per
    forward and shared by all blocks; token order is the merged-width row-major order of the model, each token looks
    up its panel by column, so no token reordering is needed.
    """

    def __init__(
        self,
        cameras: PanelCameras,
        panels: int,
        token_h: int,
        token_w: int,
        head_dim: int,
        dtype: torch.dtype,
        rope_base: float = 100.0,
    ) -> None:
        cdt = torch.promote_types(dtype, torch.float32)
        c2w = cameras.c2w.to(cdt)  # (B, P, 4, 4)
        K = cameras.K.to(cdt)  # (B, P, 3, 3)
        img_h, img_w = cameras.image_hw
        kn = torch.zeros_like(c2w)  # lifted normalised intrinsics (B, P, 4, 4)
        kn[..., 0, 0] = K[..., 0, 0] / img_w
        kn[..., 1, 1] = K[..., 1, 1] / img_h
        kn[..., 0, 2] = K[..., 0, 2] / img_w - 0.5
        kn[..., 1, 2] = K[..., 1, 2] / img_h - 0.5
        kn[..., 2, 2] = 1.0
        kn[..., 3, 3] = 1.0
        w2c = torch.linalg.inv(c2w)
        proj = kn @ w2c  # (B, P, 4, 4)
        proj_inv = c2w @ torch.linalg.inv(kn)  # (B, P, 4, 4)
        # Panel of every token in the merged (token_h, panels * token_w) grid, row-major.
        cols = torch.arange(panels * token_w, device=c2w.device)
        panel_of_col = cols // token_w  # (Wt,)
        panel_idx = panel_of_col.repeat(token_h)  # (T,)
        self.mat_q = proj.transpose(-1, -2)[:, panel_idx].to(dtype)  # (B, T, 4, 4)
        self.mat_kv = proj_inv[:, panel_idx].to(dtype)  # (B, T, 4, 4)
        self.mat_o = proj[:, panel_idx].to(dtype)  # (B, T, 4, 4)
        pos_x = (cols % token_w).to(cdt).repeat(token_h)  # (T,)
        pos_y = torch.arange(token_h, device=c2w.device, dtype=cdt).repeat_interleave(panels * token_w)  # (T,)
        n_freq = head_dim // 8  # each RoPE quarter has head_dim/4 features = head_dim/8 rotation pairs
        freqs = rope_base ** (-torch.arange(n_freq, device=c2w.device, dtype=cdt) / n_freq)  # (F,)
        ax, ay = pos_x[:, None] * freqs, pos_y[:, None] * freqs  # (T, F)
        self.cos_x, self.sin_x = ax.cos().to(dtype), ax.sin().to(dtype)
        self.cos_y, self.sin_y = ay.cos().to(dtype), ay.sin().to(dtype)
        self.head_dim = head_dim

    @staticmethod
    def _projective(f: torch.Tensor, mat: torch.Tensor) -> torch.Tensor:
        b, nh, t, d = f.shape  # (B, nH, T, hd/2)
        g = f.reshape(b, nh, t, d // 4, 4)
        return torch.einsum("btij,bhtgj->bhtgi", mat, g).reshape(b, nh, t, d)

    @staticmethod
    def _rope(f: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, inverse: bool) -> torch.Tensor:
        a, b = f.chunk(2, dim=-1)  # rotation pairs (a_k, b_k), split-halves layout
        if inverse:
            return torch.cat([cos * a - sin * b, sin * a + cos * b], dim=-1)
        return torch.cat([cos * a + sin * b, -sin * a + cos * b], dim=-1)

    def _apply(self, f: torch.Tensor, mat: torch.Tensor, inverse: bool) -> torch.Tensor:
        h2, h4 = self.head_dim // 2, self.head_dim // 4
        p, rx, ry = f[..., :h2], f[..., h2 : h2 + h4], f[..., h2 + h4 :]
        return torch.cat(
            [
                self._projective(p, mat),
                self._rope(rx, self.cos_x, self.sin_x, inverse),
                self._rope(ry, self.cos_y, self.sin_y, inverse),
            ],
            dim=-1,
        )

    def queries(self, q: torch.Tensor) -> torch.Tensor:
        """Transform queries (B, nH, T, hd)."""
        return self._apply(q, self.mat_q, inverse=False)

    def keys_values(self, kv: torch.Tensor) -> torch.Tensor:
        """Transform keys or values (B, nH, T, hd)."""
        return self._apply(kv, self.mat_kv, inverse=False)

    def outputs(self, o: torch.Tensor) -> torch.Tensor:
        """Map attention outputs (B, nH, T, hd) back to each query token's own frame."""
        return self._apply(o, self.mat_o, inverse=True)


# ----------------------------------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------------------------------
class PatchEmbed(nn.Module):
    """Conv patch embedding ``proj`` (kernel = stride = p): (B, C, H, W) -> (B, H/p * W/p, D), row-major tokens."""

    def __init__(self, patch_size: int, in_channels: int, hidden_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed patches."""
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, D, h, w) -> (B, T, D)


class TimestepEmbedder(nn.Module):
    """Sinusoidal features (256) -> ``mlp.0`` Linear -> SiLU -> ``mlp.2`` Linear: (B,) -> (B, D)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(FREQUENCY_EMBEDDING_SIZE, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Embed timesteps (any real dtype; float32 features, cast to the MLP dtype)."""
        return self.mlp(timestep_embedding(t).to(self.mlp[0].weight.dtype))


class Mlp(nn.Module):
    """Two-layer MLP ``fc1`` -> GELU(tanh) -> ``fc2`` (the timm ``Mlp`` layout of the published blocks)."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.fc2 = nn.Linear(hidden_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the MLP."""
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection and an output ``proj`` (scaled dot product)."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, prope: ProjectiveEncoding | None = None) -> torch.Tensor:
        """(B, T, D) -> (B, T, D); ``prope`` optionally applies per-token camera transforms to q, k, v and output."""
        B, T, D = x.shape
        # The published layout splits the fused output as (3, D), then D as (heads, head_dim).
        qkv = self.qkv(x).reshape(B, T, 3, self.num_heads, D // self.num_heads)  # (B, T, 3, nH, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, nH, T, hd) each
        if prope is not None:
            q, k, v = prope.queries(q), prope.keys_values(k), prope.keys_values(v)
        o = F.scaled_dot_product_attention(q, k, v)  # (B, nH, T, hd), scale 1/sqrt(hd)
        if prope is not None:
            o = prope.outputs(o)
        return self.proj(o.transpose(1, 2).reshape(B, T, D))


class CrossAttention(nn.Module):
    """Text cross-attention of the published checkpoint: ``q_linear`` (D->D), ``kv_linear`` (D->2D), ``proj`` (D->D).

    Image tokens attend to their own sample's caption tokens (the published code does this with a block-diagonal
    mask over a flattened batch; a batched attention is equivalent). Unused unless ``use_cross_attention``.
    """

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_linear = nn.Linear(hidden_size, hidden_size)
        self.kv_linear = nn.Linear(hidden_size, 2 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), cond (B, L, D) -> (B, T, D)."""
        B, T, D = x.shape
        hd = D // self.num_heads
        q = self.q_linear(x).reshape(B, T, self.num_heads, hd).transpose(1, 2)  # (B, nH, T, hd)
        kv = self.kv_linear(cond).reshape(B, cond.shape[1], 2, self.num_heads, hd)  # (B, L, 2, nH, hd)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, nH, L, hd) each
        o = F.scaled_dot_product_attention(q, k, v)  # (B, nH, T, hd)
        return self.proj(o.transpose(1, 2).reshape(B, T, D))


class CaptionEmbedder(nn.Module):
    """Text branch input of the published checkpoint: ``y_proj`` MLP (caption_channels -> D -> D, GELU(tanh)) and a
    ``y_embedding`` buffer (caption_tokens, caption_channels), the learned "null caption" used for classifier-free
    dropout during the text-to-image pre-training. It is a persistent buffer, not a parameter, exactly as published
    (so it is in the state dict but not in the 612.19M parameter count). Unused unless ``use_cross_attention``."""

    def __init__(self, caption_channels: int, hidden_size: int, caption_tokens: int) -> None:
        super().__init__()
        self.y_proj = Mlp(caption_channels, hidden_size, hidden_size)
        self.register_buffer("y_embedding", torch.randn(caption_tokens, caption_channels) / caption_channels**0.5)

    def forward(self, caption: torch.Tensor) -> torch.Tensor:
        """caption (B, L, caption_channels) -> (B, L, D)."""
        return self.y_proj(caption)


class DiTBlock(nn.Module):
    """adaLN-single transformer block: per-block ``scale_shift_table`` [6, D] added to the shared ``t_block`` output.

    x += gate_msa * attn(modulate(LN(x), shift_msa, scale_msa)); [x += cross_attn(x, y)]; x += gate_mlp *
    mlp(modulate(LN(x), shift_mlp, scale_mlp)). The cross-attention parameters exist only with the text branch.
    """

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, with_cross_attn: bool) -> None:
        super().__init__()
        self.attn = SelfAttention(hidden_size, num_heads)
        self.cross_attn = CrossAttention(hidden_size, num_heads) if with_cross_attn else None
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), hidden_size)
        self.scale_shift_table = nn.Parameter(torch.randn(6, hidden_size) / hidden_size**0.5)

    def forward(
        self, x: torch.Tensor, t0: torch.Tensor, y: torch.Tensor | None = None, prope: ProjectiveEncoding | None = None
    ) -> torch.Tensor:
        """x (B, T, D), t0 (B, 6D), y (B, L, D) or None -> (B, T, D)."""
        B, _, D = x.shape
        mod = self.scale_shift_table[None] + t0.reshape(B, 6, D)  # (B, 6, D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=1)  # (B, 1, D) each
        x = x + gate_msa * self.attn(modulate(_layer_norm(x), shift_msa, scale_msa), prope)
        if y is not None and self.cross_attn is not None:
            x = x + self.cross_attn(x, y)  # ungated, on the un-normalised stream, as published
        return x + gate_mlp * self.mlp(modulate(_layer_norm(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    """``scale_shift_table`` [2, D] + raw timestep embedding -> modulate(LN(x)) -> ``linear`` to p*p*out_channels."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.scale_shift_table = nn.Parameter(torch.randn(2, hidden_size) / hidden_size**0.5)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), t (B, D) -> (B, T, p*p*out)."""
        shift, scale = (self.scale_shift_table[None] + t[:, None]).chunk(2, dim=1)  # (B, 1, D) each
        return self.linear(modulate(_layer_norm(x), shift, scale))


class _ResBlock(nn.Module):
    """Pre-activation residual block: GroupNorm, SiLU, 3x3 conv, SiLU, 3x3 conv, plus the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(8, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) -> same shape."""
        return x + self.conv2(F.silu(self.conv1(F.silu(self.norm(x)))))


class DepthDecoder(nn.Module):
    """Extension (not in the published model): a small convolutional U-Net that corrects an RGB-D refiner's depth.

    The refiner's own depth head is one 3x3 convolution on the features it shares with the colour correction. This
    decoder gives depth its own capacity and a wider view: it reads those full-resolution features, the anchor's
    depth feature (relative log depth, holes pull-push filled) and its coverage, goes down twice (a 4x4 block per
    coarsest cell, so a hole's far side can inform its middle) and returns a correction of the relative log depth.
    Its last convolution starts at zero: added to a trained RGB-D model it starts as a no-op, and since it reads the
    refiner's features without feeding back into them, training it alone leaves the colour output unchanged.
    Panel sides must be multiples of 4 (the refiner already needs multiples of 8).
    """

    def __init__(self, feature_channels: int, channels: int) -> None:
        super().__init__()
        c = channels
        self.inp = nn.Conv2d(feature_channels + 2, c, 3, padding=1)
        self.enc1 = _ResBlock(c)
        self.down1 = nn.Conv2d(c, 2 * c, 4, stride=2, padding=1)
        self.enc2 = _ResBlock(2 * c)
        self.down2 = nn.Conv2d(2 * c, 2 * c, 4, stride=2, padding=1)
        self.mid = nn.Sequential(_ResBlock(2 * c), _ResBlock(2 * c))
        self.up2 = nn.ConvTranspose2d(2 * c, 2 * c, 4, stride=2, padding=1)
        self.dec2 = _ResBlock(2 * c)
        self.up1 = nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1)
        self.dec1 = _ResBlock(c)
        self.out = nn.Conv2d(c, 1, 3, padding=1)

    def forward(self, features: torch.Tensor, depth_feature: torch.Tensor, covered: torch.Tensor) -> torch.Tensor:
        """``features`` (B, F, H, W) the refiner's last decoder features, ``depth_feature`` (B, 1, H, W), ``covered``
        (B, H, W) bool -> the correction (B, 1, H, W) of the relative log depth, in the features' dtype."""
        x = torch.cat([features, depth_feature.to(features.dtype), covered[:, None].to(features.dtype)], 1)
        h1 = self.enc1(self.inp(x))
        h2 = self.enc2(self.down1(h1))
        u = self.dec2(self.up2(self.mid(self.down2(h2))) + h2)
        return self.out(self.dec1(self.up1(u) + h1))


class PixelRefiner(nn.Module):
    """Extension (not in the published model): a convolutional U-Net that corrects the DiT's target-panel output.

    A patch-8 transformer predicts each 8x8 pixel block from one token, which is coarse for the per-pixel work a
    pixel-space frame model must do (splat cracks, background points showing through a sparse foreground, hole
    edges). The refiner sees, at full resolution, the transformer's prediction, the noisy target, the anchor, the
    anchor's holes (pixels that are exactly black, the same signal the transformer gets) and the anchor with those
    holes pull-push filled, and the reference; the timestep embedding is added after the input convolution. With
    ``with_depth`` it also reads the anchor's depth (:meth:`depth_feature`): a pixel of a far surface seen through
    the gaps of a sparsely sampled near one has the right colour statistics but a depth far behind its
    neighbours', which RGB alone hardly shows. It returns a correction that is added to the prediction; its last
    convolution starts at zero, so a refiner added to a trained model starts as a no-op, and so does the depth
    input (its own zero-initialised convolution), so a depth refiner can start from an RGB one. Three 2x
    downsamplings: panel sides must be multiples of 8.

    With ``depth_head`` (needs ``with_depth``) a second zero-initialised output convolution predicts the frame's
    depth from the same full-resolution features: a correction to the anchor's relative log depth (the depth
    feature), so an added head starts by predicting the anchor's depth with its holes pull-push filled.
    ``depth_decoder`` (a base width, needs ``depth_head``) adds a :class:`DepthDecoder` whose correction is added to
    the head's.

    With ``with_layout`` (needs ``depth_head``) it also reads the scene's navigation layout along each pixel's ray
    (:class:`~worldfm_env.render.layout.LayoutDepth`: the depth of the first obstacle column or the floor, 0 where
    nothing bounds the ray), as a relative log depth and a bounded-ray mask (:meth:`layout_feature`) through its own
    zero-initialised input convolution, so an added layout input leaves the colour where it was. The depth head's
    base is then the depth feature capped at the layout in the anchor's holes: an added layout input starts by
    predicting what the env's ``depth_bound="navigation"`` cap gives, and learns where the layout's column over
    low furniture is not the surface the camera sees.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        hidden_size: int,
        with_depth: bool = False,
        depth_head: bool = False,
        depth_decoder: int = 0,
        with_layout: bool = False,
    ) -> None:
        super().__init__()
        c = channels
        self.inp = nn.Conv2d(5 * in_channels + 1, c, 3, padding=1)
        self.depth_in = nn.Conv2d(1, c, 3, padding=1) if with_depth else None
        self.t_proj = nn.Linear(hidden_size, c)
        self.enc1 = _ResBlock(c)
        self.down1 = nn.Conv2d(c, 2 * c, 4, stride=2, padding=1)
        self.enc2 = _ResBlock(2 * c)
        self.down2 = nn.Conv2d(2 * c, 4 * c, 4, stride=2, padding=1)
        self.enc3 = nn.Sequential(_ResBlock(4 * c), _ResBlock(4 * c))
        self.down3 = nn.Conv2d(4 * c, 4 * c, 4, stride=2, padding=1)
        self.mid = nn.Sequential(_ResBlock(4 * c), _ResBlock(4 * c))
        self.up3 = nn.ConvTranspose2d(4 * c, 4 * c, 4, stride=2, padding=1)
        self.dec3 = _ResBlock(4 * c)
        self.up2 = nn.ConvTranspose2d(4 * c, 2 * c, 4, stride=2, padding=1)
        self.dec2 = _ResBlock(2 * c)
        self.up1 = nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1)
        self.dec1 = _ResBlock(c)
        self.out = nn.Conv2d(c, in_channels, 3, padding=1)
        if depth_head and not with_depth:
            raise ValueError("depth_head=True needs with_depth=True (the head corrects the anchor's depth feature)")
        self.depth_out = nn.Conv2d(c, 1, 3, padding=1) if depth_head else None
        if depth_decoder and not depth_head:
            raise ValueError("depth_decoder > 0 needs depth_head=True (the decoder corrects the head's depth)")
        self.depth_decoder = DepthDecoder(c, depth_decoder) if depth_decoder else None
        if with_layout and not depth_head:
            raise ValueError("with_layout=True needs depth_head=True (the layout caps the depth head's base)")
        self.layout_in = nn.Conv2d(2, c, 3, padding=1) if with_layout else None

    def forward(
        self,
        prediction: torch.Tensor,
        noisy: torch.Tensor,
        anchor: torch.Tensor,
        reference: torch.Tensor,
        t: torch.Tensor,
        anchor_depth: torch.Tensor | None = None,
        prepared: dict | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """All images (B, C, H, W) in the model dtype, ``t`` (B, D) the timestep embedding, ``anchor_depth`` (B, H, W)
        (read only ``with_depth``). Returns ``(correction, depth)``: the correction (B, C, H, W) added to the
        prediction, and with ``depth_head`` the predicted relative log depth (B, 1, H, W) (the depth feature plus
        the head's correction; :meth:`absolute_depth` turns it into depth), else None. ``prepared``: :meth:`prepare`
        of this anchor, computed once per frame by the caller (a sampler calls the model once per step); computed
        here when None."""
        if prepared is None:
            prepared = self.prepare(anchor, anchor_depth)
        covered, filled = prepared["covered"], prepared["filled"]
        x = torch.cat(
            [prediction, noisy, anchor, filled.to(anchor.dtype), reference, covered[:, None].to(anchor.dtype)], 1
        )
        h = self.inp(x) + self.t_proj(t)[:, :, None, None]
        if self.depth_in is not None:
            h = h + self.depth_in(prepared["depth_feature"].to(h.dtype))
        if self.layout_in is not None:
            h = h + self.layout_in(prepared["layout_feature"].to(h.dtype))
        h1 = self.enc1(h)
        h2 = self.enc2(self.down1(h1))
        h3 = self.enc3(self.down2(h2))
        u = self.dec3(self.up3(self.mid(self.down3(h3))) + h3)
        u = self.dec2(self.up2(u) + h2)
        u = self.dec1(self.up1(u) + h1)
        if self.depth_out is None:
            return self.out(u), None
        depth = prepared.get("depth_base", prepared["depth_feature"]).to(u.dtype) + self.depth_out(u)
        if self.depth_decoder is not None:
            depth = depth + self.depth_decoder(u, prepared["depth_feature"], covered)
        return self.out(u), depth

    @staticmethod
    def absolute_depth(relative_log_depth: torch.Tensor, log_depth_mean: torch.Tensor) -> torch.Tensor:
        """Depth (B, H, W) float32 from the head's relative log depth (B, 1, H, W) and the anchor's mean log depth
        (B,) (``prepare()["log_depth_mean"]``): ``exp(relative + mean)``, in the anchor depth's unit."""
        return (relative_log_depth[:, 0].float() + log_depth_mean.float()[:, None, None]).exp()

    @torch.no_grad()
    def prepare(
        self, anchor: torch.Tensor, anchor_depth: torch.Tensor | None = None, layout_depth: torch.Tensor | None = None
    ) -> dict:
        """What the refiner derives from the anchor alone, the same at every sampler step: the coverage (B, H, W)
        bool, the pull-push filled anchor (B, C, H, W) float32, ``with_depth`` the depth feature (B, 1, H, W), and
        ``with_layout`` the layout feature (B, 2, H, W) and the depth head's capped base (B, 1, H, W), from
        ``layout_depth`` (B, H, W) (the layout's depth along each pixel's ray, 0 where nothing bounds it)."""
        from worldfm_env.render.fill import pull_push_fill  # pure torch; imported here to keep the model module light

        if self.depth_in is not None and anchor_depth is None:
            raise ValueError("anchor_depth is None but this refiner reads the anchor's depth (with_depth=True)")
        if self.layout_in is not None and layout_depth is None:
            raise ValueError(
                "layout_depth is None but this refiner reads the navigation layout (with_layout=True): pass the "
                "layout's depth along each pixel's ray, (B, H, W), 0 where nothing bounds it"
            )
        covered = (anchor > -1.0).any(dim=1)  # holes: black (-1 in every channel), as the transformer sees them
        filled = pull_push_fill(anchor.float().permute(0, 2, 3, 1), covered).permute(0, 3, 1, 2)
        prepared = {"covered": covered, "filled": filled}
        if self.depth_in is not None:
            prepared["depth_feature"], prepared["log_depth_mean"] = self.depth_feature(
                anchor_depth, covered, return_mean=True
            )
        if self.layout_in is not None:
            feature = self.layout_feature(layout_depth, prepared["log_depth_mean"])
            bounded_hole = (~covered)[:, None] & (feature[:, 1:] > 0)
            prepared["layout_feature"] = feature
            prepared["depth_base"] = torch.where(
                bounded_hole, torch.minimum(prepared["depth_feature"], feature[:, :1]), prepared["depth_feature"]
            )
        return prepared

    @staticmethod
    @torch.no_grad()
    def layout_feature(layout_depth: torch.Tensor, log_depth_mean: torch.Tensor) -> torch.Tensor:
        """(B, 2, H, W) float32: the layout's log depth relative to the anchor's mean log depth (``log_depth_mean``
        (B,), as :meth:`depth_feature`), 0 where the ray is unbounded, and the mask of bounded rays (1 / 0)."""
        depth = layout_depth.float()
        bounded = torch.isfinite(depth) & (depth > 0)
        relative = torch.where(
            bounded, depth.clamp_min(1e-6).log() - log_depth_mean.float()[:, None, None], torch.zeros_like(depth)
        )
        return torch.stack([relative, bounded.float()], 1)

    @staticmethod
    @torch.no_grad()
    def depth_feature(
        anchor_depth: torch.Tensor, covered: torch.Tensor, return_mean: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, H, W) float32: log depth relative to the image's mean over covered pixels, holes pull-push filled.
        With ``return_mean`` also that mean log depth (B,) (0 for an image without valid depth).

        Depth counts where the pixel is ``covered`` and the depth is finite and positive. Subtracting the mean log
        depth makes the feature independent of the scene's unit (imported scenes keep their own scale); local
        differences, which the convolutions read, are ratios of depths.
        """
        from worldfm_env.render.fill import pull_push_fill

        depth = anchor_depth.float()
        valid = covered & torch.isfinite(depth) & (depth > 0)
        log_depth = torch.where(valid, depth.clamp_min(1e-6).log(), torch.zeros_like(depth))
        mean = log_depth.sum((1, 2)) / valid.sum((1, 2)).clamp_min(1)  # (B,)
        relative = torch.where(valid, log_depth - mean[:, None, None], torch.zeros_like(depth))
        feature = pull_push_fill(relative[..., None], valid).permute(0, 3, 1, 2)
        return (feature, mean) if return_mean else feature


# ----------------------------------------------------------------------------------------------------------------------
# Config and model
# ----------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DiTConfig:
    """Architecture of a :class:`WorldFMDiT`. Stored on the model as ``model.config`` and in checkpoint headers.

    ``input_size`` is the side of one square panel the model was trained at (latent pixels); it fixes the positional
    base grid ``input_size // patch_size`` but other panel sizes are accepted at run time (positions are recomputed).
    ``with_text_branch`` creates the unused text/pose parameters of the published checkpoint (``y_embedder``,
    per-block ``cross_attn``, ``plucker_proj``) so that it loads strictly. ``use_cross_attention`` turns the caption
    cross-attention on in the forward pass (off in the published inference). ``camera_encoding`` is an optional
    extension: ``"none"`` (published), ``"prope"`` (relative camera encoding in attention) or ``"plucker"``
    (per-token Plücker rays through ``plucker_proj`` added to the tokens). ``prediction`` says what the output
    means: ``"v"`` for the published distilled samplers (``x0 = sqrt(abar) z - sqrt(1 - abar) out``) and for
    students, ``"eps"`` for teachers trained with eps-MSE (stages I and II), which are sampled with DDIM.
    ``target`` says what is diffused: ``"image"`` (published: the frame itself) or ``"anchor_residual"`` (the frame
    minus the anchor with its holes filled smoothly (pull-push),
    :func:`worldfm_env.model.targets.anchor_base`; the samplers return the residual and the caller adds the base
    back). The network is the same either way. ``refiner_channels`` is another optional extension (0 in the published
    layout): a small convolutional U-Net of that base width that corrects the target panel's prediction pixel by
    pixel (:class:`PixelRefiner`); with ``refiner_depth`` it also reads the anchor render's depth, which the forward
    pass then needs (``anchor_depth``). ``depth_head`` makes the refiner predict the frame's depth (an RGB-D model,
    one trailing output channel), and ``depth_decoder`` (0 or a positive multiple of 8, needs ``depth_head``) gives
    that prediction a :class:`DepthDecoder` of that base width. ``refiner_layout`` (needs ``depth_head``) makes the
    refiner read the scene's navigation layout along each pixel's ray as well (:class:`PixelRefiner`), which the
    caller then passes to :meth:`WorldFMDiT.prepare_conditions` (``layout_depth``).
    """

    input_size: int = 64
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    learn_sigma: bool = True
    num_panels: int = 3
    pe_interpolation: float = 1.0
    with_text_branch: bool = True
    caption_channels: int = 4096
    caption_tokens: int = 300
    use_cross_attention: bool = False
    camera_encoding: str = "none"
    prediction: str = "v"
    target: str = "image"
    refiner_channels: int = 0
    refiner_depth: bool = False
    depth_head: bool = False
    depth_decoder: int = 0
    refiner_layout: bool = False
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        pos = (
            "input_size",
            "patch_size",
            "in_channels",
            "hidden_size",
            "depth",
            "num_heads",
            "num_panels",
            "caption_channels",
            "caption_tokens",
        )
        for name in pos:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"DiTConfig.{name} must be a positive int, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})")
        if self.hidden_size % 4:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by 4 (2-D sin-cos positions)")
        if self.input_size % self.patch_size:
            raise ValueError(f"input_size ({self.input_size}) must be divisible by patch_size ({self.patch_size})")
        if self.prediction not in ("v", "eps"):
            raise ValueError(
                f"prediction must be 'v' (distilled samplers, as published) or 'eps', got {self.prediction!r}"
            )
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        if self.camera_encoding not in CAMERA_ENCODINGS:
            raise ValueError(f"camera_encoding must be one of {CAMERA_ENCODINGS}, got {self.camera_encoding!r}")
        if self.camera_encoding == "prope" and self.head_dim % 8:
            raise ValueError(f"camera_encoding='prope' needs head_dim divisible by 8, got {self.head_dim}")
        if self.use_cross_attention and not self.with_text_branch:
            raise ValueError("use_cross_attention=True needs with_text_branch=True (the cross-attention parameters)")
        rc = self.refiner_channels
        if not isinstance(rc, int) or isinstance(rc, bool) or rc < 0 or rc % 8:
            raise ValueError(f"refiner_channels must be 0 (off) or a positive multiple of 8, got {rc!r}")
        if not isinstance(self.refiner_depth, bool):
            raise ValueError(f"refiner_depth must be True or False, got {self.refiner_depth!r}")
        if self.refiner_depth and not rc:
            raise ValueError("refiner_depth=True needs a refiner: set refiner_channels to a positive multiple of 8")
        if not isinstance(self.depth_head, bool):
            raise ValueError(f"depth_head must be True or False, got {self.depth_head!r}")
        if self.depth_head and not self.refiner_depth:
            raise ValueError(
                "depth_head=True needs a refiner that reads the anchor depth: set refiner_channels > 0 and "
                "refiner_depth=True"
            )
        dd = self.depth_decoder
        if not isinstance(dd, int) or isinstance(dd, bool) or dd < 0 or dd % 8:
            raise ValueError(f"depth_decoder must be 0 (off) or a positive multiple of 8, got {dd!r}")
        if dd and not self.depth_head:
            raise ValueError("depth_decoder > 0 needs depth_head=True (the decoder corrects the depth head's output)")
        if not isinstance(self.refiner_layout, bool):
            raise ValueError(f"refiner_layout must be True or False, got {self.refiner_layout!r}")
        if self.refiner_layout and not self.depth_head:
            raise ValueError("refiner_layout=True needs depth_head=True (the layout caps the predicted depth's base)")
        if rc and self.in_channels != 3:
            raise ValueError(
                f"refiner_channels={rc} needs a pixel-space model (in_channels=3, got {self.in_channels}): the "
                "refiner finds the anchor's holes as pixels that are black (-1) in every RGB channel"
            )
        if self.mlp_ratio <= 0 or self.pe_interpolation <= 0:
            raise ValueError("mlp_ratio and pe_interpolation must be > 0")

    @property
    def head_dim(self) -> int:
        """Per-head channel count."""
        return self.hidden_size // self.num_heads

    @property
    def out_channels(self) -> int:
        """Output channels of the transformer: 2 * in_channels with a learned variance (first half = the
        prediction), else in_channels."""
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    @property
    def output_channels(self) -> int:
        """Channels of the model's output: :attr:`out_channels`, plus one trailing depth channel with
        ``depth_head``."""
        return self.out_channels + int(self.depth_head)

    def to_dict(self) -> dict:
        """Plain dict (JSON-serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DiTConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError listing the valid ones."""
        return cls(**strict_kwargs(cls, data, "DiTConfig key"))


class WorldFMDiT(nn.Module):
    """WorldFM DiT: ``model(noisy, timesteps, anchor, reference, cameras=None) -> (B, out_channels, H, W)``.

    Parameter names and shapes follow the published ``PixArtWorldFMMS`` (see the module docstring). The published
    ``pos_embed`` buffer is deliberately absent: positions are recomputed for the concatenated grid of the actual
    input (the checkpoint loader drops that key).
    """

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        D = c.hidden_size
        self.x_embedder = PatchEmbed(c.patch_size, c.in_channels, D)
        self.t_embedder = TimestepEmbedder(D)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(D, 6 * D))  # adaLN-single: one projection for all blocks
        self.y_embedder = CaptionEmbedder(c.caption_channels, D, c.caption_tokens) if c.with_text_branch else None
        self.blocks = nn.ModuleList(
            [DiTBlock(D, c.num_heads, c.mlp_ratio, with_cross_attn=c.with_text_branch) for _ in range(c.depth)]
        )
        self.final_layer = FinalLayer(D, c.patch_size, c.out_channels)
        if c.with_text_branch or c.camera_encoding == "plucker":
            self.plucker_proj = nn.Sequential(nn.Linear(6, D), nn.SiLU(), nn.Linear(D, D))
        else:
            self.plucker_proj = None
        self.refiner = (
            PixelRefiner(
                c.in_channels,
                c.refiner_channels,
                D,
                with_depth=c.refiner_depth,
                depth_head=c.depth_head,
                depth_decoder=c.depth_decoder,
                with_layout=c.refiner_layout,
            )
            if c.refiner_channels
            else None
        )
        self.gradient_checkpointing = False  # training may switch this on to trade compute for memory
        self._pos_cache: dict = {}
        self.initialize_weights()

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the parameters (inputs are cast to it, as in the published forward)."""
        return self.x_embedder.proj.weight.dtype

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return self.x_embedder.proj.weight.device

    def initialize_weights(self) -> None:
        """DiT/PixArt initialisation: xavier linears with zero bias, the patch conv like a linear, N(0, 0.02) timestep
        MLPs, and zero for the paths that must start as no-ops: the output ``final_layer.linear``, the text
        ``cross_attn.proj`` and (our extensions) the last ``plucker_proj`` layer and the refiner's output and depth
        convolutions."""
        if self.device.type == "meta":
            return
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        nn.init.normal_(self.t_block[1].weight, std=0.02)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.y_proj.fc1.weight, std=0.02)
            nn.init.normal_(self.y_embedder.y_proj.fc2.weight, std=0.02)
        for block in self.blocks:
            if block.cross_attn is not None:
                nn.init.zeros_(block.cross_attn.proj.weight)
                nn.init.zeros_(block.cross_attn.proj.bias)
        if self.plucker_proj is not None:
            nn.init.zeros_(self.plucker_proj[2].weight)
            nn.init.zeros_(self.plucker_proj[2].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)
        if self.refiner is not None:
            nn.init.zeros_(self.refiner.out.weight)
            nn.init.zeros_(self.refiner.out.bias)
            decoder = self.refiner.depth_decoder
            zero_convs = (
                self.refiner.depth_in,
                self.refiner.depth_out,
                self.refiner.layout_in,
                decoder.out if decoder is not None else None,
            )
            for conv in zero_convs:
                if conv is not None:
                    nn.init.zeros_(conv.weight)
                    nn.init.zeros_(conv.bias)

    # -- helpers -------------------------------------------------------------------------------------------------------
    def pos_embed(self, grid_h: int, grid_w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """(1, grid_h*grid_w, D) sin-cos positions for a token grid, cached per (grid, device, dtype)."""
        key = (grid_h, grid_w, str(device), dtype)
        pe = self._pos_cache.get(key)
        if pe is None:
            c = self.config
            pe = sincos_pos_embed_2d(
                c.hidden_size, grid_h, grid_w, c.input_size // c.patch_size, c.pe_interpolation, device="cpu"
            )
            pe = pe[None].to(device=device, dtype=dtype)  # float64 -> dtype in one rounding, as published
            self._pos_cache[key] = pe
        return pe

    def _check_inputs(self, noisy, timesteps, anchor, reference, cameras, anchor_depth) -> torch.Tensor:
        c = self.config
        for name, x in (("noisy", noisy), ("anchor", anchor), ("reference", reference)):
            if not isinstance(x, torch.Tensor) or x.ndim != 4:
                raise ValueError(f"{name} must be a (B, C, H, W) tensor, got {getattr(x, 'shape', type(x))}")
        B, C, H, W = noisy.shape
        if C != c.in_channels:
            raise ValueError(f"noisy has {C} channels, the model expects in_channels={c.in_channels}")
        if H % c.patch_size or W % c.patch_size:
            raise ValueError(f"noisy spatial size {(H, W)} must be divisible by patch_size={c.patch_size}")
        if c.refiner_channels and (H % 8 or W % 8):
            raise ValueError(f"noisy spatial size {(H, W)} must be divisible by 8 with refiner_channels > 0")
        for name, x in (("anchor", anchor), ("reference", reference)):
            if x.shape != noisy.shape:
                raise ValueError(f"{name} must have the shape of noisy {tuple(noisy.shape)}, got {tuple(x.shape)}")
        if c.refiner_depth:
            if anchor_depth is None:
                raise ValueError(
                    "this model reads the anchor's depth (refiner_depth=True): pass anchor_depth, (B, H, W) camera "
                    "z-depth of the anchor render at the panel's resolution, 0 where no point landed"
                )
            if not isinstance(anchor_depth, torch.Tensor) or tuple(anchor_depth.shape) != (B, H, W):
                raise ValueError(
                    f"anchor_depth must be a ({B}, {H}, {W}) tensor (batch and panel size of noisy), got "
                    f"{tuple(getattr(anchor_depth, 'shape', ())) or type(anchor_depth).__name__}"
                )
        t = torch.as_tensor(timesteps, device=noisy.device)
        if t.ndim == 0 or t.numel() == 1:
            t = t.reshape(1).expand(B)
        if t.ndim != 1 or t.shape[0] != B:
            raise ValueError(f"timesteps must be a scalar or shape ({B},), got {tuple(t.shape)}")
        if c.camera_encoding != "none":
            if cameras is None:
                raise ValueError(f"cameras are required with camera_encoding={c.camera_encoding!r}")
            if not isinstance(cameras, PanelCameras):
                raise ValueError(f"cameras must be a PanelCameras, got {type(cameras).__name__}")
            cameras.validate(B, c.num_panels)
        return t

    def unpatchify(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """(B, h*w, p*p*c) -> (B, c, h*p, w*p); each token's features are laid out (p_row, p_col, channel)."""
        p, c = self.config.patch_size, self.config.out_channels
        x = x.reshape(x.shape[0], h, w, p, p, c)  # (B, h, w, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)  # (B, c, h, p, w, p)
        return x.reshape(x.shape[0], c, h * p, w * p)

    # -- forward -------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def prepare_conditions(
        self, anchor: torch.Tensor, anchor_depth: torch.Tensor | None = None, layout_depth: torch.Tensor | None = None
    ) -> dict:
        """Keyword arguments for :meth:`forward` that depend on the frame's conditions only, computed once per frame:
        the refiner's filled anchor, coverage, depth feature and (``refiner_layout``, from ``layout_depth`` (B, H, W))
        layout feature (``{}`` for models without a refiner)."""
        if self.refiner is None:
            return {}
        return {"refiner_inputs": self.refiner.prepare(anchor.to(self.dtype), anchor_depth, layout_depth)}

    def forward(
        self,
        noisy: torch.Tensor,
        timesteps: torch.Tensor,
        anchor: torch.Tensor,
        reference: torch.Tensor,
        cameras: PanelCameras | None = None,
        *,
        caption: torch.Tensor | None = None,
        anchor_depth: torch.Tensor | None = None,
        refiner_inputs: dict | None = None,
    ) -> torch.Tensor:
        """Predict for the target panel.

        Args:
            noisy, anchor, reference: (B, C, H, W) latents (noisy target z_t, anchor render, reference view).
            timesteps: (B,) or scalar diffusion timesteps in [0, 999].
            cameras: :class:`PanelCameras` for the optional camera encodings; ignored when ``camera_encoding="none"``.
            caption: (B, caption_tokens, caption_channels) text features, used only with ``use_cross_attention``;
                default zeros, which is what the published inference feeds.
            anchor_depth: (B, H, W) camera z-depth of the anchor render at the panel's resolution (0 where no point
                landed), read only by models with ``refiner_depth``; ignored otherwise.
            refiner_inputs: what the pixel refiner derives from the anchor (:meth:`prepare_conditions`), computed once
                per frame by samplers that call the model several times; derived here when None (not for
                ``refiner_layout`` models, whose layout is not a forward argument).

        Returns:
            (B, output_channels, H, W); with ``learn_sigma`` the first ``in_channels`` are the prediction and the next
            ``in_channels`` the variance interpolation the samplers drop; with ``depth_head`` a last channel holds the
            predicted relative log depth (:meth:`PixelRefiner.absolute_depth`; the samplers return it on request).
        """
        t_in = self._check_inputs(noisy, timesteps, anchor, reference, cameras, anchor_depth)
        if self.config.refiner_layout and refiner_inputs is None:
            raise ValueError(
                "this model reads the navigation layout (refiner_layout=True): pass refiner_inputs="
                "prepare_conditions(anchor, anchor_depth, layout_depth)"
            )
        c = self.config
        dtype, p, D = self.dtype, c.patch_size, c.hidden_size
        B, _, H, W = noisy.shape
        h, w = H // p, W // p
        wt = c.num_panels * w  # token columns of the merged grid

        x = torch.cat([noisy, anchor, reference], dim=3).to(dtype)  # (B, C, H, 3W)
        x = self.x_embedder(x) + self.pos_embed(h, wt, x.device, dtype)  # (B, T, D), T = h * 3w

        prope = None
        if c.camera_encoding == "plucker":
            rays = plucker_rays(cameras, h, w, dtype)  # (B, P, h, w, 6)
            rays = rays.permute(0, 2, 1, 3, 4).reshape(B, h * wt, 6)  # merged-width row-major (B, T, 6)
            x = x + self.plucker_proj(rays)
        elif c.camera_encoding == "prope":
            prope = ProjectiveEncoding(cameras, c.num_panels, h, w, c.head_dim, dtype)

        # The published forward casts timesteps to the model dtype (fp16 or fp32: integers up to 2048 stay
        # exact) before the float32 sinusoid. bfloat16 would round t=999 to 1000, so it keeps float32.
        t_dtype = torch.float32 if dtype == torch.bfloat16 else dtype
        t = self.t_embedder(t_in.to(t_dtype))  # (B, D)
        t0 = self.t_block(t)  # (B, 6D)

        y = None
        if c.use_cross_attention:
            if caption is None:
                caption = torch.zeros(B, c.caption_tokens, c.caption_channels, device=x.device, dtype=dtype)
            if caption.ndim == 4:  # published layout (B, 1, L, C)
                caption = caption.squeeze(1)
            if caption.ndim != 3 or caption.shape[0] != B or caption.shape[-1] != c.caption_channels:
                raise ValueError(f"caption must be (B, L, {c.caption_channels}), got {tuple(caption.shape)}")
            y = self.y_embedder(caption.to(dtype))  # (B, L, D)

        for block in self.blocks:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, t0, y, prope, use_reentrant=False)
            else:
                x = block(x, t0, y, prope)  # (B, T, D)

        # Only the target panel is decoded: the final layer is per-token, so slicing first is exact and cheaper.
        x = x.reshape(B, h, wt, D)[:, :, :w].reshape(B, h * w, D)  # (B, h*w, D)
        x = self.final_layer(x, t)  # (B, h*w, p*p*out)
        out = self.unpatchify(x, h, w)  # (B, out, H, W)
        if self.refiner is not None:
            C = c.in_channels
            pred = out[:, :C]
            correction, depth = self.refiner(
                pred, noisy.to(dtype), anchor.to(dtype), reference.to(dtype), t.to(dtype), anchor_depth, refiner_inputs
            )
            pred = pred + correction
            out = torch.cat([pred, out[:, C:]], dim=1) if c.learn_sigma else pred
            if depth is not None:
                out = torch.cat([out, depth.to(out.dtype)], dim=1)
        return out


# ----------------------------------------------------------------------------------------------------------------------
# Named configs
# ----------------------------------------------------------------------------------------------------------------------
MODEL_CONFIGS: dict[str, DiTConfig] = {
    # Published PixArtWorldFMMS_XL_2 at 512x512 (SDXL-VAE latents 4x64x64), text/pose parameters present but unused.
    "xl": DiTConfig(
        input_size=64,
        patch_size=2,
        in_channels=4,
        hidden_size=1152,
        depth=28,
        num_heads=16,
        learn_sigma=True,
        with_text_branch=True,
        caption_channels=4096,
        caption_tokens=300,
        description="published WorldFM layout (PixArt-Sigma XL/2, 612.19M parameters)",
    ),
    # Size meant for the shipped pixel-space model: 64x64 RGB panels, patch 8 -> 8x24 = 192 tokens, no sigma head.
    # Sized for the CPU: 104 frames/s at batch 16 with the 2-step sampler on 2 AMX cores in bf16 (47 in fp32).
    "s": DiTConfig(
        input_size=64,
        patch_size=8,
        in_channels=3,
        hidden_size=256,
        depth=6,
        num_heads=4,
        learn_sigma=False,
        with_text_branch=False,
        description="small pixel-space model shipped with worldfm-env (64x64 RGB, patch 8)",
    ),
    # Test-sized model.
    "tiny": DiTConfig(
        input_size=16,
        patch_size=2,
        in_channels=3,
        hidden_size=64,
        depth=2,
        num_heads=2,
        learn_sigma=True,
        with_text_branch=False,
        description="tiny model for tests",
    ),
}


# Finer-grained variant of "s" (patch 4 -> 768 tokens): ~6x the compute, for GPUs.
MODEL_CONFIGS["s4"] = dataclasses.replace(
    MODEL_CONFIGS["s"], patch_size=4, description="pixel-space 64x64 model with patch 4 (GPU-sized)"
)


# "s" with a convolutional pixel refiner (base width 32, about 2.5M parameters) after the transformer, and the same
# with the refiner reading the anchor depth: the layout of the shipped 64x64 model (fine-tuned from "s", the refiner
# added, then its depth input).
MODEL_CONFIGS["sr"] = dataclasses.replace(
    MODEL_CONFIGS["s"], refiner_channels=32, description="pixel-space 64x64 model, patch 8, with a pixel refiner"
)
MODEL_CONFIGS["srd"] = dataclasses.replace(
    MODEL_CONFIGS["sr"],
    refiner_depth=True,
    description="pixel-space 64x64 model, patch 8, with a pixel refiner that reads the anchor depth (shipped)",
)


MODEL_CONFIGS["srgbd"] = dataclasses.replace(
    MODEL_CONFIGS["srd"],
    depth_head=True,
    description="pixel-space 64x64 RGB-D model: 'srd' whose refiner also predicts the frame's depth",
)


def build_model(name: str = "xl", **overrides) -> WorldFMDiT:
    """Build a :class:`WorldFMDiT` from a named config (``MODEL_CONFIGS``), with field overrides.

    Overrides are any :class:`DiTConfig` field (depth, hidden_size, num_heads, patch_size, input_size, in_channels,
    learn_sigma, with_text_branch, camera_encoding, ...). Unknown names raise ValueError listing the valid ones.
    Build under ``with torch.device("meta"):`` to inspect shapes without allocating.
    """
    if name not in MODEL_CONFIGS:
        raise ValueError(f"unknown model config {name!r}; valid names: {sorted(MODEL_CONFIGS)}")
    strict_kwargs(DiTConfig, overrides, "override", where="build_model")
    return WorldFMDiT(dataclasses.replace(MODEL_CONFIGS[name], **overrides))
