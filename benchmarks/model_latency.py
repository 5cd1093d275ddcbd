"""Frame-model latency per stage and frames/s against batch size, beside a batch-1 loop in the published style.

    python benchmarks/model_latency.py                                  # config "s", 64x64, CPU (+ CUDA if present)
    python benchmarks/model_latency.py --config xl --resolution 512 --devices cuda --dtype bfloat16

Stages of one batched render: splat (anchor), selection (reference vote), encode (anchor through the
autoencoder), sampler step 1 (t=999) and step 2 (t=200) (one model forward each), decode. The
"published loop" renders the same frames one at a time and re-encodes the reference every frame, as
the released inference script does. Weights are random: this measures compute, not quality. With no
``--vae`` folder a latent model's encode/decode are skipped (reported as 0) and the anchor/reference
enter as random latents of the right shape.

Writes ``benchmarks/results/model_latency.csv`` and ``model_latency.png`` and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import torch

from worldfm_env.model import build_model, make_generators
from worldfm_env.model.autoencoders import DiffusersAutoencoderKL, IdentityAutoencoder
from worldfm_env.model.frame_model import auto_model_dtype, images_to_model, model_to_images, panel_depth
from worldfm_env.model.samplers import iddpm_linear_schedule
from worldfm_env.renderers.pipeline import ObservationPipeline
from worldfm_env.scenes.catalog import resolve_scenes
from worldfm_env.scenes.pool import ScenePool

RESULTS = Path(__file__).resolve().parent / "results"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Timer:
    """Accumulates per-stage wall times (device-synchronised)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.times: dict[str, float] = {}

    def __call__(self, name: str, fn):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        out = fn()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - start
        return out


def setup(args, device: torch.device):
    """Scene pool, model, autoencoder."""
    H = W = args.resolution
    pool = ScenePool(resolve_scenes("procedural:test:1", device, (H, W), 90.0), device)
    dtype = DTYPES[args.dtype] if args.dtype != "auto" else auto_model_dtype(device)
    if args.vae:
        ae = DiffusersAutoencoderKL.from_folder(args.vae, device=device, dtype=dtype)
    else:
        ae = IdentityAutoencoder()
    with torch.device(device):
        model = build_model(args.config)
    model = model.to(dtype).eval().requires_grad_(False)
    latent_size = model.config.input_size
    if not args.vae and latent_size * 1 != H:
        ae = None  # a latent model without its VAE: random latents stand in for the encoded images
    return pool, model, ae, dtype, latent_size


@torch.no_grad()
def batched_render(pool, model, ae, dtype, latent_size, B, device, timer, schedule, poses, K):
    """One batched render of B frames, timed per stage."""
    H = W = poses.H
    scene_index = torch.zeros(B, dtype=torch.int32, device=device)
    anchor = timer("splat", lambda: poses.splatter.render(scene_index, poses.c2w, K))
    ref_idx = timer("selection", lambda: poses.selector.select(anchor.depth, scene_index, poses.c2w, K))
    C = model.config.in_channels
    if ae is not None:
        a_lat = timer("encode", lambda: ae.encode(images_to_model(anchor.rgb, dtype)))
        r_lat = poses.bank_latents[ref_idx]
    else:
        a_lat = torch.randn(B, C, latent_size, latent_size, device=device, dtype=dtype)
        r_lat = torch.randn(B, C, latent_size, latent_size, device=device, dtype=dtype)
    # Models with a depth-reading refiner get the anchor's depth at their panel size.
    depth = panel_depth(anchor.depth, a_lat.shape[-2:]) if model.config.refiner_depth else None
    gens = make_generators(range(B), device)
    z = torch.stack([torch.randn(a_lat.shape[1:], generator=g, device=device) for g in gens]).to(dtype)
    x0 = z
    for k, t in enumerate((999, 200)):
        a, s = schedule.coefficients(t, B, device)
        if k > 0:
            z = (a * x0.float() + s * torch.randn_like(x0, dtype=torch.float32)).to(dtype)
        tt = torch.full((B,), t, device=device, dtype=torch.long)
        out = timer(f"step{k + 1}", lambda z=z, tt=tt: model(z, tt, a_lat, r_lat, anchor_depth=depth))
        x0 = a * z.float() - s * out[:, :C].float()
    if ae is not None:
        timer("decode", lambda: model_to_images(ae.decode(x0.to(dtype))))
    else:
        timer("decode", lambda: None)
    _ = H, W


