"""The frame model as one object: a network, its autoencoder and its sampler, built from any checkpoint.

:class:`FrameModel` turns a frame's conditions into frames. The conditions are computed once per frame
(:meth:`FrameModel.conditions`: the anchor and reference in the model's space, the hole-filled anchor of residual
models, the anchor depth at panel size, the refiner's filled anchor and depth feature, the panel cameras), then
the sampler calls the network once per step with them. Every kind of checkpoint goes through it: v- or
eps-prediction, image or anchor-residual target, with or without the pixel refiner, pixel space or latent with a
VAE. The env's ``worldfm`` backend, the fidelity benchmark and the training stages' sample grids all call it.

bf16 runs on CUDA (flash SDPA) and on CPUs with native bf16 (AMX, AVX512-BF16), fp32 on other CPUs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from worldfm_env.model.autoencoders import Autoencoder, DiffusersAutoencoderKL, IdentityAutoencoder
from worldfm_env.model.checkpoint import load_checkpoint, recommended_sampler_steps, trained_layout_obstacles
from worldfm_env.model.dit import PanelCameras, PixelRefiner
from worldfm_env.model.samplers import sample_ddim, sample_distilled
from worldfm_env.model.targets import clip_scale, from_target, residual_base
from worldfm_env.scenes.scene import LAYOUT_OBSTACLES_VALUES

__all__ = [
    "DTYPES",
    "FrameConditions",
    "FrameModel",
    "auto_model_dtype",
    "cpu_has_fast_bf16",
    "images_to_model",
    "model_to_images",
    "panel_depth",
    "resolve_model_dtype",
]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def auto_model_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA (fp16 where bf16 is not supported) and on CPUs with bf16 matrix units or instructions (AMX
    tiles, AVX512-BF16), fp32 on other CPUs.

    Measured for config ``s`` at 64x64 (2-step sampler): on 2 AMX cores (Intel Xeon) 136 against 47 frames/s at
    batch 16; on 2 AVX512-BF16 cores (AMD EPYC) 32-41 against 19-23 frames/s at batch 1-64.
    """
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU runs bf16 matrix products natively: AMX tiles or the AVX512-BF16 instructions (private
    torch probes, called defensively: False where a build lacks them)."""
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        check = getattr(torch.cpu, probe, None)
        try:
            if check is not None and check():
                return True
        except Exception:  # pragma: no cover - older or unusual builds
            pass
    return False


def resolve_model_dtype(model_dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``"auto"`` (:func:`auto_model_dtype`), a name of :data:`DTYPES` or a torch dtype; ValueError otherwise."""
    if isinstance(model_dtype, torch.dtype):
        return model_dtype
    if model_dtype == "auto":
        return auto_model_dtype(device)
    if model_dtype in DTYPES:
        return DTYPES[model_dtype]
    raise ValueError(f"model_dtype={model_dtype!r} is not valid; choose 'auto' or one of {sorted(DTYPES)}")


