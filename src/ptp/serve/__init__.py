"""An OpenAI-compatible HTTP server for PTP models (``ptp serve``).

``build_app(config, model, tokenizer)`` returns the FastAPI app; the CLI runs it with uvicorn.
Same request + same seed -> the same text as autoregressive sampling with that seed.
"""

from ptp.serve.app import build_app, load_model
from ptp.serve.config import ServeConfig

__all__ = ["ServeConfig", "build_app", "load_model"]
