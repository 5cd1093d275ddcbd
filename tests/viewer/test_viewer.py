"""``worldfm-env view``: key mapping and latest-key-wins coalescing of the Session, the message checks, the map,
recording, the autopilot, the websocket server (a malformed message gets an error reply and the server keeps
serving), and the page in a real browser (headless Debian Chromium driven by Playwright)."""

from __future__ import annotations

import json
import math
import time
import types
import urllib.request

import numpy as np
import pytest
import torch
from browser_harness import CHROMIUM_ARGS, chromium_executable, running_server, wait_for_frame

from worldfm_env.viewer.protocol import KEY_BINDINGS, ProtocolError, normalize_key, parse_message
from worldfm_env.viewer.session import PANELS, Session, memory_modes
from worldfm_env.viewer.topdown import AGENT_COLOUR, GOAL_COLOUR, MEMORY_COLOUR, TopDownMap

SCENES = "procedural:train:1"
RESOLUTION = 32
FORWARD, TURN, TILT = 0.25, 15.0, 15.0  # EnvConfig defaults: forward_step, turn_angle_deg, tilt_angle_deg


def _forward_is_free(session: Session) -> bool:
    env = session.env
    yaw = env.yaw
    step = FORWARD * torch.stack([-torch.sin(yaw), torch.zeros_like(yaw), torch.cos(yaw)], dim=1)
    return bool(env.moves_free(env.position, env.position + step)[0])


@pytest.fixture(scope="module")
def free_seed() -> int:
    """A seed whose first episode starts with a free forward step (so that W visibly moves)."""
    session = Session(scenes=SCENES, seed=0, renderer="anchor", resolution=RESOLUTION, device="cpu")
    try:
        for seed in range(32):
            session.configure(seed=seed)
            if _forward_is_free(session):
                return seed
    finally:
        session.close()
    raise AssertionError("no seed in [0, 32) starts with a free forward step")


@pytest.fixture(scope="module")
def shared_session(free_seed):
    """A session for tests that only read it (the map, the frame message, refused keys)."""
    session = make_session(free_seed)
    yield session
    session.close()


def make_session(seed: int, tmp_path=None, **kwargs) -> Session:
    options = dict(scenes=SCENES, seed=seed, renderer="anchor", resolution=RESOLUTION, device="cpu")
    if tmp_path is not None:
        options["record_dir"] = tmp_path / "recordings"
    return Session(**{**options, **kwargs})


def _yaw_delta(after: float, before: float) -> float:
    """after - before in degrees, wrapped into (-180, 180]."""
    d = (after - before) % 360.0
    return d - 360.0 if d > 180.0 else d


# ---------------------------------------------------------------------------------------------- keys and Session


@pytest.mark.parametrize(
    "key, action",
    [("w", 1), ("W", 1), ("ArrowUp", 1), ("a", 2), ("ArrowLeft", 2), ("d", 3), ("ArrowRight", 3), ("r", 4),
     ("f", 5), (" ", 0), ("Space", 0)],
)  # fmt: skip
def test_movement_keys_map_to_env_actions(key, action):
    assert KEY_BINDINGS[normalize_key(key)] == ("action", action)


def test_other_keys():
    assert KEY_BINDINGS[normalize_key("Backspace")] == ("reset", None)
    assert [KEY_BINDINGS[normalize_key(k)] for k in "123"] == [
        ("renderer", "worldfm"),
        ("renderer", "anchor"),
        ("renderer", "oracle"),
    ]
    with pytest.raises(ProtocolError, match="'key'.*'w'"):
        normalize_key("z")


def test_keys_move_the_agent_as_bound(free_seed):
    session = make_session(free_seed)
    try:
        start = session.pose()
        session.apply_key("w")
        moved = session.pose()
        yaw = math.radians(start["yaw_deg"])
        assert moved["x"] == pytest.approx(start["x"] - FORWARD * math.sin(yaw), abs=1e-4)
        assert moved["z"] == pytest.approx(start["z"] + FORWARD * math.cos(yaw), abs=1e-4)
        session.apply_key("d")  # right: yaw decreases (positive yaw is a left turn)
        assert _yaw_delta(session.pose()["yaw_deg"], moved["yaw_deg"]) == pytest.approx(-TURN, abs=1e-3)
        session.apply_key("ArrowLeft")
        assert _yaw_delta(session.pose()["yaw_deg"], moved["yaw_deg"]) == pytest.approx(0.0, abs=1e-3)
        session.apply_key("r")
        assert session.pose()["pitch_deg"] == pytest.approx(TILT, abs=1e-3)
        session.apply_key("f")
        assert session.pose()["pitch_deg"] == pytest.approx(0.0, abs=1e-3)
        assert int(session.env.elapsed_steps[0]) == 5
        assert session.metrics()["collisions"] == 0
        session.apply_key("Backspace")
        assert session.pose() == pytest.approx(start)
        assert int(session.env.elapsed_steps[0]) == 0 and session.path == [(start["x"], start["z"])]
    finally:
        session.close()


