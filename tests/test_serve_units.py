"""The server's pieces without HTTP: text deltas, request checks, metrics text, config, the worker."""

from __future__ import annotations

import asyncio

import pytest

import ptp
from ptp.serve import ServeConfig
from ptp.serve.errors import APIError
from ptp.serve.metrics import Metrics
from ptp.serve.protocol import ModelInfo, parse_chat, parse_completion
from ptp.serve.text import TextStream
from ptp.serve.worker import Failed, Finished, ModelWorker, QueueFull
from ptp.testing import randomize_adapters, tiny_teacher


class ByteTokenizer:
    """Token i is byte i (ids >= 256 are special and skipped), like a byte-level BPE decode."""

    chat_template = None

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return bytes(int(i) for i in ids if int(i) < 256).decode("utf-8", errors="replace")

    def __call__(self, text: str, add_special_tokens: bool = True):
        return type("Encoding", (), {"input_ids": list(text.encode("utf-8"))})


def utf8(text: str) -> list[int]:
    return list(text.encode("utf-8"))


# -- TextStream ---------------------------------------------------------------------------------
def test_split_character_is_held_until_complete():
    stream = TextStream(ByteTokenizer())
    check = utf8("✓")  # three bytes
    assert stream.push(utf8("a") + check[:1]) == "a"
    assert stream.push(check[1:2]) == ""
    assert stream.push(check[2:]) == "✓"
    assert stream.finish() == ""


def test_stop_string_spanning_calls_is_cut_and_never_sent():
    stream = TextStream(ByteTokenizer(), stop=("END",))
    sent = stream.push(utf8("abcE")) + stream.push(utf8("N"))
    assert "E" not in sent  # "E", "EN" could still become "END"
    sent += stream.push(utf8("Dxyz")) + stream.finish()
    assert sent == "abc" and stream.stopped


def test_held_back_tail_is_released_at_the_end():
    stream = TextStream(ByteTokenizer(), stop=("STOP",))
    assert stream.push(utf8("hello ST")) == "hello"
    assert stream.finish() == " ST" and not stream.stopped


def test_deltas_concatenate_to_the_whole_decode():
    tokens = utf8("héllo wörld ✓ 你好 end")
    for size in (1, 2, 3, 5):
        stream = TextStream(ByteTokenizer(), stop=("zz",))
        text = "".join(stream.push(tokens[i : i + size]) for i in range(0, len(tokens), size)) + stream.finish()
        assert text == "héllo wörld ✓ 你好 end"


def test_earliest_of_several_stop_strings_wins():
    stream = TextStream(ByteTokenizer(), stop=("cd", "b"))
    assert stream.push(utf8("abcd")) + stream.finish() == "a"


# -- request checks -----------------------------------------------------------------------------
CONFIG = ServeConfig(model_dir="unused", max_tokens_limit=64, default_max_tokens=8, max_prompt_tokens=16)
INFO = ModelInfo(name="m", vocab_size=300, context_length=32, sampling=ptp.SamplingConfig(temperature=0.5),
                 has_chat_template=False)


def test_defaults_come_from_config_and_model():
    req = parse_completion({"model": "m", "prompt": "hi", "seed": 4}, CONFIG, INFO, ByteTokenizer())
    assert req.prompt_ids == tuple(utf8("hi")) and req.max_tokens == 8 and req.seed == 4
    assert req.sampling == ptp.SamplingConfig(temperature=0.5) and req.stop == () and not req.stream


def test_missing_seed_gets_a_fresh_one():
    seeds = {parse_completion({"model": "m", "prompt": "hi"}, CONFIG, INFO, ByteTokenizer()).seed for _ in range(5)}
    assert len(seeds) > 1


@pytest.mark.parametrize(
    ("fields", "param", "status"),
    [
        ({"prompt": "x" * 17}, "prompt", 400),  # 17 bytes > max_prompt_tokens
        ({"max_tokens": 65}, "max_tokens", 400),
        ({"temperature": float("nan")}, "temperature", 400),
        ({"top_p": 0.0}, "top_p", 400),
        ({"stop": "x" * 300}, "stop", 400),
        ({"model": "other"}, "model", 404),
        ({"best_of": 3}, "best_of", 400),
        ({"echo": True}, "echo", 400),
    ],
)
def test_bad_fields_are_named(fields, param, status):
    with pytest.raises(APIError) as caught:
        parse_completion({"model": "m", "prompt": "hi", **fields}, CONFIG, INFO, ByteTokenizer())
    assert caught.value.status == status and caught.value.param == param


