"""The env step on every device: on the CPU always, on CUDA when one is present (the ``gpu`` cases are skipped
elsewhere). Every output and every piece of per-env state must live on the env's device, in both autoreset modes
and every renderer; and the reset path CUDA takes (every env computed, kept by mask, no host sync) must give the
episodes the CPU path (only the resetting rows) gives, which the CPU can check by taking that path itself.
"""

from __future__ import annotations

import pytest
import torch

from worldfm_env.envs import state as state_module
from worldfm_env.envs import vector as vector_module
from worldfm_env.envs.vector import WorldFMVectorEnv

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
KW = dict(scenes="procedural:train:2", resolution=32, max_episode_steps=4)


def _tensors(value, where: str):
    """(name, tensor) of every tensor in a nested dict / tuple / list output."""
    if isinstance(value, torch.Tensor):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _tensors(item, f"{where}[{key!r}]")
    elif isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            yield from _tensors(item, f"{where}[{i}]")


def _assert_on(device: torch.device, outputs, env: WorldFMVectorEnv) -> None:
    found = list(_tensors(outputs, "step"))
    found += [(f"state.{name}", getattr(env.state, name)) for name in env.state.field_names()]
    found += [(f"task.{name}", getattr(env.task, name)) for name in env.task.state_fields]
    wrong = [f"{name} on {t.device}" for name, t in found if t.device != device]
    assert not wrong, f"tensors off the env's device {device}: {wrong}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("renderer", ["anchor", "oracle", "worldfm"])
@pytest.mark.parametrize("autoreset_mode", ["next_step", "same_step"])
def test_step_outputs_and_state_stay_on_the_env_device(device, renderer, autoreset_mode):
    options = dict(KW, resolution=64) if renderer == "worldfm" else KW  # the shipped frame model is 64x64
    env = WorldFMVectorEnv(
        num_envs=3, renderer=renderer, device=device, autoreset_mode=autoreset_mode, include_pose=True, **options
    )
    target = env.device
    assert target.type == device
    outputs = env.reset(seed=3)
    _assert_on(target, outputs, env)
    actions = torch.tensor([1, 2, 1], device=target)
    for step in range(6):  # episodes of at most 4 steps: resets (by truncation) happen in between
        outputs = env.step(actions if step % 2 else actions.cpu())  # host actions are moved to the device
        _assert_on(target, outputs, env)
    assert int(env.state.episode_count.min()) >= 1  # every env reset at least once
    partial = env.reset(options={"env_idx": [0, 2]})  # options given on the host
    _assert_on(target, partial, env)
    env.close()


@pytest.mark.parametrize("device", DEVICES)
def test_continuous_actions_and_pointgoal_on_the_env_device(device):
    env = WorldFMVectorEnv(num_envs=2, renderer="anchor", device=device, action_type="continuous", **KW)
    _assert_on(env.device, env.reset(seed=0), env)
    for _ in range(5):
        _assert_on(env.device, env.step(torch.full((2, 4), 0.5)), env)
    env.close()


def test_the_cuda_reset_path_gives_the_cpu_path_episodes(monkeypatch):
    """On CUDA a reset computes every env and keeps the resetting ones by mask; on the CPU it computes only the
    resetting rows. Forcing the mask path on the CPU must change nothing in what the envs observe."""

    def run() -> list:
        env = WorldFMVectorEnv(num_envs=4, renderer="anchor", device="cpu", **KW)
        obs, _ = env.reset(seed=11)
        seen = [obs]
        gen = torch.Generator().manual_seed(0)
        for _ in range(12):
            obs, reward, terminated, truncated, info = env.step(torch.randint(0, 4, (4,), generator=gen))
            seen += [obs, reward, terminated, truncated, info["distance_to_goal"]]
        seen += [env.state.position.clone(), env.state.scene_index.clone(), env.task.goal.clone()]
        env.reset(options={"env_idx": [1, 3]})
        seen += [env.state.position.clone(), env.task.goal.clone()]
        env.close()
        return seen

    index_path = run()
    masked = []

    def as_mask(index=None, mask=None):
        """The CUDA form of the rows: every env, selected by mask."""
        if index is not None:
            mask = torch.zeros(4, dtype=torch.bool)
            mask[index] = True
        masked.append(True)
        return state_module.EnvRows(mask=mask)

    monkeypatch.setattr(vector_module, "EnvRows", as_mask)
    mask_path = run()
    assert masked, "the reset did not build its rows through EnvRows"
    for a, b in zip(index_path, mask_path, strict=True):
        for (name, x), (_, y) in zip(_tensors(a, "out"), _tensors(b, "out"), strict=True):
            torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)
