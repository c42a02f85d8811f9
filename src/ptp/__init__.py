"""ptp: Parallel Token Prediction. Several tokens per forward call, exactly the teacher's distribution.

The public names below (and submodules such as ``ptp.bundled`` or ``ptp.model``) load on first
access, so ``import ptp`` and the ``ptp`` command line's ``--help`` do not import torch.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ptp.decoding import DecodeConfig, GenerateOutput, generate, generate_stream
    from ptp.model import PTPConfig, PTPModel
    from ptp.sampling import SamplingConfig

__all__ = [
    "DecodeConfig",
    "GenerateOutput",
    "PTPConfig",
    "PTPModel",
    "SamplingConfig",
    "generate",
    "generate_stream",
]
__version__ = "0.1.0"

_EXPORTS = {
    "DecodeConfig": "ptp.decoding",
    "GenerateOutput": "ptp.decoding",
    "generate": "ptp.decoding",
    "generate_stream": "ptp.decoding",
    "PTPConfig": "ptp.model",
    "PTPModel": "ptp.model",
    "SamplingConfig": "ptp.sampling",
}


def __getattr__(name: str):
    """A public name from its module, or a submodule (``ptp.model``, ``ptp.bundled``...), imported on first use."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")  # the import binds it as an attribute of ptp
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
