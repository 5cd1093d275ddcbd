"""Autoencoders between images in [-1, 1] (B, 3, H, W) and the frame model's latent space.

One interface (:class:`Autoencoder`): ``encode(images) -> latents``, ``decode(latents) -> images``, and the attributes
``latent_channels`` and ``downsample`` (pixels per latent pixel along each axis).

* :class:`IdentityAutoencoder` -- pixel space (the shipped small models): latents are the images.
* :class:`DiffusersAutoencoderKL` -- a diffusers ``AutoencoderKL`` loaded from a local folder such as the official
  ``vae/`` (the SDXL VAE), latents scaled by ``scaling_factor`` (0.13025 for SDXL) after subtracting
  ``shift_factor`` where the config has one. diffusers is optional: ``pip install "worldfm-env[vae]"``.

Published source read: ``modules/worldfm_infer.py`` (repository ``inspatio/worldfm``): images are normalised to
[-1, 1], ``z = vae.encode(x).latent_dist.sample() * scale`` with ``scale = vae.config.scaling_factor`` (fallback
0.13025), ``x = vae.decode(z / scale).sample``. Here ``encode`` takes the posterior mean by default instead of a
sample (a fixed input gives a fixed latent); the difference is the VAE's small posterior noise.
"""

from __future__ import annotations

import json
import os

import torch

__all__ = ["Autoencoder", "IdentityAutoencoder", "DiffusersAutoencoderKL", "SDXL_VAE_SCALE", "DIFFUSERS_EXTRA_HINT"]

