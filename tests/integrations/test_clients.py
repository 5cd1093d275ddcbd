"""The env under the clients users already have: every Gymnasium vector mode and start method, Gymnasium's wrappers
(single and vector) and the torch-native ones of ``worldfm_env.wrappers``, Stable-Baselines3's vec envs and helpers,
PettingZoo's AEC conversion and api_test, pickling and deep copies.

Multi-process cases run in a child Python with a time limit (its own process group, killed whole on timeout), so a
hang is a test failure, never a stalled run. Tiny scenes (16-32 px), few steps.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import gymnasium.wrappers.vector as gvw
import numpy as np
import pytest
import torch
from conftest import SMALL

pytest.importorskip("pettingzoo")
pytest.importorskip("stable_baselines3")

from pettingzoo.test import api_test  # noqa: E402
from pettingzoo.utils.conversions import parallel_to_aec  # noqa: E402
from stable_baselines3.common.evaluation import evaluate_policy  # noqa: E402
from stable_baselines3.common.vec_env import (  # noqa: E402
    DummyVecEnv,
    VecFrameStack,
    VecMonitor,
    VecNormalize,
)

import worldfm_env  # noqa: E402
from worldfm_env import wrappers as W  # noqa: E402
from worldfm_env._device import resolve_device  # noqa: E402
from worldfm_env.envs.vector import WorldFMVectorEnv  # noqa: E402
from worldfm_env.integrations import SB3VecEnv  # noqa: E402

KW = dict(SMALL, renderer="anchor", resolution=16)
ROOT = Path(__file__).resolve().parents[2]
ACTIONS = [[1, 2], [1, 3], [3, 1], [0, 1], [1, 1], [2, 0], [1, 1]]

# A fixed rollout through gym.make_vec, the same code in this process and in the child processes.
ROLLOUT = f"""
import numpy as np, gymnasium as gym, worldfm_env

def rollout(mode, context=None):
    kw = dict({KW!r}, max_episode_steps=3)
    vector_kwargs = {{"context": context}} if context else {{}}
    env = gym.make_vec("WorldFM/PointNav-v0", num_envs=2, vectorization_mode=mode, vector_kwargs=vector_kwargs, **kw)
    obs, _ = env.reset(seed=5)
    out = [int(np.asarray(obs["rgb"]).sum())]
    for a in {ACTIONS!r}:
        obs, r, te, tr, _ = env.step(np.array(a))
        out.append([int(np.asarray(obs["rgb"]).sum()), np.round(np.asarray(r, dtype=np.float64), 5).tolist(),
                    np.asarray(te).tolist(), np.asarray(tr).tolist()])
    env.close()
    return out
"""


def run_isolated(code: str, timeout: float = 60.0) -> str:
    """Run ``code`` in a fresh Python (own process group); fail the test if it hangs past ``timeout`` or fails."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the child and every worker it started
        out, err = proc.communicate()
        pytest.fail(f"hung: no result within {timeout:.0f} s\nstdout:\n{out[-2000:]}\nstderr:\n{err[-4000:]}")
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{err[-4000:]}"
    return out


@pytest.fixture(scope="module")
def reference_rollout():
    scope: dict = {}
    exec(ROLLOUT, scope)
    return scope["rollout"]("sync")


# ---------------------------------------------------------------------------------------------- Gymnasium vector modes
def test_vector_entry_point_matches_sync(reference_rollout):
    scope: dict = {}
    exec(ROLLOUT, scope)
    assert scope["rollout"]("vector_entry_point") == reference_rollout


@pytest.mark.parametrize("context", ["fork", "spawn", "forkserver"])
def test_async_vector_env_every_start_method(context, reference_rollout):
    """AsyncVectorEnv builds one env in the parent (to read the spaces), then starts the workers: with ``fork`` they
    hung in torch's OpenMP pool before the fork hook; now every start method gives the sync rollout."""
    out = run_isolated(ROLLOUT + f"\nimport json\nprint(json.dumps(rollout('async', {context!r})))\n")
    assert json.loads(out.strip().splitlines()[-1]) == reference_rollout