def test_latest_key_wins(free_seed):
    session = make_session(free_seed)
    try:
        start = session.pose()
        for key in ["w", "w", "a", "d"]:  # pressed while no frame was being made: only the last one counts
            session.submit_key(key)
        assert session.pending_key == "d"
        result = session.process()
        assert session.applied_keys == ["d"]
        assert session.coalesced == 3
        pose = session.pose()
        assert (pose["x"], pose["z"]) == pytest.approx((start["x"], start["z"]))
        assert _yaw_delta(pose["yaw_deg"], start["yaw_deg"]) == pytest.approx(-TURN, abs=1e-3)
        assert int(session.env.elapsed_steps[0]) == 1
        assert result.frame is not None and result.frame["step"] == 1 and not result.errors
        assert session.process().frame is None  # nothing waiting: no step, no frame
    finally:
        session.close()


def test_controls_queue_and_failures_reach_their_sender(free_seed):
    session = make_session(free_seed)
    try:
        start = session.pose()
        session.post({"type": "configure", "scenes": "procedural:nope"}, origin="A")
        session.post({"type": "key", "key": "d"}, origin="B")
        result = session.process()
        assert len(result.errors) == 1
        origin, message = result.errors[0]
        assert origin == "A" and "procedural:nope" in message and "procedural:<split>" in message
        # The env stayed and the key after the failed control was applied.
        assert session.scenes == SCENES
        assert _yaw_delta(session.pose()["yaw_deg"], start["yaw_deg"]) == pytest.approx(-TURN, abs=1e-3)
        assert result.frame is not None
    finally:
        session.close()


def test_renderer_switch_keeps_the_pose_and_shows_another_frame(free_seed):
    session = make_session(free_seed)
    try:
        session.apply_key("w")
        session.apply_key("d")
        before, step = session.pose(), int(session.env.elapsed_steps[0])
        anchor_frame = session.obs["rgb"][0].cpu().numpy()
        panels = session.panel_frames()
        assert np.array_equal(panels["anchor"], anchor_frame)
        session.apply_key("3")
        assert session.env.config.renderer == "oracle"
        assert session.pose() == pytest.approx(before)
        assert int(session.env.elapsed_steps[0]) == step
        oracle_frame = session.obs["rgb"][0].cpu().numpy()
        assert not np.array_equal(oracle_frame, anchor_frame)
        assert np.array_equal(oracle_frame, panels["ground_truth"])  # the panel showed this pose's ground truth
        assert np.array_equal(session.panel_frames()["anchor"], anchor_frame)
        session.apply_key("2")
        assert session.env.config.renderer == "anchor"
        assert np.array_equal(session.obs["rgb"][0].cpu().numpy(), anchor_frame)
        # No frame model ships for 32x32: the worldfm key fails with the reason; the session keeps its env.
        with pytest.raises(ValueError, match="worldfm"):
            session.apply_key("1")
        assert session.env.config.renderer == "anchor" and session.pose() == pytest.approx(before)
        assert "generated" in session.unavailable()
    finally:
        session.close()


def test_frame_message(shared_session):
    message = shared_session.frame_message()
    assert message["type"] == "frame" and message["renderer"] == "anchor"
    assert set(message["images"]) == {"observation", "map", *PANELS}
    assert message["images"]["generated"] is None and message["images"]["anchor"]
    assert "32x32" in message["unavailable"]["generated"]  # why: no frame model ships for this resolution
    assert {"success", "spl", "distance_to_goal", "collisions"} <= set(message["metrics"])
    assert message["pointgoal"]["distance"] > 0
    assert set(message["pose"]) == {"x", "y", "z", "yaw_deg", "pitch_deg"}
    json.dumps(message)  # JSON as it is


