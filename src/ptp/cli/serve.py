"""Serve a PTP checkpoint over an OpenAI-compatible HTTP API (completions and chat, streaming or not).

Example: ptp serve --model DIR --port 8000, then POST http://127.0.0.1:8000/v1/completions with
{"model": "<name>", "prompt": "def add(a, b):", "max_tokens": 32, "seed": 0}. The model name is the
checkpoint directory's name unless --name is given (see GET /v1/models).
"""

from __future__ import annotations

import argparse
import logging

from ptp.cli.defaults import DECODE_METHODS, SERVE

NAME = "serve"
HELP = "serve a PTP model over an OpenAI-compatible HTTP API"
DEFAULTS = SERVE  # ServeConfig's defaults, for --help


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    p.add_argument("--model", default=None, help="PTP checkpoint directory; default: the bundled model")
    p.add_argument("--name", default=d.model_name, help="model id clients send ('' = the checkpoint directory's name)")
    p.add_argument("--host", default=d.host, help="interface to listen on (0.0.0.0 exposes the server)")
    p.add_argument("--port", type=int, default=d.port, help="TCP port (0 = any free port)")
    p.add_argument("--method", default=d.method, choices=DECODE_METHODS,
                   help="decoding method (same text for all; default: the model's fastest)")
    p.add_argument("--slot-budget", type=int, default=d.slot_budget,
                   help="pqd: u-slots per call (default: the model's tuned budget)")
    p.add_argument("--queue-size", type=int, default=d.queue_size, help="waiting requests before 429")
    p.add_argument("--max-batch", type=int, default=d.max_batch,
                   help="requests decoded together; new ones join between calls (1 = one at a time)")
    p.add_argument("--max-tokens-limit", type=int, default=d.max_tokens_limit, help="largest max_tokens allowed")
    p.add_argument("--default-max-tokens", type=int, default=d.default_max_tokens,
                   help="max_tokens when a request gives none")
    p.add_argument("--max-prompt-tokens", type=int, default=d.max_prompt_tokens,
                   help="longest prompt in tokens (0 = the model's context length)")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes, help="larger request bodies get 413")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="uvicorn's log level")


def run(args: argparse.Namespace) -> int:
    from ptp.extras import require

    require("serve", "fastapi", "uvicorn", what="ptp serve")
    import uvicorn

    from ptp.bundled import default_model_dir
    from ptp.serve import ServeConfig, build_app, load_model

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    config = ServeConfig(
        model_dir=str(args.model or default_model_dir()),
        model_name=args.name,
        host=args.host,
        port=args.port,
        method=args.method,
        slot_budget=args.slot_budget,
        queue_size=args.queue_size,
        max_batch=args.max_batch,
        max_tokens_limit=args.max_tokens_limit,
        default_max_tokens=args.default_max_tokens,
        max_prompt_tokens=args.max_prompt_tokens,
        max_body_bytes=args.max_body_bytes,
    )
    model, tokenizer = load_model(config.model_dir)
    app = build_app(config, model, tokenizer)
    uvicorn.run(app, host=config.host, port=config.port, log_level=args.log_level, timeout_graceful_shutdown=5)
    return 0
