"""Which Gymnasium vector wrappers cannot take the vector env's torch outputs, and the check that names them.

:class:`~worldfm_env.envs.vector.WorldFMVectorEnv` calls :func:`check_wrapper_stack` on every ``reset()`` and on the
first ``step()`` after it (with ``array_type="torch"``), so that a numpy-only Gymnasium wrapper over it raises a
``TypeError`` naming the wrapper and the fix, instead of failing deep inside numpy. The torch-native replacements live
in :mod:`worldfm_env.wrappers`.
"""

from __future__ import annotations

from types import FrameType
from typing import Any

from gymnasium.vector import VectorEnv, VectorWrapper

__all__ = ["NUMPY_ONLY_WRAPPERS", "check_wrapper_stack"]

#: Gymnasium vector wrappers that compute with numpy and fail on torch outputs: name -> its torch-native replacement
#: (None: put ``worldfm_env.wrappers.TorchToNumpy`` under it, or build the env with ``array_type="numpy"``).
NUMPY_ONLY_WRAPPERS: dict[str, str | None] = {
    "RecordEpisodeStatistics": "worldfm_env.wrappers.RecordEpisodeStatistics",
    "NormalizeReward": "worldfm_env.wrappers.NormalizeReward",
    "NormalizeObservation": "worldfm_env.wrappers.NormalizeObservation",
    "FilterObservation": "worldfm_env.wrappers.FilterObservation",
    "DictInfoToList": None,
    "ResizeObservation": None,
    "GrayscaleObservation": None,
    "RescaleObservation": None,
}


def _is_gymnasium_wrapper(cls: type, name: str) -> bool:
    return cls.__name__ == name and cls.__module__.startswith("gymnasium.wrappers.vector")


def _numpy_only_name(wrapper: Any) -> str | None:
    """The name of the numpy-only Gymnasium wrapper class ``wrapper`` is (or derives from), else None."""
    for cls in type(wrapper).__mro__:
        for name in NUMPY_ONLY_WRAPPERS:
            if _is_gymnasium_wrapper(cls, name):
                return name
    return None


def _outputs_numpy(wrapper: Any) -> bool:
    """Whether ``wrapper`` hands numpy to the wrappers above it (a class attribute ``outputs_numpy = True``, as
    :class:`worldfm_env.wrappers.TorchToNumpy` has, or Gymnasium's ``ArrayConversion`` with a numpy target)."""
    if getattr(type(wrapper), "outputs_numpy", False) is True:
        return True
    target = getattr(wrapper, "_target_xp", None)
    return any(_is_gymnasium_wrapper(cls, "ArrayConversion") for cls in type(wrapper).__mro__) and "numpy" in str(
        getattr(target, "__name__", "")
    )


def check_wrapper_stack(env: VectorEnv, frame: FrameType | None) -> None:
    """Raise ``TypeError`` if a numpy-only Gymnasium wrapper (:data:`NUMPY_ONLY_WRAPPERS`) receives ``env``'s torch
    outputs.

    ``frame`` is the frame that called ``env.reset()`` or ``env.step()``. The wrappers of ``env`` are found on the call
    stack (each calls the one below it): the walk goes up while the calling frames are methods of vector wrappers of
    ``env`` and stops at the first that converts to numpy (``worldfm_env.wrappers.TorchToNumpy``), since the wrappers
    above it get numpy. The env calls this on every ``reset()`` and on the first ``step()`` after it, when
    ``array_type="torch"``.
    """
    seen: set[int] = set()
    for _ in range(64):
        if frame is None:
            return
        code = frame.f_code
        if code.co_argcount == 0 or code.co_varnames[0] != "self":
            return  # user code (or a helper function): no wrapper above this point is calling
        wrapper = frame.f_locals.get("self")
        if not isinstance(wrapper, VectorWrapper) or wrapper.unwrapped is not env:
            return
        if id(wrapper) not in seen:
            seen.add(id(wrapper))
            if _outputs_numpy(wrapper):
                return
            name = _numpy_only_name(wrapper)
            if name is not None:
                replacement = NUMPY_ONLY_WRAPPERS[name]
                fix = (
                    f"use {replacement} (torch-native, same arguments and info keys), or "
                    if replacement is not None
                    else ""
                )
                raise TypeError(
                    f"gymnasium.wrappers.vector.{name} computes with numpy, but {type(env).__name__} returns torch "
                    f"tensors (array_type='torch', the default). To fix: {fix}put worldfm_env.wrappers.TorchToNumpy "
                    f"between the env and {name}, or build the env with array_type='numpy'"
                )
        frame = frame.f_back
