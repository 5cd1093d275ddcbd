"""The ``worldfm`` renderer backend: one batched frame-model call renders every env's observation.

Per step: the anchor renders (rgb, black where empty) pass through the autoencoder, the reference
latents are gathered from a per-scene cache encoded once at start-up, and the distilled sampler
runs one model forward per step (1 or 2 steps) over all N envs. Models with
``target="anchor_residual"`` generate the frame's residual over the hole-filled anchor, which is
added back before decoding. Each env's noise comes from the request's per-env seed, either through
its own ``torch.Generator`` (``noise="generator"``) or as a batched counter-based hash on the device
(``noise="hash"``: no host sync, no per-env launches), so a fixed seed and pose give the same frame
whatever the batch. bf16 on CUDA (flash SDPA) and on CPUs with native bf16 (AMX, AVX512-BF16), fp32 on other CPUs.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F

from worldfm_env.model.autoencoders import Autoencoder, DiffusersAutoencoderKL, IdentityAutoencoder
from worldfm_env.model.checkpoint import load_checkpoint, recommended_sampler_steps, trained_splat_radius
from worldfm_env.model.dit import PanelCameras
from worldfm_env.model.samplers import make_generators, sample_ddim, sample_distilled
from worldfm_env.model.targets import clip_scale, from_target, residual_base
from worldfm_env.renderers import Renderer, RenderOutput, RenderRequest
from worldfm_env.scenes.pool import ScenePool

__all__ = [
    "WorldFMRenderer",
    "auto_model_dtype",
    "cpu_has_fast_bf16",
    "default_weights_path",
    "images_to_model",
    "model_to_images",
    "panel_depth",
    "resolve_weights",
    "shipped_weights",
]

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
NOISE_MODES = ("auto", "generator", "hash")


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


def default_weights_path(height: int, width: int, sampler_steps: int | None = None) -> Path | None:
    """The shipped checkpoint for a resolution, if the package has one.

    Students distilled for one sampler are named ``weights/worldfm-<config>-<k>step-<H>x<W>.safetensors``; with
    ``sampler_steps=k`` that file is preferred, then any ``worldfm-*-<H>x<W>.safetensors`` (2-step first).
    """
    if sampler_steps is not None:
        exact = sorted(WEIGHTS_DIR.glob(f"worldfm-*-{int(sampler_steps)}step-{height}x{width}.safetensors"))
        if exact:
            return exact[0]
    candidates = sorted(WEIGHTS_DIR.glob(f"worldfm-*-{height}x{width}.safetensors"))
    candidates.sort(key=lambda p: "2step" not in p.name)
    return candidates[0] if candidates else None


def shipped_weights() -> dict[str, Path]:
    """The frame models in the package, by name (the file's stem): ``{"worldfm-srd-64x64": path, ...}``.

    The default model of each resolution sits in ``weights/``; earlier ones, kept for speed or comparison,
    in ``weights/earlier/`` (e.g. ``"worldfm-s-64x64"``, about 1.4x the env-steps/s at 64x64 on a CPU).
    """
    return {p.stem: p for p in sorted(WEIGHTS_DIR.rglob("*.safetensors"))}


def resolve_weights(weights: str | os.PathLike) -> Path:
    """The checkpoint file that ``weights=`` names: a path to a file, or the name of a shipped model
    (:func:`shipped_weights`). A name that is neither raises ValueError listing the shipped names."""
    path = Path(weights).expanduser()
    if path.is_file():
        return path
    shipped = shipped_weights()
    if str(weights) in shipped:
        return shipped[str(weights)]
    raise ValueError(
        f"weights={str(weights)!r}: no such checkpoint file, nor the name of a shipped model "
        f"(shipped: {sorted(shipped)})"
    )


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


class WorldFMRenderer(Renderer):
    """Frame-model backend conditioned on the anchor render and the selected reference view.

    Args:
        pool, num_envs, height, width: see :class:`~worldfm_env.renderers.Renderer`.
        weights: checkpoint path (our ``.safetensors`` with its config, or the official ``.pth`` with
            ``vae`` given), or the name of a model shipped in the package (:func:`shipped_weights`, e.g.
            ``"worldfm-s-64x64"``, the faster earlier 64x64 model); None loads the checkpoint shipped for this
            resolution, if any.
        sampler_steps: distilled sampler steps, 1 or 2 (published schedules 999 and 999 -> 200), for v-prediction
            checkpoints (the published ones and stage III students); None takes the checkpoint's recommendation
            (header ``worldfm_env.sampler_steps``; the shipped 64x64 model recommends 1), else 2 as published.
        teacher_steps: DDIM steps for eps-prediction checkpoints (stage I/II teachers).
        vae: a diffusers ``AutoencoderKL`` folder (e.g. the official ``vae/``); None = pixel space.
        model_dtype: ``"auto"`` (bf16 on CUDA and on CPUs with AMX or AVX512-BF16, else fp32), ``"float32"``,
            ``"bfloat16"``, ``"float16"``.
        compile_model: wrap the model in ``torch.compile`` (about 30 s of compilation at start-up; measured
            +20 % frames/s for config ``s`` on a 2-core CPU).
        noise: how per-env seeds become diffusion noise: ``"generator"`` (one ``torch.Generator`` per env,
            re-seeded every step: a host sync plus N small launches per draw), ``"hash"`` (one batched
            counter-based draw on the device, :func:`~worldfm_env.rng.hash_normal`; no host sync) or
            ``"auto"`` (``"hash"`` on CUDA, ``"generator"`` on CPU). The two modes give different frames for a seed.
    """

    name = "worldfm"
    needs_anchor = True
    needs_reference = True

    def __init__(
        self,
        pool: ScenePool,
        num_envs: int,
        height: int,
        width: int,
        weights: str | None = None,
        sampler_steps: int | None = None,
        teacher_steps: int = 20,
        vae: str | None = None,
        model_dtype: str = "auto",
        compile_model: bool = False,
        noise: str = "auto",
        **options,
    ) -> None:
        super().__init__(pool, num_envs, height, width)
        if noise not in NOISE_MODES:
            raise ValueError(f"noise={noise!r} is not valid; choose one of {list(NOISE_MODES)}")
        if sampler_steps is not None and sampler_steps not in (1, 2):
            raise ValueError(
                f"sampler_steps must be 1, 2 (the distilled samplers) or None (the checkpoint's), got {sampler_steps!r}"
            )
        if model_dtype == "auto":
            dtype = auto_model_dtype(self.device)
        elif model_dtype in DTYPES:
            dtype = DTYPES[model_dtype]
        else:
            raise ValueError(f"model_dtype={model_dtype!r} is not valid; choose 'auto' or one of {sorted(DTYPES)}")
        path = resolve_weights(weights) if weights else default_weights_path(height, width, sampler_steps)
        if path is None:
            raise ValueError(
                f"renderer='worldfm' needs frame-model weights and none were given (weights=None) and this package "
                f"ships none for {height}x{width}. Pass weights=PATH: a checkpoint trained with worldfm-env "
                "(.safetensors) or the official InSpatio-WorldFM 'worldfm_2-step.pth' together with vae=<its vae/ "
                "folder>. Nothing is downloaded at run time."
            )
        if sampler_steps is None:
            sampler_steps = recommended_sampler_steps(path) or 2
        self.autoencoder: Autoencoder = (
            DiffusersAutoencoderKL.from_folder(vae, device=self.device, dtype=dtype) if vae else IdentityAutoencoder()
        )
        self.model = load_checkpoint(None, path, device=self.device, dtype=dtype).eval().requires_grad_(False)
        cfg = self.model.config
        channels, lh, lw = self.autoencoder.latent_shape(height, width)
        if cfg.in_channels != channels:
            raise ValueError(
                f"weights {path.name}: the model takes {cfg.in_channels}-channel latents but the autoencoder gives "
                f"{channels} (vae={vae!r}); pixel-space models need vae=None, latent models need their vae folder"
            )
        if (lh, lw) != (cfg.input_size, cfg.input_size):
            raise ValueError(
                f"weights {path.name}: the model was built for {cfg.input_size}x{cfg.input_size} latents but "
                f"resolution=({height}, {width}) gives {lh}x{lw}; use resolution="
                f"{cfg.input_size * self.autoencoder.downsample}"
            )
        self.cameras_needed = cfg.camera_encoding != "none"
        self.depth_needed = cfg.refiner_depth
        self.weights_path = path
        #: The anchor splat_radius the checkpoint's header says it was trained on (None: it names none).
        self.trained_splat_radius = trained_splat_radius(path)
        self.dtype = dtype
        self.steps = sampler_steps
        self.teacher_steps = teacher_steps
        self.prediction = cfg.prediction
        self.target = cfg.target
        self.forward = torch.compile(self.model) if compile_model else self.model
        self.bank_latents = self._encode_bank()  # (B, C, h, w), once per scene pool
        self.rgb = torch.zeros(num_envs, height, width, 3, dtype=torch.uint8, device=self.device)
        if noise == "auto":
            noise = "hash" if self.device.type == "cuda" else "generator"
        self.noise = noise
        self.generators = make_generators(range(num_envs), self.device) if noise == "generator" else None

    @torch.no_grad()
    def _encode_bank(self, batch: int = 64) -> torch.Tensor:
        images = self.pool.bank_images  # (B, Hb, Wb, 3) uint8
        out = []
        for start in range(0, images.shape[0], batch):
            x = images_to_model(images[start : start + batch], torch.float32)
            if x.shape[-2:] != (self.height, self.width):
                x = F.interpolate(
                    x, size=(self.height, self.width), mode="bilinear", align_corners=False, antialias=True
                )
            out.append(self.autoencoder.encode(x.to(self.dtype)).to(self.dtype))
        return torch.cat(out)

    def _cameras(self, request: RenderRequest) -> PanelCameras:
        """Panel cameras for camera-conditioned checkpoints: target, anchor (= target) and reference."""
        ref = request.reference_index
        bank_K = self.pool.bank_K[ref].clone()  # (N, 3, 3) in bank pixels
        hb, wb = self.pool.bank_resolution
        bank_K[:, 0] *= self.width / wb
        bank_K[:, 1] *= self.height / hb
        c2w = torch.stack([request.c2w, request.c2w, self.pool.bank_c2w[ref]], dim=1).float()
        K = torch.stack([request.K, request.K, bank_K], dim=1).float()
        return PanelCameras(c2w, K, (self.height, self.width))

    @torch.no_grad()
    def render(self, request: RenderRequest) -> RenderOutput:
        """Generate every env's frame in one batched sampler call."""
        assert request.anchor is not None and request.reference_index is not None
        residual = self.target == "anchor_residual"
        # Residual models: the base (the hole-filled anchor) is made from float32 pixels (bf16 would round the
        # covered pixels by up to a grey level) and goes through the autoencoder like a frame.
        pixels = images_to_model(request.anchor.rgb, torch.float32 if residual else self.dtype)
        anchor = self.autoencoder.encode(pixels.to(self.dtype))
        base = residual_base(self.target, pixels, request.anchor.mask)
        if base is not None:
            base = self.autoencoder.encode(base)
        reference = self.bank_latents[request.reference_index]
        generators = noise_seeds = None
        if self.noise == "hash":
            # Batched hash noise on the device: no host sync, no per-env launches.
            noise_seeds = request.noise_seed
            if noise_seeds is None:
                noise_seeds = torch.arange(anchor.shape[0], device=anchor.device)
        else:
            seeds = request.noise_seed.tolist() if request.noise_seed is not None else list(range(anchor.shape[0]))
            # One generator per env, allocated once and re-seeded every step (cheap, host side).
            for generator, seed in zip(self.generators, seeds, strict=True):
                generator.manual_seed(int(seed))
            generators = self.generators
        cameras = self._cameras(request) if self.cameras_needed else None
        depth = panel_depth(request.anchor.depth, anchor.shape[-2:]) if self.depth_needed else None
        if self.prediction == "eps":
            # A stage I/II teacher: multi-step DDIM (x0 clamped to the image range in pixel space).
            clip = clip_scale(self.target) if self.autoencoder.downsample == 1 else None
            x0 = sample_ddim(
                self.forward,
                anchor,
                reference,
                num_steps=self.teacher_steps,
                prediction="eps",
                generators=generators,
                noise_seeds=noise_seeds,
                cameras=cameras,
                anchor_depth=depth,
                clip_x0=clip,
            )
        else:
            x0 = sample_distilled(
                self.forward,
                anchor,
                reference,
                steps=self.steps,
                generators=generators,
                noise_seeds=noise_seeds,
                cameras=cameras,
                anchor_depth=depth,
            )
        frame = from_target(x0, base, self.target)  # float32 for residual models
        self.rgb.copy_(model_to_images(self.autoencoder.decode(frame)))
        return RenderOutput(self.rgb, request.anchor.depth)