@torch.no_grad()
def published_loop(pool, model, ae, dtype, latent_size, B, device, timer, schedule, poses, K):
    """The same B frames one by one, re-encoding the reference each frame (no bank cache, no batching)."""
    C = model.config.in_channels
    scene_index = torch.zeros(1, dtype=torch.int32, device=device)
    for i in range(B):
        c2w = poses.c2w[i : i + 1]
        anchor = poses.splatter1.render(scene_index, c2w, K[i : i + 1])
        ref_idx = poses.selector1.select(anchor.depth, scene_index, c2w, K[i : i + 1])
        if ae is not None:
            a_lat = ae.encode(images_to_model(anchor.rgb, dtype))
            r_lat = ae.encode(images_to_model(pool.bank_images[ref_idx], dtype))
        else:
            a_lat = torch.randn(1, C, latent_size, latent_size, device=device, dtype=dtype)
            r_lat = torch.randn(1, C, latent_size, latent_size, device=device, dtype=dtype)
        depth = panel_depth(anchor.depth, a_lat.shape[-2:]) if model.config.refiner_depth else None
        z = torch.randn_like(a_lat)
        x0 = z
        for k, t in enumerate((999, 200)):
            a, s = schedule.coefficients(t, 1, device)
            if k > 0:
                z = (a * x0.float() + s * torch.randn_like(x0, dtype=torch.float32)).to(dtype)
            tt = torch.full((1,), t, device=device, dtype=torch.long)
            out = model(z, tt, a_lat, r_lat, anchor_depth=depth)
            x0 = a * z.float() - s * out[:, :C].float()
        if ae is not None:
            model_to_images(ae.decode(x0.to(dtype)))
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Poses:
    """B camera poses spread over the scene's bank, with the splat and vote of observation pipelines sized for them."""

    def __init__(self, pool, B, H, W, ae, dtype, device):
        bank = pool.scenes[0].bank
        idx = torch.linspace(0, bank.num_views - 1, B).round().long().to(device)
        jitter = torch.zeros(B, 4, 4, device=device)
        jitter[:, :3, 3] = 0.05 * torch.randn(B, 3, generator=torch.Generator().manual_seed(0)).to(device)
        self.c2w = (bank.c2w[idx] + jitter).contiguous()
        self.H = H
        # The env's observation pipeline (its anchor settings); the benchmark times its splat and vote apart.
        batched = ObservationPipeline(pool, B, H, W, renderer="anchor", with_anchor=True)
        single = ObservationPipeline(pool, 1, H, W, renderer="anchor", with_anchor=True)
        self.splatter, self.selector = batched.splatter, batched.selector
        self.splatter1, self.selector1 = single.splatter, single.selector
        if ae is not None:
            self.bank_latents = torch.cat(
                [
                    ae.encode(images_to_model(pool.bank_images[i : i + 64], dtype))
                    for i in range(0, len(pool.bank_images), 64)
                ]
            )


def main(argv: list[str] | None = None) -> None:
    """Run the grid, write CSV + plot, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="s")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--devices", nargs="+", default=None)
    parser.add_argument("--dtype", default="auto", choices=["auto", *DTYPES])
    parser.add_argument("--vae", default=None, help="diffusers AutoencoderKL folder (latent models)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    schedule = iddpm_linear_schedule()
    rows = []
    for dev_name in devices:
        device = torch.device(dev_name)
        pool, model, ae, dtype, latent_size = setup(args, device)
        machine = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        H = W = args.resolution
        for B in args.batch_sizes:
            poses = Poses(pool, B, H, W, ae, dtype, device)
            K = pool.scenes[0].bank.K[:1].expand(B, 3, 3).contiguous()
            batched_render(pool, model, ae, dtype, latent_size, B, device, Timer(device), schedule, poses, K)  # warm-up
            runs = []
            for _ in range(args.repeats):
                timer = Timer(device)
                batched_render(pool, model, ae, dtype, latent_size, B, device, timer, schedule, poses, K)
                runs.append(timer.times)
            stages = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            total = sum(stages.values())
            published = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                published_loop(pool, model, ae, dtype, latent_size, B, device, None, schedule, poses, K)
                published.append(time.perf_counter() - start)
            pub = statistics.median(published)
            row = dict(
                device=machine,
                config=args.config,
                resolution=H,
                dtype=str(dtype).replace("torch.", ""),
                batch=B,
                **{f"{k}_ms": round(v * 1000, 2) for k, v in stages.items()},
                total_ms=round(total * 1000, 2),
                frames_per_s=round(B / total, 2),
                published_loop_frames_per_s=round(B / pub, 2),
            )
            rows.append(row)
            print(
                f"{machine} {args.config} {H}px batch {B:4d}: {B / total:8.1f} frames/s batched "
                f"({total * 1000:.1f} ms), published-style loop {B / pub:8.1f} frames/s",
                flush=True,
            )

    with open(out / "model_latency.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for machine in sorted({r["device"] for r in rows}):
        sel = [r for r in rows if r["device"] == machine]
        ax.plot([r["batch"] for r in sel], [r["frames_per_s"] for r in sel], "-o", label=f"batched ({machine})")
        ax.plot(
            [r["batch"] for r in sel],
            [r["published_loop_frames_per_s"] for r in sel],
            "--s",
            label=f"published-style batch-1 loop ({machine})",
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("frames per batch")
    ax.set_ylabel("frames / s")
    ax.set_title(f"WorldFM frame model '{args.config}' at {args.resolution}x{args.resolution} (random weights)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "model_latency.png", dpi=120)

    print()
    stage_names = [k[:-3] for k in rows[0] if k.endswith("_ms") and k != "total_ms"]
    print(
        "| device | batch | " + " | ".join(f"{s} ms" for s in stage_names) + " | frames/s | published loop frames/s |"
    )
    print("|---|---:|" + "---:|" * (len(stage_names) + 2))
    for r in rows:
        cells = " | ".join(f"{r[s + '_ms']:.1f}" for s in stage_names)
        fps, pub = r["frames_per_s"], r["published_loop_frames_per_s"]
        print(f"| {r['device']} | {r['batch']} | {cells} | {fps:.1f} | {pub:.1f} |")
    print(f"wrote {out / 'model_latency.csv'} and {out / 'model_latency.png'}")


if __name__ == "__main__":
    main()
