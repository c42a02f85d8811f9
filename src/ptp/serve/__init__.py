"""An OpenAI-compatible HTTP server for PTP models (``ptp serve``).

``build_app(config, model, tokenizer)`` returns the FastAPI app; the CLI runs it with uvicorn.
Same request + same seed -> the same text as autoregressive sampling with that seed.
FastAPI is imported on first use of ``build_app``/``load_model``, so the rest of ptp (and ``ptp
--help``) works where the server's dependencies are not installed.
"""

from ptp.serve.config import ServeConfig

__all__ = ["ServeConfig", "build_app", "load_model"]


def __getattr__(name: str):
    if name in ("build_app", "load_model"):
        from ptp.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'ptp.serve' has no attribute {name!r}")
