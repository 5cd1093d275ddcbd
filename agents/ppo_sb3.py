"""Stable-Baselines3 PPO on worldfm-env through :class:`worldfm_env.integrations.sb3.SB3VecEnv`.

One batched :class:`~worldfm_env.envs.vector.WorldFMVectorEnv` (SAME_STEP autoreset, as SB3
expects) serves all ``num_envs`` envs; SB3 sees numpy at the adapter boundary. The policy is
``MultiInputPolicy`` with :class:`SmallCombinedExtractor` (a small CNN that works from 8x8 images,
where SB3's ``NatureCNN`` needs 36x36; with ``--include-depth`` the renderer's depth is its fourth
channel, scaled as in ``ppo_torch.py``) plus an MLP over ``pointgoal``. SB3 logs ``time/fps``
(env steps per second); the script prints the overall env-steps/s at the end and saves the policy
zip, which ``python agents/evaluate.py --agent sb3:PATH.zip`` evaluates.

    python agents/ppo_sb3.py --total-timesteps 100000 --num-envs 16 --renderer anchor
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import torch
import torch.nn as nn
from stable_baselines3 import PPO
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import VecMonitor

if __package__ in (None, ""):  # run as a script: make `agents` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents._args import env_kwargs, parse_args
from agents.ppo_torch import Agent
from worldfm_env.integrations.sb3 import SB3VecEnv
from worldfm_env.render.anchor_config import parse_splat_radius

__all__ = ["Args", "SmallCombinedExtractor", "main"]


@dataclass
class Args:
    """Stable-Baselines3 PPO on worldfm-env (PointNav by default) via SB3VecEnv."""

    exp_name: str = "ppo_sb3"
    """Name of this run (policy zip file name)."""
    seed: int = 1
    """Seed of SB3 and of the envs (env i gets seed + i)."""
    task: str = "pointnav"
    """Task: pointnav or explore."""
    scenes: str = "procedural:train"
    """Training scene spec."""
    renderer: str = "anchor"
    """Renderer backend: anchor, oracle or worldfm."""
    resolution: int = 64
    """Observation size (square, >= 8)."""
    env_device: str = "auto"
    """Device of the batched env: auto, cpu or cuda."""
    device: str = "auto"
    """Device of the SB3 policy: auto, cpu or cuda."""
    max_episode_steps: int = 500
    """Steps after which an episode is truncated."""
    allow_sliding: bool = False
    """Blocked moves slide along obstacles instead of being cancelled (the env's allow_sliding; the zip records
    it and evaluate.py uses the same)."""
    include_depth: bool = False
    """Also observe the renderer's depth, as a fourth CNN channel (exact in the oracle world, the anchor's
    z-buffer with 0 in its holes in the anchor world and with an RGB frame model, the model's depth in the holes with
    an RGB-D one); evaluate.py sees it in the policy's space."""
    splat_radius: str = "0"
    """Anchor splat half-size of the anchor and worldfm worlds (the env's splat_radius): an int in [0, 8] or
    auto (the zip records it; evaluate.py renders the same)."""
    total_timesteps: int = 1_000_000
    """Total env steps (SB3 rounds up to whole rollouts)."""
    num_envs: int = 16
    """Environments stepped together."""
    n_steps: int = 128
    """Steps per env per rollout."""
    batch_size: int = 256
    """Minibatch size."""
    n_epochs: int = 4
    """Epochs per update."""
    learning_rate: float = 2.5e-4
    """Adam learning rate."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    clip_range: float = 0.1
    """Surrogate clipping coefficient."""
    ent_coef: float = 0.01
    """Entropy coefficient."""
    features_dim: int = 256
    """Output width of the CNN."""
    verbose: int = 1
    """SB3 verbosity (1 prints the rollout/train tables)."""
    save_path: str | None = None
    """Policy zip path (default runs/<exp_name>_<seed>.zip)."""


class SmallCombinedExtractor(BaseFeaturesExtractor):
    """Features of a Dict observation: a small CNN for images (any size >= 8), flatten for the rest.

    ``pointgoal`` (distance, angle) becomes (log1p distance, cos angle, sin angle). A ``depth`` key
    ((H, W, 1) metres) joins the ``rgb`` image as a fourth CNN channel, scaled by
    :meth:`agents.ppo_torch.Agent.depth_channel`.
    """

    def __init__(self, observation_space: gym.spaces.Dict, features_dim: int = 256) -> None:
        extractors: dict[str, nn.Module] = {}
        total = 0
        self.with_depth = "depth" in observation_space.spaces and "rgb" in observation_space.spaces
        for key, space in observation_space.spaces.items():
            if key == "depth" and self.with_depth:
                continue  # a channel of the rgb CNN
            if is_image_space(space, check_channels=False):
                channels = space.shape[0] if is_image_space_channels_first(space) else space.shape[-1]
                channels += int(key == "rgb" and self.with_depth)
                extractors[key] = nn.Sequential(
                    nn.Conv2d(channels, 32, 5, stride=2, padding=2),
                    nn.ReLU(),
                    nn.Conv2d(32, 64, 3, stride=2, padding=1),
                    nn.ReLU(),
                    nn.Conv2d(64, 64, 3, stride=2, padding=1),
                    nn.ReLU(),
                    nn.AdaptiveAvgPool2d(4),
                    nn.Flatten(),
                    nn.Linear(64 * 4 * 4, features_dim),
                    nn.ReLU(),
                )
                total += features_dim
            else:
                extractors[key] = nn.Flatten()
                total += 3 if key == "pointgoal" else int(torch.Size(space.shape).numel())
        super().__init__(observation_space, features_dim=total)
        self.extractors = nn.ModuleDict(extractors)
        self.channels_last = {
            key: is_image_space(space, check_channels=False) and not is_image_space_channels_first(space)
            for key, space in observation_space.spaces.items()
        }

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        """Concatenated features of every observation key (images through the CNN, vectors flattened)."""
        features = []
        for key, extractor in self.extractors.items():
            value = observations[key]
            if self.channels_last[key]:
                value = value.permute(0, 3, 1, 2)
            if key == "rgb" and self.with_depth:  # SB3 scaled rgb to [0, 1]; depth arrives (N, H, W, 1)
                value = torch.cat([value, Agent.depth_channel(observations["depth"]).permute(0, 3, 1, 2)], dim=1)
            if key == "pointgoal":
                rho, phi = value[:, 0], value[:, 1]
                value = torch.stack([torch.log1p(rho), torch.cos(phi), torch.sin(phi)], dim=-1)
            features.append(extractor(value))
        return torch.cat(features, dim=1)


def main(argv: list[str] | None = None) -> Path:
    """Train; return the path of the saved policy zip."""
    args = parse_args(Args, argv)
    save_path = Path(args.save_path or f"runs/{args.exp_name}_{args.seed}.zip")
    splat_radius = parse_splat_radius(args.splat_radius)
    # The env options of args by name (task, scenes, renderer, ...); args.device is the policy's.
    venv = SB3VecEnv.from_kwargs(
        num_envs=args.num_envs, **env_kwargs(args, device=args.env_device, splat_radius=splat_radius)
    )
    info_keywords = ("success", "spl") if args.task == "pointnav" else ("coverage",)
    venv = VecMonitor(venv, info_keywords=info_keywords)
    model = PPO(
        "MultiInputPolicy",
        venv,
        n_steps=args.n_steps,
        batch_size=args.batch_size,
        n_epochs=args.n_epochs,
        learning_rate=args.learning_rate,
        gamma=args.gamma,
        gae_lambda=args.gae_lambda,
        clip_range=args.clip_range,
        ent_coef=args.ent_coef,
        policy_kwargs=dict(
            features_extractor_class=SmallCombinedExtractor,
            features_extractor_kwargs=dict(features_dim=args.features_dim),
        ),
        seed=args.seed,
        device=args.device,
        verbose=args.verbose,
    )
    start = time.perf_counter()
    model.learn(total_timesteps=args.total_timesteps)
    elapsed = time.perf_counter() - start
    print(f"trained {model.num_timesteps} env steps: {model.num_timesteps / elapsed:,.0f} env-steps/s")
    save_path.parent.mkdir(parents=True, exist_ok=True)
    # Env settings the observation space does not show; SB3 saves extra model attributes with the zip.
    model.worldfm_env_settings = {"allow_sliding": args.allow_sliding, "splat_radius": str(splat_radius)}
    model.save(save_path)
    print(f"saved {save_path}")
    venv.close()
    return save_path


if __name__ == "__main__":
    main()
