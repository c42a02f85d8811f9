"""Helpers for the serve tests (no tests here): the load-test script as a module and a live server in a thread."""

from __future__ import annotations

import contextlib
import importlib.util
import threading
import time
from pathlib import Path

import uvicorn

from ptp.serve import ServeConfig, build_app, load_model

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "load_test.py"
START_SECONDS = 30.0  # how long a server may take to start listening


def load_test_module():
    """scripts/load_test.py as a module."""
    spec = importlib.util.spec_from_file_location("ptp_load_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def live_server(config: ServeConfig):
    """The real app under uvicorn on a free loopback port, in a thread; yields (base_url, app)."""
    model, tokenizer = load_model(config.model_dir)
    app = build_app(config, model, tokenizer)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(START_SECONDS)
