"""Resolve ``--device`` and ``--precision`` strings into torch objects; a string that cannot work
raises :class:`~restore.errors.OptionError` naming the option."""

from __future__ import annotations

import torch

from .errors import OptionError

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` -> first CUDA device if available else CPU; ``cpu``, ``cuda`` or ``cuda:N`` as given."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    expected = f"--device {spec}: expected auto, cpu, cuda or cuda:N"
    try:
        device = torch.device(spec)
    except RuntimeError:  # torch's message lists every backend it knows, not the ones we run on
        raise OptionError(None, expected) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise OptionError(None, f"--device {spec}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise OptionError(None, f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif device.type != "cpu":
        raise OptionError(None, expected)
    return device


def resolve_precision(spec: str, device: torch.device) -> torch.dtype:
    """``auto`` -> bf16 on CUDA devices that support it, fp16 on older CUDA devices, fp32 on CPU.

    Reduced precision on CPU is allowed when asked for explicitly (bf16 is fast on recent x86).
    """
    if spec == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return _DTYPES[spec]
    except KeyError:
        raise OptionError(None, f"--precision {spec}: expected one of {', '.join(PRECISIONS)}") from None
