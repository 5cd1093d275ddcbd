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


def cmd_demo(args: argparse.Namespace) -> int:
    """A scripted agent walks to a PointNav goal in a test scene; anchor | generated | ground truth side by side.

    The generated (worldfm) column appears when the package ships frame-model weights for the resolution.
    Writes ``demo.mp4`` (with a top-down map) and ``demo_contact_sheet.png`` (labelled rows) under ``--out``.
    """
    from tqdm.auto import tqdm

    from worldfm_env.demo import run_demo, write_demo

    for name in ("steps", "scale", "fps", "rows"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(args, name)}")
    print(f"worldfm-env demo: building scene {args.scenes} at {args.resolution}x{args.resolution} ...", flush=True)
    episode, scene = run_demo(
        scenes=args.scenes,
        resolution=args.resolution,
        max_steps=args.steps,
        seed=args.seed,
        device=args.device,
        progress=lambda **kw: tqdm(leave=True, **kw),  # the bar stays, ending at the steps taken
    )
    if "worldfm" in episode.missing:
        print(f"(no frame-model weights shipped for {args.resolution}x{args.resolution}: no generated column)")
    video, png = write_demo(
        Path(args.out),
        episode,
        scene,
        scale=args.scale,
        fps=args.fps,
        rows=args.rows,
        progress=lambda it, **kw: tqdm(it, leave=False, **kw),
    )
    print(
        f"episode: {episode.steps} steps, success={episode.success}, spl={episode.spl:.3f}, "
        f"collisions={episode.collisions}, final goal distance {episode.distances[-1]:.2f} m"
    )
    print(f"wrote {video} ({' | '.join(episode.renderers)} | top-down map)")
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
        memory=args.memory,
        capture=args.capture,
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
        scene,
        c2w,
        K,
        H,
        W,
        renderer=args.renderer,
        batch_size=args.batch_size,
        seed=args.seed,
        memory=args.memory,
        **options,
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
    prog = f"worldfm-env train {args.stage}"
    if args.stage == "stage3":
        from worldfm_env.training.distill import main as distill_main

        return distill_main(args.options, prog=prog)
    from worldfm_env.training.stages import main as train_main

    return train_main(["--stage", args.stage, *args.options], prog=prog)


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


