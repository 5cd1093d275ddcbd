"""Frame fidelity against the ray-cast ground truth: PSNR and SSIM of the anchor render, a classical
nearest-pixel hole fill and the frame models (stage II teacher, 2- and 1-step students) on held-out views.

    python benchmarks/fidelity.py                                   # shipped checkpoint, if any, else baselines
    python benchmarks/fidelity.py --teacher runs/stage2/model.safetensors --teacher-steps 20 \\
        --student2 runs/distill/model.safetensors --student1 runs/distill/model.safetensors
    python benchmarks/fidelity.py --splat-radius auto --out benchmarks/results/fidelity/splat_auto

Data: ``--clips`` multi-view clips (``worldfm_env.training.data.ClipGenerator``, 16 views, 4 of them
references) on the procedural *test* scenes (``procedural:test:<--scenes>``), so every clip gives 12
target views, each with its anchor render (the clip's point cloud splatted at the target pose, black
where nothing lands), the reference view the env's vote picks and the ray-cast ground truth. Everything
is deterministic given ``--seed`` (clip stream and per-frame noise seeds). ``--splat-radius`` sets the anchor
splat size (the env's ``splat_radius``: 0, one pixel per point as published, or ``auto``).

Methods: ``anchor`` (the anchor as rendered, holes black), ``nearest_fill`` (every hole pixel takes the
colour of its nearest covered pixel, exact Euclidean), ``pull_push_fill`` (holes interpolated smoothly
from a coverage-weighted image pyramid; the base of ``target="anchor_residual"`` models), ``teacher`` (a
stage II checkpoint, eps or v prediction, DDIM in its own parametrisation with ``--teacher-steps`` steps,
x0 clamped to the image range), ``student_2step`` / ``student_1step`` (v-prediction checkpoints, the
published distilled samplers). With no checkpoint flag the checkpoints shipped for the resolution are
used when there are any. Models with ``target="anchor_residual"`` get their pull-push base added back.

Metrics, each computed per image and then averaged over the target views (uint8 images, range 255):

* ``psnr``: 10 log10(255^2 / MSE) over all pixels and channels, capped at 100 dB (identical images).
* ``ssim``: Gaussian-window SSIM (11x11, sigma 1.5, K1 = 0.01, K2 = 0.03, "valid" window positions
  only), computed per RGB channel and averaged over the channels.
* ``psnr_covered`` / ``psnr_holes``: PSNR of the MSE over the pixels the anchor covers / does not cover
  (views with no such pixel are left out of that average).
* ``revisit_psnr`` (generative methods): each target is generated a second time from the same anchor and
  reference with other noise seeds (the same pose seen again after a loop in a static world); the PSNR
  between the two generated frames. 100 would be perfectly consistent.
* ``seconds``: wall time of producing the method's frames from the clips (first pass only; the anchor
  comes with the clips, so 0), ``coverage``: mean fraction of pixels the anchor covers.

Writes ``fidelity.csv``, ``fidelity.png`` (bars) and ``fidelity_samples.png`` (anchor | nearest fill |
reference | each model | ground truth for a few targets) to ``benchmarks/results/fidelity/`` and prints a
markdown table.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from worldfm_env._device import resolve_device
from worldfm_env.model import PanelCameras, load_checkpoint, make_generators
from worldfm_env.model.frame_model import FrameModel, auto_model_dtype
from worldfm_env.model.weights import default_weights_path
from worldfm_env.render.anchor_config import splat_radius_arg
from worldfm_env.render.fill import nearest_fill, pull_push_fill

__all__ = ["PSNR_CAP_DB", "evaluate_fidelity", "main", "nearest_fill", "psnr", "ssim"]

RESULTS = Path(__file__).resolve().parent / "results" / "fidelity"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PSNR_CAP_DB = 100.0
"""PSNR of identical images (zero MSE): the MSE is floored so that no PSNR exceeds this value."""
METHODS = ("anchor", "nearest_fill", "pull_push_fill", "teacher", "student_2step", "student_1step")


# ----------------------------------------------------------------------------------------------------------- metrics


def psnr(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    data_range: float = 255.0,
    max_db: float = PSNR_CAP_DB,
) -> torch.Tensor:
    """Per-image PSNR in dB of images (..., H, W, C) with values in [0, data_range] (uint8 or float).

    The MSE runs over all pixels and channels of each image, or over the pixels where ``mask`` (..., H, W) is
    True; an image with no selected pixel gives NaN. Zero MSE (identical images) gives ``max_db`` (100 dB): the
    MSE is floored at ``data_range**2 * 10**(-max_db / 10)``, so results are always finite apart from those NaNs.
    Returns a float64 tensor of the leading shape (...).
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.ndim < 3:
        raise ValueError(f"images must be (..., H, W, C), got {tuple(pred.shape)}")
    err = (pred.double() - target.double()).square()
    if mask is None:
        mse = err.mean(dim=(-3, -2, -1))
    else:
        if tuple(mask.shape) != tuple(pred.shape[:-1]):
            raise ValueError(f"mask must be {tuple(pred.shape[:-1])}, got {tuple(mask.shape)}")
        weight = mask.to(err.device, torch.float64)[..., None]
        count = weight.sum(dim=(-3, -2, -1)) * pred.shape[-1]
        mse = (err * weight).sum(dim=(-3, -2, -1)) / count  # 0 / 0 = NaN where nothing is selected
    floor = data_range**2 * 10.0 ** (-max_db / 10.0)
    return 10.0 * torch.log10(data_range**2 / mse.clamp_min(floor))


