"""Autoencoders between images in [-1, 1] (B, 3, H, W) and the frame model's latent space.

One interface (:class:`Autoencoder`): ``encode(images) -> latents``, ``decode(latents) -> images``, and the attributes
``latent_channels`` and ``downsample`` (pixels per latent pixel along each axis).

* :class:`IdentityAutoencoder` -- pixel space (the shipped small models): latents are the images.
* :class:`DiffusersAutoencoderKL` -- a diffusers ``AutoencoderKL`` loaded from a local folder such as the official
  ``vae/`` (the SDXL VAE), latents scaled by ``scaling_factor`` (0.13025 for SDXL). diffusers is optional:
  ``pip install "worldfm-env[diffusers]"``.

Published source read: ``modules/worldfm_infer.py`` (repository ``inspatio/worldfm``): images are normalised to
[-1, 1], ``z = vae.encode(x).latent_dist.sample() * scale`` with ``scale = vae.config.scaling_factor`` (fallback
0.13025), ``x = vae.decode(z / scale).sample``.
"""

from __future__ import annotations

import os

import torch

__all__ = ["Autoencoder", "IdentityAutoencoder", "DiffusersAutoencoderKL", "SDXL_VAE_SCALE", "DIFFUSERS_EXTRA_HINT"]

SDXL_VAE_SCALE = 0.13025
DIFFUSERS_EXTRA_HINT = 'diffusers is not installed; install the optional extra: pip install "worldfm-env[diffusers]"'


def _check_images(images: torch.Tensor, name: str = "images") -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        got = getattr(images, "shape", type(images))
        raise ValueError(f"{name} must be a (B, 3, H, W) tensor in [-1, 1], got {got}")


class Autoencoder:
    """Interface: ``encode`` images in [-1, 1] (B, 3, H, W) to latents (B, latent_channels, H/d, W/d) and back."""

    latent_channels: int = 3
    downsample: int = 1

    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> latents."""
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images (B, 3, H, W), nominally in [-1, 1] (not clamped)."""
        raise NotImplementedError

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(latent_channels, H / downsample, W / downsample) for an image size; ValueError if not divisible."""
        if height % self.downsample or width % self.downsample:
            raise ValueError(f"image size {(height, width)} must be divisible by downsample={self.downsample}")
        return self.latent_channels, height // self.downsample, width // self.downsample


class IdentityAutoencoder(Autoencoder):
    """Pixel-space "autoencoder": latents are the [-1, 1] images themselves (3 channels, downsample 1)."""

    latent_channels = 3
    downsample = 1

    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Return the images unchanged (validated)."""
        _check_images(images)
        return images

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Return the latents unchanged (validated)."""
        _check_images(latents, "latents")
        return latents


class DiffusersAutoencoderKL(Autoencoder):
    """A diffusers ``AutoencoderKL`` (e.g. the official SDXL ``vae/``); latents = scale * posterior.

    ``encode`` uses the posterior mean by default so that a fixed input gives a fixed latent; with
    ``sample_posterior=True`` it samples like the published inference (optionally from ``generator``).
    """

    downsample = 8

    def __init__(self, vae, scale: float | None = None, sample_posterior: bool = False) -> None:
        self.vae = vae
        config = getattr(vae, "config", None)
        cfg_scale = getattr(config, "scaling_factor", None) if config is not None else None
        # The published code prefers the folder's own scaling_factor and falls back to the SDXL constant.
        self.scale = float(scale if scale is not None else (cfg_scale if cfg_scale is not None else SDXL_VAE_SCALE))
        self.latent_channels = int(getattr(config, "latent_channels", 4) if config is not None else 4)
        blocks = getattr(config, "block_out_channels", None) if config is not None else None
        self.downsample = 2 ** (len(blocks) - 1) if blocks else 8
        self.sample_posterior = sample_posterior

    @classmethod
    def from_folder(
        cls,
        path: str | os.PathLike,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        scale: float | None = None,
        sample_posterior: bool = False,
    ) -> DiffusersAutoencoderKL:
        """Load ``AutoencoderKL.from_pretrained(path)`` from a LOCAL folder (no hub download), eval mode.

        Raises ImportError naming the ``worldfm-env[diffusers]`` extra when diffusers is missing, and ValueError when
        ``path`` is not a folder.
        """
        try:
            from diffusers.models import AutoencoderKL
        except ImportError as err:  # the optional extra is not installed
            raise ImportError(DIFFUSERS_EXTRA_HINT) from err
        if not os.path.isdir(path):
            raise ValueError(f"VAE folder not found: {os.fspath(path)!r} (expected a diffusers AutoencoderKL folder)")
        vae = AutoencoderKL.from_pretrained(os.fspath(path), local_files_only=True)
        if dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
            dtype = torch.float32  # e.g. the SDXL VAE overflows in fp16: its config asks to run in float32
        vae = vae.to(device=device, dtype=dtype).eval()
        return cls(vae, scale=scale, sample_posterior=sample_posterior)

    @torch.no_grad()
    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> scaled latents (B, 4, H/8, W/8)."""
        _check_images(images)
        dist = self.vae.encode(images.to(self.vae.dtype)).latent_dist
        z = dist.sample(generator=generator) if self.sample_posterior else dist.mode()
        return z * self.scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images (B, 3, H, W)."""
        if latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"latents must be (B, {self.latent_channels}, h, w), got {tuple(latents.shape)}")
        return self.vae.decode(latents.to(self.vae.dtype) / self.scale).sample
