"""The ``worldfm`` backend: one batched frame-model call renders every env's observation.

Per step: the anchor renders (rgb, black where empty) become the frame model's conditions (once per frame), the
reference latents are gathered from a per-pool cache encoded once at start-up, and the sampler runs one model forward
per step (1 or 2 distilled steps) over all N envs. Each env's noise comes from the request's per-env seed, either
through its own ``torch.Generator`` (``noise="generator"``) or as a batched counter-based hash on the device
(``noise="hash"``: no host sync, no per-env launches), so a fixed seed and pose give the same frame whatever the
batch. An RGB-D model (``DiTConfig.depth_head``) also gives each frame's depth from the same sample: the frame's depth
is the anchor's where a point landed and the model's elsewhere (other models return the anchor's depth, 0 in holes).
"""

from __future__ import annotations

import torch

from worldfm_env.memory.growing import select_reference
from worldfm_env.model.checkpoint import trained_anchor_colour, trained_silhouettes, trained_splat_radius
from worldfm_env.model.dit import PanelCameras
from worldfm_env.model.frame_model import FrameModel
from worldfm_env.model.samplers import make_generators
from worldfm_env.model.weights import default_weights_path, resolve_weights, shipped_resolutions
from worldfm_env.renderers.base import Renderer, RenderOutput, RenderRequest
from worldfm_env.scenes.pool import ScenePool

__all__ = ["WorldFMRenderer", "NOISE_MODES"]

NOISE_MODES = ("auto", "generator", "hash")


