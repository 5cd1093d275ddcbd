"""Geodesic distance fields against a plain Dijkstra on hand-made grids."""

import heapq
import math

import pytest
import torch

from worldfm_env.scenes.navigation import geodesic_distance


def dijkstra(free, source):
    rows, cols = len(free), len(free[0])
    dist = [[math.inf] * cols for _ in range(rows)]
    dist[source[0]][source[1]] = 0.0
    heap = [(0.0, source)]
    while heap:
        d, (r, c) = heapq.heappop(heap)
        if d > dist[r][c]:
            continue
        for dr in range(-2, 3):
            for dc in range(-2, 3):
                if (dr, dc) == (0, 0) or (abs(dr) == 2 and abs(dc) != 1) or (abs(dc) == 2 and abs(dr) != 1):
                    continue
                nr, nc = r + dr, c + dc
                if not (0 <= nr < rows and 0 <= nc < cols) or not free[nr][nc]:
                    continue
                sr, sc = (dr > 0) - (dr < 0), (dc > 0) - (dc < 0)
                if abs(dr) == 1 and abs(dc) == 1 and (not free[r + dr][c] or not free[r][c + dc]):
                    continue
                if abs(dc) == 2 and (not free[r][c + sc] or not free[r + dr][c + sc]):
                    continue
                if abs(dr) == 2 and (not free[r + sr][c] or not free[r + sr][c + dc]):
                    continue
                nd = d + math.hypot(dr, dc)
                if nd < dist[nr][nc]:
                    dist[nr][nc] = nd
                    heapq.heappush(heap, (nd, (nr, nc)))
    return torch.tensor(dist, dtype=torch.float32)


GRIDS = [
    ["....", "....", "...."],
    [".#..", ".#.#", "...#", "##.."],
    [
        "......#...",
        ".####.#.#.",
        ".#....#.#.",
        ".#.####.#.",
        ".#......#.",
        ".########.",
        "..........",
        "#####.####",
        "....#.....",
    ],
]


@pytest.mark.parametrize("grid", GRIDS)
def test_geodesic_matches_dijkstra(grid):
    free = torch.tensor([[ch == "." for ch in row] for row in grid])
    cells = torch.nonzero(free)
    for source in cells[:: max(1, len(cells) // 5)]:
        expected = dijkstra(free.tolist(), tuple(source.tolist()))
        got = geodesic_distance(free, source, cell_size=1.0)
        assert torch.allclose(got, expected, atol=1e-4), (got, expected)


def test_geodesic_batched_and_scaled():
    free = torch.tensor([[ch == "." for ch in row] for row in GRIDS[2]])
    sources = torch.tensor([[0, 0], [8, 9], [4, 2]])
    batched = geodesic_distance(free, sources, cell_size=0.1)
    for i, s in enumerate(sources):
        assert torch.allclose(batched[i], dijkstra(free.tolist(), tuple(s.tolist())) * 0.1, atol=1e-5)


def test_unreachable_and_bad_source():
    free = torch.tensor([[True, False, True]])
    d = geodesic_distance(free, torch.tensor([0, 0]))
    assert d[0, 0] == 0 and math.isinf(d[0, 1]) and math.isinf(d[0, 2])
    with pytest.raises(ValueError, match="source"):
        geodesic_distance(free, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="source"):
        geodesic_distance(free, torch.tensor([5, 0]))


def test_open_grid_close_to_euclidean():
    """16 neighbours: within 3 % of the straight-line distance in open space (8 neighbours: up to 8.2 %)."""
    free = torch.ones(81, 81, dtype=torch.bool)
    d = geodesic_distance(free, torch.tensor([40, 40]), cell_size=0.1)
    rows, cols = torch.meshgrid(torch.arange(81.0), torch.arange(81.0), indexing="ij")
    euclid = torch.hypot(rows - 40, cols - 40) * 0.1
    ratio = d[euclid > 1.0] / euclid[euclid > 1.0]
    assert float(ratio.min()) >= 1.0 - 1e-5 and float(ratio.max()) < 1.03


def test_floor_estimate_survives_absurd_coordinates():
    """A corrupted cloud with coordinates near 1e30 gets a floor from its occupied bins, not a 1e30-bin histogram."""
    from worldfm_env.scenes.navigation import estimate_floor_y

    floor = torch.zeros(50, 3)
    floor[:, 1] = 1.5
    outliers = torch.tensor([[0.0, 9.5e29, 0.0], [1.0, -3.0e30, 2.0], [2.0, 7.0e18, 1.0]])
    assert estimate_floor_y(torch.cat([floor, outliers])) == 1.5


def test_grid_from_points_with_absurd_extent_is_a_value_error():
    from worldfm_env.scenes.navigation import navigation_grid_from_points

    floor = torch.zeros(50, 3)
    floor[:, 1] = 1.5
    far = torch.tensor([[1.0e30, 1.5, 0.0]])
    with pytest.raises(ValueError, match="xyz: the points span"):
        navigation_grid_from_points(torch.cat([floor, far]), cell_size=0.1, floor_y=1.5)


def test_grid_from_points_records_the_obstacles_own_cells():
    """A floor split by a one-cell wall of points: the grid records the wall's cells (one a column) in ``occupied``,
    before the agent's dilation. Here the dilation is of whole cells, so the obstacle cores recover every such cell
    (a grid built from rectangles, dilated by the exact disk, loses thin walls in its cores: the procedural test)."""
    from worldfm_env.scenes.navigation import navigation_grid_from_points, obstacle_cores, obstacle_footprints

    xs, zs = torch.meshgrid(torch.arange(40) * 0.1 + 0.05, torch.arange(40) * 0.1 + 0.05, indexing="xy")
    floor = torch.stack([xs.flatten(), torch.full((1600,), 1.5), zs.flatten()], 1)
    wall_x = torch.arange(4, 36) * 0.1 + 0.05
    wall = torch.stack([wall_x, torch.full_like(wall_x, 0.5), torch.full_like(wall_x, 2.05)], 1)  # row 20, 1 m up
    corner = torch.tensor([[0.0, 1.5, 0.0]])  # puts the grid's origin at (0, 0): points at cell centres
    grid = navigation_grid_from_points(torch.cat([corner, floor, wall]), cell_size=0.1, floor_y=1.5, agent_radius=0.18)
    assert grid.origin == (0.0, 0.0)
    assert grid.occupied is not None and not (grid.occupied & grid.free).any()
    rows, cols = grid.world_to_cell(wall[:, 0], wall[:, 2])
    assert grid.occupied[rows, cols].all() and bool((grid.occupied[:, 5:35].sum(0) == 1).all())  # the wall alone
    assert not (grid.occupied & ~obstacle_cores(grid.free, grid.agent_radius, grid.cell_size)).any()
    assert torch.equal(obstacle_footprints(grid), grid.occupied)