def panel_depth(depth: torch.Tensor, size) -> torch.Tensor:
    """Anchor depth (N, H, W) (0 where no point landed) at the model's panel ``size`` (h, w).

    Unchanged when the sizes agree (pixel-space models). For latent models each latent pixel takes the nearest
    depth of its (H/h) x (W/w) block of covered pixels (0 when the block has none): the surface that occludes
    the block, as the z-buffer would keep it.
    """
    h, w = int(size[0]), int(size[1])
    H, W = depth.shape[-2:]
    if (H, W) == (h, w):
        return depth
    if H % h or W % w:
        raise ValueError(f"anchor depth {H}x{W} cannot be pooled to the {h}x{w} panel: sizes must divide")
    far = torch.where(depth > 0, depth, torch.full_like(depth, float("inf")))
    nearest = -F.max_pool2d(-far[:, None], kernel_size=(H // h, W // w))[:, 0]
    return torch.where(torch.isinf(nearest), torch.zeros_like(nearest), nearest)


def images_to_model(rgb: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    return rgb.permute(0, 3, 1, 2).to(dtype).mul_(2.0 / 255.0).sub_(1.0)


def model_to_images(x: torch.Tensor) -> torch.Tensor:
    """float (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3), rounded and clamped."""
    return ((x.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round_().to(torch.uint8).permute(0, 2, 3, 1)


@dataclass
class FrameConditions:
    """Everything a frame is generated from, in the model's space, computed once per frame.

    Attributes (N frames, C channels, h x w panels):
        anchor: (N, C, h, w) the anchor render, in the model dtype.
        reference: (N, C, h, w) the reference view, in the model dtype.
        base: (N, C, h, w) float32 hole-filled anchor that ``anchor_residual`` models add their output to, or None.
        anchor_depth: (N, h, w) anchor depth at panel size for models that read it, else None.
        cameras: panel cameras for camera-conditioned models, else None.
        model_kwargs: what the network derives from the conditions alone (the refiner's filled anchor, coverage
            and depth feature), passed to every sampler step.
    """

    anchor: torch.Tensor
    reference: torch.Tensor
    base: torch.Tensor | None
    anchor_depth: torch.Tensor | None
    cameras: PanelCameras | None
    model_kwargs: dict


class FrameModel:
    """A frame model ready to generate: the network, its autoencoder, its dtype and its sampler.

    Args:
        model: a :class:`~worldfm_env.model.dit.WorldFMDiT` (or any module with its ``config`` and call signature),
            used as it is (its mode and ``requires_grad`` are the caller's: a training loop may pass its own).
        autoencoder: pixel space when None (:class:`~worldfm_env.model.autoencoders.IdentityAutoencoder`).
        sampler_steps: distilled sampler steps of v-prediction models, 1 or 2 (published schedules 999 and
            999 -> 200).
        teacher_steps: DDIM steps of eps-prediction models (stage I/II teachers).
        compile_model: run the network through ``torch.compile`` (slow start-up, faster steps).
        name: a label for messages (the checkpoint's file name).
        layout_obstacles: for a model that reads the navigation layout, what the layout it was trained on is cast
            against (``"footprints"`` or ``"cores"``; :meth:`from_checkpoint` reads it from the header,
            :func:`~worldfm_env.model.checkpoint.trained_layout_obstacles`); build its ``layout_depth`` with it.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        autoencoder: Autoencoder | None = None,
        *,
        sampler_steps: int = 2,
        teacher_steps: int = 20,
        compile_model: bool = False,
        name: str | None = None,
        layout_obstacles: str = "footprints",
    ) -> None:
        if sampler_steps not in (1, 2):
            raise ValueError(f"sampler_steps must be 1 or 2 (the distilled samplers), got {sampler_steps!r}")
        if layout_obstacles not in LAYOUT_OBSTACLES_VALUES:
            raise ValueError(
                f"layout_obstacles={layout_obstacles!r} is not valid; choose one of {list(LAYOUT_OBSTACLES_VALUES)}"
            )
        #: What the navigation layout a layout model reads must be cast against: the one it was trained on
        #: (``obstacles`` of :func:`~worldfm_env.scenes.navigation.pool_layout_depth`).
        self.layout_obstacles = layout_obstacles
        self.model = model
        self.autoencoder = autoencoder if autoencoder is not None else IdentityAutoencoder()
        self.config = model.config
        self.dtype = next(model.parameters()).dtype
        self.device = next(model.parameters()).device
        self.steps = sampler_steps
        self.teacher_steps = teacher_steps
        self.name = name or type(model).__name__
        self.forward = torch.compile(model) if compile_model else model
        channels = self.autoencoder.latent_shape(8 * self.autoencoder.downsample, 8 * self.autoencoder.downsample)[0]
        if self.config.in_channels != channels:
            raise ValueError(
                f"weights {self.name}: the model takes {self.config.in_channels}-channel latents but the autoencoder "
                f"gives {channels}; pixel-space models need vae=None, latent models need their vae folder"
            )

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: torch.device | str = "cpu",
        *,
        model_dtype: str | torch.dtype = "auto",
        vae: str | None = None,
        sampler_steps: int | None = None,
        teacher_steps: int = 20,
        compile_model: bool = False,
    ) -> FrameModel:
        """Load any checkpoint for inference (eval mode, no gradients).

        ``path``: our ``.safetensors`` with its config, or the official ``.pth`` (with ``vae``: its ``vae/`` folder).
        ``sampler_steps`` None takes the checkpoint's recommendation (header ``worldfm_env.sampler_steps``), else 2
        as published. ``model_dtype``: ``"auto"`` (:func:`auto_model_dtype`), ``"float32"``, ``"bfloat16"``,
        ``"float16"``.
        """
        device = torch.device(device)
        path = Path(path)
        dtype = resolve_model_dtype(model_dtype, device)
        if sampler_steps is None:
            sampler_steps = recommended_sampler_steps(path) or 2
        autoencoder = DiffusersAutoencoderKL.from_folder(vae, device=device, dtype=dtype) if vae else None
        model = load_checkpoint(None, path, device=device, dtype=dtype).eval().requires_grad_(False)
        return cls(
            model,
            autoencoder,
            sampler_steps=sampler_steps,
            teacher_steps=teacher_steps,
            compile_model=compile_model,
            name=path.name,
            layout_obstacles=trained_layout_obstacles(path) or "footprints",
        )

    # ------------------------------------------------------------------ properties
    @property
    def needs_cameras(self) -> bool:
        """Whether the network reads panel cameras (``camera_encoding`` other than ``"none"``)."""
        return self.config.camera_encoding != "none"

    @property
    def needs_depth(self) -> bool:
        """Whether the network reads the anchor depth (a refiner with ``refiner_depth``)."""
        return bool(self.config.refiner_depth)

    @property
    def needs_layout(self) -> bool:
        """Whether the network reads the scene's navigation layout along each pixel's ray (``refiner_layout``)."""
        return bool(getattr(self.config, "refiner_layout", False))

    @property
    def has_depth(self) -> bool:
        """Whether the network predicts the frame's depth (an RGB-D model, ``DiTConfig.depth_head``)."""
        return bool(getattr(self.config, "depth_head", False))

    @property
    def residual(self) -> bool:
        """Whether the network generates the residual over the hole-filled anchor (``target="anchor_residual"``)."""
        return self.config.target == "anchor_residual"

    def check_resolution(self, height: int, width: int) -> None:
        """ValueError naming the resolution the model needs when ``height`` x ``width`` does not fit it."""
        _, lh, lw = self.autoencoder.latent_shape(height, width)
        size = self.config.input_size
        if (lh, lw) != (size, size):
            raise ValueError(
                f"weights {self.name}: the model was built for {size}x{size} latents but resolution=({height}, "
                f"{width}) gives {lh}x{lw}; use resolution={size * self.autoencoder.downsample}"
            )

    # ------------------------------------------------------------------ conditions
    @torch.no_grad()
    def encode_images(self, rgb: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """uint8 images (N, H, W, 3) -> (N, C, h, w) in the model dtype (resized to ``size`` (H, W) first, if given)."""
        x = images_to_model(rgb, torch.float32)
        if size is not None and tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
        return self.autoencoder.encode(x.to(self.dtype)).to(self.dtype)

    @torch.no_grad()
    def conditions(
        self,
        anchor_rgb: torch.Tensor,
        anchor_mask: torch.Tensor,
        reference: torch.Tensor,
        anchor_depth: torch.Tensor | None = None,
        cameras: PanelCameras | None = None,
        layout_depth: torch.Tensor | None = None,
    ) -> FrameConditions:
        """The conditions of N frames, computed once (not once per sampler step).

        Args:
            anchor_rgb: (N, H, W, 3) uint8 anchor render (black where empty). anchor_mask: (N, H, W) bool coverage.
            reference: (N, H, W, 3) uint8 reference images, or (N, C, h, w) reference latents already encoded
                (:meth:`encode_images`, e.g. a bank encoded once at start-up).
            anchor_depth: (N, H, W) anchor depth (0 where empty); needed by models that read it.
            cameras: panel cameras; needed by camera-conditioned models.
            layout_depth: (N, H, W) depth of the scene's navigation layout along each pixel's ray (0 where nothing
                bounds it, :class:`~worldfm_env.render.layout.LayoutDepth`); needed by models that read it
                (:attr:`needs_layout`), ignored by others.
        """
        if self.needs_cameras and cameras is None:
            raise ValueError(f"weights {self.name}: a camera-conditioned model needs cameras (PanelCameras)")
        if self.needs_depth and anchor_depth is None:
            raise ValueError(f"weights {self.name}: this model reads the anchor depth; pass anchor_depth (N, H, W)")
        if self.needs_layout and layout_depth is None:
            raise ValueError(
                f"weights {self.name}: this model reads the navigation layout; pass layout_depth (N, H, W), the "
                "layout's depth along each pixel's ray (worldfm_env.scenes.navigation.pool_layout_depth)"
            )
        if self.needs_layout and tuple(getattr(layout_depth, "shape", ())) != tuple(anchor_mask.shape):
            raise ValueError(
                f"weights {self.name}: layout_depth must be a {tuple(anchor_mask.shape)} tensor (the anchor's frames), "
                f"got {tuple(getattr(layout_depth, 'shape', ())) or type(layout_depth).__name__}"
            )
        # Residual models: the base (the hole-filled anchor) is made from float32 pixels (bf16 would round the
        # covered pixels by up to a grey level) and goes through the autoencoder like a frame.
        pixels = images_to_model(anchor_rgb, torch.float32 if self.residual else self.dtype)
        anchor = self.autoencoder.encode(pixels.to(self.dtype))
        base = residual_base(self.config.target, pixels, anchor_mask)
        if base is not None:
            base = self.autoencoder.encode(base)
        if reference.dtype == torch.uint8:
            reference = self.encode_images(reference)
        depth = panel_depth(anchor_depth, anchor.shape[-2:]) if self.needs_depth else None
        prepare = getattr(self.model, "prepare_conditions", None)
        layout = panel_depth(layout_depth, anchor.shape[-2:]) if self.needs_layout else None
        model_kwargs = prepare(anchor, depth, layout) if prepare is not None else {}
        return FrameConditions(
            anchor, reference.to(self.dtype), base, depth, cameras if self.needs_cameras else None, model_kwargs
        )

    # ------------------------------------------------------------------ sampling
    def sample(
        self,
        cond: FrameConditions,
        *,
        generators=None,
        noise_seeds: torch.Tensor | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        return_depth: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """x0 in the model's target space (N, C, h, w), model dtype: the distilled sampler for v-prediction models,
        DDIM for eps-prediction ones (``sampler`` ``"distilled"`` / ``"ddim"`` overrides; ``steps`` overrides the
        step count). Noise per row from ``generators`` or ``noise_seeds`` (see :mod:`worldfm_env.model.samplers`).
        Runs without gradients; training samples with gradients through
        :func:`~worldfm_env.model.samplers.distilled_trajectory`, which shares the distilled loop.

        ``return_depth``: return ``(x0, depth)``, the frame's depth (N, h, w) float32 in the anchor depth's unit
        from the last distilled step of an RGB-D model (:attr:`has_depth`); None for other models and for DDIM."""
        sampler = sampler or ("ddim" if self.config.prediction == "eps" else "distilled")
        common = dict(
            generators=generators,
            noise_seeds=noise_seeds,
            cameras=cond.cameras,
            anchor_depth=cond.anchor_depth,
            model_kwargs=cond.model_kwargs,
        )
        if sampler == "ddim":
            # Multi-step DDIM (x0 clamped to the image range in pixel space).
            clip = clip_scale(self.config.target) if self.autoencoder.downsample == 1 else None
            x0 = sample_ddim(
                self.forward,
                cond.anchor,
                cond.reference,
                num_steps=steps or self.teacher_steps,
                prediction=self.config.prediction,
                clip_x0=clip,
                **common,
            )
            return (x0, None) if return_depth else x0
        if sampler != "distilled":
            raise ValueError(f"sampler must be 'distilled' or 'ddim', got {sampler!r}")
        if not return_depth:
            return sample_distilled(self.forward, cond.anchor, cond.reference, steps=steps or self.steps, **common)
        x0, relative = sample_distilled(
            self.forward, cond.anchor, cond.reference, steps=steps or self.steps, return_depth=True, **common
        )
        if relative is None or not self.has_depth:
            return x0, None
        mean = cond.model_kwargs["refiner_inputs"]["log_depth_mean"]
        return x0, PixelRefiner.absolute_depth(relative, mean)

    @torch.no_grad()
    def decode(self, cond: FrameConditions, x0: torch.Tensor) -> torch.Tensor:
        """Frames (N, 3, H, W) in [-1, 1] from a sample: the residual base added back, then the autoencoder."""
        return self.autoencoder.decode(from_target(x0, cond.base, self.config.target))

    @torch.no_grad()
    def generate(self, cond: FrameConditions, **sample_options) -> torch.Tensor:
        """uint8 frames (N, H, W, 3): :meth:`sample` then :meth:`decode`."""
        return model_to_images(self.decode(cond, self.sample(cond, **sample_options)))

    @torch.no_grad()
    def generate_rgbd(self, cond: FrameConditions, **sample_options) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 frames (N, H, W, 3) and their depth (N, H, W) float32 from the same sample: the model's own depth
        for RGB-D models (:attr:`has_depth`, distilled sampler), None for other models."""
        x0, depth = self.sample(cond, return_depth=True, **sample_options)
        return model_to_images(self.decode(cond, x0)), depth
