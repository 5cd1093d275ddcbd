"""The WorldFM frame model: DiT (named configs), autoencoders, samplers and checkpoint I/O.

``build_model("xl")`` is the published layout (loads the official ``.pth`` strictly through
:func:`load_checkpoint`); ``"srd"`` is the small pixel-space model shipped with worldfm-env (``"s"`` with a pixel
refiner that reads the anchor depth); ``"tiny"`` is for tests. :class:`FrameModel` is a network ready to generate
frames from any checkpoint.
"""

from worldfm_env.model.autoencoders import (
    Autoencoder,
    DiffusersAutoencoderKL,
    IdentityAutoencoder,
)
from worldfm_env.model.checkpoint import load_checkpoint, read_state_dict, save_checkpoint
from worldfm_env.model.dit import MODEL_CONFIGS, DiTConfig, PanelCameras, WorldFMDiT, build_model
from worldfm_env.model.frame_model import FrameConditions, FrameModel
from worldfm_env.model.samplers import (
    DISTILLED_TIMESTEPS,
    NoiseSchedule,
    ddim_timesteps,
    distilled_trajectory,
    eps_to_x0,
    iddpm_linear_schedule,
    make_generators,
    predict_x0,
    sample_ddim,
    sample_distilled,
    split_depth,
    split_prediction,
    v_to_eps,
    v_to_x0,
    x0_to_eps,
)

__all__ = [
    "Autoencoder",
    "DISTILLED_TIMESTEPS",
    "DiTConfig",
    "DiffusersAutoencoderKL",
    "FrameConditions",
    "FrameModel",
    "IdentityAutoencoder",
    "MODEL_CONFIGS",
    "NoiseSchedule",
    "PanelCameras",
    "WorldFMDiT",
    "build_model",
    "ddim_timesteps",
    "distilled_trajectory",
    "eps_to_x0",
    "iddpm_linear_schedule",
    "load_checkpoint",
    "make_generators",
    "predict_x0",
    "read_state_dict",
    "sample_ddim",
    "sample_distilled",
    "save_checkpoint",
    "split_depth",
    "split_prediction",
    "v_to_eps",
    "v_to_x0",
    "x0_to_eps",
]
