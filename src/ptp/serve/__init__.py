"""An OpenAI-compatible HTTP server for PTP models (``ptp serve``).

``build_app(config, model, tokenizer)`` returns the FastAPI app; the CLI runs it with uvicorn.
Same request + same seed -> the same text as autoregressive sampling with that seed.
FastAPI is imported on first use of ``build_app``/``load_model``, so the rest of ptp (and ``ptp
--help``) works where the server's dependencies (the ``serve`` extra) are not installed; there a
missing one is a ``ptp.extras.MissingExtra`` naming the extra.
"""

from ptp.serve.config import ServeConfig

__all__ = ["ServeConfig", "build_app", "load_model"]


def __getattr__(name: str):
    if name in ("build_app", "load_model"):
        from ptp.extras import require

        require("serve", "fastapi", what=f"ptp.serve.{name}")
        from ptp.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'ptp.serve' has no attribute {name!r}")
