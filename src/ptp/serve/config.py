"""ServeConfig: every knob of the OpenAI-compatible server, with its default and unit."""

from __future__ import annotations

from dataclasses import dataclass

from ptp.decoding import METHODS

MAX_PORT = 65535
DEFAULT_MAX_BATCH = 32  # rows of the running batch (tokens/s still rose from 16 to 32 rows: experiments/batching)


@dataclass(frozen=True)
class ServeConfig:
    """How ``ptp serve`` runs; the CLI builds it, the library never reads argv or the environment."""

    model_dir: str  # PTP checkpoint directory (ptp_config.json, adapter, teacher/, tokenizer files)
    model_name: str = ""  # the id clients send as "model"; "" = the checkpoint directory's name
    host: str = "127.0.0.1"  # loopback by default: exposing the server is an explicit choice
    port: int = 8000  # TCP port; 0 = any free port
    method: str | None = None  # decoding method, one of ptp.decoding.METHODS; None = the model's fastest
    slot_budget: int | None = None  # pqd: u-slots per call; None: the model's tuned budget
    queue_size: int = 64  # requests that may wait for the model worker; one more gets 429
    max_batch: int = DEFAULT_MAX_BATCH  # requests decoded together (continuous batching); 1 = one at a time
    max_tokens_limit: int = 1024  # the largest max_tokens a request may ask for
    default_max_tokens: int = 16  # max_tokens when a request gives none (OpenAI's completions default)
    max_prompt_tokens: int = 0  # longest prompt in tokens; 0 = the model's context length
    max_body_bytes: int = 1 << 20  # request bodies over this many bytes get 413, before any parsing
    disconnect_poll_seconds: float = 0.05  # how often a request waiting for the worker checks its client

    def __post_init__(self) -> None:
        if not isinstance(self.model_dir, str) or not self.model_dir:
            raise ValueError(f"model_dir must be a non-empty path string, got {self.model_dir!r}")
        if self.method is not None and self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= MAX_PORT:
            raise ValueError(f"port must be an integer in [0, {MAX_PORT}], got {self.port!r}")
        if self.slot_budget is not None:
            _check_int("slot_budget", self.slot_budget, minimum=1)
        for name in ("queue_size", "max_batch", "max_tokens_limit", "default_max_tokens", "max_body_bytes"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("max_prompt_tokens", self.max_prompt_tokens, minimum=0)
        if self.default_max_tokens > self.max_tokens_limit:
            raise ValueError(
                f"default_max_tokens ({self.default_max_tokens}) exceeds max_tokens_limit ({self.max_tokens_limit})"
            )
        if not self.disconnect_poll_seconds > 0:
            raise ValueError(f"disconnect_poll_seconds must be > 0, got {self.disconnect_poll_seconds!r}")


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
