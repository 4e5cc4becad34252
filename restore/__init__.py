"""restore: video super-resolution (OASIS) and medical image restoration (RAT).

Public API (mirrors the ``restore`` command)::

    import restore
    model = restore.load_model("bicubic", scale=4)
    result = restore.upscale_video("clip.mp4", "clip_x4.mp4", scale=4)
    restore.list_models()
"""

from ._layout import check_sibling_packages

check_sibling_packages()

from .api import UpscaleOptions, prepare_model, upscale, upscale_image, upscale_video  # noqa: E402
from .errors import InputError, ModelError, OptionError, OutputError, RestoreError  # noqa: E402
from .registry import list_models, load_model  # noqa: E402

__version__ = "0.1.0"
__restore_package__ = True

__all__ = [
    "InputError",
    "ModelError",
    "OptionError",
    "OutputError",
    "RestoreError",
    "UpscaleOptions",
    "list_models",
    "load_model",
    "prepare_model",
    "upscale",
    "upscale_image",
    "upscale_video",
]