def test_recording_writes_an_mp4(free_seed, tmp_path):
    import imageio.v3 as iio

    session = make_session(free_seed, tmp_path)
    try:
        session.post({"type": "record", "on": True})
        assert session.process().frame is not None
        for key in ["w", "a", "r"]:
            session.submit_key(key)
            session.process()
        session.post({"type": "record", "on": False})
        result = session.process()
        assert result.notices and result.notices[0]["type"] == "recorded"
        path = session.last_recording
        assert path.is_file() and path.parent == tmp_path / "recordings"
        frames = iio.imread(path)
        assert frames.shape == (4, 452, 512, 3)  # the start frame and one per key
        assert not session.recording
    finally:
        session.close()


# -------------------------------------------------------------------------------------------------- messages


@pytest.mark.parametrize(
    "text, words",
    [
        ("w", "not valid JSON"),
        (b'{"type": "key"}', "binary"),
        ("[1, 2]", "JSON object"),
        ('{"key": "w"}', "'type'"),
        ('{"type": "jump"}', "'type'"),
        ('{"type": "key"}', "'key'"),
        ('{"type": "key", "key": "z"}', "'key'"),
        ('{"type": "key", "key": "w", "speed": 2}', "unknown field"),
        ('{"type": "configure", "seed": -1}', "'seed'"),
        ('{"type": "configure", "seed": true}', "'seed'"),
        ('{"type": "configure", "renderer": "nerf"}', "'renderer'"),
        ('{"type": "configure", "scenes": ""}', "'scenes'"),
        ('{"type": "configure", "memory": "forever"}', "'memory'"),
        ('{"type": "record"}', "'on'"),
        ('{"type": "autopilot", "on": "yes"}', "'on'"),
    ],
)
def test_malformed_messages_are_named(text, words):
    with pytest.raises(ProtocolError) as err:
        parse_message(text, memory_modes=("static", "grow"))
    assert words in str(err.value)


def test_memory_field_without_memory_option():
    with pytest.raises(ProtocolError, match="'memory' is not available"):
        parse_message('{"type": "configure", "memory": "grow"}', memory_modes=None)
    assert parse_message('{"type": "configure", "memory": "grow"}', ("static", "grow"))["memory"] == "grow"


# ------------------------------------------------------------------------------------------------------ map


def _pixels(image: np.ndarray, colour) -> np.ndarray:
    return np.argwhere((image == np.asarray(colour, dtype=np.uint8)).all(axis=-1))  # (K, 2) rows (v, u)


@pytest.mark.parametrize("yaw_deg, axis, sign", [(0.0, 0, -1), (180.0, 0, 1), (90.0, 1, -1), (-90.0, 1, 1)])
def test_map_heading_points_the_way_the_agent_looks(shared_session, yaw_deg, axis, sign):
    # Seen from above: +z is up on the map (smaller v), +x right; yaw 0 looks along +z, yaw +90 (left) along -x.
    top = TopDownMap(shared_session.env.pool, 0)
    x, z = shared_session.path[0]
    image = top.draw([(x, z)], (x, z), math.radians(yaw_deg))
    agent = _pixels(image, AGENT_COLOUR)
    assert len(agent) > 0
    centre = np.asarray(top.to_pixel(x, z))[::-1]  # (v, u)
    offsets = agent - centre
    tip = offsets[np.argmax(np.linalg.norm(offsets, axis=1))]  # the arrow's farthest pixel is its tip
    assert sign * tip[axis] > 3.0, tip
    assert abs(tip[1 - axis]) < 0.5 * abs(tip[axis]), tip


def test_map_draws_goal_and_memory(shared_session):
    session = shared_session
    top = TopDownMap(session.env.pool, 0)
    x, z = session.path[0]
    corner = top.origin  # the agent out of the way, at the map's corner
    plain = top.draw([(x, z)], corner, 0.0)
    assert len(_pixels(plain, GOAL_COLOUR)) == 0 and len(_pixels(plain, MEMORY_COLOUR)) == 0
    goal = (float(session.env.task.goal[0, 0]), float(session.env.task.goal[0, 2]))
    goal_pixels = _pixels(top.draw([(x, z)], corner, 0.0, goal, 0.2), GOAL_COLOUR)
    gv, gu = np.asarray(top.to_pixel(*goal))[::-1]
    assert len(goal_pixels) > 0 and np.abs(goal_pixels.mean(axis=0) - (gv, gu)).max() < 2
    mx = top.origin[0] + 0.5 * top.cols * top.cell_size  # the map's centre, and 1 m to its +x and +z
    mz = top.origin[1] + 0.5 * top.rows * top.cell_size
    points = [(mx, mz), (mx + 1.0, mz), (mx, mz + 1.0)]
    memory = torch.tensor([[px, -1.0, pz] for px, pz in points] + [[1e6, -1.0, 1e6]])  # the last: off the map
    image = top.draw([(x, z)], corner, 0.0, memory_xyz=memory)
    magenta = {tuple(p) for p in _pixels(image, MEMORY_COLOUR)}
    expected = {(int(v), int(u)) for u, v in (top.to_pixel(px, pz) for px, pz in points)}
    assert expected <= magenta and len(magenta) <= 4 * len(points)  # dots of at most 2 x 2 pixels


