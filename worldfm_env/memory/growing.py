"""Each env's growing memory: generated pixels the anchor left empty, lifted to 3-D and kept on the device.

After every render of a ``memory="grow"`` env the observation pipeline calls :meth:`GrowingMemory.write`: the pixels
of the frame that no captured (or earlier grown) point covered are lifted to world points with a depth, and the frame
becomes a view of the env's memory:

- the lifted points go into the memory's point ring (``capacity`` points) and are splatted with the scene's points
  from then on (in the same launch and z-buffer, see :class:`~worldfm_env.render.splat.GrownViews`), each covering
  its footprint, so the next frame, a revisit and (for envs that share a memory) the other agents see the same
  generated content;
- the frame with its depth joins the memory's ring of ``views`` reference views, which vote beside the scene's bank.

Depth of a written pixel: the frame's own depth where the backend gives one (the oracle's ray-cast depth, or a frame
model with a depth output), else the anchor's depth filled across the hole from its nearest covered pixel, never
beyond the floor plane; where the anchor is empty altogether, the floor plane and a backdrop at ``backdrop_depth``.
Captured content is never overwritten: the scene's points live in the immutable pool, and only pixels the anchor
left empty are written. Eviction: when a memory's point ring is full, the oldest points are overwritten first; when
its view ring is full, the oldest view. A frame with fewer than ``min_write_pixels`` empty pixels writes nothing.

Everything is batched over envs: no per-env Python loop and no host sync. Envs may share one memory (PettingZoo
agents of one world, :meth:`GrowingMemory.set_groups`); a shared memory is cleared only when all its envs reset.
"""

from __future__ import annotations

import torch

from worldfm_env.geometry import invert_pose
from worldfm_env.render.fill import nearest_fill
from worldfm_env.render.splat import MEMORY_CHUNK, AnchorRender, GrownViews

__all__ = ["GrowingMemory", "MEMORY_MODES", "check_memory_mode", "select_reference"]

MEMORY_MODES = ("static", "grow")


def check_memory_mode(memory: str, renderer: str) -> None:
    """Raise ValueError naming ``memory`` unless it is one of :data:`MEMORY_MODES` and fits ``renderer``: a growing
    memory writes generated pixels back, and the ``anchor`` renderer generates none (its empty pixels are black)."""
    if memory not in MEMORY_MODES:
        raise ValueError(f"memory={memory!r} is not valid; choose one of {list(MEMORY_MODES)}")
    if memory == "grow" and renderer == "anchor":
        raise ValueError(
            "memory='grow' writes generated pixels back into the memory, but renderer='anchor' generates none "
            "(its empty pixels are black); use renderer='worldfm' (or 'oracle': ground truth written back)"
        )


def select_reference(
    index: torch.Tensor, bank_values: torch.Tensor, memory_values: torch.Tensor | None
) -> torch.Tensor:
    """Values of the reference views ``index`` (N,) returned by the vote: rows of ``bank_values`` (B, ...) below
    B, rows ``index - B`` of ``memory_values`` (R, ...) from B on (a grown view). Without a memory, a plain gather."""
    B = bank_values.shape[0]
    if memory_values is None:
        return bank_values[index]
    from_memory = (index >= B).view(-1, *([1] * (bank_values.ndim - 1)))
    return torch.where(
        from_memory, memory_values[(index - B).clamp(min=0)], bank_values[index.clamp(max=B - 1)].to(memory_values)
    )