def _gaussian_kernel(size: int, sigma: float, device, dtype) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2.0
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 255.0,
    window: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """Per-image SSIM of images (..., H, W, C) with values in [0, data_range]; returns float64 of shape (...).

    Wang et al. (2004): local means, variances and covariance under a ``window`` x ``window`` Gaussian window of
    standard deviation ``sigma`` (separable), ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``, only window positions that fit
    inside the image ("valid"), computed per channel; the SSIM map is averaged over positions and channels (for RGB:
    the mean of the per-channel SSIMs). Identical images give 1. Runs in float64.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.ndim < 3:
        raise ValueError(f"images must be (..., H, W, C), got {tuple(pred.shape)}")
    H, W, C = pred.shape[-3:]
    if H < window or W < window:
        raise ValueError(f"ssim needs images of at least {window}x{window}, got {H}x{W}")
    lead = pred.shape[:-3]
    x = pred.reshape(-1, H, W, C).permute(0, 3, 1, 2).reshape(-1, 1, H, W).double()
    y = target.reshape(-1, H, W, C).permute(0, 3, 1, 2).reshape(-1, 1, H, W).double().to(x.device)
    g = _gaussian_kernel(window, sigma, x.device, x.dtype)

    def blur(v: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(v, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    return ssim_map.reshape(-1, C, *ssim_map.shape[-2:]).mean(dim=(1, 2, 3)).reshape(lead)


# ----------------------------------------------------------------------------------------------------------- models


def _load_model(spec, flag: str, prediction: str, device: torch.device, dtype: torch.dtype, resolution, cache: dict):
    """A frame model from a checkpoint path (or an already built model), checked for this benchmark."""
    if isinstance(spec, torch.nn.Module):
        model, name = spec.to(device=device, dtype=dtype).eval(), type(spec).__name__
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ValueError(f"{flag} {str(path)!r}: no such checkpoint file")
        key = str(path.resolve())
        if key not in cache:
            cache[key] = load_checkpoint(None, path, device=device, dtype=dtype).eval().requires_grad_(False)
        model, name = cache[key], path.name
    cfg = model.config
    if prediction != "any" and cfg.prediction != prediction:
        kinds = {"eps": "an eps-prediction (stage I/II teacher)", "v": "a v-prediction (stage III student)"}
        other = "--student2/--student1" if cfg.prediction == "v" else "--teacher"
        raise ValueError(
            f"{flag} needs {kinds[prediction]} checkpoint, but {name} predicts {cfg.prediction!r}; pass it as {other}"
        )
    if cfg.in_channels != 3:
        raise ValueError(f"{flag} {name}: a {cfg.in_channels}-channel latent model; this benchmark runs pixel models")
    if (cfg.input_size, cfg.input_size) != tuple(resolution):
        raise ValueError(
            f"{flag} {name}: the model was built for {cfg.input_size}x{cfg.input_size} images, the benchmark runs at "
            f"{resolution[0]}x{resolution[1]}; use --resolution {cfg.input_size}"
        )
    return model, name


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def _generate(method: dict, frames: dict, seeds: list[int], batch: int, device: torch.device) -> torch.Tensor:
    """All target frames of one generative method, uint8 (N, H, W, 3), in chunks of ``batch`` rows, through the
    frame-model object the env's renderer uses (the same conditions, sampler and decoding)."""
    frame_model = FrameModel(method["model"], name=method["weights"])
    N, H, W, _ = frames["anchor"].shape
    out = []
    for start in range(0, N, batch):
        sl = slice(start, start + batch)
        cameras = None
        if frame_model.needs_cameras:
            cameras = PanelCameras(frames["camera_c2w"][sl], frames["camera_K"][sl], (H, W))
        cond = frame_model.conditions(
            frames["anchor"][sl],
            frames["mask"][sl],
            frames["reference"][sl],
            frames["depth"][sl],
            cameras,
            layout_depth=frames["layout"][sl],
        )
        out.append(
            frame_model.generate(
                cond,
                generators=make_generators(seeds[sl], device),
                sampler=method["sampler"],
                steps=method["steps"],
            )
        )
    return torch.cat(out)


