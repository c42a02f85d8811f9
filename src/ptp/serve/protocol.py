"""Parse and check the JSON bodies of /v1/completions and /v1/chat/completions.

Every check raises ``APIError`` (4xx) naming the offending field, so no bad request reaches the
model worker. Fields the OpenAI API has but ptp cannot honour without changing the output
distribution (penalties, logit bias, n > 1, ...) are accepted only at their neutral value.
JSON ``null`` means "not given" for every optional field, as OpenAI clients send it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import jinja2

from ptp.sampling import SamplingConfig
from ptp.serve.config import ServeConfig
from ptp.serve.errors import APIError, invalid

SEED_LIMIT = 2**63  # seeds must fit a torch.Generator: 0 <= seed < 2**63
MAX_STOP_STRINGS = 4  # OpenAI's limit
MAX_STOP_CHARS = 256  # every stop string is searched for after every token
CHAT_ROLES = ("system", "developer", "user", "assistant")
# OpenAI fields that would change what is sampled (or how many): only these neutral values pass.
NEUTRAL_VALUES: dict[str, tuple] = {
    "best_of": (1,),
    "echo": (False,),
    "suffix": ("",),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "presence_penalty": (0,),
    "frequency_penalty": (0,),
    "logit_bias": ({},),
    "tools": ([],),
}
JSON_KINDS = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
              dict: "an object"}  # for error messages, which never echo a whole value


@dataclass(frozen=True)
class ModelInfo:
    """What request checks need to know about the served model."""

    name: str  # the id clients must send as "model"
    vocab_size: int  # token ids must be below this
    context_length: int  # the teacher's positions: prompt + generated tokens never exceed it
    sampling: SamplingConfig  # defaults for absent temperature / top_k / top_p (the drafter's)
    has_chat_template: bool


@dataclass(frozen=True)
class GenerationRequest:
    """A checked request, ready for the model worker."""

    prompt_ids: tuple[int, ...]  # the tokenized prompt (chat: the rendered template)
    max_tokens: int  # stop after this many new tokens
    sampling: SamplingConfig
    seed: int  # fixes the u-stream: same seed, same text
    stop: tuple[str, ...]  # stop strings; the returned text ends before the first one
    stream: bool  # answer with server-sent events


def parse_completion(body: object, config: ServeConfig, info: ModelInfo, tokenizer) -> GenerationRequest:
    """Check a /v1/completions body; ``prompt`` is a string or a list of token ids."""
    body = _check_common(body, info)
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        ids = _encode(tokenizer, _text(prompt, "prompt"), add_special_tokens=True)
    elif isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        ids = _token_ids(prompt, info)
    else:
        raise invalid("prompt", f"prompt must be a string or a list of token ids, got {_kind(prompt)}")
    return _generation(body, ids, config, info, "max_tokens")


def parse_chat(body: object, config: ServeConfig, info: ModelInfo, tokenizer) -> GenerationRequest:
    """Check a /v1/chat/completions body and render its messages with the tokenizer's chat template."""
    body = _check_common(body, info)
    if not info.has_chat_template:
        raise APIError(
            400,
            f"model {info.name!r} has no chat template in its tokenizer; use /v1/completions with a plain prompt",
            param="messages",
            code="chat_template_missing",
        )
    messages = _messages(body.get("messages"))
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except (jinja2.TemplateError, ValueError, TypeError, KeyError) as err:
        raise invalid("messages", f"the chat template rejected the messages: {err}") from None
    ids = _encode(tokenizer, text, add_special_tokens=False)
    limit_field = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    return _generation(body, ids, config, info, limit_field)


def _check_common(body: object, info: ModelInfo) -> dict:
    if not isinstance(body, dict):
        raise APIError(400, f"the request body must be a JSON object, got {_kind(body)}", code="invalid_json")
    model = body.get("model")
    if not isinstance(model, str):
        raise invalid("model", f"model must be a string naming the served model, got {_kind(model)}")
    if model != info.name:
        raise APIError(404, f"the model {model!r} does not exist; this server serves {info.name!r}",
                       param="model", code="model_not_found")
    for name, neutral in NEUTRAL_VALUES.items():
        value = body.get(name)
        if value is not None and value not in neutral:
            raise invalid(name, f"{name}={value!r} is not supported by ptp (it would change the sampled text)",
                          code="unsupported_parameter")
    _integer(body, "n", 1, low=1, high=1)
    return body


