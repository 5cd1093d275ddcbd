"""Tests of ``benchmarks/world_swap.py``: the swapped worlds show the truth's half and the model's other half, and a
tiny run writes its table."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch

# `benchmarks/` is a top-level folder of scripts, not part of the installed package.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agents import ppo_torch  # noqa: E402
from benchmarks import world_swap  # noqa: E402
from worldfm_env.envs.vector import WorldFMVectorEnv  # noqa: E402

ENV = dict(scenes="procedural:test:1", include_depth=True, device="cpu", capture="panorama")


def _first_obs(env_class, renderer: str) -> dict:
    env = env_class(num_envs=2, renderer=renderer, **ENV)
    obs, _ = env.reset(seed=[3, 4])
    out = {k: v.clone() for k, v in obs.items() if k in ("rgb", "depth")}
    if env.pipeline.last_request.anchor is not None:
        out["captured"] = env.pipeline.last_request.anchor.mask.clone()
    env.close()
    return out


@pytest.mark.parametrize("swap", [swap for swap in world_swap.SWAPS if swap != "layout-holes"])
def test_a_swapped_world_shows_the_truths_half_and_the_models_other_half(swap):
    model = _first_obs(WorldFMVectorEnv, "worldfm")
    truth = _first_obs(WorldFMVectorEnv, "oracle")
    swapped = _first_obs(world_swap.swapped_env_class(swap), "worldfm")
    if swap in ("depth", "rgb"):
        taken, kept = ("depth", "rgb") if swap == "depth" else ("rgb", "depth")
        assert torch.equal(swapped[taken], truth[taken])
        assert torch.equal(swapped[kept], model[kept])
        assert not torch.equal(model[taken], truth[taken])  # the swap changed something
    elif swap == "depth-grown":  # a static memory grows no point: the model's frame, unchanged
        assert torch.equal(swapped["rgb"], model["rgb"]) and torch.equal(swapped["depth"], model["depth"])
        assert torch.equal(swapped["rgb"], model["rgb"]) and torch.equal(swapped["depth"], model["depth"])
    else:  # the depth of some pixels: the captured ones (static memory: every covered pixel) or the rest
        captured = model["captured"]
        take = captured if swap == "depth-captured" else ~captured
        assert take.any() and (~take).any()
        assert torch.equal(swapped["rgb"], model["rgb"])
        assert torch.equal(swapped["depth"][take], truth["depth"][take])
        assert torch.equal(swapped["depth"][~take], model["depth"][~take])
        assert not torch.equal(model["depth"][take], truth["depth"][take])
    with pytest.raises(ValueError, match="swap='colour' is not valid"):
        world_swap.swapped_env_class("colour")


def test_grown_points_count_as_generated_depth():
    """A pixel that shows a point of the growing memory takes the truth's depth in the ``depth-generated`` world, not
    in the ``depth-captured`` one."""
    from worldfm_env.render.splat import AnchorRender
    from worldfm_env.renderers.base import RenderOutput, RenderRequest

    class Fixed:
        def __init__(self, value: float) -> None:
            self.value = value

        def render(self, request):
            return RenderOutput(
                torch.full((1, 2, 2, 3), int(self.value), dtype=torch.uint8), torch.full((1, 2, 2), self.value)
            )

    mask = torch.tensor([[[True, True], [False, False]]])
    grown = torch.tensor([[[False, True], [False, False]]])
    anchor = AnchorRender(torch.zeros(1, 2, 2, 3, dtype=torch.uint8), torch.ones(1, 2, 2), mask, grown)
    request = RenderRequest(torch.zeros(1, dtype=torch.long), torch.eye(4)[None], torch.eye(3))
    request.anchor = anchor
    depth = {
        swap: world_swap.SwappedBackend(Fixed(1.0), Fixed(7.0), swap).render(request).depth[0]
        for swap in ("depth-captured", "depth-generated", "depth-holes", "depth-grown")
    }
    assert depth["depth-captured"].tolist() == [[7.0, 1.0], [1.0, 1.0]]
    assert depth["depth-generated"].tolist() == [[1.0, 7.0], [7.0, 7.0]]
    assert depth["depth-holes"].tolist() == [[1.0, 1.0], [7.0, 7.0]]
    assert depth["depth-grown"].tolist() == [[1.0, 7.0], [1.0, 1.0]]
    # The layout's depth, where it bounds the ray, in the holes only; the truth is not read.
    layout_world = world_swap.SwappedBackend(Fixed(1.0), Fixed(7.0), "layout-holes")
    with pytest.raises(ValueError, match="layout-holes"):
        layout_world.render(request)  # no layout depth in the request
    request.layout_depth = torch.tensor([[[3.0, 3.0], [0.0, 3.0]]])
    assert layout_world.render(request).depth[0].tolist() == [[1.0, 1.0], [1.0, 3.0]]


def test_the_layout_world_shows_the_layouts_depth_in_the_holes():
    """With a frame model that reads the layout, the holes' depth is the layout's where it bounds the ray."""
    kwargs = dict(ENV, weights="worldfm-srgbd-layout-64x64", splat_radius="auto")
    env = world_swap.swapped_env_class("layout-holes")(num_envs=2, renderer="worldfm", **kwargs)
    obs, _ = env.reset(seed=[3, 4])
    request = env.pipeline.last_request
    take = ~request.anchor.mask & (request.layout_depth > 0)
    assert take.any() and request.anchor.mask.any()
    depth = obs["depth"][..., 0]
    assert torch.equal(depth[take], request.layout_depth[take])
    assert torch.equal(depth[request.anchor.mask], request.anchor.depth[request.anchor.mask])
    env.close()


def test_a_depth_bound_world_sets_the_envs_depth_bound():
    env = world_swap.swapped_env_class(None, "navigation")(num_envs=1, renderer="worldfm", **ENV)
    assert env.pipeline.depth_bound == "navigation"
    assert not isinstance(env.pipeline.backend, world_swap.SwappedBackend)
    env.close()


def test_tiny_run_evaluates_every_world(tmp_path, capsys):
    checkpoint = tmp_path / "ppo.pt"
    ppo_torch.main(
        [
            *["--total-timesteps", "32", "--num-envs", "2", "--num-steps", "16", "--hidden-size", "32"],
            *["--scenes", "procedural:train:1", "--device", "cpu", "--include-depth", "--capture", "panorama"],
            *["--save-path", str(checkpoint)],
        ]
    )
    out = tmp_path / "out"
    rows = world_swap.main(
        [
            *["--checkpoint", str(checkpoint), "--episodes", "2", "--num-envs", "2", "--max-episode-steps", "4"],
            *["--scenes", "procedural:test:1", "--device", "cpu", "--out", str(out)],
            *["--worlds", *world_swap.DEFAULT_WORLDS, "model, depth capped at the layout", "--memory-carve"],
        ]
    )
    printed = capsys.readouterr().out
    with open(out / "world_swap.csv") as f:
        written = list(csv.DictReader(f))
    assert [(r["world"], r["renderer"], r["swap"], r["depth_bound"]) for r in written] == [
        ("truth", "oracle", "", "none"),
        ("model", "worldfm", "", "none"),
        ("model rgb + true depth", "worldfm", "depth", "none"),
        ("true rgb + model depth", "worldfm", "rgb", "none"),
        ("model, depth capped at the layout", "worldfm", "", "navigation"),
    ]
    assert [r["memory_carve"] for r in written] == ["False"] + ["True"] * 4  # the model worlds' growing memory
    for r in written:
        assert int(r["episodes"]) == 2 and 0.0 <= float(r["success"]) <= 1.0 and r["machine"]
    assert (out / "world_swap.png").stat().st_size > 1000
    assert "| world | success |" in printed and len(rows) == 5
    with pytest.raises(SystemExit):
        world_swap.parse_args(["--checkpoint", str(tmp_path / "missing.pt")])
    with pytest.raises(SystemExit):
        world_swap.parse_args(["--checkpoint", str(checkpoint), "--episodes", "0"])