# ----------------------------------------------------------------------------------------------------------- data


def _clip_frames(
    num_clips: int, scenes, resolution, seed: int, batch: int, device: torch.device, splat_radius: int | str = 0
) -> dict:
    """Target views of ``num_clips`` test clips, flattened to frames (N = clips * targets)."""
    from worldfm_env.scenes.catalog import resolve_scenes
    from worldfm_env.training.data import ClipConfig, ClipGenerator

    spec = scenes if isinstance(scenes, str) else f"procedural:test:{int(scenes)}"
    # The layout depth goes to models that read it (refiner_layout); it changes nothing else in the clips.
    config = ClipConfig(resolution=tuple(resolution), splat_radius=splat_radius, layout_depth=True)
    generator = ClipGenerator(resolve_scenes(spec, device, tuple(resolution), config.hfov_deg), config, device)
    per_call = max(1, batch // config.targets)
    parts = []
    for start in range(0, num_clips, per_call):
        clip = generator.batch(min(per_call, num_clips - start), seed=seed, start_index=start)
        cameras = clip.panel_cameras()  # (B*T, 3, ...) target, anchor, selected reference
        parts.append(
            dict(
                anchor=clip.anchor_rgb.flatten(0, 1),
                mask=clip.anchor_mask.flatten(0, 1),
                depth=clip.anchor_depth.flatten(0, 1),
                layout=clip.target_layout.flatten(0, 1),
                reference=clip.reference_rgb.flatten(0, 1),
                target=clip.target_rgb.flatten(0, 1),
                camera_c2w=cameras.c2w,
                camera_K=cameras.K,
            )
        )
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _noise_seeds(seed: int, n: int, draw: int) -> list[int]:
    """Per-frame noise seeds of one pass (``draw`` 0: first generation, 1: the revisit), distinct across both."""
    base = int(seed) * 10_000_019
    return [base + 2 * i + draw for i in range(n)]


def _mean(values: torch.Tensor) -> float:
    """Mean over the finite entries (NaN when there is none)."""
    values = values[~torch.isnan(values)]
    return float(values.mean()) if values.numel() else float("nan")


# ----------------------------------------------------------------------------------------------------------- driver


def evaluate_fidelity(
    clips: int = 16,
    scenes: int | str = 8,
    resolution: int | tuple[int, int] = 64,
    seed: int = 0,
    teacher=None,
    teacher_steps: int = 20,
    student2=None,
    student1=None,
    device: str | torch.device = "auto",
    dtype: str = "auto",
    batch: int = 48,
    default_weights: bool = True,
    samples: int = 6,
    samples_out: dict | None = None,
    verbose: bool = True,
    splat_radius: int | str = 0,
) -> list[dict]:
    """Evaluate every method on the target views of ``clips`` test clips; return one row (dict) per method.

    Args:
        clips: clips to draw (each gives 12 target views).
        scenes: number of procedural test scenes (``procedural:test:<scenes>``) or a scene spec string.
        resolution: image size, an int (square) or (height, width).
        seed: seed of the clip stream and of the per-frame noise seeds.
        teacher, student2, student1: checkpoint paths (or built models) of a stage II teacher (eps or v; DDIM with
            ``teacher_steps`` steps) and of v-prediction students (2-step and 1-step distilled samplers); None skips.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``. dtype: model dtype, ``auto`` or a name in ``DTYPES``.
        batch: frames per model call (and about the frames per clip-generation call).
        default_weights: when no checkpoint is given, use the one shipped for the resolution if there is one.
        samples: targets kept for the sample grid (spread evenly over all targets).
        samples_out: a dict to fill with the sample images, column name -> uint8 (samples, H, W, 3) on the CPU, in
            grid order (anchor, nearest fill, pull-push fill, reference, each model, ground truth).
        verbose: print progress.
        splat_radius: anchor splat half-size (the env's ``splat_radius``): 0 = one pixel per point, as published,
            or ``"auto"``.

    Rows: ``method, psnr, ssim, psnr_covered, psnr_holes, revisit_psnr`` (None for the non-generative methods)
    ``, frames, seconds, device, coverage, dtype, steps, weights, resolution, splat_radius`` (``weights`` is a file
    name only; ``dtype``, ``steps`` and ``weights`` are empty strings for the non-generative methods).
    """
    say = print if verbose else (lambda *a, **k: None)
    dev = resolve_device(device)
    H, W = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
    if dtype == "auto":
        model_dtype = auto_model_dtype(dev)
    elif dtype in DTYPES:
        model_dtype = DTYPES[dtype]
    else:
        raise ValueError(f"dtype={dtype!r} is not valid; choose 'auto' or one of {sorted(DTYPES)}")
    if clips <= 0 or batch <= 0:
        raise ValueError(f"clips and batch must be positive, got clips={clips}, batch={batch}")
    if teacher_steps <= 0:
        raise ValueError(f"teacher_steps must be positive, got {teacher_steps}")

    if teacher is None and student2 is None and student1 is None and default_weights:
        shipped = {k: default_weights_path(H, W, k) for k in (2, 1)}
        if shipped[2] is None:
            say(f"no checkpoint given and none shipped for {H}x{W}: only the anchor and fill rows")
        else:
            say(f"no checkpoint given: using the shipped {shipped[2].name} and {shipped[1].name}")
            student2, student1 = shipped[2], shipped[1]

    cache: dict = {}
    methods = []
    for name, spec, flag, prediction, sampler, steps in (
        ("teacher", teacher, "--teacher", "any", "ddim", teacher_steps),
        ("student_2step", student2, "--student2", "v", "distilled", 2),
        ("student_1step", student1, "--student1", "v", "distilled", 1),
    ):
        if spec is not None:
            model, weights = _load_model(spec, flag, prediction, dev, model_dtype, (H, W), cache)
            methods.append(
                dict(name=name, model=model, weights=weights, sampler=sampler, steps=steps, dtype=model_dtype)
            )

    start = time.perf_counter()
    frames = _clip_frames(clips, scenes, (H, W), seed, batch, dev, splat_radius)
    N = frames["anchor"].shape[0]
    mask, target = frames["mask"], frames["target"]
    coverage = float(mask.float().mean())
    elapsed = time.perf_counter() - start
    say(f"{N} target views from {clips} clips at {H}x{W} in {elapsed:.1f} s (anchor coverage {coverage:.3f})")

    def row(name: str, images: torch.Tensor, seconds: float, revisit=None, **extra) -> dict:
        return dict(
            method=name,
            psnr=round(_mean(psnr(images, target)), 3),
            ssim=round(_mean(ssim(images, target)), 4),
            psnr_covered=round(_mean(psnr(images, target, mask)), 3),
            psnr_holes=round(_mean(psnr(images, target, ~mask)), 3),
            revisit_psnr=None if revisit is None else round(revisit, 3),
            frames=N,
            seconds=round(seconds, 3),
            device=str(dev),
            coverage=round(coverage, 4),
            dtype=extra.get("dtype", ""),
            steps=extra.get("steps", ""),
            weights=extra.get("weights", ""),
            resolution=f"{H}x{W}",
            splat_radius=splat_radius,
        )

    pick = torch.linspace(0, N - 1, min(samples, N), device=dev).round().long() if samples > 0 else None
    shown = {"anchor": frames["anchor"], "nearest fill": None, "pull-push fill": None, "reference": frames["reference"]}

    rows = [row("anchor", frames["anchor"], 0.0)]
    for name, fill in (("nearest_fill", nearest_fill), ("pull_push_fill", pull_push_fill)):
        _sync(dev)
        t0 = time.perf_counter()
        filled = fill(frames["anchor"], mask)
        _sync(dev)
        rows.append(row(name, filled, time.perf_counter() - t0))
        shown[name.replace("_fill", " fill").replace("_", "-")] = filled

    first_seeds, revisit_seeds = _noise_seeds(seed, N, 0), _noise_seeds(seed, N, 1)
    for method in methods:
        _sync(dev)
        t0 = time.perf_counter()
        images = _generate(method, frames, first_seeds, batch, dev)
        _sync(dev)
        seconds = time.perf_counter() - t0
        again = _generate(method, frames, revisit_seeds, batch, dev)
        revisit = _mean(psnr(images, again))
        rows.append(
            row(
                method["name"],
                images,
                seconds,
                revisit,
                dtype=str(method["dtype"]).replace("torch.", ""),
                steps=method["steps"],
                weights=method["weights"],
            )
        )
        shown[method["name"]] = images
        say(f"{method['name']}: {N} frames in {seconds:.1f} s")
    shown["ground truth"] = target
    if samples_out is not None and pick is not None:
        samples_out.update({k: v[pick].cpu() for k, v in shown.items()})
    for r in rows:
        say(f"  {r['method']:14s} psnr {r['psnr']:7.3f} dB  ssim {r['ssim']:.4f}")
    return rows


# ----------------------------------------------------------------------------------------------------------- output


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Two panels: PSNR (all pixels, covered, holes) and SSIM, one group of bars per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["method"] for r in rows]
    fig, (ax_p, ax_s) = plt.subplots(1, 2, figsize=(max(8.0, 2.2 * len(rows) + 4), 4.5))
    width = 0.27
    top = 0.0
    for k, (key, label) in enumerate((("psnr", "all pixels"), ("psnr_covered", "covered"), ("psnr_holes", "holes"))):
        values = [r[key] if r[key] is not None and math.isfinite(r[key]) else 0.0 for r in rows]
        top = max(top, *values)
        bars = ax_p.bar([i + (k - 1) * width for i in range(len(rows))], values, width, label=label, color=f"C{k}")
        ax_p.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    ax_p.set_xticks(range(len(rows)), names, rotation=15)
    ax_p.set_ylabel("PSNR (dB), mean over target views")
    ax_p.set_title("PSNR")
    ax_p.set_ylim(0, 1.25 * top + 1.0)  # room for the legend above the bars
    ax_p.legend(fontsize=8, loc="upper center", ncol=3)
    ax_p.grid(True, axis="y", alpha=0.3)
    bars = ax_s.bar(range(len(rows)), [r["ssim"] for r in rows], 0.6, color="C3")
    ax_s.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    ax_s.set_xticks(range(len(rows)), names, rotation=15)
    ax_s.set_ylabel("SSIM (11x11 Gaussian, channel mean)")
    ax_s.set_title("SSIM")
    ax_s.set_ylim(0, 1.05)
    ax_s.grid(True, axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_samples(images: dict, path: Path) -> None:
    """A grid: one row per target, one column per image kind (``images``: name -> uint8 (n, H, W, 3))."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(images)
    n = next(iter(images.values())).shape[0]
    fig, axes = plt.subplots(n, len(names), figsize=(1.6 * len(names), 1.6 * n + 0.3), squeeze=False)
    for i in range(n):
        for j, name in enumerate(names):
            ax = axes[i][j]
            ax.imshow(images[name][i].numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name.replace("_", " "), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(value, spec: str) -> str:
    return "" if value is None or value == "" else format(value, spec)


def main(argv: list[str] | None = None) -> list[dict]:
    """Evaluate, write the CSV and both plots, print the table; return the rows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=16, help="test clips (12 target views each)")
    parser.add_argument("--scenes", type=int, default=8, help="procedural test scenes")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--teacher", default=None, help="stage II checkpoint (eps or v), sampled with DDIM")
    parser.add_argument("--teacher-steps", type=int, default=20)
    parser.add_argument("--student2", default=None, help="v-prediction student checkpoint, 2-step sampler")
    parser.add_argument("--student1", default=None, help="v-prediction student checkpoint, 1-step sampler")
    parser.add_argument("--no-default-weights", action="store_true", help="do not fall back to the shipped model")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="auto", choices=["auto", *DTYPES])
    parser.add_argument("--batch", type=int, default=48, help="frames per model call")
    parser.add_argument("--samples", type=int, default=6, help="targets in the sample grid")
    parser.add_argument(
        "--splat-radius",
        type=splat_radius_arg,
        default=0,
        help="anchor splat half-size: 0 (one pixel per point, as published) to 8, or auto (the env's splat_radius)",
    )
    parser.add_argument("--out", default=str(RESULTS), help="output folder")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    images: dict = {}
    rows = evaluate_fidelity(
        clips=args.clips,
        scenes=args.scenes,
        resolution=args.resolution,
        seed=args.seed,
        teacher=args.teacher,
        teacher_steps=args.teacher_steps,
        student2=args.student2,
        student1=args.student1,
        device=args.device,
        dtype=args.dtype,
        batch=args.batch,
        default_weights=not args.no_default_weights,
        samples=args.samples,
        samples_out=images,
        splat_radius=args.splat_radius,
    )
    wall = time.perf_counter() - start

    with open(out / "fidelity.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    r0 = rows[0]
    budget = (
        f"{r0['frames']} target views of {args.clips} clips on procedural:test:{args.scenes}, {r0['resolution']}, "
        f"seed {args.seed}, anchor coverage {r0['coverage']:.2f}"
        f"{'' if args.splat_radius == 0 else f' (splat_radius={args.splat_radius})'}; {r0['device']}"
    )
    plot(rows, out / "fidelity.png", f"Frame fidelity against the ray-cast ground truth\n{budget}")
    written = [out / "fidelity.csv", out / "fidelity.png"]
    if images:
        plot_samples(images, out / "fidelity_samples.png")
        written.append(out / "fidelity_samples.png")

    print()
    print("| method | PSNR dB | SSIM | PSNR covered | PSNR holes | revisit PSNR | frames | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['method']} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['psnr_covered']:.2f} | {r['psnr_holes']:.2f} "
            f"| {_fmt(r['revisit_psnr'], '.2f')} | {r['frames']} | {r['seconds']:.2f} |"
        )
    print()
    print(f"Budget: {budget}; {wall:.0f} s in all. PSNR capped at {PSNR_CAP_DB:.0f} dB; revisit = the same target")
    print("generated twice with other noise seeds (PSNR between the two).")
    if len(rows) == 2:
        print("No frame model evaluated (give --teacher / --student2 / --student1, or ship a checkpoint).")
    print("wrote " + ", ".join(str(p) for p in written))
    return rows


if __name__ == "__main__":
    main()