def _generation(
    body: dict, ids: list[int], config: ServeConfig, info: ModelInfo, limit_field: str
) -> GenerationRequest:
    if not ids:
        raise invalid("prompt", "the prompt is empty: give at least one token")
    longest = min(config.max_prompt_tokens or info.context_length, info.context_length)
    if len(ids) > longest:
        raise invalid("prompt", f"the prompt has {len(ids)} tokens; at most {longest} are allowed",
                      code="context_length_exceeded")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise invalid("stream", f"stream must be true or false, got {_kind(stream)}")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise invalid("stream_options", f"stream_options must be an object, got {_kind(options)}")
    return GenerationRequest(
        prompt_ids=tuple(ids),
        max_tokens=_integer(body, limit_field, config.default_max_tokens, low=1, high=config.max_tokens_limit),
        sampling=_sampling(body, info.sampling),
        seed=_integer(body, "seed", secrets.randbelow(SEED_LIMIT), low=0, high=SEED_LIMIT - 1),
        stop=_stop(body.get("stop")),
        stream=bool(stream),
    )


def _sampling(body: dict, default: SamplingConfig) -> SamplingConfig:
    """temperature / top_p / top_k (extension), each checked alone so the error names its field."""
    values = {
        "temperature": _number(body, "temperature", default.temperature),
        "top_p": _number(body, "top_p", default.top_p),
        "top_k": _integer(body, "top_k", default.top_k, low=0, high=None),
    }
    for name, value in values.items():
        try:
            SamplingConfig(**{name: value})
        except ValueError as err:
            raise invalid(name, str(err)) from None
    return SamplingConfig(**values, order=default.order)  # the order the model was distilled in


def _integer(body: dict, name: str, default: int, low: int, high: int | None) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(name, f"{name} must be an integer, got {_kind(value)}")
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise invalid(name, f"{name} must be {bound}, got {value}")
    return value


def _number(body: dict, name: str, default: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(name, f"{name} must be a number, got {_kind(value)}")
    return float(value)


def _stop(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise invalid("stop", f"stop must be a string or a list of strings, got {_kind(value)}")
    if len(stops) > MAX_STOP_STRINGS:
        raise invalid("stop", f"at most {MAX_STOP_STRINGS} stop strings are allowed, got {len(stops)}")
    for s in stops:
        if not 0 < len(s) <= MAX_STOP_CHARS:
            raise invalid("stop", f"each stop string must have 1 to {MAX_STOP_CHARS} characters, got {len(s)}")
        _text(s, "stop")
    return tuple(stops)


def _messages(value: object) -> list[dict[str, str]]:
    """Messages as [{"role", "content": str}] for the template; text parts are joined."""
    if not isinstance(value, list) or not value:
        raise invalid("messages", f"messages must be a non-empty list, got {_kind(value)}")
    out = []
    for i, message in enumerate(value):
        param = f"messages[{i}]"
        if not isinstance(message, dict):
            raise invalid(param, f"{param} must be an object, got {_kind(message)}")
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise invalid(f"{param}.role", f"{param}.role must be one of {CHAT_ROLES}, got {role!r}")
        out.append({"role": role, "content": _content(message.get("content"), f"{param}.content")})
    return out


def _content(value: object, param: str) -> str:
    if isinstance(value, str):
        return _text(value, param)
    parts_ok = isinstance(value, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in value
    )
    if not parts_ok:
        raise invalid(param, f"{param} must be a string or a list of text parts, got {_kind(value)}")
    return _text("".join(p["text"] for p in value), param)


def _text(value: str, param: str) -> str:
    """Refuse strings that are not valid Unicode (JSON escapes can smuggle in lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise invalid(param, f"{param} is not valid UTF-8 text: {err.reason} at index {err.start}",
                      code="invalid_encoding") from None
    return value


def _encode(tokenizer, text: str, add_special_tokens: bool) -> list[int]:
    if not text:
        raise invalid("prompt", "the prompt is empty: give at least one character")
    return list(tokenizer(text, add_special_tokens=add_special_tokens).input_ids)


def _token_ids(ids: list[int], info: ModelInfo) -> list[int]:
    bad = [t for t in ids if not 0 <= t < info.vocab_size]
    if bad:
        raise invalid("prompt", f"token ids must be in [0, {info.vocab_size}), got {bad[:5]}")
    return ids


def _kind(value: object) -> str:
    """A short description of a JSON value for error messages (never the whole value)."""
    if value is None:
        return "nothing"
    return JSON_KINDS.get(type(value), type(value).__name__)