def test_fork_after_parallel_torch_work_builds_and_steps():
    """The root cause, directly: a parent that ran a parallel torch op forks; the child builds an env and steps."""
    code = f"""
    import os, torch, worldfm_env
    from worldfm_env import _fork
    from worldfm_env.envs.vector import WorldFMVectorEnv
    torch.set_num_threads(2)
    torch.rand(400_000, 3).max(0)  # an OpenMP parallel region in the parent
    pid = os.fork()
    if pid == 0:
        env = WorldFMVectorEnv(num_envs=2, **{KW!r})
        env.reset(seed=0)
        env.step(torch.tensor([1, 2]))
        os._exit(0 if torch.get_num_threads() == 1 and _fork.forked_child_threads_limited() else 3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    assert torch.get_num_threads() == 2  # the parent keeps its threads
    print("ok")
    """
    assert run_isolated(code, timeout=45).strip().endswith("ok")


def test_cuda_after_fork_is_refused_with_the_start_method_to_use(monkeypatch):
    monkeypatch.setattr(torch.cuda, "_is_in_bad_fork", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for device in ("cuda", "cuda:0", "auto"):
        with pytest.raises(RuntimeError, match=r"device=.*forked.*'spawn' or 'forkserver'.*device='cpu'"):
            resolve_device(device)
    assert resolve_device("cpu") == torch.device("cpu")


# ---------------------------------------------------------------------------------------------- Gymnasium wrappers
def vec(**kw) -> WorldFMVectorEnv:
    """The native vector env of 2 tiny envs through ``gym.make_vec`` (``kw`` overrides :data:`KW`)."""
    return gym.make_vec("WorldFM/PointNav-v0", num_envs=2, vectorization_mode="vector_entry_point", **{**KW, **kw})


def drive(env, steps: int = 8, seed: int = 3) -> list:
    """Reset with ``seed`` and step with fixed actions; the outputs of every call."""
    outs = [env.reset(seed=seed)]
    for k in range(steps):
        outs.append(env.step(np.array(ACTIONS[k % len(ACTIONS)])))
    return outs


def as_np(x):
    """Tensors (nested in dicts) as numpy."""
    if isinstance(x, torch.Tensor):
        return x.cpu().numpy()
    if isinstance(x, dict):
        return {k: as_np(v) for k, v in x.items()}
    return np.asarray(x)


@pytest.mark.parametrize("mode", ["next_step", "same_step"])
def test_torch_record_episode_statistics_matches_gymnasiums(mode):
    ours = W.RecordEpisodeStatistics(vec(autoreset_mode=mode, max_episode_steps=3))
    theirs = gvw.RecordEpisodeStatistics(vec(autoreset_mode=mode, max_episode_steps=3, array_type="numpy"))
    finished = 0
    for a, b in zip(drive(ours)[1:], drive(theirs)[1:], strict=True):
        assert ("episode" in a[4]) == ("episode" in b[4])
        if "episode" in a[4]:
            finished += 1
            assert isinstance(a[4]["episode"]["r"], torch.Tensor)
            np.testing.assert_allclose(as_np(a[4]["episode"]["r"]), b[4]["episode"]["r"], atol=1e-6)
            np.testing.assert_array_equal(as_np(a[4]["episode"]["l"]), b[4]["episode"]["l"])
            np.testing.assert_array_equal(as_np(a[4]["_episode"]), b[4]["_episode"])
    assert finished >= 2
    np.testing.assert_allclose(list(ours.return_queue), list(theirs.return_queue), atol=1e-6)
    assert list(ours.length_queue) == list(theirs.length_queue)


def test_torch_normalize_reward_and_observation_match_gymnasiums():
    ours = W.NormalizeObservation(W.NormalizeReward(vec(max_episode_steps=3), gamma=0.9))
    pointgoal = gvw.TransformObservation(
        vec(max_episode_steps=3, array_type="numpy"),
        lambda o: o["pointgoal"],
        single_observation_space=ours.env.single_observation_space["pointgoal"],
    )
    theirs = gvw.NormalizeObservation(gvw.NormalizeReward(pointgoal, gamma=0.9))
    assert ours.single_observation_space["pointgoal"].dtype == np.float32
    assert ours.single_observation_space["rgb"].dtype == np.uint8  # uint8 keys are left alone by default
    for a, b in zip(drive(ours), drive(theirs), strict=True):
        np.testing.assert_allclose(as_np(a[0]["pointgoal"]), b[0], rtol=1e-4, atol=1e-5)
        if len(a) == 5:
            assert a[1].dtype == torch.float32
            np.testing.assert_allclose(as_np(a[1]), b[1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"keys must be .*Box keys \['pointgoal', 'rgb'\].*'goal'"):
        W.NormalizeObservation(vec(), keys=["goal"])


def test_torch_filter_observation_keeps_tensors_and_final_obs():
    env = W.FilterObservation(vec(autoreset_mode="same_step", max_episode_steps=2), ["pointgoal"])
    assert list(env.single_observation_space) == ["pointgoal"]
    outs = drive(env, steps=3)
    assert set(outs[0][0]) == {"pointgoal"} and isinstance(outs[0][0]["pointgoal"], torch.Tensor)
    finals = [o[4]["final_obs"] for o in outs[1:] if "final_obs" in o[4]]
    assert finals and all(set(f) == {"pointgoal"} for f in finals)
    with pytest.raises(ValueError, match=r"filter_keys must be .*\['pointgoal', 'rgb'\].*'depth'"):
        W.FilterObservation(vec(), ["depth"])


@pytest.mark.parametrize(
    "make, replacement",
    [
        (lambda e: gvw.RecordEpisodeStatistics(e), "worldfm_env.wrappers.RecordEpisodeStatistics"),
        (lambda e: gvw.NormalizeReward(e), "worldfm_env.wrappers.NormalizeReward"),
        (lambda e: gvw.FilterObservation(e, ["rgb"]), "worldfm_env.wrappers.FilterObservation"),
        (lambda e: gvw.DictInfoToList(e), "worldfm_env.wrappers.TorchToNumpy"),
        # Deeper in the stack: found above a wrapper that passes tensors through.
        (
            lambda e: gvw.RecordEpisodeStatistics(gvw.ClipReward(e, -1, 1)),
            "worldfm_env.wrappers.RecordEpisodeStatistics",
        ),
    ],
)
def test_numpy_only_wrapper_on_torch_outputs_names_the_fix(make, replacement):
    env = make(vec())
    with pytest.raises(TypeError, match=rf"computes with numpy.*array_type='torch'.*{replacement}.*array_type='numpy'"):
        env.reset(seed=0)


def test_numpy_only_wrapper_added_after_reset_is_caught_at_the_first_step():
    base = vec()
    base.reset(seed=0)
    env = gvw.NormalizeObservation(gvw.FlattenObservation(base))
    with pytest.raises(TypeError, match="NormalizeObservation computes with numpy.*worldfm_env.wrappers.Normal"):
        env.step(np.array([1, 1]))


def test_gymnasium_wrappers_work_over_torch_to_numpy_and_numpy_outputs():
    """TorchToNumpy gives exactly array_type="numpy"'s outputs, so every Gymnasium wrapper works above it."""

    def image_stack(e):
        rgb = gvw.TransformObservation(
            e, lambda o: o["rgb"], single_observation_space=e.single_observation_space["rgb"]
        )
        return gvw.DictInfoToList(
            gvw.RecordEpisodeStatistics(gvw.GrayscaleObservation(gvw.ResizeObservation(rgb, (8, 8))))
        )

    converted = image_stack(W.TorchToNumpy(vec(max_episode_steps=3)))
    native = image_stack(vec(max_episode_steps=3, array_type="numpy"))
    for a, b in zip(drive(converted), drive(native), strict=True):
        assert isinstance(a[0], np.ndarray) and a[0].shape == (2, 8, 8)
        np.testing.assert_array_equal(a[0], b[0])
        if len(a) == 5:
            np.testing.assert_array_equal(a[1], b[1])
            assert isinstance(a[4], list) and [i.keys() for i in a[4]] == [i.keys() for i in b[4]]
    # SAME_STEP final_obs: Gymnasium's object array of per-env observations, as with array_type="numpy".
    a = drive(W.TorchToNumpy(vec(autoreset_mode="same_step", max_episode_steps=2)), steps=2)[-1][4]
    b = drive(vec(autoreset_mode="same_step", max_episode_steps=2, array_type="numpy"), steps=2)[-1][4]
    assert a["final_obs"].dtype == object
    for x, y in zip(a["final_obs"], b["final_obs"], strict=True):
        np.testing.assert_array_equal(x["rgb"], y["rgb"])


def test_gymnasium_array_conversion_wrappers():
    to_numpy = gvw.RecordEpisodeStatistics(gvw.ArrayConversion(vec(), env_xp=torch, target_xp=np))
    obs, *_ = drive(to_numpy, steps=2)[-1]
    assert isinstance(obs["rgb"], np.ndarray)
    to_torch = gvw.NumpyToTorch(vec(array_type="numpy"))
    obs, reward, *_ = drive(to_torch, steps=2)[-1]
    assert isinstance(obs["rgb"], torch.Tensor) and isinstance(reward, torch.Tensor)


def test_record_video_and_image_wrappers(tmp_path):
    """gym-extras: RecordVideo writes mp4s (moviepy), Resize/Grayscale work on the rgb observation (opencv)."""
    env = gym.make("WorldFM/PointNav-v0", render_mode="rgb_array", max_episode_steps=4, **KW)
    env = gym.wrappers.RecordVideo(env, str(tmp_path / "single"), episode_trigger=lambda e: True, disable_logger=True)
    rgb = gym.wrappers.TransformObservation(env, lambda o: o["rgb"], env.observation_space["rgb"])
    small = gym.wrappers.GrayscaleObservation(gym.wrappers.ResizeObservation(rgb, (8, 8)))
    obs, _ = small.reset(seed=0)
    assert obs.shape == (8, 8) and obs.dtype == np.uint8
    for _ in range(5):
        obs, *_ = small.step(1)
    small.close()
    assert len(list((tmp_path / "single").glob("*.mp4"))) >= 1
    venv = gvw.RecordVideo(
        vec(render_mode="rgb_array", max_episode_steps=3), str(tmp_path / "vector"), disable_logger=True
    )
    drive(venv, steps=4)
    venv.close()
    assert list((tmp_path / "vector").glob("*.mp4"))


def test_single_env_gymnasium_wrappers():
    env = gym.wrappers.RecordEpisodeStatistics(gym.make("WorldFM/Explore-v0", max_episode_steps=3, **KW))
    env = gym.wrappers.NormalizeReward(gym.wrappers.FlattenObservation(env))
    env.reset(seed=0)
    for _ in range(3):
        *_, terminated, truncated, info = env.step(1)
    assert truncated and info["episode"]["l"] == 3


# ---------------------------------------------------------------------------------------------- Stable-Baselines3
class RandomPolicy:
    """The ``predict`` interface of an SB3 model: random actions."""

    def __init__(self, space: gym.Space, seed: int = 0) -> None:
        self.space = space
        space.seed(seed)

    def predict(self, obs, state=None, episode_start=None, deterministic=False):
        """One random action per env of the batched ``obs``."""
        n = len(next(iter(obs.values())))
        return np.array([self.space.sample() for _ in range(n)]), None


def sb3_stack(venv):
    """VecMonitor, VecFrameStack, VecNormalize (non-image key) over ``venv``; a few steps, then evaluate_policy."""
    env = VecNormalize(VecFrameStack(VecMonitor(venv), n_stack=2), norm_obs_keys=["pointgoal"], gamma=0.9)
    obs = env.reset()
    assert obs["rgb"].shape == (2, 16, 16, 6) and obs["pointgoal"].shape == (2, 4)
    for _ in range(4):
        obs, rewards, dones, infos = env.step(np.array([1, 2]))
    assert rewards.shape == (2,) and len(infos) == 2
    mean, std = evaluate_policy(RandomPolicy(env.action_space), env, n_eval_episodes=2, warn=False)
    assert np.isfinite(mean) and np.isfinite(std)
    env.close()
    return mean


def make_single():
    """A single env through ``gym.make`` (picklable by reference for SubprocVecEnv's spawn workers)."""
    return gym.make("WorldFM/PointNav-v0", max_episode_steps=3, **KW)


def test_sb3_dummy_vec_env_and_adapter_with_vec_wrappers():
    sb3_stack(DummyVecEnv([make_single, make_single]))
    sb3_stack(SB3VecEnv.from_kwargs(num_envs=2, max_episode_steps=3, **KW))


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_sb3_subproc_vec_env(start_method):
    code = f"""
    import sys
    sys.path.insert(0, {str(ROOT / "tests" / "integrations")!r}); sys.path.insert(0, {str(ROOT / "tests")!r})
    import torch
    torch.rand(400_000, 3).max(0)  # the parent has used torch's thread pool before the fork
    from stable_baselines3.common.vec_env import SubprocVecEnv
    from test_clients import make_single, sb3_stack
    print("mean", sb3_stack(SubprocVecEnv([make_single, make_single], start_method={start_method!r})))
    """
    assert "mean" in run_isolated(code, timeout=60)


# ---------------------------------------------------------------------------------------------- PettingZoo
@pytest.mark.filterwarnings("ignore:Observation")  # api_test notes Dict observations; they are the env's spaces
def test_pettingzoo_parallel_to_aec_api_test():
    env = parallel_to_aec(worldfm_env.parallel_env(num_agents=2, max_episode_steps=4, **KW))
    api_test(env, num_cycles=12)


# ---------------------------------------------------------------------------------------------- pickling
def assert_same_outputs(a, b):
    """``a`` and ``b`` (nested outputs of step/reset/render) are equal, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same_outputs(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same_outputs(x, y)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize("task, mode", [("pointnav", "next_step"), ("explore", "same_step")])
def test_vector_env_pickles_and_copies_continue_the_same_episodes(task, mode):
    env = WorldFMVectorEnv(num_envs=3, task=task, autoreset_mode=mode, max_episode_steps=4, **KW)
    env.reset(seed=1)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        env.step(torch.randint(0, 6, (3,), generator=g))
    copies = [copy.deepcopy(env), pickle.loads(pickle.dumps(env))]
    for c in copies:
        assert c.pipeline is not env.pipeline and c.state.position.data_ptr() != env.state.position.data_ptr()
        assert_same_outputs(c.render(), env.render())
    for _ in range(8):  # through autoresets
        actions = torch.randint(0, 6, (3,), generator=g)
        reference = env.step(actions)
        for c in copies:
            assert_same_outputs(c.step(actions), reference)
    assert_same_outputs(copies[0].action_space.sample(), env.action_space.sample())  # the spaces' generators too


def test_worldfm_renderer_pickles_and_continues_bit_for_bit(tmp_path):
    """The per-env noise generators are re-seeded every step from the env state, so rebuilding them is enough."""
    from worldfm_env.model import build_model, save_checkpoint

    torch.manual_seed(0)
    weights = tmp_path / "tiny-32.safetensors"
    save_checkpoint(build_model("tiny", input_size=32), weights)
    env = WorldFMVectorEnv(num_envs=2, **dict(KW, resolution=32, renderer="worldfm"), weights=str(weights))
    assert env.renderer.noise == "generator"
    env.reset(seed=4)
    env.step(torch.tensor([1, 2]))
    twin = pickle.loads(pickle.dumps(env))
    for a in ([1, 1], [2, 3], [0, 1]):
        assert_same_outputs(twin.step(torch.tensor(a)), env.step(torch.tensor(a)))


def test_single_and_pettingzoo_envs_pickle_and_copy():
    single = gym.make("WorldFM/Explore-v0", **KW)  # with gym.make's wrappers (TimeLimit, order, checker)
    single.reset(seed=0)
    single.step(1)
    copies = [copy.deepcopy(single), pickle.loads(pickle.dumps(single))]
    for action in [1, 2, 1, 3]:
        reference = single.step(action)
        for c in copies:
            assert_same_outputs(c.step(action), reference)

    par = worldfm_env.parallel_env(num_agents=2, **KW)
    par.reset(seed=0)
    par.step({"agent_0": 1, "agent_1": 2})
    copies = [copy.deepcopy(par), pickle.loads(pickle.dumps(par))]
    for _ in range(3):
        actions = {agent: 1 for agent in par.agents}
        reference = par.step(actions)
        for c in copies:
            assert_same_outputs(c.step(actions), reference)
            np.testing.assert_array_equal(c.state(), par.state())


def test_closed_env_pickles_and_task_state_is_checked():
    env = WorldFMVectorEnv(num_envs=2, **KW)
    env.reset(seed=0)
    state = env.task.state_dict()
    with pytest.raises(ValueError, match=r"task state for task='pointnav' must have the keys \['distance'"):
        env.task.load_state_dict({k: v for k, v in state.items() if k != "goal"})
    with pytest.raises(ValueError, match=r"task state 'goal' must be torch.float32 \(2, 3\), got"):
        env.task.load_state_dict({**state, "goal": torch.zeros(3, 3)})
    env.close()
    assert pickle.loads(pickle.dumps(env)).closed
