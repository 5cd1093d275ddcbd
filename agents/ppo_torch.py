"""PPO on the native batched env, CleanRL ``ppo_atari`` style, with rollouts kept on the device.

The env's observations are torch tensors on its device (``array_type="torch"``); the rollout
storage is preallocated there and nothing crosses to the host in the collection loop except the
per-update logging. The network is a small CNN over ``rgb`` plus an MLP over the vector keys
(``pointgoal`` as log-distance, cos and sin of the angle), an actor head over the 6 discrete
actions and a critic head.

Autoreset is Gymnasium's NEXT_STEP: after an env's episode ends, its next step only resets it
(the action is ignored, reward 0). Those reset steps are kept in the storage but masked out of
the loss and cut from GAE; the terminal observation is then simply the next stored observation,
so truncated episodes bootstrap from it and terminated ones do not.

    python agents/ppo_torch.py --total-timesteps 100000 --num-envs 32 --renderer anchor

The checkpoint (``torch.save`` of ``{"state_dict", "model_kwargs", "args"}``) is read by
``python agents/evaluate.py --agent ppo:PATH``.
"""

from __future__ import annotations

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

from agents._args import parse_args
from worldfm_env.envs.vector import WorldFMVectorEnv

__all__ = ["Args", "Agent", "main"]


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
    resolution: int = 64
    """Observation size (square, >= 8)."""
    max_episode_steps: int = 500
    """Steps after which an episode is truncated."""
    total_timesteps: int = 1_000_000
    """Total env steps of the run."""
    learning_rate: float = 2.5e-4
    """Adam learning rate."""
    num_envs: int = 32
    """Environments stepped together."""
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
    """Width of the encoder output and of the vector-observation MLP."""
    save_path: str | None = None
    """Checkpoint path (default runs/<exp_name>_<seed>.pt)."""