def test_neutral_values_of_unsupported_fields_pass():
    body = {"model": "m", "prompt": "hi", "n": 1, "echo": False, "logprobs": None, "presence_penalty": 0.0,
            "frequency_penalty": 0, "logit_bias": {}, "user": "someone", "stream_options": {"include_usage": True}}
    assert parse_completion(body, CONFIG, INFO, ByteTokenizer()).max_tokens == 8


def test_chat_needs_a_template():
    with pytest.raises(APIError, match="chat template") as caught:
        parse_chat({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, CONFIG, INFO, ByteTokenizer())
    assert caught.value.status == 400 and caught.value.code == "chat_template_missing"


# -- metrics text -------------------------------------------------------------------------------
def test_metrics_exposition():
    metrics = Metrics()
    metrics.observe_request("/v1/completions", 200, 0.3)
    metrics.observe_request("/v1/completions", 429, 0.001)
    metrics.observe_chunk(3, 1)
    metrics.observe_chunk(1, 1)
    text = metrics.render(queue_depth=2, busy=True)
    assert 'ptp_requests_total{endpoint="/v1/completions",status="429"} 1' in text
    assert "ptp_mean_accepted_tokens_per_call 2.0" in text
    assert 'ptp_request_latency_seconds_bucket{endpoint="/v1/completions",le="0.005"} 1' in text
    assert 'ptp_request_latency_seconds_bucket{endpoint="/v1/completions",le="+Inf"} 2' in text
    assert "ptp_queue_depth 2" in text and "ptp_worker_busy 1" in text
    for line in text.splitlines():  # every sample line is "name{labels} value"
        if not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


# -- config -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fields",
    [{"method": "beam"}, {"port": 70000}, {"queue_size": 0}, {"default_max_tokens": 99, "max_tokens_limit": 10},
     {"max_body_bytes": True}, {"disconnect_poll_seconds": 0}],
)
def test_bad_config_raises(fields):
    with pytest.raises(ValueError):
        ServeConfig(model_dir="m", **fields)


# -- the worker ---------------------------------------------------------------------------------
def test_worker_survives_a_failing_generation_and_bounds_its_queue():
    model = ptp.PTPModel.from_teacher(tiny_teacher("llama"), lora_rank=4, window=4)
    randomize_adapters(model, 0)
    model.eval()
    ok = parse_completion({"model": "m", "prompt": [1, 2, 3], "max_tokens": 5, "seed": 0}, CONFIG,
                          ModelInfo("m", 48, 256, ptp.SamplingConfig(), False), None)
    broken = type(ok)(prompt_ids=(1, 10_000), max_tokens=5, sampling=ok.sampling, seed=0, stop=(), stream=False)

    async def run() -> tuple[list, list]:
        worker = ModelWorker(model, None, "pqd", 16, queue_size=2, metrics=Metrics())
        loop = asyncio.get_running_loop()
        jobs = [worker.submit(broken, loop), worker.submit(ok, loop)]
        with pytest.raises(QueueFull):
            worker.submit(ok, loop)
        worker.start()
        events = []
        for job in jobs:
            events.append([])
            while not isinstance(event := await job.events.get(), Failed | Finished):
                events[-1].append(event)
            events[-1].append(event)
        await asyncio.to_thread(worker.stop)
        return events

    failed, good = asyncio.run(run())
    assert isinstance(failed[-1], Failed) and failed[-1].bad_input  # out-of-vocabulary id: ValueError
    tokens = [t for chunk in good[1:-1] for t in chunk.tokens]
    expected = ptp.generate(model, [1, 2, 3], 5, ok.sampling, 0, method="ar").tokens.tolist()
    assert isinstance(good[-1], Finished) and tokens == expected