def test_grown_memory_hook_is_read_defensively():
    class Grown:
        def grown_points(self, env_index):
            assert env_index == 0
            return torch.ones(5, 3), torch.zeros(5, 3, dtype=torch.uint8)

    def read(env):
        return Session.grown_memory(types.SimpleNamespace(env=env))

    assert read(types.SimpleNamespace()) is None  # no memory attribute
    assert read(types.SimpleNamespace(memory=None)) is None
    assert read(types.SimpleNamespace(memory=object())) is None  # no grown_points method
    xyz, rgb = read(types.SimpleNamespace(memory=Grown()))
    assert xyz.shape == (5, 3) and rgb.shape == (5, 3) and rgb.dtype == np.uint8


@pytest.mark.skipif(
    memory_modes() is None or "grow" not in (memory_modes() or ()), reason="this EnvConfig has no memory='grow'"
)
def test_grown_memory_is_drawn_with_a_growing_env(free_seed):
    session = make_session(free_seed, renderer="oracle", memory="grow")
    try:
        for key in ["a", "a", "w", "d"]:
            session.apply_key(key)
        grown = session.grown_memory()
        assert grown is not None and len(grown[0]) > 0
        assert session.frame_message()["memory_points"] == len(grown[0])
        assert len(_pixels(session.map_frame(), MEMORY_COLOUR)) > 0
    finally:
        session.close()


# --------------------------------------------------------------------------------------------------- autopilot


def test_policy_drives_with_the_autopilot(free_seed, tmp_path):
    from agents.ppo_torch import Agent

    probe = make_session(free_seed)
    space = probe.env.single_observation_space
    probe.close()
    agent = Agent(space, 4, hidden_size=16, recurrent=True)
    path = tmp_path / "ppo.pt"
    args = {"task": "pointnav", "resolution": RESOLUTION, "include_depth": False, "allow_sliding": False}
    torch.save(
        {
            "state_dict": agent.state_dict(),
            "model_kwargs": {"hidden_size": 16, "recurrent": True},
            "action_ids": [0, 1, 2, 3],
            "args": args,
        },
        path,
    )
    with pytest.raises(ValueError, match="resolution=64 does not fit the policy"):
        make_session(free_seed, policy=f"ppo:{path}", resolution=64)
    session = make_session(free_seed, policy=f"ppo:{path}", resolution=None)
    try:
        assert session.hello_message()["policy"] == f"ppo:{path}"
        session.post({"type": "autopilot", "on": True})
        session.process()
        assert session.autopilot
        steps_before = int(session.env.elapsed_steps[0]) + 3 * int(session.env.episode_count[0])
        for _ in range(3):
            result = session.process()  # no key waiting: the policy takes a step
            assert result.frame is not None and not result.errors
        steps_after = int(session.env.elapsed_steps[0]) + 3 * int(session.env.episode_count[0])
        assert steps_after > steps_before
        session.submit_key("d")  # a key takes the wheel
        session.process()
        assert not session.autopilot
    finally:
        session.close()


def test_policy_spec_errors(shared_session, tmp_path):
    from worldfm_env.viewer.policy import load_policy

    with pytest.raises(ValueError, match="ppo:PATH"):
        load_policy("sb3:model.zip")
    with pytest.raises(ValueError, match="no such file"):
        load_policy(f"ppo:{tmp_path / 'missing.pt'}")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="state_dict"):
        load_policy(f"ppo:{tmp_path / 'other.pt'}")
    with pytest.raises(ValueError, match="--policy ppo:PATH"):
        shared_session.apply_key("p")
    assert not shared_session.autopilot


# ------------------------------------------------------------------------------------------------ the server


