"""Optional dependencies: ``serve`` (FastAPI, uvicorn: ``ptp serve``) and ``bench`` (matplotlib: the plots).

The code that needs one imports it lazily and calls ``require`` first, so a missing extra is one line
naming what to install instead of a traceback, and everything else works without it.
"""

from __future__ import annotations

import importlib

DISTRIBUTION = "parallel-token-prediction"  # the name pip knows ptp by


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the extra that provides it."""


def require(extra: str, *modules: str, what: str) -> None:
    """Raise MissingExtra unless every module in ``modules`` imports (``what`` names what needs them)."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is not None and name != err.name and not name.startswith(err.name + "."):
                raise  # the module is there but one of its own dependencies is missing: not ours to rename
            raise MissingExtra(f"{what} needs {name}, which is not installed: "
                               f"pip install '{DISTRIBUTION}[{extra}]'", name=name) from None
