"""End to end: the real server on a loopback port, driven by the openai client and raw HTTP."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest
import torch
from transformers import AutoTokenizer

import ptp
from ptp.serve import ServeConfig
from ptp.testing import tiny_serve_checkpoint
from test_serve_support import live_server

NAME = "tiny"
BODY_LIMIT = 32 * 1024  # bytes; small so the 413 tests send little
PROMPT_LIMIT = 64  # tokens
PROMPT = "def add(a, b):\n"
SAMPLINGS = [
    ptp.SamplingConfig(temperature=1.0),
    ptp.SamplingConfig(temperature=0.7, top_k=40, top_p=0.9),
    ptp.SamplingConfig(temperature=0.0),
]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The server's worker and the reference share 2 cores: oversubscribed OpenMP threads crawl."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    return {
        "chat": tiny_serve_checkpoint(root / "chat"),
        "plain": tiny_serve_checkpoint(root / "plain", chat_template=None),
        "endless": tiny_serve_checkpoint(root / "endless", eos=False),
    }


@pytest.fixture(scope="module")
def server(checkpoints):
    config = ServeConfig(model_dir=str(checkpoints["chat"]), model_name=NAME, max_body_bytes=BODY_LIMIT,
                         max_prompt_tokens=PROMPT_LIMIT, max_tokens_limit=256)
    with live_server(config) as (url, _):
        yield url


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def reference(checkpoints):
    """A separate model instance (the server's belongs to its worker thread) and the tokenizer."""
    directory = checkpoints["chat"]
    return ptp.PTPModel.from_pretrained(directory).eval(), AutoTokenizer.from_pretrained(directory)


def ar_text(reference, ids: list[int], max_tokens: int, sampling: ptp.SamplingConfig, seed: int) -> str:
    model, tokenizer = reference
    tokens = ptp.generate(model, ids, max_tokens, sampling, seed, method="ar").tokens
    return tokenizer.decode(tokens, skip_special_tokens=True)


def sampling_args(s: ptp.SamplingConfig) -> dict:
    return {"temperature": s.temperature, "top_p": s.top_p, "extra_body": {"top_k": s.top_k}}


# -- the lossless property through HTTP ---------------------------------------------------------
@pytest.mark.parametrize("sampling", SAMPLINGS, ids=["t1", "t0.7-k40-p0.9", "greedy"])
def test_completion_equals_autoregressive_sampling(client, reference, sampling):
    ids = reference[1](PROMPT).input_ids
    for seed in (0, 1, 2):
        out = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=24, seed=seed, **sampling_args(sampling))
        assert out.choices[0].text == ar_text(reference, ids, 24, sampling, seed)
        assert out.usage.prompt_tokens == len(ids)
        block = out.model_extra["ptp"]
        assert block["seed"] == seed and block["method"] == "pqd"
        assert block["calls"] >= block["teacher_calls"] >= 1
        assert block["mat"] == pytest.approx(out.usage.completion_tokens / block["teacher_calls"], abs=1e-3)


def test_streamed_completion_equals_the_whole_one(client, reference):
    ids = reference[1](PROMPT).input_ids
    sampling = ptp.SamplingConfig(temperature=0.8)
    stream = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=40, seed=7, stream=True,
                                       **sampling_args(sampling))
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks) == ar_text(reference, ids, 40, sampling, 7)
    assert [c.choices[0].finish_reason for c in chunks][-1] in ("stop", "length")
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert chunks[-1].usage.completion_tokens >= 1 and "ptp" in chunks[-1].model_extra


def test_token_id_prompt(client, reference):
    sampling = ptp.SamplingConfig()
    out = client.completions.create(model=NAME, prompt=[5, 6, 7], max_tokens=8, seed=3, **sampling_args(sampling))
    assert out.choices[0].text == ar_text(reference, [5, 6, 7], 8, sampling, 3)


