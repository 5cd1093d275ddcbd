"""Turn scene specs (``"procedural:train"``, a file, a list) into loaded scenes.

Procedural scenes are cached as ``.wfscene`` files under ``$WORLDFM_ENV_SCENE_CACHE`` (default
``~/.cache/worldfm_env/scenes``; set it to ``none`` to disable), keyed by seed and generator
config, so a second environment with the same scenes starts in milliseconds. A sparse capture
(``capture="panorama"`` / ``"walk:K"``, :mod:`worldfm_env.scenes.capture`) is cached beside its scene, keyed by the
mode as well and by a digest of the capture code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import torch

from worldfm_env.scenes.scene import Scene
from worldfm_env.scenes.scene_file import load_scene_file, save_scene

__all__ = ["resolve_scenes", "parse_scene_spec", "DEFAULT_PROCEDURAL_COUNT"]

DEFAULT_PROCEDURAL_COUNT = 4


def parse_scene_spec(spec: str, count_override: int | None = None) -> list[tuple[str, object]]:
    """Expand one spec into ``[("procedural", seed), ...]`` or ``[("file", path)]``.

    Grammar: ``procedural:<split>`` / ``procedural:<split>:<count>`` / ``procedural:seed:<n>`` / a path.
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"a scene spec must be a non-empty string, got {spec!r}")
    if spec.startswith("procedural"):
        from worldfm_env.scenes.sources.procedural import SPLITS, seeds_for_split

        parts = spec.split(":")
        if len(parts) == 3 and parts[1] == "seed":
            try:
                return [("procedural", int(parts[2]))]
            except ValueError:
                raise ValueError(f"scenes={spec!r}: 'procedural:seed:<n>' needs an integer seed") from None
        if len(parts) in (2, 3) and parts[1] in SPLITS:
            count = count_override or DEFAULT_PROCEDURAL_COUNT
            if len(parts) == 3:
                try:
                    count = int(parts[2])
                except ValueError:
                    raise ValueError(f"scenes={spec!r}: the count after the split must be an integer") from None
                if count <= 0:
                    raise ValueError(f"scenes={spec!r}: the scene count must be positive")
            return [("procedural", seed) for seed in seeds_for_split(parts[1], count)]
        raise ValueError(
            f"scenes={spec!r} is not a valid procedural spec; use 'procedural:<split>[:<count>]' with split in "
            f"{sorted(SPLITS)} or 'procedural:seed:<n>'"
        )
    path = Path(spec).expanduser()
    if not path.exists():
        raise ValueError(
            f"scenes={spec!r}: no such file, and not a procedural spec ('procedural:train', 'procedural:test:8', "
            f"'procedural:seed:3')"
        )
    return [("file", path)]


def _cache_dir() -> Path | None:
    value = os.environ.get("WORLDFM_ENV_SCENE_CACHE", "")
    if value.lower() in ("none", "off", "0"):
        return None
    return Path(value).expanduser() if value else Path.home() / ".cache" / "worldfm_env" / "scenes"


def _procedural_scene(seed: int, options: dict, device: torch.device, capture: str = "full") -> Scene:
    from worldfm_env.scenes.capture import capture_scene, parse_capture
    from worldfm_env.scenes.sources.procedural import ProceduralConfig, generate_procedural_scene

    valid = {f.name for f in dataclasses.fields(ProceduralConfig)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(f"unknown scene_options {unknown}; valid procedural options: {sorted(valid)}")
    config = ProceduralConfig(**options)
    captured = parse_capture(capture)[0] != "full"
    cache = _cache_dir()
    if cache is None:
        scene = generate_procedural_scene(seed, config, device=device)
        return capture_scene(scene, capture) if captured else scene
    key_fields = {"seed": seed, "config": dataclasses.asdict(config), "v": _generator_version()}
    if captured:  # full scenes keep their key (and their cache files); captures add the mode and their code
        key_fields.update(capture=capture, capture_v=_capture_version())
    key = hashlib.sha1(json.dumps(key_fields, sort_keys=True, default=str).encode()).hexdigest()[:16]
    label = capture.replace(":", "") + "-" if captured else ""
    path = cache / f"procedural-{seed}-{label}{key}.wfscene"
    if path.is_file():
        try:
            return load_scene_file(path, device)
        except Exception:  # a truncated or stale cache file is regenerated, never trusted
            path.unlink(missing_ok=True)
    if captured:
        scene = capture_scene(_procedural_scene(seed, options, device), capture)
    else:
        scene = generate_procedural_scene(seed, config, device=device)
    try:
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_scene(scene, tmp)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home only costs the cache
    return scene


def _generator_version() -> str:
    """A digest of the code that produces a procedural scene, so a changed generator never reads stale files."""
    from worldfm_env.render import raycast
    from worldfm_env.scenes import navigation, pointcloud, scene, scene_file
    from worldfm_env.scenes.sources import procedural

    digest = hashlib.sha1()
    for module in (procedural, raycast, pointcloud, scene, navigation, scene_file):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:12]


def _capture_version() -> str:
    """A digest of the sparse-capture code, so a changed capture never reads stale files."""
    from worldfm_env.scenes import capture

    return hashlib.sha1(Path(capture.__file__).read_bytes()).hexdigest()[:12]


def resolve_scenes(
    specs: str | list | tuple,
    device: torch.device,
    resolution: tuple[int, int],
    hfov_deg: float,
    num_scenes: int | None = None,
    scene_options: dict | None = None,
    capture: str = "full",
) -> list[Scene]:
    """Load every scene named by ``specs`` onto ``device``.

    Procedural scenes get a reference bank at the env's ``resolution`` and ``hfov_deg`` unless
    ``scene_options`` says otherwise; files are loaded as they are. ``capture`` (``"full"``, ``"panorama"`` or
    ``"walk:K"``, see :mod:`worldfm_env.scenes.capture`) replaces the memory of procedural scenes (and of
    in-memory scenes with a mesh) by a sparse capture; a file with another capture than ``"full"`` is a
    ``ValueError``.
    """
    from worldfm_env.scenes.capture import capture_scene, parse_capture

    captured = parse_capture(capture)[0] != "full"
    if isinstance(specs, (str, Path)):
        specs = [str(specs)]
    entries: list[tuple[str, object]] = []
    for spec in specs:
        if isinstance(spec, Scene):
            entries.append(("scene", spec))
        else:
            entries.extend(parse_scene_spec(str(spec), num_scenes))
    if captured:
        files = [str(value) for kind, value in entries if kind == "file"]
        if files:
            raise ValueError(
                f"capture={capture!r} applies to procedural scenes only; {files} are scene files (use capture='full')"
            )
    options = dict(scene_options or {})
    scenes: list[Scene] = []
    from tqdm.auto import tqdm

    # A progress bar only when several scenes must be built (procedural generation takes ~1 s each).
    show = sum(kind == "procedural" for kind, _ in entries) > 1
    for kind, value in tqdm(entries, desc="scenes", disable=not show, leave=False):
        if kind == "scene":
            scene = value.to(device)  # type: ignore[union-attr]
            scenes.append(capture_scene(scene, capture) if captured else scene)
        elif kind == "procedural":
            proc = {"resolution": tuple(resolution), "hfov_deg": hfov_deg, **options}
            scenes.append(_procedural_scene(int(value), proc, device, capture))  # type: ignore[arg-type]
        else:
            from worldfm_env.scenes.sources import load_scene

            scenes.append(load_scene(str(value), device=device, **options))
    return scenes
