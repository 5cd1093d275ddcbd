"""Evaluate an agent on a fixed set of held-out episodes; per-episode CSV, optional videos.

Episode ``i`` is the first episode of an env seeded with ``seed + i`` (episodes are drawn by
hashing the env seed and episode number, so this set does not depend on ``num_envs``, on the
batch an episode runs in, or on the device). The default scenes are the procedural test split.
Episodes run in batches of ``num_envs``; each env plays exactly one episode per batch.

Agents: ``random``, ``shortest-path``, ``frontier`` (see ``agents/scripted.py``),
``ppo:PATH`` (a checkpoint of ``agents/ppo_torch.py``) and ``sb3:PATH`` (a policy zip of
``agents/ppo_sb3.py``). The last line printed is ``success=<float> spl=<float> soft_spl=<float>``
(means over episodes; SPL is undefined for Explore and printed as ``nan``).

    python agents/evaluate.py --agent shortest-path --episodes 50 --renderer oracle

``--capture`` (full, panorama, walk:K: how much of each procedural scene the anchor's point cloud was captured
from; it also places the episodes' starts near a capture camera, in every world) and ``--memory`` (static, grow)
are the env's options; for a ``ppo:`` agent they default to the checkpoint's (its memory, and ``--memory-carve``, in
the worldfm world only).

Under ``torchrun --nproc_per_node W`` the episodes are sharded: rank r plays the contiguous block of episodes
``[r E / W, (r + 1) E / W)`` in batches of ``num_envs`` (on its local GPU, or on the CPU with gloo), the ranks'
records are gathered, and rank 0 writes the same ``episodes.csv`` (same rows, same order) as one process, for
agents whose actions depend only on each env's own state: ``shortest-path``, ``frontier`` and learned agents
taking their most likely action (the default; a network's batched arithmetic may differ in the last bits between
batch sizes, which can flip an exact tie). Sampled actions (``random``, ``--no-deterministic``) come from one
generator per rank and differ from a single process's.

    torchrun --standalone --nproc_per_node 2 agents/evaluate.py --agent shortest-path --episodes 50 --device cpu
"""

from __future__ import annotations

import csv
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make `agents` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents._args import env_kwargs, parse_args
from agents._dist import (
    dist_info,
    gather_objects,
    init_distributed,
    rank_device,
    shard_range,
    shutdown_distributed,
)
from agents.scripted import AGENTS, make_agent
from worldfm_env.envs.vector import WorldFMVectorEnv
from worldfm_env.render.anchor_config import parse_splat_radius

__all__ = ["Args", "EvalResult", "evaluate", "load_agent", "main"]


@dataclass
class Args:
    """Evaluate an agent on fixed held-out episodes (episode i = first episode of env seed seed + i)."""

    agent: str = "shortest-path"
    """random, shortest-path, frontier, ppo:PATH (agents/ppo_torch.py checkpoint) or sb3:PATH (SB3 zip)."""
    episodes: int = 50
    """Number of episodes (episode i is the first episode of env seed seed + i)."""
    seed: int = 0
    """Seed of episode 0."""
    num_envs: int = 16
    """Environments stepped together (does not change the episode set)."""
    task: str | None = None
    """pointnav or explore (default: the checkpoint's task, else pointnav; explore for the frontier agent)."""
    scenes: str = "procedural:test"
    """Held-out scene spec (the procedural test split by default)."""
    renderer: str = "anchor"
    """Renderer backend: anchor, oracle or worldfm."""
    resolution: int | None = None
    """Observation size (default: the checkpoint's, else 64)."""
    device: str = "auto"
    """auto, cpu or cuda."""
    max_episode_steps: int = 500
    """Steps after which an episode is truncated."""
    allow_sliding: bool | None = None
    """Blocked moves slide along obstacles (default: as the ppo checkpoint or ppo_sb3 zip was trained, else not)."""
    splat_radius: str | None = None
    """Anchor splat half-size of the anchor and worldfm worlds: an int in [0, 8] or auto (default: as the ppo
    checkpoint or ppo_sb3 zip was trained, else 0)."""
    deterministic: bool = True
    """Learned agents take their most likely action; --no-deterministic samples from the policy instead (as
    habitat-baselines evaluates), with a generator seeded by --seed, so a run repeats for a fixed seed and
    num_envs."""
    output_dir: str | None = "runs/eval"
    """Folder for episodes.csv and videos (None or empty: write nothing)."""
    videos: int = 0
    """Record MP4 videos of the first this-many episodes (needs output_dir)."""
    weights: str | None = None
    """Frame-model checkpoint for renderer=worldfm."""
    compile_model: bool = False
    """Wrap the frame model of renderer worldfm in ``torch.compile`` (the env's compile_model: about 30 s of
    start-up, then faster steps); no effect in the other worlds."""
    capture: str | None = None
    """How much of each procedural scene was captured into the point cloud the anchor renders from (the env's
    capture): full, panorama or walk:K. It also sets where episodes start (near a capture camera), in every world
    (the oracle renders the true mesh whatever the capture), so every world of a comparison needs the same capture
    (default: as the ppo checkpoint was trained, else full)."""
    memory: str | None = None
    """static or grow (the env's memory: each env's generated pixels are lifted into its own growing memory; needs
    renderer worldfm, or oracle with the ground truth written back; the anchor generates nothing to grow) (default:
    as the ppo checkpoint was trained when renderer is worldfm, else static)."""
    memory_carve: bool | None = None
    """With memory grow: do not write generated points in the space the navigation grid lets the agent walk through
    (the env's memory_carve) (default: as the ppo checkpoint was trained when renderer is worldfm, else off)."""