class WorldFMRenderer(Renderer):
    """Frame-model backend conditioned on the anchor render and the selected reference view.

    Args:
        pool, num_envs, height, width: see :class:`~worldfm_env.renderers.base.Renderer`.
        weights: checkpoint path (our ``.safetensors`` with its config, or the official ``.pth`` with
            ``vae`` given), or the name of a model shipped in the package
            (:func:`~worldfm_env.model.weights.shipped_weights`, e.g. ``"worldfm-s-64x64"``, the faster earlier 64x64
            model); None loads the checkpoint shipped for this resolution, if any.
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
        path = resolve_weights(weights) if weights else default_weights_path(height, width, sampler_steps)
        if path is None:
            raise ValueError(
                f"renderer='worldfm' (the default renderer) has no frame model for resolution {height}x{width}: this "
                f"package ships models for {shipped_resolutions() or 'no resolution'} and weights=None. Use one of "
                "those resolutions, pass renderer='anchor' (the raw point splat, fastest) or 'oracle', or pass "
                "weights=PATH: a checkpoint trained with worldfm-env (.safetensors) or the official InSpatio-WorldFM "
                "'worldfm_2-step.pth' together with vae=<its vae/ folder>. Nothing is downloaded at run time."
            )
        self.frame_model = FrameModel.from_checkpoint(
            path,
            self.device,
            model_dtype=model_dtype,
            vae=vae,
            sampler_steps=sampler_steps,
            teacher_steps=teacher_steps,
            compile_model=compile_model,
        )
        self.frame_model.check_resolution(height, width)
        self.weights_path = path
        #: The anchor splat_radius the checkpoint's header says it was trained on (None: it names none).
        self.trained_splat_radius = trained_splat_radius(path)
        #: The anchor_colour it was trained on (None: the header does not tell; see trained_anchor_colour).
        self.trained_anchor_colour = trained_anchor_colour(path)
        #: The silhouettes setting it was trained on (None: the header does not tell; see trained_silhouettes).
        self.trained_silhouettes = trained_silhouettes(path)
        self.bank_latents = self._encode_bank()  # (B, C, h, w), once per scene pool
        self.rgb = torch.zeros(num_envs, height, width, 3, dtype=torch.uint8, device=self.device)
        # RGB-D models: the frame's depth, the anchor's where it has a point and the model's elsewhere.
        self.depth = (
            torch.zeros(num_envs, height, width, dtype=torch.float32, device=self.device)
            if self.frame_model.has_depth
            else None
        )
        if noise == "auto":
            noise = "hash" if self.device.type == "cuda" else "generator"
        self.noise = noise
        self.generators = make_generators(range(num_envs), self.device) if noise == "generator" else None
        if self.frame_model.needs_cameras:
            # The bank's intrinsics in output pixels, scaled once (the reference panel's camera).
            hb, wb = pool.bank_resolution
            self.bank_K = pool.bank_K.clone()
            self.bank_K[:, 0] *= width / wb
            self.bank_K[:, 1] *= height / hb

    @property
    def model(self) -> torch.nn.Module:
        """The frame model's network."""
        return self.frame_model.model

    @property
    def autoencoder(self):
        """The frame model's autoencoder (pixel space: the identity)."""
        return self.frame_model.autoencoder

    @property
    def steps(self) -> int:
        """Distilled sampler steps (1 or 2)."""
        return self.frame_model.steps

    def _encode_bank(self, batch: int = 64) -> torch.Tensor:
        images = self.pool.bank_images  # (B, Hb, Wb, 3) uint8
        size = (self.height, self.width)
        return torch.cat(
            [self.frame_model.encode_images(images[i : i + batch], size) for i in range(0, images.shape[0], batch)]
        )

    def encode_reference(self, images: torch.Tensor) -> torch.Tensor:
        """Reference latents (M, C, h, w) of frames (M, H, W, 3) uint8 (a growing memory's views)."""
        return self.frame_model.encode_images(images, (self.height, self.width))

    def _cameras(self, request: RenderRequest) -> PanelCameras:
        """Panel cameras for camera-conditioned checkpoints: target, anchor (= target) and reference."""
        ref, memory = request.reference_index, request.memory
        ref_c2w = select_reference(ref, self.pool.bank_c2w, memory.views.c2w if memory is not None else None)
        ref_K = select_reference(ref, self.bank_K, memory.views.K if memory is not None else None)
        c2w = torch.stack([request.c2w, request.c2w, ref_c2w], dim=1).float()
        K = torch.stack([request.K, request.K, ref_K], dim=1).float()
        return PanelCameras(c2w, K, (self.height, self.width))

    @property
    def layout_obstacles(self) -> str:
        """What the layout the model reads is cast against: the one it was trained on (``FrameModel.layout_obstacles``;
        a model that reads none: ``"footprints"``)."""
        return self.frame_model.layout_obstacles

    @property
    def needs_layout(self) -> bool:
        """Whether the loaded model reads the navigation layout (``RenderRequest.layout_depth``)."""
        return self.frame_model.needs_layout

    @torch.no_grad()
    def render(self, request: RenderRequest) -> RenderOutput:
        """Generate every env's frame in one batched sampler call."""
        assert request.anchor is not None and request.reference_index is not None
        anchor = request.anchor
        cond = self.frame_model.conditions(
            anchor.rgb,
            anchor.mask,
            select_reference(
                request.reference_index,
                self.bank_latents,
                request.memory.latents if request.memory is not None else None,
            ),
            anchor_depth=anchor.depth,
            cameras=self._cameras(request) if self.frame_model.needs_cameras else None,
            layout_depth=request.layout_depth,
        )
        generators = noise_seeds = None
        if self.noise == "hash":
            # Batched hash noise on the device: no host sync, no per-env launches.
            noise_seeds = request.noise_seed
            if noise_seeds is None:
                noise_seeds = torch.arange(anchor.rgb.shape[0], device=self.device)
        else:
            # Host sync 3 of a CUDA step (generators are seeded on the host); noise="hash" avoids it.
            seeds = request.noise_seed.tolist() if request.noise_seed is not None else list(range(anchor.rgb.shape[0]))
            # One generator per env, allocated once and re-seeded every step (cheap, host side).
            for generator, seed in zip(self.generators, seeds, strict=True):
                generator.manual_seed(int(seed))
            generators = self.generators
        if self.depth is None:
            self.rgb.copy_(self.frame_model.generate(cond, generators=generators, noise_seeds=noise_seeds))
            return RenderOutput(self.rgb, anchor.depth)
        rgb, depth = self.frame_model.generate_rgbd(cond, generators=generators, noise_seeds=noise_seeds)
        self.rgb.copy_(rgb)
        if depth is None:  # an eps-prediction RGB-D model read with DDIM returns no depth: the anchor's, as for RGB
            return RenderOutput(self.rgb, anchor.depth)
        torch.where(anchor.mask, anchor.depth, depth, out=self.depth)
        return RenderOutput(self.rgb, self.depth)