def cmd_view(args: argparse.Namespace) -> int:
    """Serve the keyboard-driven viewer page on --host:--port until Ctrl+C (see docs/viewer.md)."""
    try:
        from worldfm_env.viewer.server import serve
    except ImportError as err:
        print(
            f"error: worldfm-env view needs the viewer extra ({err}): pip install 'worldfm-env[viewer]'",
            file=sys.stderr,
        )
        return 2
    env_options = {"capture": args.capture} if args.capture is not None else {}
    return serve(
        host=args.host,
        port=args.port,
        scenes=args.scenes,
        seed=args.seed,
        renderer=args.renderer,
        memory=args.memory,
        task=args.task,
        resolution=args.resolution,
        device=args.device,
        weights=args.weights,
        policy=args.policy,
        record_dir=args.record_dir,
        fps=args.fps,
        env_options=env_options,
    )


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default after its help, unless the help already says it ("(default: ...)")."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if "(default" in help_text or action.default is None or action.default is False:
            return help_text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``worldfm-env``."""
    parser = argparse.ArgumentParser(
        prog="worldfm-env",
        description="Generative-world environments for embodied AI. Run 'worldfm-env COMMAND --help' for a command's "
        "options.",
        formatter_class=HelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="a scripted agent walks to a PointNav goal in a held-out scene: a labelled contact sheet and an MP4 "
        "(anchor | generated | ground truth, with a top-down map)",
        description="A scripted agent (shortest path on the navigation grid) walks to a PointNav goal in a "
        "procedural test scene. Writes demo.mp4 (anchor | generated | ground truth and a top-down map of the "
        "agent's path, the goal and the scene's point cloud) and demo_contact_sheet.png (one labelled row every few "
        "steps) under --out. The generated column needs frame-model weights shipped for --resolution.",
        formatter_class=HelpFormatter,
    )
    demo.add_argument("--out", default="worldfm_demo", help="output folder")
    demo.add_argument("--scenes", default="procedural:test:1", help="scene spec (see the scenes env kwarg)")
    demo.add_argument("--resolution", type=int, default=64, help="frame size in pixels (64: the shipped model's)")
    demo.add_argument("--steps", type=int, default=200, help="most steps; the episode usually ends earlier")
    demo.add_argument("--seed", type=int, default=0, help="episode seed (picks the start and the goal)")
    demo.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N")
    demo.add_argument("--scale", type=int, default=4, help="video upscaling factor of each panel (nearest pixel)")
    demo.add_argument("--fps", type=int, default=3, help="frames per second of the video")
    demo.add_argument("--rows", type=int, default=6, help="most rows of the contact sheet (evenly spaced steps)")
    demo.set_defaults(func=cmd_demo)

    rollout = sub.add_parser(
        "rollout",
        help="step N envs with a random or scripted policy and report env-steps/s",
        description="Step --num-envs batched envs for --steps steps with a random or scripted (shortest-path) "
        "policy; prints env-steps/s, episodes ended and the success rate; optionally writes env 0's frames to an MP4.",
        formatter_class=HelpFormatter,
    )
    rollout.add_argument(
        "env_id", nargs="?", default="WorldFM/PointNav-v0", help="WorldFM/PointNav-v0 or WorldFM/Explore-v0"
    )
    rollout.add_argument(
        "--renderer",
        default="worldfm",
        choices=["worldfm", "anchor", "oracle"],
        help="observation renderer: worldfm (the frame model), anchor (the raw splat, fastest), oracle (ground truth)",
    )
    rollout.add_argument("--num-envs", type=int, default=16, help="envs stepped together in one batch")
    rollout.add_argument("--steps", type=int, default=100, help="steps of every env")
    rollout.add_argument(
        "--policy",
        default="random",
        choices=["random", "scripted"],
        help="random actions, or the scripted shortest path to the goal",
    )
    rollout.add_argument("--scenes", default="procedural:train", help="scene spec (see the scenes env kwarg)")
    rollout.add_argument("--resolution", type=int, default=64, help="frame size in pixels")
    rollout.add_argument("--seed", type=int, default=0, help="reset seed (env i gets seed + i)")
    rollout.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N")
    rollout.add_argument(
        "--memory",
        default="static",
        choices=["static", "grow"],
        help="static: the scene's captured memory only; grow: each env writes its generated pixels back into its "
        "own memory as it explores (renderer worldfm or oracle) (default: %(default)s)",
    )
    rollout.add_argument(
        "--capture",
        default="full",
        help="how much of each procedural scene was captured: full, panorama or walk:K (default: %(default)s)",
    )
    rollout.add_argument("--video", default=None, help="write env 0's frames to this MP4 (default: no video)")
    rollout.add_argument(
        "--weights",
        default=None,
        help="frame-model checkpoint path or shipped model name, renderer worldfm (default: the model shipped for "
        "the resolution)",
    )
    rollout.add_argument(
        "--vae", default=None, help="diffusers AutoencoderKL folder for latent models (default: none, pixel space)"
    )
    rollout.set_defaults(func=cmd_rollout)

    render = sub.add_parser(
        "render",
        help="render an official meta.json camera trajectory to an MP4",
        description="Render one frame per c2w pose of an official-format meta.json (image, K, c2w, plus this "
        "project's optional depth key) from the image's point cloud, with the trajectory's intrinsics. Example: "
        "worldfm-env render --meta examples/scene/meta.json --renderer anchor --out anchor.mp4",
        formatter_class=HelpFormatter,
    )
    render.add_argument("--meta", required=True, help="meta.json (image, K, c2w) or its folder")
    render.add_argument(
        "--depth",
        default=None,
        help="depth of the image: .npy in scene units, or a 16-bit PNG in millimetres (default: the file named by "
        'the meta.json key "depth")',
    )
    render.add_argument(
        "--weights",
        default=None,
        help="frame-model checkpoint path or shipped model name, renderer worldfm (default: the model shipped for "
        "the resolution)",
    )
    render.add_argument(
        "--vae", default=None, help="diffusers AutoencoderKL folder for latent models (default: none, pixel space)"
    )
    render.add_argument(
        "--renderer",
        default="worldfm",
        choices=["worldfm", "anchor"],
        help="worldfm (the frame model) or anchor (the raw point splat)",
    )
    render.add_argument("--resolution", type=int, default=64, help="side of the square output frames in pixels")
    render.add_argument(
        "--sampler-steps",
        type=int,
        default=None,
        choices=[1, 2],
        help="distilled sampler steps (default: the checkpoint's recommendation, else 2)",
    )
    render.add_argument(
        "--memory",
        default="static",
        choices=["static", "grow"],
        help="grow: the trajectory writes its generated pixels back into its memory as it goes, so later frames "
        "show what earlier ones generated (poses rendered one at a time) (default: %(default)s)",
    )
    render.add_argument("--batch-size", type=int, default=8, help="poses rendered together in one batch")
    render.add_argument(
        "--side-by-side", action="store_true", help="put the anchor left of the rendered frame (default: off)"
    )
    render.add_argument("--fps", type=int, default=10, help="frames per second of the video")
    render.add_argument("--seed", type=int, default=0, help="noise seed of the frame model")
    render.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N")
    render.add_argument("--out", default="trajectory.mp4", help="output MP4")
    render.set_defaults(func=cmd_render)

    train = sub.add_parser(
        "train",
        help="train the frame model: stage1 (image prior), stage2 (frame model), stage3 (DMD distillation)",
        description="stage1/stage2 options are TrainConfig fields (e.g. --steps 2000 --out runs/s2 --init "
        "runs/s1/model.safetensors, or --config run.json; list: worldfm-env train stage2 --help); "
        "stage3 options are DistillConfig fields (worldfm-env train stage3 --help).",
        formatter_class=HelpFormatter,
    )
    train.add_argument(
        "stage",
        choices=["stage1", "stage2", "stage3"],
        help="stage1 (image prior), stage2 (frame model) or stage3 (DMD distillation)",
    )
    train.add_argument(
        "options",
        nargs=argparse.REMAINDER,
        help="the stage's options: TrainConfig fields (stage1, stage2) or DistillConfig fields (stage3)",
    )
    train.set_defaults(func=cmd_train)

    view = sub.add_parser(
        "view",
        help="a local web page that drives one env from the keyboard (W/A/D/R/F, Space, Backspace, 1/2/3)",
        description="Serve a web page (bound to --host, 127.0.0.1 by default) that drives one env from the "
        "keyboard: W/ArrowUp forward, A/D or ArrowLeft/ArrowRight turn, R/F look up/down, Space stop, Backspace "
        "reset, N next episode, 1/2/3 renderer worldfm/anchor/oracle at the same pose, P autopilot (--policy). It "
        "shows the observation, anchor | generated | ground truth, a top-down map, the reward, pointgoal and "
        "metrics, and records the session to MP4. Needs the viewer extra (starlette, uvicorn). See docs/viewer.md.",
        formatter_class=HelpFormatter,
    )
    view.add_argument(
        "--host", default="127.0.0.1", help="address to bind (any other than 127.0.0.1 lets other machines drive)"
    )
    view.add_argument("--port", type=int, default=8765, help="TCP port of the page")
    view.add_argument("--scenes", default="procedural:test:1", help="scene spec (see the scenes env kwarg)")
    view.add_argument("--seed", type=int, default=0, help="env seed; Backspace starts its first episode again")
    view.add_argument(
        "--renderer",
        default="worldfm",
        choices=["worldfm", "anchor", "oracle"],
        help="renderer of the large observation panel (keys 1/2/3 switch it at the same pose)",
    )
    view.add_argument(
        "--memory",
        default=None,
        choices=["static", "grow"],
        help="static: the scene's captured memory only; grow: generated pixels are written back into the env's "
        "memory and drawn on the map (renderer worldfm or oracle) (default: the env's, static)",
    )
    view.add_argument(
        "--capture",
        default=None,
        help="how much of each procedural scene was captured: full, panorama or walk:K (default: the env's, full)",
    )
    view.add_argument(
        "--task", default="pointnav", choices=["pointnav", "explore"], help="task (a --policy uses its own)"
    )
    view.add_argument(
        "--resolution",
        type=int,
        default=None,
        help="frame size in pixels (default: 64, the shipped model's; with --policy the policy's)",
    )
    view.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N")
    view.add_argument(
        "--weights",
        default=None,
        help="frame-model checkpoint path or shipped model name, renderer worldfm (default: the model shipped for "
        "the resolution)",
    )
    view.add_argument(
        "--policy",
        default=None,
        help="ppo:PATH, a checkpoint of agents/ppo_torch.py that drives while the autopilot is on (key P) "
        "(default: none, keyboard only)",
    )
    view.add_argument("--record-dir", default="viewer_recordings", help="folder of the MP4 recordings")
    view.add_argument("--fps", type=float, default=8.0, help="autopilot steps per second and MP4 frame rate")
    view.set_defaults(func=cmd_view)

    info = sub.add_parser(
        "info",
        help="versions and devices",
        description="Print the versions of worldfm-env and its main dependencies, the torch and warp devices and "
        "the registered env ids as JSON.",
        formatter_class=HelpFormatter,
    )
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