def test_websocket_malformed_message_gets_an_error_and_the_server_keeps_serving(free_seed):
    from websockets.sync.client import connect

    session = make_session(free_seed)
    with running_server(session) as url:
        page = urllib.request.urlopen(url + "/", timeout=30).read().decode()
        assert "worldfm-env view" in page and "/static/viewer.js" in page
        assert urllib.request.urlopen(url + "/static/viewer.js", timeout=30).status == 200
        with connect(url.replace("http", "ws") + "/ws", open_timeout=30) as ws:
            hello = json.loads(ws.recv(timeout=60))
            assert hello["type"] == "hello" and "w" in hello["bound_keys"]
            first = json.loads(ws.recv(timeout=60))
            assert first["type"] == "frame"
            for bad, words in [
                ("{not json", "not valid JSON"),
                ('{"type": "key", "key": "z"}', "field 'key'"),
                ('{"type": "teleport"}', "field 'type'"),
                ('{"type": "configure", "seed": "zero"}', "field 'seed'"),
            ]:
                ws.send(bad)
                reply = json.loads(ws.recv(timeout=60))
                assert reply["type"] == "error" and words in reply["message"], (bad, reply)
            ws.send(b"\x00\x01")
            reply = json.loads(ws.recv(timeout=60))
            assert reply["type"] == "error" and "binary" in reply["message"]
            ws.send(json.dumps({"type": "key", "key": "d"}))
            frame = json.loads(ws.recv(timeout=60))
            assert frame["type"] == "frame" and frame["step"] == first["step"] + 1
            assert _yaw_delta(frame["pose"]["yaw_deg"], first["pose"]["yaw_deg"]) == pytest.approx(-TURN, abs=1e-3)
            # A control that fails in the env (a bad scene spec) is an error too; the session keeps its env.
            ws.send(json.dumps({"type": "configure", "scenes": "procedural:nope"}))
            reply = json.loads(ws.recv(timeout=60))
            assert reply["type"] == "error" and "procedural:nope" in reply["message"]
            ws.send(json.dumps({"type": "key", "key": "a"}))
            frame = json.loads(ws.recv(timeout=60))
            assert frame["type"] == "frame" and frame["step"] == first["step"] + 2


def test_websocket_keys_sent_during_a_slow_frame_coalesce_to_the_latest(free_seed):
    import threading

    from websockets.sync.client import connect

    session = make_session(free_seed)
    entered, release = threading.Event(), threading.Event()
    original_step = session.step

    def slow_step(action):  # the first step waits until the test has sent the next keys
        if not entered.is_set():
            entered.set()
            assert release.wait(timeout=60)
        original_step(action)

    session.step = slow_step
    with running_server(session) as url:
        with connect(url.replace("http", "ws") + "/ws", open_timeout=30) as ws:
            assert json.loads(ws.recv(timeout=60))["type"] == "hello"
            first = json.loads(ws.recv(timeout=60))
            ws.send(json.dumps({"type": "key", "key": "w"}))
            assert entered.wait(timeout=60)
            for key in ["a", "a", "w", "d"]:  # arrive while the frame of "w" is being made
                ws.send(json.dumps({"type": "key", "key": key}))
            deadline = time.monotonic() + 30
            while session.pending_key != "d" or session.coalesced < 3:
                assert time.monotonic() < deadline, (session.pending_key, session.coalesced)
                time.sleep(0.01)
            release.set()
            after_w = json.loads(ws.recv(timeout=60))
            after_d = json.loads(ws.recv(timeout=60))
            assert (after_w["step"], after_d["step"]) == (first["step"] + 1, first["step"] + 2)
            assert _yaw_delta(after_d["pose"]["yaw_deg"], after_w["pose"]["yaw_deg"]) == pytest.approx(-TURN, abs=1e-3)
            with pytest.raises(TimeoutError):
                ws.recv(timeout=1.0)  # no backlog: the three skipped keys never arrive as frames
    assert session.applied_keys == ["w", "d"] and session.coalesced == 3


