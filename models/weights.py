"""Reading network weights from a file: the one reader that every family, loss and tool uses.

``read_state_dict`` takes ``.safetensors`` or a torch file (``torch.load(weights_only=True)``:
never arbitrary pickles). A Lightning checkpoint's ``state_dict`` (or a BasicSR release's
``params_ema`` / ``params``) is unwrapped, and the ``net.`` prefix (the network attribute of our
LightningModules) is stripped, so a training checkpoint and an exported weight file load alike.
"""

from __future__ import annotations

from pathlib import Path

import torch

_WRAPPERS = ("state_dict", "params_ema", "params")  # Lightning; BasicSR / Real-ESRGAN releases


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """``{name: tensor}`` of the network stored in ``path``.

    Raises ``FileNotFoundError`` when there is no such file and ``ValueError`` (naming the cause)
    when it cannot be parsed or holds no state dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weight file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any parse failure means a bad weight file
        raise ValueError(f"cannot read weights ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    for wrapper in _WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("not a state dict of tensors")
    if any(k.startswith("net.") for k in state):
        state = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
    return state