@dataclass
class EvalResult:
    """Per-episode records and their means."""

    episodes: list[dict[str, float]] = field(default_factory=list)
    """One dict per episode: episode, seed, scene, steps, return and the env's info metrics."""
    summary: dict[str, float] = field(default_factory=dict)
    """Mean of every metric over the episodes (success, spl, soft_spl, ...)."""
    env_steps_per_second: float = 0.0
    """Env steps (counting every env of every batch) per second of the evaluation loop."""


class _TorchPPOAgent:
    """A policy saved by ``agents/ppo_torch.py``, acting on the native env's torch observations.

    Recurrent policies keep their GRU state and previous action per env; :meth:`reset` starts every
    env's episode afresh (the evaluation loop calls it after each ``env.reset``).
    """

    def __init__(self, checkpoint: dict, env: WorldFMVectorEnv, deterministic: bool, seed: int = 0) -> None:
        from agents.ppo_torch import Agent, encoder_dtype

        num_env_actions = int(env.single_action_space.n)
        # Checkpoints from before action sets chose among every env action.
        ids = checkpoint.get("action_ids", list(range(num_env_actions)))
        if max(ids) >= num_env_actions:
            raise ValueError(f"the checkpoint's action_ids {ids} do not fit the env's {num_env_actions} actions")
        self.action_ids = torch.tensor(ids, device=env.device)
        trained_depth = bool(checkpoint.get("args", {}).get("include_depth", False))
        if trained_depth != ("depth" in env.single_observation_space.spaces):
            raise ValueError(
                f"the checkpoint was trained with include_depth={trained_depth}; the env must have the same "
                f"include_depth (it has {not trained_depth})"
            )
        self.model = Agent(env.single_observation_space, len(ids), **checkpoint["model_kwargs"])
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.to(env.device).eval()
        # The encoder precision the policy was trained with, resolved for this device (float32 before the option).
        precision = checkpoint.get("args", {}).get("precision", "float32")
        self.model.encoder_dtype = encoder_dtype(precision, env.device)
        self.deterministic = deterministic
        self.generator = torch.Generator(device=env.device).manual_seed(seed)  # sampled actions only
        self.device = env.device
        self.num_envs = env.num_envs
        self.reset()

    def reset(self) -> None:
        """Forget the recurrent state: the next observations open new episodes."""
        self.state = self.model.initial_state(self.num_envs, self.device)
        self.prev_action = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        self.first = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)

    @torch.no_grad()
    def __call__(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        logits, self.state = self.model.logits(observations, self.state, self.prev_action, self.first)
        if self.deterministic:
            action = logits.argmax(dim=-1)
        else:
            probs = torch.softmax(logits.float(), dim=-1)
            action = torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)
        self.prev_action = action
        self.first = torch.zeros_like(self.first)
        return self.action_ids[action]


