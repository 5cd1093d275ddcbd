"""The triangle mesh the oracle ray casts: vertices, faces and one material per face (procedural scenes)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

__all__ = ["TriangleMesh"]


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


@dataclass(frozen=True)
class TriangleMesh:
    """A triangle mesh with one material per face (procedural scenes).

    Attributes:
        vertices: (V, 3) float32 world positions.
        faces: (F, 3) int32 vertex indices.
        face_material: (F,) int32 row of ``materials`` for each face.
        materials: (M, D) float32 material parameters, read by the oracle's shading kernel.
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    face_material: torch.Tensor
    materials: torch.Tensor

    def __post_init__(self) -> None:
        _check(
            self.vertices.ndim == 2 and self.vertices.shape[1] == 3,
            f"mesh vertices must be (V, 3), got {tuple(self.vertices.shape)}",
        )
        _check(
            self.faces.ndim == 2 and self.faces.shape[1] == 3,
            f"mesh faces must be (F, 3), got {tuple(self.faces.shape)}",
        )
        _check(
            self.face_material.shape == self.faces.shape[:1],
            f"mesh face_material must be ({self.faces.shape[0]},), got {tuple(self.face_material.shape)}",
        )
        _check(self.materials.ndim == 2, f"mesh materials must be (M, D), got {tuple(self.materials.shape)}")

    def to(self, device: torch.device | str) -> TriangleMesh:
        """The same mesh on ``device``."""
        return TriangleMesh(*(getattr(self, f.name).to(device) for f in fields(self)))
