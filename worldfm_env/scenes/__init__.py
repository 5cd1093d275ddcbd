"""Scenes: the immutable device-resident world an environment runs in."""

from worldfm_env.scenes.scene import NavigationGrid, ReferenceBank, Scene, TriangleMesh, load_scene_file, save_scene

__all__ = ["NavigationGrid", "ReferenceBank", "Scene", "TriangleMesh", "load_scene_file", "save_scene"]