@pytest.mark.parametrize("stream", [False, True])
def test_chat_equals_autoregressive_sampling(client, reference, stream):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "héllo ✓"}]
    tokenizer = reference[1]
    ids = tokenizer(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                    add_special_tokens=False).input_ids
    sampling = ptp.SamplingConfig(temperature=0.9)
    out = client.chat.completions.create(model=NAME, messages=messages, max_tokens=20, seed=11, stream=stream,
                                         **sampling_args(sampling))
    if stream:
        chunks = list(out)
        assert chunks[0].choices[0].delta.role == "assistant"
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
    else:
        assert out.choices[0].message.role == "assistant"
        assert out.usage.prompt_tokens == len(ids)
        text = out.choices[0].message.content
    assert text == ar_text(reference, ids, 20, sampling, 11)


@pytest.mark.parametrize("stream", [False, True])
def test_stop_string_ends_the_text_before_it(client, reference, stream):
    ids = reference[1](PROMPT).input_ids
    sampling = ptp.SamplingConfig(temperature=1.0)
    full = ar_text(reference, ids, 40, sampling, 5)
    start = next(i for i in range(4, len(full) - 2) if "\ufffd" not in full[i : i + 2] and full[i : i + 2].strip())
    stop = full[start : start + 2]
    out = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=40, seed=5, stop=[stop], stream=stream,
                                    **sampling_args(sampling))
    chunks = list(out) if stream else [out]
    assert "".join(c.choices[0].text for c in chunks) == full[: full.index(stop)]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_models_health_metrics(client, server):
    assert [m.id for m in client.models.list().data] == [NAME]
    assert httpx.get(f"{server}/health").json()["status"] == "ok"
    metrics = httpx.get(f"{server}/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    for name in ("ptp_requests_total{", "ptp_generated_tokens_total ", "ptp_forward_calls_total ",
                 "ptp_mean_accepted_tokens_per_call ", "ptp_request_latency_seconds_bucket{",
                 "ptp_time_to_first_token_seconds_count{", "process_resident_memory_bytes "):
        assert name in metrics.text


# -- bad input: always an OpenAI-shaped 4xx, never a 500 -----------------------------------------
def completion(**fields) -> bytes:
    return json.dumps({"model": NAME, "prompt": "hi", "max_tokens": 2, **fields}).encode()


def chat(**fields) -> bytes:
    return json.dumps({"model": NAME, "messages": [{"role": "user", "content": "hi"}], **fields}).encode()


BAD_COMPLETIONS = {
    "malformed JSON": (b'{"model": "tiny", "prompt": ', 400),
    "not an object": (b"[1, 2, 3]", 400),
    "invalid UTF-8": (b'{"model": "tiny", "prompt": "\xff\xfe"}', 400),
    "lone surrogate": (b'{"model": "tiny", "prompt": "a\\ud800b"}', 400),
    "NaN": (b'{"model": "tiny", "prompt": "a", "temperature": NaN}', 400),
    "infinite temperature": (b'{"model": "tiny", "prompt": "a", "temperature": 1e999}', 400),
    "deep nesting": (b"[" * 20_000, 400),
    "huge integer": (b'{"model": "tiny", "prompt": "a", "max_tokens": 1' + b"0" * 5000 + b"}", 400),
    "missing model": (json.dumps({"prompt": "a"}).encode(), 400),
    "model not a string": (completion(model=3), 400),
    "unknown model": (completion(model="gpt-9"), 404),
    "missing prompt": (json.dumps({"model": NAME}).encode(), 400),
    "prompt wrong type": (completion(prompt=5), 400),
    "prompt list of strings": (completion(prompt=["a", "b"]), 400),
    "empty prompt": (completion(prompt=""), 400),
    "empty token list": (completion(prompt=[]), 400),
    "token id out of vocab": (completion(prompt=[1, 10**6]), 400),
    "over-long prompt": (completion(prompt="a b " * 200), 400),
    "max_tokens string": (completion(max_tokens="5"), 400),
    "max_tokens float": (completion(max_tokens=5.0), 400),
    "max_tokens zero": (completion(max_tokens=0), 400),
    "max_tokens over limit": (completion(max_tokens=100_000), 400),
    "temperature string": (completion(temperature="hot"), 400),
    "negative temperature": (completion(temperature=-0.5), 400),
    "top_p zero": (completion(top_p=0), 400),
    "top_p above one": (completion(top_p=1.5), 400),
    "top_k negative": (completion(top_k=-1), 400),
    "top_k float": (completion(top_k=1.5), 400),
    "negative seed": (completion(seed=-1), 400),
    "seed too large": (completion(seed=2**64), 400),
    "boolean seed": (completion(seed=True), 400),
    "stream not a boolean": (completion(stream="yes"), 400),
    "stop wrong type": (completion(stop=5), 400),
    "too many stops": (completion(stop=["a", "b", "c", "d", "e"]), 400),
    "empty stop": (completion(stop=[""]), 400),
    "n = 2": (completion(n=2), 400),
    "logit bias": (completion(logit_bias={"1": 5}), 400),
    "presence penalty": (completion(presence_penalty=1.0), 400),
}
BAD_CHATS = {
    "no messages": (chat(messages=None), 400),
    "empty messages": (chat(messages=[]), 400),
    "message not an object": (chat(messages=["hi"]), 400),
    "unknown role": (chat(messages=[{"role": "robot", "content": "hi"}]), 400),
    "content wrong type": (chat(messages=[{"role": "user", "content": 5}]), 400),
    "max_completion_tokens over limit": (chat(max_completion_tokens=10**6), 400),
}


def assert_openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    return error


@pytest.mark.parametrize("case", BAD_COMPLETIONS)
def test_bad_completion_requests_get_4xx(server, case):
    body, status = BAD_COMPLETIONS[case]
    response = httpx.post(f"{server}/v1/completions", content=body, headers={"content-type": "application/json"})
    assert_openai_error(response, status)


@pytest.mark.parametrize("case", BAD_CHATS)
def test_bad_chat_requests_get_4xx(server, case):
    body, status = BAD_CHATS[case]
    response = httpx.post(f"{server}/v1/chat/completions", content=body)
    assert_openai_error(response, status)


def test_bad_field_is_named(server):
    error = assert_openai_error(httpx.post(f"{server}/v1/completions", content=completion(top_p=2)), 400)
    assert error["param"] == "top_p" and "top_p" in error["message"]


def test_oversized_body_is_refused_before_parsing(server):
    big = completion(prompt="x" * BODY_LIMIT)
    assert_openai_error(httpx.post(f"{server}/v1/completions", content=big), 413)

    def chunks():  # no Content-Length: the limit applies while reading
        for _ in range(BODY_LIMIT // 1024 + 2):
            yield b" " * 1024

    error = assert_openai_error(httpx.post(f"{server}/v1/completions", content=chunks()), 413)
    assert error["code"] == "request_too_large"


def test_unknown_route_and_method(server):
    assert_openai_error(httpx.get(f"{server}/v1/nothing"), 404)
    assert_openai_error(httpx.get(f"{server}/v1/completions"), 405)


def test_chat_without_template_is_a_clear_400(checkpoints):
    config = ServeConfig(model_dir=str(checkpoints["plain"]), model_name=NAME)
    with live_server(config) as (url, _):
        error = assert_openai_error(httpx.post(f"{url}/v1/chat/completions", content=chat()), 400)
        assert error["code"] == "chat_template_missing" and "/v1/completions" in error["message"]
        assert httpx.post(f"{url}/v1/completions", content=completion(), timeout=30).status_code == 200


# -- concurrency: bounded queue, disconnects, isolation -------------------------------------------
def metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} missing from /metrics")


def wait_for(condition, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_queue_full_429_and_disconnect_stops_generation(checkpoints):
    """One running stream + one queued request fill a queue of 1: the next gets 429. Closing the
    stream cancels its generation long before its 1000 tokens, and the queued request still succeeds."""
    config = ServeConfig(model_dir=str(checkpoints["endless"]), model_name=NAME, queue_size=1, max_batch=1)
    with live_server(config) as (url, app):
        worker = app.state.served.worker
        queued: list[httpx.Response] = []
        long_request = {"model": NAME, "prompt": "a", "max_tokens": 1000, "seed": 1, "stream": True}
        with httpx.Client(base_url=url, timeout=60) as http, http.stream(
            "POST", "/v1/completions", json=long_request
        ) as running:
            assert running.status_code == 200
            lines = running.iter_lines()  # keep it: a dropped iterator closes the connection
            next(line for line in lines if line.startswith("data:"))
            waiter = threading.Thread(target=lambda: queued.append(
                httpx.post(f"{url}/v1/completions", content=completion(max_tokens=4, seed=2), timeout=60)))
            waiter.start()
            wait_for(lambda: worker.depth() == 1)
            error = assert_openai_error(httpx.post(f"{url}/v1/completions", content=completion()), 429)
            assert error["code"] == "rate_limit_exceeded"
        waiter.join(60)
        assert queued[0].status_code == 200 and queued[0].json()["usage"]["completion_tokens"] == 4
        wait_for(lambda: not worker.busy and worker.depth() == 0)
        assert metric(url, "ptp_cancelled_generations_total") == 1
        assert metric(url, "ptp_generated_tokens_total") < 500  # the stream stopped far before 1000
        assert httpx.post(f"{url}/v1/completions", content=completion(), timeout=30).status_code == 200


def test_bad_requests_do_not_disturb_a_good_one(server, reference):
    sampling = ptp.SamplingConfig()
    good: list[httpx.Response] = []
    body = completion(prompt=PROMPT, max_tokens=30, seed=9, temperature=1.0)
    thread = threading.Thread(target=lambda: good.append(httpx.post(f"{server}/v1/completions", content=body,
                                                                    timeout=60)))
    thread.start()
    for case in ("malformed JSON", "NaN", "deep nesting", "unknown model"):
        bad, status = BAD_COMPLETIONS[case]
        assert httpx.post(f"{server}/v1/completions", content=bad).status_code == status
    thread.join(60)
    expected = ar_text(reference, reference[1](PROMPT).input_ids, 30, sampling, 9)
    assert good[0].status_code == 200 and good[0].json()["choices"][0]["text"] == expected


def test_concurrent_requests_share_the_batch_and_each_equals_ar(checkpoints, reference):
    """Requests arriving together run as one batch (continuous batching); each text is its own seed's AR
    text, whatever it was batched with, and the finished rows leave the batch."""
    config = ServeConfig(model_dir=str(checkpoints["chat"]), model_name=NAME, max_batch=3)
    samplings = [ptp.SamplingConfig(temperature=0.9), ptp.SamplingConfig(temperature=0),
                 ptp.SamplingConfig(temperature=1.0, top_k=20)]
    with live_server(config) as (url, app):
        answers: dict[int, httpx.Response] = {}

        def send(seed: int) -> None:
            s = samplings[seed % 3]
            body = {"model": NAME, "prompt": PROMPT, "max_tokens": 12 + 4 * seed, "seed": seed,
                    "temperature": s.temperature, "top_k": s.top_k}
            answers[seed] = httpx.post(f"{url}/v1/completions", json=body, timeout=60)

        threads = [threading.Thread(target=send, args=(seed,)) for seed in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        ids = reference[1](PROMPT).input_ids
        for seed, response in answers.items():
            expected = ar_text(reference, ids, 12 + 4 * seed, samplings[seed % 3], seed)
            assert response.status_code == 200 and response.json()["choices"][0]["text"] == expected
        wait_for(lambda: not app.state.served.worker.busy)
        assert len(answers) == 5 and metric(url, "ptp_batch_size") == 0
        steps = metric(url, "ptp_batch_rows_count")
        single = float(next(line.split()[1] for line in httpx.get(f"{url}/metrics").text.splitlines()
                            if line.startswith('ptp_batch_rows_bucket{le="1"}')))
        assert single < steps  # some steps decoded several requests together
        assert metric(url, "ptp_request_accepted_tokens_per_call_count") == 5