class GrowingMemory:
    """The growing memories of N envs at H x W (see the module docstring).

    Args:
        num_envs, height, width: the batch and resolution of the frames written.
        K: (N, 3, 3) intrinsics of the frames (constant).
        capacity: points per memory (rounded up to a multiple of 256); the oldest points are overwritten when full.
        views: reference views per memory; the oldest view is replaced when full.
        min_write_pixels: a frame with fewer empty pixels than this is not written (cracks of a few pixels are
            regenerated instead of taking a view); None: 1 % of the frame's pixels, at least 8.
        backdrop_depth: depth (scene units) given to empty pixels of a frame whose anchor is empty altogether
            (clamped to the floor plane below the horizon).

    Attributes:
        views: the :class:`~worldfm_env.render.splat.GrownViews` buffers the splat and the vote read.
        images: (R, H, W, 3) uint8 the frames of the views. latents: (R, ...) their reference latents, when the
            backend encodes references (allocated at the first write).
        env_group: (N,) int64 the memory of each env (by default its own).
        writers: (N,) bool the envs whose frames are written (all by default; a PettingZoo env clears the rows of
            agents that left the episode, so that their idle cameras do not write into the shared world).
    """

    def __init__(
        self,
        num_envs: int,
        height: int,
        width: int,
        K: torch.Tensor,
        capacity: int = 65536,
        views: int = 16,
        min_write_pixels: int | None = None,
        backdrop_depth: float = 3.0,
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"memory_capacity must be an int >= 1 (points per env), got {capacity!r}")
        if isinstance(views, bool) or not isinstance(views, int) or views < 1:
            raise ValueError(f"memory views must be an int >= 1, got {views!r}")
        self.device = K.device
        self.num_envs, self.height, self.width = num_envs, height, width
        self.capacity = -(-capacity // MEMORY_CHUNK) * MEMORY_CHUNK
        self.num_views = views
        self.min_write_pixels = max(8, height * width // 100) if min_write_pixels is None else min_write_pixels
        self.backdrop_depth = backdrop_depth
        N, HW = num_envs, height * width
        # One memory per env at most (shared memories use fewer); the last point and view slots are write sinks.
        self.views = GrownViews(N, self.capacity, views, height, width, N, self.device)
        self._point_sink = N * self.capacity
        self._view_sink = N * views
        self.images = torch.zeros(N * views + 1, height, width, 3, dtype=torch.uint8, device=self.device)
        self.latents: torch.Tensor | None = None
        self.next_point = torch.zeros(N, dtype=torch.long, device=self.device)  # ring positions per memory
        self.next_view = torch.zeros(N, dtype=torch.long, device=self.device)
        self.K = K.float().expand(N, 3, 3).contiguous()
        ys, xs = torch.meshgrid(
            torch.arange(height, device=self.device, dtype=torch.float32) + 0.5,
            torch.arange(width, device=self.device, dtype=torch.float32) + 0.5,
            indexing="ij",
        )
        pixels = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).reshape(HW, 3)
        self.rays = (torch.linalg.inv(self.K) @ pixels.T).transpose(1, 2).contiguous()  # (N, HW, 3), z = 1
        self.focal = torch.minimum(self.K[:, 0, 0], self.K[:, 1, 1])  # (N,)
        self.writers = torch.ones(N, dtype=torch.bool, device=self.device)
        # Constant index rows of the write: envs, the chunks one frame's write can touch (its points are consecutive
        # in the ring), the slots of a chunk.
        self._envs = torch.arange(N, device=self.device)
        self._touched = torch.arange(HW // MEMORY_CHUNK + 2, device=self.device)
        self._lanes = torch.arange(MEMORY_CHUNK, device=self.device)
        self.set_groups(torch.arange(N, device=self.device))

    # ------------------------------------------------------------------ layout
    def set_groups(self, groups) -> None:
        """Which envs share a memory: ``groups`` (N,) ints in [0, N); envs with the same value read and write
        one memory (its ``capacity`` points and ``views`` views). Clears every memory."""
        groups = torch.as_tensor(groups, device=self.device).long()
        N = self.num_envs
        if groups.shape != (N,) or bool((groups < 0).any()) or bool((groups >= N).any()):
            raise ValueError(f"memory groups must be {N} ints in [0, {N}), got {groups.tolist()}")
        self.env_group = groups
        self.views.group.copy_(groups.to(torch.int32))
        self.views.view_row.copy_((groups * self.num_views).to(torch.int32))
        self.members = torch.zeros(N, device=self.device).index_add_(0, groups, torch.ones(N, device=self.device))
        self.clear(torch.ones(N, dtype=torch.bool, device=self.device))

    def clear(self, env_mask: torch.Tensor) -> None:
        """Forget the memories of the envs in ``env_mask`` (N,) bool. A memory shared by several envs is cleared
        only when all of them are in the mask (an agent that left does not wipe the world of the others)."""
        resetting = torch.zeros(self.num_envs, device=self.device).index_add_(0, self.env_group, env_mask.float())
        group_clear = (resetting >= self.members) & (self.members > 0)  # (M,)
        view_clear = torch.cat([group_clear.repeat_interleave(self.num_views), group_clear.new_ones(1)])
        views = self.views
        views.filled.masked_fill_(group_clear, 0)
        views.valid.masked_fill_(view_clear, 0)
        self.next_point.masked_fill_(group_clear, 0)
        self.next_view.masked_fill_(group_clear, 0)

    # ------------------------------------------------------------------ write
    @torch.no_grad()
    def write(
        self,
        rgb: torch.Tensor,
        depth: torch.Tensor | None,
        anchor: AnchorRender,
        c2w: torch.Tensor,
        floor_y: torch.Tensor,
        write_mask: torch.Tensor | None = None,
        encoder=None,
        depth_bound: torch.Tensor | None = None,
        carve=None,
    ) -> None:
        """Write every env's frame into its memory.

        Args:
            rgb: (N, H, W, 3) uint8 the frames. depth: (N, H, W) their depth (0 = unknown) or None.
            anchor: the anchor the frames were made from (its ``mask`` says which pixels were covered).
            c2w: (N, 4, 4) the frames' poses. floor_y: (N,) the floor height of each env's scene.
            write_mask: (N,) bool, the envs that write (None: all).
            encoder: optional ``images (M, H, W, 3) uint8 -> latents (M, ...)``, the backend's reference encoder.
            depth_bound: optional (N, H, W) greatest depth of each pixel (0 = no bound; the pipeline's
                ``depth_bound="navigation"``): a point is never written farther along its ray.
            carve: optional ``world points (N, H * W, 3) -> (N, H * W) bool``: the points it marks are not written
                (the pipeline's ``memory_carve``: points in the space the navigation grid lets the agent walk
                through).
        """
        N, H, W, HW = self.num_envs, self.height, self.width, self.height * self.width
        P, C, V, M = self.capacity, self.views.chunks_per_memory, self.num_views, self.num_envs
        c2w = c2w.float()
        hole = ~anchor.mask.reshape(N, HW)
        anchor_depth = anchor.depth.reshape(N, HW)
        rotation, origin = c2w[:, :3, :3], c2w[:, :3, 3]
        directions = self.rays @ rotation.transpose(1, 2)  # (N, HW, 3) world ray per unit of z-depth
        # Depth where the frame has none: the nearest covered pixel's, not beyond the floor; a backdrop where the
        # anchor is empty altogether.
        filled = nearest_fill(anchor.depth[..., None], anchor.mask)[..., 0].reshape(N, HW)
        filled = torch.where(filled > 0, filled, torch.full_like(filled, self.backdrop_depth))
        down = directions[..., 1]  # +y is down (gravity)
        to_floor = (floor_y.float()[:, None] - origin[:, None, 1]) / down.clamp_min(1e-6)
        filled = torch.where(down > 1e-6, torch.minimum(filled, to_floor.clamp_min(1e-3)), filled)
        frame_depth = depth.reshape(N, HW).float() if depth is not None else torch.zeros_like(filled)
        point_depth = torch.where(frame_depth > 0, frame_depth, filled)
        if depth_bound is not None:
            bound = depth_bound.reshape(N, HW).float()
            point_depth = torch.where(bound > 0, torch.minimum(point_depth, bound), point_depth)
        view_depth = torch.where(hole, point_depth, anchor_depth)  # (N, HW) the view's depth for the vote
        valid = hole & (point_depth > 0) & torch.isfinite(point_depth) & self.writers[:, None]
        world = origin[:, None, :] + directions * point_depth[..., None]  # (N, HW, 3)
        if carve is not None:
            valid &= ~carve(world)
        if write_mask is not None:
            valid &= write_mask[:, None]
        count = valid.sum(dim=1)  # (N,)
        writes = count >= self.min_write_pixels
        valid &= writes[:, None]
        count = torch.where(writes, count, torch.zeros_like(count))

        # Ring positions: each writing env appends its points (and its view) after those of the earlier writers
        # of the same memory this step; the others write into the sinks, which nothing reads.
        group = self.env_group
        ar = self._envs
        onehot = torch.nn.functional.one_hot(group, N)  # (N, M)
        points_before = ((onehot * count[:, None]).cumsum(dim=0) - onehot * count[:, None])[ar, group]
        views_before = ((onehot * writes[:, None]).cumsum(dim=0) - onehot * writes[:, None])[ar, group]
        start = self.next_point[group] + points_before  # (N,) ring position of the env's first point
        rank = valid.long().cumsum(dim=1) - 1  # (N, HW) index of each valid pixel among the frame's
        slot = group[:, None] * P + (start[:, None] + rank) % P
        slot = torch.where(valid, slot, torch.full_like(slot, self._point_sink)).reshape(-1)
        views = self.views
        views.xyz[slot] = world.reshape(-1, 3)
        views.rgb[slot] = rgb.reshape(-1, 3)
        views.spacing[slot] = (point_depth / self.focal[:, None]).reshape(-1)
        added = (onehot * count[:, None]).sum(dim=0)  # (M,)
        self.next_point = self.next_point + added
        views.filled.copy_(torch.minimum(self.next_point, torch.full_like(self.next_point, P)).to(torch.int32))

        # Bounds of the chunks this step wrote into (every valid slot of each, old points included).
        first_chunk = start // MEMORY_CHUNK  # (N,) in ring units (may pass the end: taken modulo C)
        last_chunk = (start + count - 1).clamp_min(start) // MEMORY_CHUNK
        chunk = first_chunk[:, None] + self._touched[None, :]  # (N, Tc)
        touched = writes[:, None] & (chunk <= last_chunk[:, None])
        chunk_row = group[:, None] * C + chunk % C
        members = chunk_row[..., None] * MEMORY_CHUNK + self._lanes  # (N, Tc, 256)
        in_use = ((chunk % C)[..., None] * MEMORY_CHUNK + self._lanes) < views.filled[group][:, None, None]
        points = views.xyz[members]  # (N, Tc, 256, 3)
        inf = torch.full_like(points, float("inf"))
        box_min = torch.where(in_use[..., None], points, inf).amin(dim=2)
        box_max = torch.where(in_use[..., None], points, -inf).amax(dim=2)
        target = torch.where(touched, chunk_row, torch.full_like(chunk_row, M * C)).reshape(-1)  # M * C: the sink
        views.chunk_min[target] = box_min.reshape(-1, 3)
        views.chunk_max[target] = box_max.reshape(-1, 3)

        # The frame as a reference view (the oldest view of the memory is replaced when all are taken).
        view_slot = (self.next_view[group] + views_before) % V
        row = torch.where(writes, group * V + view_slot, torch.full_like(group, self._view_sink))
        self.next_view = self.next_view + (onehot * writes[:, None]).sum(dim=0)
        views.c2w[row] = c2w
        views.w2c[row] = invert_pose(c2w)
        views.K[row] = self.K
        views.depth[row] = view_depth.reshape(N, H, W)
        views.valid[row] = 1
        self.images[row] = rgb
        if encoder is not None:
            latents = encoder(rgb)
            if self.latents is None:
                self.latents = torch.zeros(
                    views.valid.shape[0], *latents.shape[1:], dtype=latents.dtype, device=self.device
                )
            self.latents[row] = latents
        views.valid[self._view_sink] = 0

    # ------------------------------------------------------------------ reading
    def stats(self) -> dict[str, torch.Tensor]:
        """Per env (N,) int64: ``memory_points`` and ``memory_views`` held by its memory (for ``info``)."""
        valid = self.views.valid[:-1].view(self.num_envs, self.num_views).long()
        return {
            "memory_points": self.views.filled.long()[self.env_group],
            "memory_views": valid.sum(dim=1)[self.env_group],
        }

    def grown_points(self, env_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The grown points env ``env_index`` sees: world ``xyz`` (P, 3) float32 and ``rgb`` (P, 3) uint8 (host
        side, for viewers and tests; it syncs)."""
        if not 0 <= int(env_index) < self.num_envs:
            raise ValueError(f"env_index must be in [0, {self.num_envs}), got {env_index!r}")
        group = int(self.env_group[int(env_index)])
        first = group * self.capacity
        n = int(self.views.filled[group])
        return self.views.xyz[first : first + n].clone(), self.views.rgb[first : first + n].clone()

    # ------------------------------------------------------------------ state
    _STATE = ("next_point", "next_view", "env_group", "members", "writers", "images", "latents")
    _VIEW_STATE = (
        "xyz",
        "rgb",
        "spacing",
        "filled",
        "chunk_min",
        "chunk_max",
        "c2w",
        "w2c",
        "K",
        "depth",
        "valid",
        "group",
        "view_row",
    )

    def state_dict(self) -> dict[str, torch.Tensor | None]:
        """Everything the memories hold (CPU copies), for pickling an env."""
        out = {name: getattr(self, name) for name in self._STATE}
        out.update({f"views.{name}": getattr(self.views, name) for name in self._VIEW_STATE})
        return {k: None if v is None else v.detach().to("cpu", copy=True) for k, v in out.items()}

    def load_state_dict(self, values: dict[str, torch.Tensor | None]) -> None:
        """Restore :meth:`state_dict` (in place: the warp views of the buffers stay valid)."""
        for name in self._STATE:
            value = values[name]
            if name == "latents":
                self.latents = None if value is None else value.to(self.device)
            elif name == "images":
                self.images.copy_(value)
            else:
                setattr(self, name, value.to(self.device))
        for name in self._VIEW_STATE:
            getattr(self.views, name).copy_(values[f"views.{name}"])
