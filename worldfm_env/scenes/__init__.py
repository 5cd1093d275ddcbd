"""Scenes: the immutable device-resident world an environment runs in.

* :mod:`~worldfm_env.scenes.scene`: the :class:`Scene` dataclass and its parts;
* :mod:`~worldfm_env.scenes.scene_file`: the ``.wfscene`` file format (save / load);
* :mod:`~worldfm_env.scenes.sources`: scene sources (meta.json, panorama, PLY, procedural) and ``load_scene``;
* :mod:`~worldfm_env.scenes.navigation`: navigation grids, geodesics and per-pool navigation data;
* :mod:`~worldfm_env.scenes.capture`: sparse captures of procedural scenes (``capture="panorama"`` / ``"walk:K"``);
* :mod:`~worldfm_env.scenes.pointcloud`, :mod:`~worldfm_env.scenes.pool`, :mod:`~worldfm_env.scenes.catalog`:
  point clouds from views, packed scene pools, and scene specs.
"""

from worldfm_env.scenes.scene import NavigationGrid, ReferenceBank, Scene, TriangleMesh
from worldfm_env.scenes.scene_file import load_scene_file, save_scene

__all__ = ["NavigationGrid", "ReferenceBank", "Scene", "TriangleMesh", "load_scene_file", "save_scene"]
