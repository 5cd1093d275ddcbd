"""PPO on the native batched env, CleanRL ``ppo_atari`` style, with rollouts kept on the device.

The env's observations are torch tensors on its device (``array_type="torch"``); the rollout
storage is preallocated there and nothing crosses to the host in the collection loop except the
per-update logging. The network is a small CNN over ``rgb`` (and, with ``--include-depth``, the
renderer's depth as a fourth channel) plus an MLP over the vector keys
(``pointgoal`` as log-distance, cos and sin of the angle and, unless ``--goal-encoding log``, a
distance feature with a finer scale near the goal), by default followed by a GRU that also
sees the previous action (the layout of the Habitat PointNav baseline), then an actor and a critic
head. The policy chooses among the ``nav`` actions (stop, forward, turn left, turn right) by
default, or ``--actions all``. Recurrent updates replay whole env sequences from the GRU state the
rollout started with; ``--no-recurrent`` gives the feed-forward CleanRL layout.

Autoreset is Gymnasium's NEXT_STEP: after an env's episode ends, its next step only resets it
(the action is ignored, reward 0). Those reset steps are kept in the storage but masked out of
the loss and cut from GAE; the terminal observation is then simply the next stored observation,
so truncated episodes bootstrap from it and terminated ones do not.

    python agents/ppo_torch.py --total-timesteps 100000 --num-envs 32 --renderer anchor

The checkpoint (``torch.save`` of ``{"state_dict", "model_kwargs", "action_ids", "args", "global_step",
"wall_s"}``) is read by ``python agents/evaluate.py --agent ppo:PATH``, which by default builds its env with the
env settings ``args`` records (resolution, task, depth, sliding, splat radius, ``--capture``, ``--memory``,
``--memory-carve``);
``--save-every`` adds snapshots along the run. After every update the run also writes its resume state
(``<save_path stem>.resume.pt``: the network, the optimizer and the position in the run; removed when the run
finishes), so an interrupted run continues with ``--resume`` and the same arguments:

    python agents/ppo_torch.py --renderer worldfm --save-path runs/wfm.pt --resume   # again after a stop

Under ``torchrun`` the run is DD-PPO (decentralised distributed PPO): every rank steps its own ``--num-envs`` envs
(on its local GPU, or on the CPU with the gloo backend) over its own share of the training scenes (rank r takes
scenes r, r + W, ... of the expanded ``--scenes``; see ``agents/_dist.py``) with its own env seeds (env i of rank r
is seeded ``seed + r * num_envs + i``), and the ranks average their gradients with one all-reduce per optimizer
step, so every rank holds the same network. ``--num-envs`` is per rank and ``--total-timesteps`` counts the env
steps of all ranks together: an update takes ``world_size * num_envs * num_steps`` steps. Rank 0 logs and saves.

    torchrun --standalone --nproc_per_node 2 agents/ppo_torch.py --num-envs 8 --device cpu   # two CPU ranks, gloo

``--preempt-fraction F`` (default 0: off) is DD-PPO's preemption threshold: once ``ceil(F * world_size)`` ranks have
collected their whole rollout, each other rank stops collecting as soon as it has at least a quarter of its
``--num-steps`` and trains on the shorter rollout it has, so one slow rank does not hold back the update (the
counter lives in torchrun's store; the log line then adds ``preempted=<ranks that stopped early>``).
``--resume`` works across world sizes: the network and Adam state are the same on every rank, the run goes on
from the share of the budget it had reached (the update count is recomputed for the new world size), and each
rank's env seeds and random streams are derived afresh from the seed, the update reached and its rank.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from gymnasium import spaces

if __package__ in (None, ""):  # run as a script: make `agents` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents._args import env_kwargs, parse_args
from agents._dist import (
    PreemptionCounter,
    all_reduce_sum,
    average_gradients,
    barrier,
    broadcast_object,
    broadcast_parameters,
    init_distributed,
    rank_device,
    shard_scenes,
    shutdown_distributed,
)
from worldfm_env.envs.vector import WorldFMVectorEnv
from worldfm_env.render.anchor_config import parse_splat_radius

__all__ = ["ACTION_SETS", "GOAL_ENCODINGS", "PRECISIONS", "Args", "Agent", "action_ids_for", "encoder_dtype", "main"]


@dataclass
class Args:
    """PPO with a CNN policy on the native worldfm-env vector env (rollouts on the device)."""

    exp_name: str = "ppo_torch"
    """Name of this run (checkpoint file name)."""
    seed: int = 1
    """Seed of torch, numpy and the envs (env i gets seed + i)."""
    torch_deterministic: bool = True
    """Set torch.backends.cudnn.deterministic."""
    device: str = "auto"
    """Device of the envs, the storage and the network: auto, cpu or cuda."""
    task: str = "pointnav"
    """Task: pointnav or explore."""
    scenes: str = "procedural:train"
    """Training scene spec."""
    renderer: str = "anchor"
    """Renderer backend: anchor, oracle or worldfm."""
    weights: str | None = None
    """Frame-model checkpoint for renderer worldfm."""
    compile_model: bool = False
    """Wrap the frame model of renderer worldfm in ``torch.compile`` (the env's compile_model: about 30 s of
    start-up, then faster steps); no effect in the other worlds."""
    resolution: int = 64
    """Observation size (square, >= 8)."""
    max_episode_steps: int = 500
    """Steps after which an episode is truncated."""
    allow_sliding: bool = False
    """Blocked moves slide along obstacles instead of being cancelled (the env's allow_sliding)."""
    include_depth: bool = False
    """Also observe the renderer's depth (the env's include_depth: exact in the oracle world, the anchor's
    z-buffer with 0 in its holes in the anchor world and with an RGB frame model, the model's depth in the holes with
    an RGB-D one), as a fourth channel of the CNN."""
    splat_radius: str = "0"
    """Anchor splat half-size in pixels of the anchor and worldfm worlds (the env's splat_radius): an int in
    [0, 8] (0: one pixel per point, as published) or auto (each point covers its sample spacing)."""
    capture: str = "full"
    """How much of each procedural training scene was captured into the point cloud the anchor renders from (the
    env's capture): full, panorama or walk:K; episodes start near a capture camera, in every world (the oracle
    renders the true mesh whatever the capture). Recorded in the checkpoint: evaluate.py uses it by default."""
    memory: str = "static"
    """static or grow (the env's memory: each env's generated pixels are lifted into its own growing memory, so
    revisits show the same content); grow needs renderer worldfm (or oracle: ground truth written back). Recorded
    in the checkpoint: evaluate.py uses it by default in the worldfm world."""
    memory_carve: bool = False
    """With ``--memory grow``: the growing memory does not write generated points in the space the scene's
    navigation grid lets the agent walk through (the env's memory_carve). Recorded in the checkpoint: evaluate.py
    uses it by default in the worldfm world."""
    total_timesteps: int = 1_000_000
    """Total env steps of the run (of all ranks together under torchrun)."""
    learning_rate: float = 2.5e-4
    """Adam learning rate."""
    num_envs: int = 32
    """Environments stepped together (per rank under torchrun)."""
    num_steps: int = 128
    """Steps per env per rollout."""
    anneal_lr: bool = True
    """Linearly anneal the learning rate to 0."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    num_minibatches: int = 4
    """Minibatches per epoch."""
    update_epochs: int = 4
    """Epochs per update."""
    norm_adv: bool = True
    """Normalise advantages per minibatch."""
    clip_coef: float = 0.1
    """Surrogate clipping coefficient."""
    clip_vloss: bool = True
    """Clip the value loss as in the PPO paper."""
    ent_coef: float = 0.01
    """Entropy coefficient."""
    vf_coef: float = 0.5
    """Value-loss coefficient."""
    max_grad_norm: float = 0.5
    """Gradient clipping norm."""
    target_kl: float | None = None
    """Stop an update's epochs early above this approximate KL."""
    hidden_size: int = 256
    """Width of the encoder output, of the GRU state and (half) of the vector-observation MLP."""
    recurrent: bool = True
    """A GRU over the features and the previous action (memory across the episode); minibatches then
    hold whole env sequences."""
    goal_encoding: str = "log+near"
    """How the MLP sees ``pointgoal`` (distance, angle): ``log+near`` (log1p distance, cos, sin, and the distance
    over the last half metre, ``min(d, 0.5) / 0.5``, steeper than log1p where STOP is decided) or ``log`` (without
    the last; the default of the runs before ``log+near``, which fail more often by calling STOP just outside the
    goal radius)."""
    actions: str = "nav"
    """Action set of the policy: nav (stop, forward, turn left, turn right) or all (also look up/down)."""
    precision: str = "auto"
    """Compute type of the observation encoder (the CNN and MLP; the GRU, heads and losses stay float32):
    auto (bfloat16 autocast on CUDA and on CPUs with AMX or AVX512-BF16, else float32), bfloat16 or float32."""
    save_path: str | None = None
    """Checkpoint path (default runs/<exp_name>_<seed>.pt)."""
    save_every: int = 0
    """Also save a snapshot <save_path stem>_step<global_step>.pt after the first update at or past each
    multiple of this many env steps (0: only the final checkpoint)."""
    preempt_fraction: float = 0.0
    """Under torchrun: DD-PPO's preemption threshold in [0, 1]. Once ceil(this x world size) ranks have collected
    their whole rollout, the others stop collecting (after at least a quarter of --num-steps) and train on what they
    have (0: off, every rank collects every step; habitat-baselines defaults to 0.6). No effect on one process."""
    resume: bool = False
    """Continue an interrupted run from its resume state (<save_path stem>.resume.pt, written after every update)
    when there is one; its arguments must equal this run's. The envs start fresh episodes (seeded from the seed and
    the update reached), so a resumed run is reproducible but not the same as an uninterrupted one."""


RESUME_UNCOMPARED = ("compile_model", "preempt_fraction", "resume", "save_path")
"""Arguments a resumed run may change: they change how fast it goes or how its path is spelt, not what it learns."""

ARGS_ADDED_LATER = {"capture": "full", "memory": "static", "memory_carve": False}
"""Arguments newer than some saved runs, with the value those runs had (a fully captured, static world)."""


def _save_atomically(obj: dict, path: Path) -> None:
    """``torch.save`` to a ``.partial`` file, then rename it over ``path``: a stop while writing leaves the
    previous file whole."""
    partial = path.with_name(path.name + ".partial")
    torch.save(obj, partial)
    os.replace(partial, path)


def _remove_resume_state(resume_file: Path) -> None:
    """Delete a resume state and any half-written one beside it."""
    resume_file.unlink(missing_ok=True)
    resume_file.with_name(resume_file.name + ".partial").unlink(missing_ok=True)


def _finished(save_path: Path, args: Args, total_steps: int) -> bool:
    """Whether ``save_path`` holds the final checkpoint of a run with ``args`` (a stop can fall between writing it
    and removing the resume state)."""
    if not save_path.exists():
        return False
    saved = torch.load(save_path, weights_only=True, map_location="cpu")
    # A preempted (DD-PPO) run can end short of the budget's step count; its final checkpoint says it finished.
    done = saved.get("finished", False) or saved.get("global_step") == total_steps
    return not _differing_args(saved.get("args", {}), args) and done


def _differing_args(had: dict, args: Args) -> list[str]:
    """The arguments (those of :data:`RESUME_UNCOMPARED` aside) where the saved ``had`` differs from ``args``."""
    wanted, had = asdict(args), {**ARGS_ADDED_LATER, **had}
    return sorted(k for k in wanted if k not in RESUME_UNCOMPARED and had.get(k) != wanted[k])


def resume_path(save_path: Path) -> Path:
    """Where a run saving to ``save_path`` keeps its resume state: ``<stem>.resume.pt`` beside it."""
    return save_path.with_name(f"{save_path.stem}.resume.pt")


def load_resume_state(path: Path, args: Args) -> dict:
    """The resume state at ``path`` after checking that it was written by a run with ``args`` (those of
    :data:`RESUME_UNCOMPARED` aside); a ValueError names each argument that differs."""
    state = torch.load(path, weights_only=True, map_location="cpu")
    had, wanted = {**ARGS_ADDED_LATER, **state["args"]}, asdict(args)
    differ = _differing_args(had, args)
    if differ:
        raise ValueError(
            f"--resume: {path} was written by a run with other arguments: "
            + ", ".join(f"{k} ({had.get(k)!r}, not {wanted[k]!r})" for k in differ)
            + "; rerun with its arguments, or delete it to start afresh"
        )
    return state


GOAL_ENCODINGS = {"log": 3, "log+near": 4}
"""Encodings of ``pointgoal`` (distance, angle) and their widths: ``log`` (log1p distance, cos, sin) and ``log+near``
(the same and ``min(distance, NEAR_RANGE) / NEAR_RANGE``)."""

ACTION_SETS = {"all": None, "nav": (0, 1, 2, 3)}
"""Env action ids the policy chooses among: ``all`` (every discrete action) or ``nav`` (stop, forward,
turn left, turn right: the PointNav action set, without the look up/down actions)."""


def action_ids_for(action_set: str, num_env_actions: int) -> list[int]:
    """Env action ids of ``action_set`` (see :data:`ACTION_SETS`) for an env with ``num_env_actions``."""
    if action_set not in ACTION_SETS:
        raise ValueError(f"actions={action_set!r} is not valid; use one of {sorted(ACTION_SETS)}")
    ids = ACTION_SETS[action_set]
    return list(range(num_env_actions)) if ids is None else list(ids)


PRECISIONS = ("auto", "bfloat16", "float32")
"""Values of ``--precision``: the observation encoder's compute type."""


def encoder_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """Autocast type of the encoder for ``precision`` on ``device`` (None: plain float32).

    ``auto`` picks bfloat16 where it is fast (CUDA with bf16, CPUs with AMX or AVX512-BF16: the same rule as
    the frame model's ``model_dtype="auto"``), float32 elsewhere; float16 is never chosen (PPO here has
    no loss scaling).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not valid; use one of {list(PRECISIONS)}")
    if precision == "float32":
        return None
    if precision == "bfloat16":
        return torch.bfloat16
    from worldfm_env.model.frame_model import auto_model_dtype

    return torch.bfloat16 if auto_model_dtype(torch.device(device)) == torch.bfloat16 else None


def layer_init(layer: nn.Module, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Module:
    """Orthogonal weights and constant bias (CleanRL's initialisation)."""
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    """Actor-critic over a Dict observation: CNN for ``rgb`` (uint8 (N, H, W, 3)), with ``depth``
    ((N, H, W, 1) metres, 0 = unknown) as a fourth channel when the space has it, + MLP for vector keys.
    The depth channel is ``log1p(d) / log1p(DEPTH_RANGE)``; unknown depth gives 0, the value of a surface at
    the camera (no separate validity channel).

    With ``recurrent=True`` the features, with an embedding of the previous action, feed a GRU cell
    whose state carries over the episode (the Habitat PointNav baseline's layout); the heads read
    the GRU state. Without it the heads read the features and the state is an empty (N, 0) tensor,
    so both kinds share one calling convention: ``act(obs, state, prev_action, first)``.

    ``goal_encoding`` defaults to ``log`` here (the training script's default is ``log+near``) so that
    checkpoints saved before the option, whose ``model_kwargs`` lack it, rebuild the network they trained.
    """

    PREV_ACTION_WIDTH = 32
    NEAR_RANGE = 0.5
    """Metres over which the ``log+near`` goal feature rises from 0 to 1 (the radius and about one forward step)."""
    DEPTH_RANGE = 10.0
    """Depth (metres) that maps to 1 in the CNN's depth channel, ``log1p(d) / log1p(DEPTH_RANGE)``; farther clamps."""
    IMAGE_KEYS = ("rgb", "depth")

    def __init__(
        self,
        observation_space: spaces.Dict,
        num_actions: int,
        hidden_size: int = 256,
        recurrent: bool = False,
        goal_encoding: str = "log",
    ) -> None:
        super().__init__()
        if goal_encoding not in GOAL_ENCODINGS:
            raise ValueError(f"goal_encoding={goal_encoding!r} is not valid; use one of {list(GOAL_ENCODINGS)}")
        self.goal_encoding = goal_encoding
        self.num_actions = num_actions
        self.hidden_size = hidden_size
        self.recurrent = recurrent
        self.vector_keys = sorted(k for k in observation_space.spaces if k not in self.IMAGE_KEYS)
        self.use_depth = "depth" in observation_space.spaces
        self.cnn = nn.Sequential(
            layer_init(nn.Conv2d(4 if self.use_depth else 3, 32, 5, stride=2, padding=2)),
            nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 3, stride=2, padding=1)),
            nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=2, padding=1)),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),  # any resolution >= 8 ends as (N, 64, 4, 4)
            nn.Flatten(),
            layer_init(nn.Linear(64 * 4 * 4, hidden_size)),
            nn.ReLU(),
        )
        vector_size = sum(
            GOAL_ENCODINGS[goal_encoding] if k == "pointgoal" else int(np.prod(observation_space[k].shape))
            for k in self.vector_keys
        )
        self.mlp = (
            nn.Sequential(layer_init(nn.Linear(vector_size, hidden_size // 2)), nn.ReLU()) if vector_size else None
        )
        feature_size = hidden_size + (hidden_size // 2 if vector_size else 0)
        if recurrent:
            # Index num_actions stands for "no previous action" (the first step of an episode).
            self.prev_action_embedding = nn.Embedding(num_actions + 1, self.PREV_ACTION_WIDTH)
            self.gru = nn.GRUCell(feature_size + self.PREV_ACTION_WIDTH, hidden_size)
            for name, param in self.gru.named_parameters():
                if "weight" in name:
                    nn.init.orthogonal_(param)
                else:
                    nn.init.zeros_(param)
            head_size = hidden_size
        else:
            head_size = feature_size
        self.actor = layer_init(nn.Linear(head_size, num_actions), std=0.01)
        self.critic = layer_init(nn.Linear(head_size, 1), std=1.0)
        #: Autocast type of :meth:`encode` (None: float32); a run-time choice, not part of the weights.
        self.encoder_dtype: torch.dtype | None = None

    @classmethod
    def depth_channel(cls, depth: torch.Tensor) -> torch.Tensor:
        """The CNN's depth channel from depth in metres: ``log1p(d) / log1p(DEPTH_RANGE)`` in [0, 1], same shape.

        Unknown depth (0, the anchor's holes; NaN is treated the same) reads as 0, like a surface at the camera.
        """
        depth = torch.nan_to_num(depth.float(), nan=0.0).clamp(0.0, cls.DEPTH_RANGE)
        return torch.log1p(depth) / math.log1p(cls.DEPTH_RANGE)

    def goal_features(self, pointgoal: torch.Tensor) -> torch.Tensor:
        """The MLP's input for ``pointgoal`` (N, 2) = (distance m, angle rad): (log1p distance, cos, sin), bounded
        and without the angle's wrap, and with ``goal_encoding="log+near"`` also ``min(distance, NEAR_RANGE) /
        NEAR_RANGE``. Returns (N, 3) or (N, 4)."""
        rho, phi = pointgoal[:, 0], pointgoal[:, 1]
        goal = [torch.log1p(rho), torch.cos(phi), torch.sin(phi)]
        if self.goal_encoding == "log+near":
            goal.append(rho.clamp(0.0, self.NEAR_RANGE) / self.NEAR_RANGE)
        return torch.stack(goal, dim=-1)

    def initial_state(self, num: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Recurrent state of ``num`` fresh episodes: zeros (num, hidden_size), or (num, 0) without a GRU."""
        return torch.zeros(num, self.hidden_size if self.recurrent else 0, device=device)

    def encode(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Features (N, F) float32 of a batch of observations, computed under autocast to
        :attr:`encoder_dtype` when it is set."""
        dtype = self.encoder_dtype
        with torch.autocast(obs["rgb"].device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return self._encode(obs).float()

    def _encode(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        image = obs["rgb"].float() / 255.0  # (N, H, W, 3)
        if self.use_depth:
            image = torch.cat([image, self.depth_channel(obs["depth"])], dim=-1)
        # Channels stay innermost in memory (a channels-last view), the layout the CPU convolutions run fastest in.
        features = [self.cnn(image.permute(0, 3, 1, 2))]
        if self.mlp is not None:
            vectors = []
            for key in self.vector_keys:
                value = obs[key].float()
                if key == "pointgoal":
                    value = self.goal_features(value)
                vectors.append(value.flatten(1))
            features.append(self.mlp(torch.cat(vectors, dim=-1)))
        return torch.cat(features, dim=-1)

    def core(
        self, features: torch.Tensor, state: torch.Tensor, prev_action: torch.Tensor, first: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(head input, next state) of one step. ``first`` (N,) bool marks an episode's first observation:
        the state starts from zeros there and the previous action is "none"."""
        if not self.recurrent:
            return features, state
        prev = torch.where(first, torch.full_like(prev_action, self.num_actions), prev_action)
        state = torch.where(first[:, None], torch.zeros_like(state), state)
        state = self.gru(torch.cat([features, self.prev_action_embedding(prev)], dim=-1), state)
        return state, state

    def act(
        self,
        obs: dict[str, torch.Tensor],
        state: torch.Tensor,
        prev_action: torch.Tensor,
        first: torch.Tensor,
        action: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(action, log-prob, entropy, value, next state) of one step; samples an action when none is given.

        Actions are policy indices (into the action set), not env action ids.
        """
        head, state = self.core(self.encode(obs), state, prev_action, first)
        dist = torch.distributions.Categorical(logits=self.actor(head))
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.critic(head).squeeze(-1), state

    def logits(
        self, obs: dict[str, torch.Tensor], state: torch.Tensor, prev_action: torch.Tensor, first: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(action logits (N, A), next state) of one step."""
        head, state = self.core(self.encode(obs), state, prev_action, first)
        return self.actor(head), state

    def evaluate_sequence(
        self,
        obs: dict[str, torch.Tensor],
        state: torch.Tensor,
        prev_actions: torch.Tensor,
        firsts: torch.Tensor,
        actions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Replay T steps of M envs: obs values (T*M, ...) time-major, ``state`` (M, S) at the first step,
        ``prev_actions``, ``firsts``, ``actions`` (T, M). Returns log-prob, entropy, value, each (T*M,)."""
        T, M = actions.shape
        features = self.encode(obs).reshape(T, M, -1)
        heads = []
        for t in range(T):
            head, state = self.core(features[t], state, prev_actions[t], firsts[t])
            heads.append(head)
        head = torch.stack(heads).flatten(0, 1)
        dist = torch.distributions.Categorical(logits=self.actor(head))
        flat_actions = actions.reshape(-1)
        return dist.log_prob(flat_actions), dist.entropy(), self.critic(head).squeeze(-1)


def _minibatches(args: Args, T: int, N: int, valid: torch.Tensor, device: torch.device, exact_count: bool = False):
    """One epoch's minibatches (a fresh shuffle each call), each a (T', M) grid of flat indices into
    the time-major (T*N,) storage whose rows are replayed in order by :meth:`Agent.evaluate_sequence`.

    Recurrent: ``num_minibatches`` slices of the envs, each holding their whole T-step sequences
    (T' = T; the reset steps are masked out later). Otherwise: the real transitions shuffled and
    split ``num_minibatches`` ways, as one-step rows (T' = 1). With ``exact_count`` (under torchrun, where every
    rank must take the same number of optimizer steps) the split gives exactly ``num_minibatches`` parts (some may
    be empty), not a remainder part on top.
    """
    if args.recurrent:
        grid = torch.arange(T * N, device=device).reshape(T, N)[:, torch.randperm(N, device=device)]
        yield from grid.split(max(1, -(-N // args.num_minibatches)), dim=1)
        return
    real = torch.nonzero(valid.reshape(-1))[:, 0]  # one host sync per epoch
    real = real[torch.randperm(real.numel(), device=device)]
    if exact_count:
        yield from (part[None] for part in torch.tensor_split(real, args.num_minibatches))
        return
    yield from real[None].split(max(1, real.numel() // args.num_minibatches), dim=1)


def main(argv: list[str] | None = None) -> Path:
    """Train; return the checkpoint path (under torchrun on every rank, once rank 0 has written it)."""
    args = parse_args(Args, argv)
    encoder_dtype(args.precision, "cpu")  # fail on a bad --precision before building the envs
    splat_radius = parse_splat_radius(args.splat_radius)
    args.splat_radius = str(splat_radius)  # the checkpoint records the canonical spelling
    if args.save_every < 0:
        raise ValueError(f"save_every must be >= 0 (0: no snapshots), got {args.save_every}")
    if args.goal_encoding not in GOAL_ENCODINGS:
        raise ValueError(f"goal_encoding={args.goal_encoding!r} is not valid; use one of {list(GOAL_ENCODINGS)}")
    if not 0.0 <= args.preempt_fraction <= 1.0:
        raise ValueError(f"preempt_fraction must be in [0, 1] (0: off), got {args.preempt_fraction}")
    info = init_distributed(args.device)  # world size 1 without torchrun: everything below as on one process
    rank, world = info.rank, info.world_size
    log = print if info.is_main else (lambda *_, **__: None)
    batch_size = args.num_envs * args.num_steps * world
    num_iterations = max(1, args.total_timesteps // batch_size)
    run_name = f"{args.exp_name}_{args.seed}"
    save_path = Path(args.save_path or f"runs/{run_name}.pt")

    # Rank 0 reads the files and decides; the other ranks take its decision (and its error, if any).
    resume_file = resume_path(save_path)
    resumed, finished, error = None, False, None
    if info.is_main:
        try:
            resumed = load_resume_state(resume_file, args) if args.resume and resume_file.exists() else None
            finished = bool(resumed) and _finished(save_path, args, num_iterations * batch_size)
        except ValueError as err:
            if not info.distributed:
                raise
            error = str(err)
    if info.distributed:
        resumed, finished, error = broadcast_object((resumed, finished, error), info)
        if error is not None:
            raise ValueError(error)
    if finished:
        log(f"{save_path} already holds the finished run: nothing to resume", flush=True)
        if info.is_main:
            _remove_resume_state(resume_file)
        barrier(info)
        return save_path
    if args.resume:
        log(
            f"resuming from {resume_file} at global_step={resumed['global_step']}"
            if resumed
            else f"no resume state at {resume_file}: starting afresh",
            flush=True,
        )
    elif info.is_main:
        _remove_resume_state(resume_file)  # a fresh run: an older run's state must not be resumed later
    start_iteration = resumed["iteration"] if resumed else 0  # updates already done
    if resumed and resumed.get("world_size", 1) != world:
        # The network and Adam state do not depend on the world size; the updates done are counted again in this
        # world size's batch (the share of the budget reached, rounded down).
        had_world = resumed.get("world_size", 1)
        start_iteration = start_iteration * args.num_envs * args.num_steps * had_world // batch_size
        log(
            f"the resume state was written by a run of world size {had_world}; continuing with world size {world} "
            f"at update {start_iteration} of {num_iterations}",
            flush=True,
        )
    # A resumed segment draws from fresh streams, derived from the seed and the updates done (env i is reset with
    # run_seed + i; torch, numpy and random start from run_seed), so it neither replays the first segment's
    # episodes nor those of a run started with another --seed. Under torchrun rank r's envs take the seeds after
    # those of ranks 0..r-1 and its random streams start from run_seed + r.
    run_seed = (
        args.seed if not resumed else int(np.random.SeedSequence([args.seed, start_iteration]).generate_state(1)[0])
    )
    random.seed(run_seed + rank)
    np.random.seed(run_seed + rank)
    torch.manual_seed(run_seed + rank)
    torch.backends.cudnn.deterministic = args.torch_deterministic

    envs = WorldFMVectorEnv(
        num_envs=args.num_envs,
        **env_kwargs(
            args,  # task, scenes, renderer, resolution, device, ... (weights, compile_model: worldfm only)
            scenes=shard_scenes(args.scenes, info),  # this rank's share (all of them on one process)
            device=rank_device(args.device, info),
            splat_radius=splat_radius,
            array_type="torch",
            validate_actions=False,  # sampled actions are valid by construction; skip the device sync
        ),
    )
    device = envs.device
    assert isinstance(envs.single_action_space, spaces.Discrete), "ppo_torch needs discrete actions"
    action_ids = torch.tensor(action_ids_for(args.actions, int(envs.single_action_space.n)), device=device)
    model_kwargs = {"hidden_size": args.hidden_size, "recurrent": args.recurrent, "goal_encoding": args.goal_encoding}
    agent = Agent(envs.single_observation_space, len(action_ids), **model_kwargs).to(device)
    agent.encoder_dtype = encoder_dtype(args.precision, device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
    if resumed:
        agent.load_state_dict(resumed["state_dict"])
        optimizer.load_state_dict(resumed["optimizer"])
    broadcast_parameters(agent, info)  # rank 0's initial network everywhere (each rank seeded its own)
    parameters = list(agent.parameters())
    preempt = PreemptionCounter(args.preempt_fraction, info, min_steps=max(1, math.ceil(args.num_steps / 4)))

    # Storage, preallocated on the device. Actions are policy indices; action_ids maps them to the env's.
    T, N = args.num_steps, args.num_envs
    obs = {
        k: torch.zeros((T, N, *space.shape), dtype=torch.uint8 if k == "rgb" else torch.float32, device=device)
        for k, space in envs.single_observation_space.spaces.items()
    }
    actions = torch.zeros((T, N), dtype=torch.long, device=device)
    prev_actions = torch.zeros((T, N), dtype=torch.long, device=device)
    firsts = torch.zeros((T, N), dtype=torch.bool, device=device)  # obs[t] opens an episode
    logprobs = torch.zeros((T, N), device=device)
    rewards = torch.zeros((T, N), device=device)
    terminations = torch.zeros((T, N), device=device)
    dones = torch.zeros((T, N), device=device)  # terminated or truncated after step t
    valid = torch.zeros((T, N), dtype=torch.bool, device=device)  # False on NEXT_STEP autoreset steps
    values = torch.zeros((T, N), device=device)
    episode_return = torch.zeros(N, device=device)
    finished_returns = torch.zeros((T, N), device=device)
    finished_success = torch.zeros((T, N), device=device)

    def save(path: Path, step: int, final: bool = False) -> None:
        checkpoint = {
            "state_dict": agent.state_dict(),
            "model_kwargs": model_kwargs,
            "action_ids": action_ids.tolist(),
            "args": asdict(args),
            "global_step": step,
            "wall_s": wall_s(),
            "world_size": world,
            "finished": final,
        }
        _save_atomically(checkpoint, path)
        print(f"saved {path}", flush=True)

    def save_resume_state(iteration: int) -> None:
        state = {
            "state_dict": agent.state_dict(),
            "optimizer": optimizer.state_dict(),
            "args": asdict(args),
            "iteration": iteration,
            "global_step": global_step,
            "wall_s": wall_s(),
            "world_size": world,
        }
        _save_atomically(state, resume_file)

    def wall_s() -> float:
        """Training seconds of the whole run: earlier segments' and this one's."""
        return (resumed["wall_s"] if resumed else 0.0) + time.perf_counter() - start_time

    global_step = resumed["global_step"] if resumed else 0  # env steps of every rank together
    segment_start_step = global_step
    if info.is_main:
        save_path.parent.mkdir(parents=True, exist_ok=True)  # of the checkpoint, its snapshots and the resume state
    start_time = time.perf_counter()
    next_obs, _ = envs.reset(seed=run_seed + rank * N)
    next_resetting = torch.zeros(N, dtype=torch.bool, device=device)
    next_first = torch.ones(N, dtype=torch.bool, device=device)
    prev_action = torch.zeros(N, dtype=torch.long, device=device)
    state = agent.initial_state(N, device)
    for iteration in range(start_iteration + 1, num_iterations + 1):
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / num_iterations) * args.learning_rate
        finished_returns.zero_()
        finished_success.zero_()
        rollout_state = state.clone()  # the GRU state at obs[0], replayed from in the update

        collected = T  # steps of this rollout (fewer when DD-PPO preemption stops it early)
        for step in range(T):
            for k in obs:
                obs[k][step] = next_obs[k]
            valid[step] = ~next_resetting
            firsts[step] = next_first
            prev_actions[step] = prev_action
            with torch.no_grad():
                action, logprob, _, value, state = agent.act(next_obs, state, prev_action, next_first)
            values[step] = value
            actions[step] = action
            logprobs[step] = logprob

            next_obs, reward, terminated, truncated, info_ = envs.step(action_ids[action])
            done = terminated | truncated
            rewards[step] = reward
            terminations[step] = terminated.float()
            dones[step] = done.float()
            episode_return += reward
            finished_returns[step] = torch.where(done, episode_return, torch.zeros_like(episode_return))
            finished_success[step] = (done & info_["success"]).float()
            episode_return = torch.where(done, torch.zeros_like(episode_return), episode_return)
            next_first = next_resetting  # the step just taken was a reset: next_obs opens an episode
            next_resetting = done
            prev_action = action
            if step + 1 < T and preempt.should_stop(iteration, step + 1):
                collected = step + 1
                break
        if collected == T:
            preempt.finished(iteration)
        Tc = collected
        # Env steps of every rank, and the rank count that stopped early (one small all-reduce per update).
        counts = all_reduce_sum(torch.tensor([Tc * N, int(Tc < T)], dtype=torch.float64, device=device), info)
        update_steps, preempted = int(counts[0]), int(counts[1])
        global_step += update_steps

        # GAE. Storage obs[t + 1] is the observation after action t, terminal ones included (NEXT_STEP).
        with torch.no_grad():
            next_value = agent.act(next_obs, state, prev_action, next_first)[3]
            advantages = torch.zeros_like(rewards)
            lastgaelam = torch.zeros(N, device=device)
            for t in reversed(range(Tc)):
                following = next_value if t == Tc - 1 else values[t + 1]
                delta = rewards[t] + args.gamma * following * (1.0 - terminations[t]) - values[t]
                lastgaelam = delta + args.gamma * args.gae_lambda * (1.0 - dones[t]) * lastgaelam
                advantages[t] = lastgaelam
            returns = advantages + values

        clipfracs = []
        nan = torch.tensor(float("nan"))
        pg_loss = v_loss = entropy_loss = approx_kl = nan
        for _epoch in range(args.update_epochs):
            for grid in _minibatches(args, Tc, N, valid[:Tc], device, exact_count=info.distributed):
                # Replay the grid's rows from the rollout's start state (the GRU state at obs[0]),
                # then keep the real transitions (reset steps are only in recurrent grids).
                cells = grid.reshape(-1)
                keep = valid.reshape(-1)[cells]
                if info.distributed and not bool(keep.any()):
                    # No real transition in this rank's minibatch: it adds a zero gradient to the all-reduce.
                    optimizer.zero_grad(set_to_none=True)
                else:
                    newlogprob, entropy, newvalue = agent.evaluate_sequence(
                        {k: v.flatten(0, 1)[cells] for k, v in obs.items()},
                        rollout_state[grid[0] % N],
                        prev_actions.reshape(-1)[grid],
                        firsts.reshape(-1)[grid],
                        actions.reshape(-1)[grid],
                    )
                    newlogprob, entropy, newvalue, flat = newlogprob[keep], entropy[keep], newvalue[keep], cells[keep]
                    logratio = newlogprob - logprobs.reshape(-1)[flat]
                    ratio = logratio.exp()
                    with torch.no_grad():
                        approx_kl = ((ratio - 1) - logratio).mean()
                        clipfracs.append(((ratio - 1.0).abs() > args.clip_coef).float().mean())

                    mb_advantages = advantages.reshape(-1)[flat]
                    if args.norm_adv and mb_advantages.numel() > 1:
                        mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)

                    pg_loss1 = -mb_advantages * ratio
                    pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
                    pg_loss = torch.max(pg_loss1, pg_loss2).mean()

                    mb_returns, mb_values = returns.reshape(-1)[flat], values.reshape(-1)[flat]
                    if args.clip_vloss:
                        v_loss_unclipped = (newvalue - mb_returns) ** 2
                        v_clipped = mb_values + torch.clamp(newvalue - mb_values, -args.clip_coef, args.clip_coef)
                        v_loss_clipped = (v_clipped - mb_returns) ** 2
                        v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
                    else:
                        v_loss = 0.5 * ((newvalue - mb_returns) ** 2).mean()

                    entropy_loss = entropy.mean()
                    loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef

                    optimizer.zero_grad()
                    loss.backward()
                average_gradients(parameters, info)  # DD-PPO: the mean gradient of every rank (no-op on one)
                nn.utils.clip_grad_norm_(parameters, args.max_grad_norm)
                optimizer.step()

            if args.target_kl is not None:
                # Every rank must break at the same epoch: the ranks' mean KL decides (this rank's on one process).
                kl = all_reduce_sum(torch.nan_to_num(approx_kl.to(device).float()).reshape(1), info) / world
                if float(kl) > args.target_kl:
                    break

        keep = valid[:Tc].reshape(-1)
        b_values, b_returns = values[:Tc].reshape(-1)[keep], returns[:Tc].reshape(-1)[keep]
        y_pred, y_true = b_values, b_returns
        var_y = y_true.var()
        explained_var = float("nan") if float(var_y) == 0 else float(1 - (y_true - y_pred).var() / var_y)
        episode_sums = torch.stack([dones[:Tc].sum(), finished_returns[:Tc].sum(), finished_success[:Tc].sum()])
        episodes, return_sum, success_sum = all_reduce_sum(episode_sums, info).tolist()
        mean_return = return_sum / episodes if episodes else float("nan")
        success_rate = success_sum / episodes if episodes else float("nan")
        sps = (global_step - segment_start_step) / (time.perf_counter() - start_time)
        clipfrac = float(torch.stack(clipfracs).mean()) if clipfracs else float("nan")
        log(
            f"iter={iteration}/{num_iterations} global_step={global_step} env-steps/s={sps:,.0f} "
            f"episodes={int(episodes)} return={mean_return:.3f} success={success_rate:.3f} "
            f"pg_loss={pg_loss.item():.4f} v_loss={v_loss.item():.4f} entropy={entropy_loss.item():.4f} "
            f"approx_kl={float(approx_kl):.4f} clipfrac={clipfrac:.3f} "
            f"explained_var={explained_var:.3f}" + (f" preempted={preempted}" if preempt.enabled else ""),
            flush=True,
        )

        if info.is_main:
            every = args.save_every
            if every > 0 and global_step // every > (global_step - update_steps) // every:
                save(save_path.with_name(f"{save_path.stem}_step{global_step}{save_path.suffix}"), global_step)
            if iteration < num_iterations:
                save_resume_state(iteration)

    if info.is_main:
        save(save_path, global_step, final=True)
        _remove_resume_state(resume_file)  # the run is finished: nothing left to resume
    envs.close()
    barrier(info)  # the other ranks return once the checkpoint is written
    return save_path


if __name__ == "__main__":
    main()
    shutdown_distributed()  # under torchrun: leave the process group (after a failure torchrun stops the ranks)
