"""The viewer's autopilot: a PPO policy saved by ``agents/ppo_torch.py`` (``--policy ppo:PATH``).

The checkpoint is ``torch.save`` of ``{"state_dict", "model_kwargs", "action_ids", "args", ...}``; its network
(``agents.ppo_torch.Agent``) and the loader ``agents.evaluate.load_agent`` live in the repository's ``agents/``
folder, next to the package in a source checkout, which is put on ``sys.path`` when it is not importable yet.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["PolicySpec", "load_policy", "make_pilot"]


@dataclass
class PolicySpec:
    """A loaded ``ppo:PATH`` checkpoint and the env settings it was trained with.

    Attributes:
        spec: the ``ppo:PATH`` string.
        checkpoint: the loaded checkpoint dict.
        env_settings: EnvConfig options the network needs (task, resolution, include_depth, allow_sliding,
            splat_radius), taken from the checkpoint's ``args``.
    """

    spec: str
    checkpoint: dict
    env_settings: dict[str, Any]


def _agents_module(name: str):
    """Import ``agents.<name>``, adding the source checkout's root to ``sys.path`` when needed."""
    try:
        return importlib.import_module(f"agents.{name}")
    except ImportError:
        root = Path(__file__).resolve().parents[2]
        if not (root / "agents" / "ppo_torch.py").is_file():
            raise ValueError(
                "policy 'ppo:PATH' needs the agents/ folder of a worldfm-env source checkout (agents/ppo_torch.py "
                "defines the network); it is not importable and not next to the installed package"
            ) from None
        sys.path.insert(0, str(root))
        return importlib.import_module(f"agents.{name}")


def load_policy(spec: str) -> PolicySpec:
    """Read ``spec`` = ``"ppo:PATH"`` (a checkpoint of ``agents/ppo_torch.py``).

    Raises ``ValueError`` naming the problem: another prefix, a missing file, or a file that is not such a
    checkpoint.
    """
    if not isinstance(spec, str) or not spec.startswith("ppo:") or len(spec) <= 4:
        raise ValueError(f"policy must be 'ppo:PATH' (a checkpoint saved by agents/ppo_torch.py), got {spec!r}")
    path = Path(spec[4:])
    if not path.is_file():
        raise ValueError(f"policy {spec!r}: no such file {str(path)!r}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file
        raise ValueError(f"policy {spec!r}: not a checkpoint torch can read ({type(err).__name__}: {err})") from None
    needed = ("state_dict", "model_kwargs", "args")
    if not isinstance(checkpoint, dict) or any(k not in checkpoint for k in needed):
        have = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"policy {spec!r}: a ppo_torch checkpoint holds {list(needed)}, this one has {have}")
    trained = checkpoint["args"]
    settings: dict[str, Any] = {
        "task": trained.get("task", "pointnav"),
        "resolution": trained.get("resolution", 64),
        "include_depth": bool(trained.get("include_depth", False)),
        "allow_sliding": bool(trained.get("allow_sliding", False)),
    }
    if "splat_radius" in trained:
        from worldfm_env.render.anchor_config import parse_splat_radius

        settings["splat_radius"] = parse_splat_radius(trained["splat_radius"])
    return PolicySpec(spec, checkpoint, settings)


def make_pilot(policy: PolicySpec, env) -> Any:
    """The agent callable for ``env`` (one env): ``pilot(observations) -> actions`` (1,) env action ids, with
    ``pilot.reset()`` to start a new episode (recurrent policies keep their state between calls)."""
    evaluate = _agents_module("evaluate")
    return evaluate.load_agent(policy.spec, env, seed=0, deterministic=True, loaded=policy.checkpoint)
