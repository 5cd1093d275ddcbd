"""The demo's episode record, progress bar, top-down map and contact sheet (``worldfm_env.demo``)."""

from __future__ import annotations

import numpy as np
import pytest

from worldfm_env.demo import COLUMN_LABELS, TopDownMap, contact_sheet, run_demo, video_frame

SMALL = dict(scenes="procedural:train:1", resolution=32, device="cpu")


class _Bar:
    """Records what the demo tells a tqdm-like progress bar."""

    def __init__(self, total, desc):
        self.total, self.desc, self.n, self.closed = total, desc, 0, False

    def update(self, k):
        self.n += k

    def refresh(self):
        pass

    def close(self):
        self.closed = True


@pytest.fixture(scope="module")
def episode_and_scene():
    bars = []

    def progress(total, desc):
        bars.append(_Bar(total, desc))
        return bars[-1]

    episode, scene = run_demo(max_steps=40, seed=0, progress=progress, **SMALL)
    return episode, scene, bars


def test_progress_bar_ends_with_the_episode(episode_and_scene):
    episode, _, bars = episode_and_scene
    (bar,) = bars
    assert bar.closed
    assert bar.n == episode.steps == bar.total  # not 40: the bar's total is the steps actually taken
    assert len(episode.frames) == len(episode.positions) == len(episode.distances) == episode.steps + 1


def test_episode_reaches_the_goal(episode_and_scene):
    episode, _, _ = episode_and_scene
    assert episode.success
    assert episode.distances[-1] < 0.2 < episode.distances[0]
    assert episode.renderers[0] == "anchor" and episode.renderers[-1] == "oracle"
    assert [label for label, _ in episode.panels(0)][0] == COLUMN_LABELS["anchor"]


def test_top_down_map_marks_path_agent_and_goal(episode_and_scene):
    episode, scene, _ = episode_and_scene
    topdown = TopDownMap(scene, size=128)
    empty = topdown.draw([], 0.0, episode.goal)
    drawn = topdown.draw(episode.positions, episode.yaws[-1], episode.goal)
    assert drawn.shape == (128, 128, 3) and drawn.dtype == np.uint8
    assert (drawn != empty).any()
    # The goal sits where to_pixel puts it: its cross is drawn in the goal colour.
    col, row = (int(round(v)) for v in topdown.to_pixel(*episode.goal))
    patch = empty[max(row - 3, 0) : row + 4, max(col - 3, 0) : col + 4].reshape(-1, 3)
    assert any(tuple(p) == (230, 40, 60) for p in patch)
    with pytest.raises(ValueError, match="size"):
        TopDownMap(scene, size=4)


def test_video_frame_and_contact_sheet_sizes(episode_and_scene):
    episode, scene, _ = episode_and_scene
    topdown = TopDownMap(scene, size=32 * 4)
    frame = video_frame(episode, episode.steps, topdown, scale=4)
    columns = len(episode.panels(0)) + 1
    assert frame.shape[1] >= columns * 128 and frame.shape[0] > 128
    assert frame.shape[0] % 2 == 0 and frame.shape[1] % 2 == 0
    sheet = contact_sheet(episode, TopDownMap(scene, size=64), rows=4, scale=2)
    assert sheet.shape[0] >= 4 * 64 and sheet.shape[1] >= columns * 64
    with pytest.raises(ValueError, match="rows"):
        contact_sheet(episode, topdown, rows=0)