SDXL_VAE_SCALE = 0.13025
DIFFUSERS_EXTRA_HINT = 'diffusers is not installed; install the optional extra: pip install "worldfm-env[vae]"'
_VAE_FOLDER_HINT = (
    "vae must be a local diffusers AutoencoderKL folder (config.json + diffusion_pytorch_model.safetensors, as written "
    "by AutoencoderKL.save_pretrained), e.g. the official WorldFM vae/ folder, or None for a pixel-space model"
)


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
    """A diffusers ``AutoencoderKL`` (e.g. the official SDXL ``vae/``); latents = (posterior - shift) * scale.

    ``encode`` uses the posterior mean by default so that a fixed input gives a fixed latent (what a renderer needs);
    with ``sample_posterior=True`` it samples like the published inference (optionally from ``generator``).

    The latent normalisation follows the diffusers pipelines: ``scale`` is the config's ``scaling_factor`` (the SDXL
    constant when the config has none) and ``shift`` its ``shift_factor`` (SD3 / Flux VAEs; 0 when absent); a config
    with per-channel ``latents_mean`` and ``latents_std`` (the SDXL pipeline's convention) uses
    ``(z - latents_mean) * scale / latents_std`` instead. ``decode`` inverts the same map. Latents come back in the
    dtype and on the device of the images given to ``encode`` (and images in those of the latents given to
    ``decode``), also when the VAE itself runs in float32 because its config asks for ``force_upcast``.
    """

    downsample = 8

    def __init__(
        self, vae, scale: float | None = None, sample_posterior: bool = False, shift: float | None = None
    ) -> None:
        self.vae = vae
        config = getattr(vae, "config", None)

        def cfg(name: str, default=None):
            value = getattr(config, name, None) if config is not None else None
            return default if value is None else value

        # The published code prefers the folder's own scaling_factor and falls back to the SDXL constant.
        self.scale = float(scale if scale is not None else cfg("scaling_factor", SDXL_VAE_SCALE))
        self.shift = float(shift if shift is not None else cfg("shift_factor", 0.0))
        self.latent_channels = int(cfg("latent_channels", 4))
        # diffusers' Encoder halves the size in every down block but the last (vae_scale_factor in the pipelines).
        blocks = cfg("block_out_channels")
        self.downsample = 2 ** (len(blocks) - 1) if blocks else 8
        self.sample_posterior = sample_posterior
        mean, std = cfg("latents_mean"), cfg("latents_std")
        if mean is not None and std is not None:  # per-channel statistics, as in the SDXL pipeline
            self.latents_mean = torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
            self.latents_std = torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
            if self.latents_mean.shape[1] != self.latent_channels or self.latents_std.shape[1] != self.latent_channels:
                raise ValueError(
                    f"VAE config: latents_mean/latents_std have {self.latents_mean.shape[1]}/"
                    f"{self.latents_std.shape[1]} entries but latent_channels={self.latent_channels}"
                )
        else:
            self.latents_mean = self.latents_std = None

    @classmethod
    def from_folder(
        cls,
        path: str | os.PathLike,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        scale: float | None = None,
        sample_posterior: bool = False,
    ) -> DiffusersAutoencoderKL:
        """Load ``AutoencoderKL.from_pretrained(path)`` from a LOCAL folder (no hub download), eval mode, no grads.

        Raises ImportError naming the ``worldfm-env[vae]`` extra when diffusers is missing, and ValueError naming
        ``vae=<path>`` when ``path`` is not a folder, has no ``config.json``, holds another diffusers class, or its
        weights cannot be loaded.
        """
        try:
            from diffusers.models import AutoencoderKL
        except ImportError as err:  # the optional extra is not installed
            raise ImportError(DIFFUSERS_EXTRA_HINT) from err
        path = os.path.expanduser(os.fspath(path))
        where = f"vae={path!r}"
        if not os.path.isdir(path):
            what = "is a file, not a folder" if os.path.isfile(path) else "no such folder"
            raise ValueError(f"{where}: {what}. {_VAE_FOLDER_HINT}")
        config_path = os.path.join(path, "config.json")
        if not os.path.isfile(config_path):
            nested = os.path.join(path, "vae")
            also = (
                f" (its subfolder {nested!r} has one: pass that)"
                if os.path.isfile(os.path.join(nested, "config.json"))
                else ""
            )
            raise ValueError(f"{where}: no config.json in this folder{also}. {_VAE_FOLDER_HINT}")
        try:
            with open(config_path, encoding="utf-8") as f:
                config = json.load(f)
            class_name = config.get("_class_name", "AutoencoderKL")
        except (OSError, ValueError, AttributeError) as err:
            raise ValueError(f"{where}: config.json is not a readable JSON object ({err}). {_VAE_FOLDER_HINT}") from err
        if class_name != "AutoencoderKL":
            raise ValueError(
                f"{where}: config.json describes a {class_name!r}, not an AutoencoderKL. {_VAE_FOLDER_HINT}"
            )
        if dtype == torch.float16 and config.get("force_upcast", True):  # AutoencoderKL's default is True
            dtype = torch.float32  # e.g. the SDXL VAE overflows in fp16: its config asks to run in float32
        try:  # torch_dtype at load time, as diffusers recommends (instead of casting with .to afterwards)
            vae = AutoencoderKL.from_pretrained(path, local_files_only=True, torch_dtype=dtype)
        except (OSError, ValueError) as err:  # e.g. no diffusion_pytorch_model.safetensors / .bin next to the config
            raise ValueError(f"{where}: could not load the AutoencoderKL ({err}). {_VAE_FOLDER_HINT}") from err
        vae = vae.to(device=device).eval().requires_grad_(False)
        return cls(vae, scale=scale, sample_posterior=sample_posterior)

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """(mean, std) of the latent normalisation, as tensors shaped like ``like`` or as floats."""
        if self.latents_mean is None:
            return self.shift, 1.0
        # Moved once per device and dtype, not every call: a host-to-device copy per frame would block the host.
        key = (like.device, like.dtype)
        cached = getattr(self, "_stats_on", None)
        if cached is None or cached[0] != key:
            cached = (key, self.latents_mean.to(like), self.latents_std.to(like))
            self._stats_on = cached
        return cached[1], cached[2]

    @torch.no_grad()
    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> normalised latents (B, latent_channels, H/downsample, W/downsample)."""
        _check_images(images)
        self.latent_shape(images.shape[-2], images.shape[-1])  # ValueError for sizes the VAE cannot round-trip
        dist = self.vae.encode(images.to(device=self.vae.device, dtype=self.vae.dtype)).latent_dist
        z = dist.sample(generator=generator) if self.sample_posterior else dist.mode()
        mean, std = self._stats(z)
        return ((z - mean) * (self.scale / std)).to(device=images.device, dtype=images.dtype)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, latent_channels, h, w) -> images (B, 3, h * downsample, w * downsample)."""
        if not isinstance(latents, torch.Tensor) or latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            got = tuple(getattr(latents, "shape", ())) or type(latents)
            raise ValueError(f"latents must be a (B, {self.latent_channels}, h, w) tensor, got {got}")
        z = latents.to(device=self.vae.device, dtype=self.vae.dtype)
        mean, std = self._stats(z)
        images = self.vae.decode(z * (std / self.scale) + mean).sample
        return images.to(device=latents.device, dtype=latents.dtype)
