"""The ``worldfm-env`` command line: ``demo``, ``rollout``, ``render``, ``train``, ``info``."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main", "build_parser"]


def _progress(iterable, total: int, desc: str, enabled: bool = True):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=not enabled, leave=False)


def _write_video(path: Path, frames: list[np.ndarray], fps: int) -> None:
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    # Even sizes keep every H.264 player happy; scale small frames up for viewing.
    writer = imageio.get_writer(str(path), fps=fps, codec="libx264", quality=8, macro_block_size=1)
    for frame in frames:
        writer.append_data(frame)
    writer.close()


def _upscale(frame: np.ndarray, factor: int) -> np.ndarray:
    return frame.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else frame


def _contact_sheet(rows: list[np.ndarray], columns: int = 8) -> np.ndarray:
    """Tile frames (each H x W x 3) into a grid with a 2-pixel white gutter."""
    h, w = rows[0].shape[:2]
    n = len(rows)
    columns = min(columns, n)
    lines = (n + columns - 1) // columns
    sheet = np.full((lines * (h + 2) + 2, columns * (w + 2) + 2, 3), 255, dtype=np.uint8)
    for i, frame in enumerate(rows):
        r, c = divmod(i, columns)
        sheet[2 + r * (h + 2) : 2 + r * (h + 2) + h, 2 + c * (w + 2) : 2 + c * (w + 2) + w] = frame
    return sheet


def cmd_demo(args: argparse.Namespace) -> int:
    """A scripted agent walks to a PointNav goal in a test scene; anchor | worldfm | oracle side by side.

    The worldfm column appears when the package ships frame-model weights for the resolution.
    """
    import imageio.v2 as imageio

    from worldfm_env.envs.vector import WorldFMVectorEnv
    from worldfm_env.model.weights import default_weights_path
    from worldfm_env.policies import ShortestPathPolicy

    out = Path(args.out)
    common = dict(
        task="pointnav",
        scenes=args.scenes,
        resolution=args.resolution,
        device=args.device,
        array_type="torch",
        max_episode_steps=args.steps,
    )
    print(f"worldfm-env demo: building scene {args.scenes} at {args.resolution}x{args.resolution} ...", flush=True)
    renderers = ["anchor", "oracle"]
    if default_weights_path(args.resolution, args.resolution, 2) is not None:
        renderers.insert(1, "worldfm")
    else:
        print(f"(no frame-model weights shipped for {args.resolution}x{args.resolution}: no worldfm column)")
    envs = [WorldFMVectorEnv(num_envs=1, renderer=name, **common) for name in renderers]
    policy = ShortestPathPolicy(envs[0])
    observations = [env.reset(seed=args.seed)[0] for env in envs]
    frames, sheet = [], []
    scale = max(1, 256 // args.resolution)
    info = {}
    for step in _progress(range(args.steps), args.steps, "demo"):
        row = np.concatenate([obs["rgb"][0].cpu().numpy() for obs in observations], axis=1)
        frames.append(_upscale(row, scale))
        if step % 4 == 0:
            sheet.append(row)
        action = policy()
        results = [env.step(action) for env in envs]
        observations = [r[0] for r in results]
        _, _, term, trunc, info = results[0]
        if bool(term[0]) or bool(trunc[0]):
            break
    video = out / "demo.mp4"
    png = out / "demo_contact_sheet.png"
    _write_video(video, frames, fps=10)
    imageio.imwrite(png, _contact_sheet(sheet))
    print(
        f"episode: {len(frames)} steps, success={bool(info['success'][0])}, "
        f"spl={float(info['spl'][0]):.3f}, collisions={int(info['collisions'][0])}"
    )
    print(f"wrote {video} ({' | '.join(renderers)})")
    print(f"wrote {png}")
    return 0


def cmd_rollout(args: argparse.Namespace) -> int:
    """Step N envs with a random or scripted policy; report env-steps/s; optionally save env 0's video."""
    import torch

    from worldfm_env.envs.vector import WorldFMVectorEnv
    from worldfm_env.policies import RandomPolicy, ShortestPathPolicy

    task = {"WorldFM/PointNav-v0": "pointnav", "WorldFM/Explore-v0": "explore"}.get(args.env_id)
    if task is None:
        print(
            f"error: unknown env id {args.env_id!r}; choose WorldFM/PointNav-v0 or WorldFM/Explore-v0", file=sys.stderr
        )
        return 2
    env = WorldFMVectorEnv(
        num_envs=args.num_envs,
        task=task,
        renderer=args.renderer,
        scenes=args.scenes,
        resolution=args.resolution,
        device=args.device,
        action_type="discrete",
        **(dict(weights=args.weights, vae=args.vae) if args.renderer == "worldfm" else {}),
    )
    policy = ShortestPathPolicy(env) if args.policy == "scripted" else RandomPolicy(env, seed=args.seed)
    obs, _ = env.reset(seed=args.seed)
    frames = []
    episodes = successes = 0
    start = time.perf_counter()
    for _ in _progress(range(args.steps), args.steps, "rollout"):
        if args.video:
            frames.append(obs["rgb"][0].cpu().numpy())
        obs, _, term, trunc, info = env.step(policy())
        done = term | trunc
        episodes += int(done.sum())
        successes += int((info["success"] & done).sum())
    if env.device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    rate = args.steps * args.num_envs / elapsed
    print(
        f"{args.env_id} renderer={args.renderer} num_envs={args.num_envs} device={env.device}: "
        f"{rate:,.0f} env-steps/s, {episodes} episodes ended, success rate "
        f"{(successes / episodes if episodes else float('nan')):.2f}"
    )
    if args.video:
        _write_video(Path(args.video), [_upscale(f, max(1, 256 // args.resolution)) for f in frames], fps=10)
        print(f"wrote {args.video}")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    """Render every pose of an official meta.json trajectory to an MP4 (optionally anchor | generated)."""
    from worldfm_env._device import resolve_device
    from worldfm_env.renderers.trajectory import render_trajectory, trajectory_from_scene
    from worldfm_env.scenes.sources.meta_json import load_meta_json_scene

    device = resolve_device(args.device)
    H = W = args.resolution
    scene = load_meta_json_scene(args.meta, depth=args.depth, device=device, resolution=(H, W))
    c2w, K = trajectory_from_scene(scene, H, W)
    options = {}
    if args.renderer == "worldfm":
        options = dict(weights=args.weights, vae=args.vae, sampler_steps=args.sampler_steps)
    frames = []
    stream = render_trajectory(
        scene, c2w, K, H, W, renderer=args.renderer, batch_size=args.batch_size, seed=args.seed, **options
    )
    for anchor, frame in _progress(stream, c2w.shape[0], "render"):
        pair = [anchor, frame] if args.side_by_side else [frame]
        frames.append(_upscale(np.concatenate([f.cpu().numpy() for f in pair], axis=1), max(1, 256 // H)))
    out = Path(args.out)
    _write_video(out, frames, fps=args.fps)
    print(f"wrote {out}: {len(frames)} frames ({args.renderer}{', anchor | generated' if args.side_by_side else ''})")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train a frame-model stage; options go to ``worldfm_env.training.stages`` (see ``--help`` there)."""
    if args.stage == "stage3":
        from worldfm_env.training.distill import main as distill_main

        return distill_main(args.options)
    from worldfm_env.training.stages import main as train_main

    return train_main(["--stage", args.stage, *args.options])


def cmd_info(args: argparse.Namespace) -> int:
    """Versions and devices."""
    import gymnasium
    import torch

    import worldfm_env
    from worldfm_env._device import init_warp

    wp = init_warp()
    info = {
        "worldfm_env": worldfm_env.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "warp": wp.__version__,
        "gymnasium": gymnasium.__version__,
        "numpy": np.__version__,
        "cuda_available": torch.cuda.is_available(),
        "torch_devices": ["cpu"]
        + [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())],
        "warp_devices": [str(d) for d in wp.get_devices()],
        "env_ids": sorted(worldfm_env.ENV_IDS),
    }
    print(json.dumps(info, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``worldfm-env``."""
    parser = argparse.ArgumentParser(prog="worldfm-env", description="Generative-world environments for embodied AI.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", help="scripted PointNav episode in a test scene: MP4 + contact sheet (anchor | worldfm | oracle)"
    )
    demo.add_argument("--out", default="worldfm_demo", help="output folder (default: ./worldfm_demo)")
    demo.add_argument("--scenes", default="procedural:test:1", help="scene spec (default: procedural:test:1)")
    demo.add_argument(
        "--resolution", type=int, default=64, help="frame size in pixels (default: 64, the shipped frame model's)"
    )
    demo.add_argument("--steps", type=int, default=200, help="maximum steps (default: 200)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--device", default="auto")
    demo.set_defaults(func=cmd_demo)

    rollout = sub.add_parser("rollout", help="step N envs with a policy and report env-steps/s")
    rollout.add_argument("env_id", nargs="?", default="WorldFM/PointNav-v0")
    rollout.add_argument(
        "--renderer",
        default="worldfm",
        choices=["worldfm", "anchor", "oracle"],
        help="observation renderer (anchor: the raw splat, fastest)",
    )
    rollout.add_argument("--num-envs", type=int, default=16)
    rollout.add_argument("--steps", type=int, default=100)
    rollout.add_argument("--policy", default="random", choices=["random", "scripted"])
    rollout.add_argument("--scenes", default="procedural:train")
    rollout.add_argument("--resolution", type=int, default=64)
    rollout.add_argument("--seed", type=int, default=0)
    rollout.add_argument("--device", default="auto")
    rollout.add_argument("--video", default=None, help="write env 0's frames to this MP4")
    rollout.add_argument(
        "--weights", default=None, help="frame-model checkpoint path or shipped model name (renderer worldfm)"
    )
    rollout.add_argument("--vae", default=None, help="diffusers AutoencoderKL folder for latent models")
    rollout.set_defaults(func=cmd_rollout)

    render = sub.add_parser("render", help="render an official meta.json camera trajectory to an MP4")
    render.add_argument("--meta", required=True, help="meta.json (image, K, c2w) or its folder")
    render.add_argument("--depth", default=None, help="depth of the image (.npy, or 16-bit PNG in millimetres)")
    render.add_argument(
        "--weights", default=None, help="frame-model checkpoint path or shipped model name (renderer worldfm)"
    )
    render.add_argument("--vae", default=None, help="diffusers AutoencoderKL folder for latent models")
    render.add_argument("--renderer", default="worldfm", choices=["worldfm", "anchor"])
    render.add_argument("--resolution", type=int, default=64)
    render.add_argument(
        "--sampler-steps",
        type=int,
        default=None,
        choices=[1, 2],
        help="distilled sampler steps (default: the checkpoint's recommendation, else 2)",
    )
    render.add_argument("--batch-size", type=int, default=8)
    render.add_argument("--side-by-side", action="store_true", help="anchor | generated in each frame")
    render.add_argument("--fps", type=int, default=10)
    render.add_argument("--seed", type=int, default=0)
    render.add_argument("--device", default="auto")
    render.add_argument("--out", default="trajectory.mp4")
    render.set_defaults(func=cmd_render)

    train = sub.add_parser(
        "train",
        help="train the frame model: stage1 (image prior), stage2 (frame model), stage3 (DMD distillation)",
        description="stage1/stage2 options are TrainConfig fields (e.g. --steps 2000 --out runs/s2 --init "
        "runs/s1/model.safetensors, or --config run.json; list: python -m worldfm_env.training.stages --help); "
        "stage3 options are DistillConfig fields (python -m worldfm_env.training.distill --help).",
    )
    train.add_argument("stage", choices=["stage1", "stage2", "stage3"])
    train.add_argument("options", nargs=argparse.REMAINDER, help="TrainConfig options")
    train.set_defaults(func=cmd_train)

    info = sub.add_parser("info", help="versions and devices")
    info.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``worldfm-env`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