def layer_init(layer: nn.Module, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Module:
    """Orthogonal weights and constant bias (CleanRL's initialisation)."""
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    """Actor-critic over a Dict observation: CNN for ``rgb`` (uint8 (N, H, W, 3)) + MLP for vector keys."""

    def __init__(self, observation_space: spaces.Dict, num_actions: int, hidden_size: int = 256) -> None:
        super().__init__()
        self.vector_keys = sorted(k for k in observation_space.spaces if k != "rgb")
        self.cnn = nn.Sequential(
            layer_init(nn.Conv2d(3, 32, 5, stride=2, padding=2)),
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
        vector_size = sum(self._vector_width(k, observation_space[k]) for k in self.vector_keys)
        self.mlp = (
            nn.Sequential(layer_init(nn.Linear(vector_size, hidden_size // 2)), nn.ReLU()) if vector_size else None
        )
        feature_size = hidden_size + (hidden_size // 2 if vector_size else 0)
        self.actor = layer_init(nn.Linear(feature_size, num_actions), std=0.01)
        self.critic = layer_init(nn.Linear(feature_size, 1), std=1.0)

    @staticmethod
    def _vector_width(key: str, space: spaces.Space) -> int:
        return 3 if key == "pointgoal" else int(np.prod(space.shape))

    def encode(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Features (N, F) of a batch of observations."""
        rgb = obs["rgb"].permute(0, 3, 1, 2).float() / 255.0  # (N, 3, H, W)
        features = [self.cnn(rgb)]
        if self.mlp is not None:
            vectors = []
            for key in self.vector_keys:
                value = obs[key].float()
                if key == "pointgoal":  # (distance, angle) -> (log1p distance, cos, sin): bounded, no wrap
                    rho, phi = value[:, 0], value[:, 1]
                    value = torch.stack([torch.log1p(rho), torch.cos(phi), torch.sin(phi)], dim=-1)
                vectors.append(value.flatten(1))
            features.append(self.mlp(torch.cat(vectors, dim=-1)))
        return torch.cat(features, dim=-1)

    def get_value(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """V(s) (N,)."""
        return self.critic(self.encode(obs)).squeeze(-1)

    def get_action_and_value(self, obs: dict[str, torch.Tensor], action: torch.Tensor | None = None):
        """(action, log-prob, entropy, value), each (N,); samples an action when none is given."""
        hidden = self.encode(obs)
        dist = torch.distributions.Categorical(logits=self.actor(hidden))
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.critic(hidden).squeeze(-1)


def main(argv: list[str] | None = None) -> Path:
    """Train; return the checkpoint path."""
    args = parse_args(Args, argv)
    batch_size = args.num_envs * args.num_steps
    num_iterations = max(1, args.total_timesteps // batch_size)
    run_name = f"{args.exp_name}_{args.seed}"
    save_path = Path(args.save_path or f"runs/{run_name}.pt")

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic

    envs = WorldFMVectorEnv(
        num_envs=args.num_envs,
        task=args.task,
        scenes=args.scenes,
        renderer=args.renderer,
        resolution=args.resolution,
        device=args.device,
        max_episode_steps=args.max_episode_steps,
        array_type="torch",
        validate_actions=False,  # sampled actions are valid by construction; skip the device sync
        **({"weights": args.weights} if args.renderer == "worldfm" else {}),
    )
    device = envs.device
    assert isinstance(envs.single_action_space, spaces.Discrete), "ppo_torch needs discrete actions"
    model_kwargs = {"hidden_size": args.hidden_size}
    agent = Agent(envs.single_observation_space, int(envs.single_action_space.n), **model_kwargs).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)

    # Storage, preallocated on the device.
    T, N = args.num_steps, args.num_envs
    obs = {
        k: torch.zeros((T, N, *space.shape), dtype=torch.uint8 if k == "rgb" else torch.float32, device=device)
        for k, space in envs.single_observation_space.spaces.items()
    }
    actions = torch.zeros((T, N), dtype=torch.long, device=device)
    logprobs = torch.zeros((T, N), device=device)
    rewards = torch.zeros((T, N), device=device)
    terminations = torch.zeros((T, N), device=device)
    dones = torch.zeros((T, N), device=device)  # terminated or truncated after step t
    valid = torch.zeros((T, N), dtype=torch.bool, device=device)  # False on NEXT_STEP autoreset steps
    values = torch.zeros((T, N), device=device)
    episode_return = torch.zeros(N, device=device)
    finished_returns = torch.zeros((T, N), device=device)
    finished_success = torch.zeros((T, N), device=device)

    global_step = 0
    start_time = time.perf_counter()
    next_obs, _ = envs.reset(seed=args.seed)
    next_resetting = torch.zeros(N, dtype=torch.bool, device=device)
    for iteration in range(1, num_iterations + 1):
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / num_iterations) * args.learning_rate
        finished_returns.zero_()
        finished_success.zero_()

        for step in range(T):
            global_step += N
            for k in obs:
                obs[k][step] = next_obs[k]
            valid[step] = ~next_resetting
            with torch.no_grad():
                action, logprob, _, value = agent.get_action_and_value(next_obs)
            values[step] = value
            actions[step] = action
            logprobs[step] = logprob

            next_obs, reward, terminated, truncated, info = envs.step(action)
            done = terminated | truncated
            rewards[step] = reward
            terminations[step] = terminated.float()
            dones[step] = done.float()
            episode_return += reward
            finished_returns[step] = torch.where(done, episode_return, torch.zeros_like(episode_return))
            finished_success[step] = (done & info["success"]).float()
            episode_return = torch.where(done, torch.zeros_like(episode_return), episode_return)
            next_resetting = done

        # GAE. Storage obs[t + 1] is the observation after action t, terminal ones included (NEXT_STEP).
        with torch.no_grad():
            next_value = agent.get_value(next_obs)
            advantages = torch.zeros_like(rewards)
            lastgaelam = torch.zeros(N, device=device)
            for t in reversed(range(T)):
                following = next_value if t == T - 1 else values[t + 1]
                delta = rewards[t] + args.gamma * following * (1.0 - terminations[t]) - values[t]
                lastgaelam = delta + args.gamma * args.gae_lambda * (1.0 - dones[t]) * lastgaelam
                advantages[t] = lastgaelam
            returns = advantages + values

        # Flatten and keep the real transitions (one host sync per update).
        keep = torch.nonzero(valid.reshape(-1))[:, 0]
        b_obs = {k: v.reshape(T * N, *v.shape[2:])[keep] for k, v in obs.items()}
        b_logprobs = logprobs.reshape(-1)[keep]
        b_actions = actions.reshape(-1)[keep]
        b_advantages = advantages.reshape(-1)[keep]
        b_returns = returns.reshape(-1)[keep]
        b_values = values.reshape(-1)[keep]
        num_samples = keep.numel()
        minibatch_size = max(1, num_samples // args.num_minibatches)

        clipfracs = []
        for _epoch in range(args.update_epochs):
            b_inds = torch.randperm(num_samples, device=device)
            for begin in range(0, num_samples, minibatch_size):
                mb_inds = b_inds[begin : begin + minibatch_size]
                mb_obs = {k: v[mb_inds] for k, v in b_obs.items()}
                _, newlogprob, entropy, newvalue = agent.get_action_and_value(mb_obs, b_actions[mb_inds])
                logratio = newlogprob - b_logprobs[mb_inds]
                ratio = logratio.exp()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - logratio).mean()
                    clipfracs.append(((ratio - 1.0).abs() > args.clip_coef).float().mean())

                mb_advantages = b_advantages[mb_inds]
                if args.norm_adv and mb_advantages.numel() > 1:
                    mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)

                pg_loss1 = -mb_advantages * ratio
                pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
                pg_loss = torch.max(pg_loss1, pg_loss2).mean()

                if args.clip_vloss:
                    v_loss_unclipped = (newvalue - b_returns[mb_inds]) ** 2
                    v_clipped = b_values[mb_inds] + torch.clamp(
                        newvalue - b_values[mb_inds], -args.clip_coef, args.clip_coef
                    )
                    v_loss_clipped = (v_clipped - b_returns[mb_inds]) ** 2
                    v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
                else:
                    v_loss = 0.5 * ((newvalue - b_returns[mb_inds]) ** 2).mean()

                entropy_loss = entropy.mean()
                loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef

                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()

            if args.target_kl is not None and float(approx_kl) > args.target_kl:
                break

        y_pred, y_true = b_values, b_returns
        var_y = y_true.var()
        explained_var = float("nan") if float(var_y) == 0 else float(1 - (y_true - y_pred).var() / var_y)
        episodes = float(dones.sum())
        mean_return = float(finished_returns.sum()) / episodes if episodes else float("nan")
        success_rate = float(finished_success.sum()) / episodes if episodes else float("nan")
        sps = global_step / (time.perf_counter() - start_time)
        print(
            f"iter={iteration}/{num_iterations} global_step={global_step} env-steps/s={sps:,.0f} "
            f"episodes={int(episodes)} return={mean_return:.3f} success={success_rate:.3f} "
            f"pg_loss={pg_loss.item():.4f} v_loss={v_loss.item():.4f} entropy={entropy_loss.item():.4f} "
            f"approx_kl={float(approx_kl):.4f} clipfrac={float(torch.stack(clipfracs).mean()):.3f} "
            f"explained_var={explained_var:.3f}",
            flush=True,
        )

    save_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": agent.state_dict(), "model_kwargs": model_kwargs, "args": asdict(args)}, save_path)
    print(f"saved {save_path}")
    envs.close()
    return save_path


if __name__ == "__main__":
    main()
