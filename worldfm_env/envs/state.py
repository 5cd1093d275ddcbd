"""The batched state of the core env, and the rows a per-episode update touches.

:class:`EnvState` holds the ``(num_envs, ...)`` tensors :class:`~worldfm_env.envs.vector.WorldFMVectorEnv`
owns (pose, scene, counters, seeds); tasks read it and never write it. :class:`EnvRows` names the envs a
reset updates: on the CPU the indices of the resetting envs (only those rows are computed), on CUDA all
rows with a mask (computed for every env and kept where the mask is set, without a host sync).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

__all__ = ["EnvRows", "EnvState"]


@dataclass
class EnvState:
    """The core env's per-env state, every field a ``(num_envs, ...)`` tensor on the env's device.

    Attributes:
        scene_index: (N,) int32 scene of the pool each env is in.
        position: (N, 3) float32 camera position in world coordinates.
        yaw: (N,) float32 heading in radians (left positive).
        pitch: (N,) float32 camera pitch in radians (up positive).
        elapsed_steps: (N,) int64 steps taken in the current episode.
        collisions: (N,) int32 blocked moves in the current episode.
        path_length: (N,) float32 horizontal distance travelled in the current episode, metres.
        seeds: (N,) int64 per-env seed of the counter-based episode draws.
        episode_count: (N,) int64 episode number under the current seed (-1 before the first).
    """

    scene_index: torch.Tensor
    position: torch.Tensor
    yaw: torch.Tensor
    pitch: torch.Tensor
    elapsed_steps: torch.Tensor
    collisions: torch.Tensor
    path_length: torch.Tensor
    seeds: torch.Tensor
    episode_count: torch.Tensor

    @classmethod
    def zeros(cls, num_envs: int, device: torch.device) -> EnvState:
        """The state of ``num_envs`` envs before their first reset (``episode_count`` -1, the rest 0)."""
        N, dev = num_envs, device
        return cls(
            scene_index=torch.zeros(N, dtype=torch.int32, device=dev),
            position=torch.zeros(N, 3, dtype=torch.float32, device=dev),
            yaw=torch.zeros(N, dtype=torch.float32, device=dev),
            pitch=torch.zeros(N, dtype=torch.float32, device=dev),
            elapsed_steps=torch.zeros(N, dtype=torch.int64, device=dev),
            collisions=torch.zeros(N, dtype=torch.int32, device=dev),
            path_length=torch.zeros(N, dtype=torch.float32, device=dev),
            seeds=torch.zeros(N, dtype=torch.int64, device=dev),
            episode_count=torch.full((N,), -1, dtype=torch.int64, device=dev),
        )

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of the state tensors, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))


class EnvRows:
    """The envs a per-episode update touches, as M rows of the N-env batch.

    Either ``index`` (M,) long: exactly those envs (the CPU path: computing only the resetting rows costs
    one ``nonzero``, a free host sync there); or ``mask`` (N,) bool with M = N: every env is computed and the
    result kept where the mask is set (the CUDA path: no host sync). Hooks compute on gathered (M, ...)
    values and write back with :meth:`write`; both forms give the same values in the selected envs.
    """

    def __init__(self, index: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> None:
        if (index is None) == (mask is None):
            raise ValueError("give EnvRows an index or a mask, not both")
        self.index = index
        self.mask = mask

    def __len__(self) -> int:
        """M, the number of rows computed (N with a mask)."""
        return int((self.index if self.index is not None else self.mask).shape[0])

    @property
    def envs(self) -> torch.Tensor:
        """(M,) long: the env of each computed row (``index``, or every env with a mask)."""
        if self.index is not None:
            return self.index
        return torch.arange(self.mask.shape[0], device=self.mask.device)

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """The selected rows (M, ...) of a batched tensor ``values`` (N, ...)."""
        return values if self.index is None else values[self.index]

    def updated(self, current: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """The computed rows (M, ...) once ``values`` (M, ...) is written over ``current`` (N, ...): ``values``
        in the selected envs, ``current`` in the envs a mask leaves out."""
        if self.index is not None:
            return values
        return torch.where(self.mask.view(-1, *([1] * (current.ndim - 1))), values, current)

    def write(self, target: torch.Tensor, values: torch.Tensor | float | bool) -> None:
        """Write ``values`` ((M, ...) rows, or a scalar) into the selected envs of ``target`` (N, ...), in place."""
        if self.index is not None:
            target[self.index] = values
            return
        mask = self.mask.view(-1, *([1] * (target.ndim - 1)))
        if not isinstance(values, torch.Tensor):
            target.masked_fill_(mask, values)
        else:
            target.copy_(torch.where(mask, values, target))