def test_view_command_line(monkeypatch, capsys):
    from worldfm_env import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(["view", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith("usage: worldfm-env view")
    for default in ("(default: 127.0.0.1)", "(default: 8765)", "(default: procedural:test:1)", "(default: worldfm)"):
        assert default in text
    called = {}
    monkeypatch.setattr("worldfm_env.viewer.server.serve", lambda **kwargs: called.update(kwargs) or 0)
    assert cli.main(["view", "--port", "9001", "--renderer", "anchor", "--seed", "3", "--memory", "grow"]) == 0
    assert called["host"] == "127.0.0.1" and called["port"] == 9001
    assert (called["renderer"], called["seed"], called["memory"], called["policy"]) == ("anchor", 3, "grow", None)


# ----------------------------------------------------------------------------------------------- the browser


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium under Playwright. Missing Chromium or Playwright is a failure, not a skip."""
    executable = chromium_executable()
    if executable is None:
        pytest.fail("Chromium is not installed: run `make browser` (apt-get install -y chromium) for the viewer test")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[dev]' (Playwright drives the system Chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _pose(page) -> dict[str, float]:
    return {k: float(page.inner_text(f"#pose-{k}")) for k in ("x", "y", "z", "yaw", "pitch")}


def _src(page, panel: str) -> str:
    return page.get_attribute(f"#img-{panel}", "src") or ""


def test_page_drives_the_env_in_chromium(browser, free_seed):
    session = make_session(free_seed)
    with running_server(session) as url:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(url + "/")
        seq = wait_for_frame(page, 0)
        assert page.inner_text("#renderer") == "anchor"
        start, start_frame = _pose(page), _src(page, "observation")
        assert start_frame.startswith("data:image/png;base64,")
        assert page.evaluate("getComputedStyle(document.getElementById('img-observation')).imageRendering") in (
            "pixelated",
            "crisp-edges",
        )

        page.keyboard.press("w")
        seq = wait_for_frame(page, seq)
        moved = _pose(page)
        yaw = math.radians(start["yaw"])
        assert moved["x"] == pytest.approx(start["x"] - FORWARD * math.sin(yaw), abs=2e-3)
        assert moved["z"] == pytest.approx(start["z"] + FORWARD * math.cos(yaw), abs=2e-3)
        assert page.inner_text("#step") == "1"
        assert _src(page, "observation") != start_frame

        page.keyboard.press("d")
        seq = wait_for_frame(page, seq)
        turned = _pose(page)
        assert _yaw_delta(turned["yaw"], moved["yaw"]) == pytest.approx(-TURN, abs=0.02)
        assert (turned["x"], turned["z"]) == (moved["x"], moved["z"])

        anchor_frame = _src(page, "observation")
        page.keyboard.press("3")
        seq = wait_for_frame(page, seq)
        assert page.inner_text("#renderer") == "oracle" and page.input_value("#ctl-renderer") == "oracle"
        assert _pose(page) == turned  # the same pose
        assert _src(page, "observation") != anchor_frame  # another renderer's frame of it
        assert _src(page, "observation") == _src(page, "ground_truth")
        assert _src(page, "anchor") == anchor_frame
        page.keyboard.press("2")
        seq = wait_for_frame(page, seq)
        assert page.inner_text("#renderer") == "anchor" and _src(page, "observation") == anchor_frame

        page.keyboard.press("Backspace")
        seq = wait_for_frame(page, seq)
        assert _pose(page) == start and page.inner_text("#step") == "0"
        assert _src(page, "observation") == start_frame
        assert page.url.rstrip("/") == url  # Backspace did not navigate away
        assert not errors, errors
        page.close()


def test_page_records_and_switches_scenes_in_chromium(browser, free_seed, tmp_path):
    session = make_session(free_seed, tmp_path)
    with running_server(session) as url:
        page = browser.new_page()
        page.goto(url + "/")
        seq = wait_for_frame(page, 0)
        assert page.is_hidden("#autopilot-row")  # no policy
        page.click("#btn-record")
        seq = wait_for_frame(page, seq)
        assert page.inner_text("#btn-record") == "stop recording"
        page.keyboard.press("a")
        seq = wait_for_frame(page, seq)
        page.click("#btn-record")
        seq = wait_for_frame(page, seq)
        page.wait_for_selector("#record-link:not([hidden])")
        link = page.get_attribute("#record-link", "href")
        assert link.startswith("/recordings/worldfm-view-") and link.endswith(".mp4")
        assert urllib.request.urlopen(url + link, timeout=30).read(12)[4:8] == b"ftyp"  # an MP4
        assert len(list((tmp_path / "recordings").glob("*.mp4"))) == 1

        # Controls: another seed starts that seed's episode.
        page.fill("#ctl-seed", str(free_seed + 1))
        page.click("#ctl-apply")
        wait_for_frame(page, seq)
        page.wait_for_function("() => document.getElementById('ctl-seed').value !== ''")
        assert session.seed == free_seed + 1
        assert page.inner_text("#step") == "0"
        page.close()