class _SB3Agent:
    """A Stable-Baselines3 policy; observations cross to numpy at this boundary.

    Sampled actions (``deterministic=False``) draw from SB3's global generators, seeded here with ``seed``.
    """

    def __init__(self, model, env: WorldFMVectorEnv, deterministic: bool, seed: int = 0) -> None:
        self.model = model
        self.env = env
        self.deterministic = deterministic
        if not deterministic:
            model.set_random_seed(seed)

    def __call__(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        numpy_obs = {k: v.cpu().numpy() for k, v in observations.items()}
        actions, _ = self.model.predict(numpy_obs, deterministic=self.deterministic)
        return torch.as_tensor(np.asarray(actions), device=self.env.device).long()


def _load_learned(spec: str) -> tuple[object, dict]:
    """(loaded checkpoint or SB3 model, the env settings it was trained with) for ppo:/sb3: specs."""
    if spec.startswith("ppo:"):
        checkpoint = torch.load(spec[4:], map_location="cpu", weights_only=True)
        trained = checkpoint["args"]
        settings = {"task": trained["task"], "resolution": trained["resolution"]}
        return checkpoint, {
            **settings,
            "allow_sliding": trained.get("allow_sliding", False),
            "include_depth": trained.get("include_depth", False),
            "splat_radius": trained.get("splat_radius", 0),
            # Checkpoints from before the options were trained on fully captured, static worlds.
            "capture": trained.get("capture", "full"),
            "memory": trained.get("memory", "static"),
            "memory_carve": trained.get("memory_carve", False),
        }
    if spec.startswith("sb3:"):
        from stable_baselines3 import PPO

        model = PPO.load(spec[4:], device="cpu")
        space = model.observation_space
        rgb_shape = space["rgb"].shape  # (3, H, W) after SB3's image transpose, or (H, W, 3)
        resolution = rgb_shape[1] if rgb_shape[0] == 3 else rgb_shape[0]
        return model, {
            "task": "pointnav" if "pointgoal" in space.spaces else "explore",
            "resolution": resolution,
            "include_depth": "depth" in space.spaces,
            # Saved by ppo_sb3 beside the policy; zips from elsewhere (or older ones) have neither.
            **getattr(model, "worldfm_env_settings", {}),
        }
    return None, {}


def load_agent(spec: str, env: WorldFMVectorEnv, seed: int = 0, deterministic: bool = True, loaded=None):
    """An agent callable from ``spec``: a scripted name, ``ppo:PATH`` or ``sb3:PATH``.

    ``loaded`` is the checkpoint or model already read for ``spec`` (read from ``PATH`` when None). ``seed``
    seeds the scripted agents and, with ``deterministic=False``, the learned agents' action sampling.
    """
    if spec.startswith(("ppo:", "sb3:")):
        if loaded is None:
            loaded, _ = _load_learned(spec)
        wrapper = _TorchPPOAgent if spec.startswith("ppo:") else _SB3Agent
        return wrapper(loaded, env, deterministic, seed)
    if spec in AGENTS:
        return make_agent(spec, env, seed=seed)
    raise ValueError(f"agent={spec!r} is not valid; use one of {list(AGENTS)}, 'ppo:PATH' or 'sb3:PATH'")


def _write_video(path: Path, frames: list[np.ndarray]) -> None:
    import imageio.v2 as imageio

    # Nearest-neighbour upscaling to >= 128 px so that small observations stay watchable.
    scale = max(1, math.ceil(128 / frames[0].shape[0]))
    frames = [f.repeat(scale, axis=0).repeat(scale, axis=1) for f in frames]
    imageio.mimsave(path, frames, fps=10, macro_block_size=1)


def evaluate(args: Args) -> EvalResult:
    """Run ``args.episodes`` held-out episodes; write the CSV and videos when ``output_dir`` is set.

    Inside a torchrun process group (see :func:`agents._dist.init_distributed`) this rank plays its block of the
    episodes; every rank returns the gathered result and rank 0 writes the CSV.
    """
    if args.episodes <= 0:
        raise ValueError(f"episodes must be positive, got {args.episodes}")
    loaded, saved = _load_learned(args.agent)
    task = args.task or saved.get("task") or ("explore" if args.agent == "frontier" else "pointnav")
    resolution = args.resolution or saved.get("resolution") or 64
    if saved and (saved["task"], saved["resolution"]) != (task, resolution):
        raise ValueError(
            f"the checkpoint was trained with task={saved['task']!r}, resolution={saved['resolution']}; "
            f"evaluating it with task={task!r}, resolution={resolution} would not fit its network"
        )
    info = dist_info()
    share = shard_range(args.episodes, info)  # this rank's episodes (all of them on one process)
    num_envs = min(args.num_envs, len(share))
    # The anchor the policy was trained on, unless asked otherwise (the oracle world has none).
    splat_radius = parse_splat_radius(saved.get("splat_radius", 0) if args.splat_radius is None else args.splat_radius)
    # The capture the policy was trained on (it sets the episodes' start region in every world); its growing memory
    # only in the world that generates pixels to grow (the anchor cannot grow one, the oracle needs none).
    capture = saved.get("capture", "full") if args.capture is None else args.capture
    if args.memory is not None:
        memory = args.memory
    else:
        memory = saved.get("memory", "static") if args.renderer == "worldfm" else "static"
    if args.memory_carve is not None:
        memory_carve = args.memory_carve
    else:
        # The checkpoint's carve where its growing memory is used (a static memory writes nothing to carve).
        memory_carve = saved.get("memory_carve", False) and args.renderer == "worldfm" and memory == "grow"
    # The env options of args by name (scenes, renderer, device, ...; weights, compile_model: worldfm only), with
    # those that default to the trained policy's settled here.
    options = env_kwargs(
        args,
        task=task,
        resolution=resolution,
        allow_sliding=saved.get("allow_sliding", False) if args.allow_sliding is None else args.allow_sliding,
        include_depth=saved.get("include_depth", False),  # the observations the policy was trained on
        splat_radius=splat_radius,
        capture=capture,
        memory=memory,
        memory_carve=memory_carve,
        device=rank_device(args.device, info),
    )
    out_dir = Path(args.output_dir) if args.output_dir else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)

    result = EvalResult()
    total_steps, wall = 0, 0.0
    if num_envs > 0:  # a rank with no episode (fewer episodes than ranks) only joins the gather below
        total_steps, wall = _play(args, share, num_envs, options, loaded, out_dir, result)
    if info.distributed:
        gathered = gather_objects((result.episodes, total_steps, wall), info)
        result.episodes = [record for episodes, _, _ in gathered for record in episodes]
        total_steps, wall = sum(g[1] for g in gathered), max(g[2] for g in gathered)
    result.env_steps_per_second = total_steps / wall if wall > 0 else 0.0

    result.episodes.sort(key=lambda r: r["episode"])
    metric_keys = [k for k in result.episodes[0] if k not in ("episode", "seed", "scene")]
    result.summary = {k: float(np.mean([r[k] for r in result.episodes])) for k in metric_keys}
    if out_dir is not None and info.is_main:
        with open(out_dir / "episodes.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(result.episodes[0]))
            writer.writeheader()
            writer.writerows(result.episodes)
    return result


def _play(
    args: Args, share: range, num_envs: int, options: dict, loaded, out_dir: Path | None, result: EvalResult
) -> tuple[int, float]:
    """Play the episodes of ``share`` in batches of ``num_envs``, appending their records to ``result.episodes``
    and writing the videos asked for; returns the env steps taken and the seconds of the loop (after start-up)."""
    env = WorldFMVectorEnv(num_envs=num_envs, **options)
    agent = load_agent(args.agent, env, seed=args.seed, deterministic=args.deterministic, loaded=loaded)
    total_steps, start = 0, time.perf_counter()
    for first in range(share.start, share.stop, num_envs):
        # Pad the last batch with extra seeds whose episodes are played but not counted.
        episode_ids = list(range(first, first + num_envs))
        counted = torch.tensor([i < share.stop for i in episode_ids], device=env.device)
        obs, _ = env.reset(seed=[args.seed + i for i in episode_ids])
        if hasattr(agent, "reset"):
            agent.reset()
        scene = env.scene_index.cpu().numpy().copy()
        running = counted.clone()
        returns = torch.zeros(num_envs, device=env.device)
        filmed = [i for i in range(num_envs) if episode_ids[i] < min(args.videos, share.stop)]
        frames = {i: [obs["rgb"][i].cpu().numpy()] for i in filmed} if out_dir is not None else {}
        while bool(running.any()):
            actions = agent(obs)
            obs, reward, terminated, truncated, info = env.step(actions)
            total_steps += num_envs
            returns += torch.where(running, reward, torch.zeros_like(reward))
            for i in frames:
                if bool(running[i]):
                    frames[i].append(obs["rgb"][i].cpu().numpy())
            finished = running & (terminated | truncated)
            for i in torch.nonzero(finished)[:, 0].tolist():
                record = {"episode": episode_ids[i], "seed": args.seed + episode_ids[i], "scene": int(scene[i])}
                record["steps"] = int(env.elapsed_steps[i])
                record["return"] = float(returns[i])
                for key, value in info.items():
                    if not key.startswith("_"):
                        record[key] = float(value[i])
                result.episodes.append(record)
            running &= ~finished
        for i, clip in frames.items():
            _write_video(out_dir / f"episode_{episode_ids[i]:03d}.mp4", clip)
    wall = time.perf_counter() - start
    env.close()
    return total_steps, wall


def main(argv: list[str] | None = None) -> EvalResult:
    """Command line: evaluate, print a summary, end with the ``success= spl= soft_spl=`` line."""
    args = parse_args(Args, argv)
    info = init_distributed(args.device)  # under torchrun: join the group, shard the episodes
    result = evaluate(args)
    if not info.is_main:
        return result
    s = result.summary
    print(f"agent={args.agent} episodes={len(result.episodes)} scenes={args.scenes} renderer={args.renderer}")
    print(f"env-steps/s={result.env_steps_per_second:,.0f}")
    print(" ".join(f"{k}={v:.4f}" for k, v in s.items() if k not in ("success", "spl", "soft_spl")))
    if args.output_dir:
        print(f"per-episode results: {Path(args.output_dir) / 'episodes.csv'}")
    nan = float("nan")
    print(f"success={s['success']:.4f} spl={s.get('spl', nan):.4f} soft_spl={s.get('soft_spl', nan):.4f}")
    return result


if __name__ == "__main__":
    main()
    shutdown_distributed()  # under torchrun: leave the process group (after a failure torchrun stops the ranks)
