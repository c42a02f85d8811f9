"""The lossless property and the decoding contract: every method emits exactly the tokens of ``ar``."""

import inspect
from dataclasses import replace

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ptp
from conftest import ptp_model
from ptp.decoding import OracleDrafter
from ptp.sampling import CDF_ORDERS
from ptp.testing import FAMILIES, CharTokenizer, tiny_teacher

SAMPLINGS = {
    "greedy": ptp.SamplingConfig(temperature=0),
    "t0.7-k10-p0.9": ptp.SamplingConfig(temperature=0.7, top_k=10, top_p=0.9),
    "t1.3": ptp.SamplingConfig(temperature=1.3),
}


def run(model, prompt, n, sampling, seed, method, **kw):
    return ptp.generate(model, prompt, n, sampling, seed, method, **kw)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    family=st.sampled_from(FAMILIES),
    mode=st.sampled_from(["o-ptp", "c-ptp", "mtp"]),
    sampling=st.sampled_from(sorted(SAMPLINGS)),
    sharpness=st.sampled_from([1.0, 8.0]),  # 8: a low-entropy teacher, so drafts are often right
    drafter=st.sampled_from(["ptp", "oracle", "noisy-oracle"]),
    prompt_len=st.integers(1, 12),
    max_new=st.integers(1, 48),
    budget=st.integers(1, 24),
    seed=st.integers(0, 2**31 - 1),
    order=st.sampled_from(CDF_ORDERS),
    first_slot_token=st.booleans(),
)
def test_draft_verify_and_pqd_equal_ar(family, mode, sampling, sharpness, drafter, prompt_len, max_new, budget, seed,
                                       order, first_slot_token):
    model = ptp_model(family, mode, sharpness=sharpness, first_slot_token=first_slot_token and mode != "c-ptp")
    cfg = replace(SAMPLINGS[sampling], order=order)
    prompt = torch.randint(48, (prompt_len,), generator=torch.Generator().manual_seed(seed))
    ref = run(model, prompt, max_new, cfg, seed, "ar")
    assert len(ref.tokens) == max_new and ref.mat == 1.0
    for method in ("draft-verify", "pqd"):
        chosen = None
        if drafter != "ptp":
            chosen = OracleDrafter(model, cfg, error_rate=0.0 if drafter == "oracle" else 0.3, seed=seed)
        out = run(model, prompt, max_new, cfg, seed, method, slot_budget=budget, drafter=chosen)
        assert out.tokens.tolist() == ref.tokens.tolist(), method
        assert sum(out.accepted_per_call) == max_new and out.teacher_calls == len(out.accepted_per_call)
        assert all(a >= 1 for a in out.accepted_per_call)


@pytest.mark.parametrize("mode", ["o-ptp", "c-ptp"])
def test_oracle_pqd_reaches_its_budget(mode):
    """An always-right drafter fills every call: MAT close to the slot budget (multi-token path)."""
    model = ptp_model("llama", mode, window=16)
    cfg = SAMPLINGS["t0.7-k10-p0.9"]
    prompt = torch.arange(5)
    budget = 12
    ref = run(model, prompt, 120, cfg, 7, "ar")
    out = run(model, prompt, 120, cfg, 7, "pqd", slot_budget=budget, drafter=OracleDrafter(model, cfg))
    assert torch.equal(out.tokens, ref.tokens)
    # O-PTP spends one slot of the chosen group on the verified token; C-PTP does not.
    per_call = budget if mode == "o-ptp" else budget + 1
    # The first call has no drafts yet and the last one is cut at max_new_tokens; all others are full.
    assert out.accepted_per_call[0] == 1 and set(out.accepted_per_call[1:-1]) == {per_call}
    assert out.mat >= 0.8 * per_call
    dv = run(model, prompt, 120, cfg, 7, "draft-verify", draft_len=budget, drafter=OracleDrafter(model, cfg))
    assert torch.equal(dv.tokens, ref.tokens) and dv.calls == 2 * dv.teacher_calls


def test_same_seed_repeats_and_seeds_differ():
    model = ptp_model("llama", "o-ptp")
    cfg = SAMPLINGS["t1.3"]
    a = run(model, [1, 2, 3], 30, cfg, 11, "pqd")
    b = run(model, [1, 2, 3], 30, cfg, 11, "pqd")
    c = run(model, [1, 2, 3], 30, cfg, 12, "pqd")
    assert torch.equal(a.tokens, b.tokens)
    assert not torch.equal(a.tokens, c.tokens)


def test_ar_sampling_follows_the_teacher_distribution():
    """First generated token over many seeds vs the teacher's processed distribution (chi-square)."""
    model = ptp_model("llama", "o-ptp")
    cfg = ptp.SamplingConfig(temperature=1.0, top_k=12)
    prompt = torch.tensor([3, 1, 4, 1, 5])
    with torch.no_grad():
        probs = ptp.sampling.process(model.teacher(prompt[None]).logits[0, -1].double(), cfg)
    n = 1500
    firsts = torch.tensor([int(run(model, prompt, 1, cfg, seed, "ar").tokens[0]) for seed in range(n)])
    counts = torch.bincount(firsts, minlength=probs.numel()).double()
    assert bool((counts[probs == 0] == 0).all())
    expected = probs * n
    keep = expected > 0
    chi2 = float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum())
    assert chi2 < 35.0  # df = 11: p(chi2 > 31.3) = 0.001


@pytest.mark.parametrize("method", ["ar", "draft-verify", "pqd"])
def test_stops_at_eos_immediately(method):
    model = ptp_model("llama", "o-ptp", sharpness=8.0)
    cfg = SAMPLINGS["t0.7-k10-p0.9"]
    free = run(model, [5, 6, 7], 40, cfg, 3, "ar")
    eos = int(free.tokens[10])
    first = free.tokens.tolist().index(eos)
    out = run(model, [5, 6, 7], 40, cfg, 3, method, eos_token_id=eos, drafter=OracleDrafter(model, cfg))
    assert out.tokens.tolist() == free.tokens[: first + 1].tolist()
    assert out.stop_reason == "eos"


@pytest.mark.parametrize("method", ["ar", "draft-verify", "pqd"])
def test_stop_strings_cut_after_the_completing_token(method):
    model = ptp_model("qwen2", "o-ptp", sharpness=8.0)
    cfg = SAMPLINGS["greedy"]
    tok = CharTokenizer()
    free = run(model, [9, 8], 30, cfg, 0, "ar")
    text = tok.decode(free.tokens.tolist())
    stop = text[12:14]
    end = text.index(stop) + len(stop)  # one char per token
    out = run(model, [9, 8], 30, cfg, 0, method, stop_strings=[stop], tokenizer=tok)
    assert out.tokens.tolist() == free.tokens[:end].tolist()
    assert out.stop_reason == "stop_string"


@pytest.mark.parametrize("method", ["ar", "draft-verify", "pqd"])
def test_generation_stops_when_the_context_is_full(method):
    model = ptp.PTPModel.from_teacher(tiny_teacher("gpt2", max_positions=24), lora_rank=4, window=8).eval()
    cfg = SAMPLINGS["t1.3"]
    out = run(model, list(range(20)), 50, cfg, 1, method, drafter=OracleDrafter(model, cfg))
    ref = run(model, list(range(20)), 50, cfg, 1, "ar")
    assert len(out.tokens) == 24 - 20 + 1 and out.stop_reason == "context"
    assert torch.equal(out.tokens, ref.tokens)


def test_stream_yields_verified_tokens_per_call():
    model = ptp_model("llama", "o-ptp", sharpness=8.0)
    cfg = SAMPLINGS["t0.7-k10-p0.9"]
    chunks = list(ptp.generate_stream(model, [1, 2], 40, cfg, 5, "pqd", drafter=OracleDrafter(model, cfg)))
    assert chunks[0].tokens == [] and chunks[0].forward_calls == 0  # the prefill
    assert all(c.tokens for c in chunks[1:])
    assert chunks[-1].stop_reason == "length" and all(c.stop_reason is None for c in chunks[:-1])
    streamed = [t for c in chunks for t in c.tokens]
    assert streamed == run(model, [1, 2], 40, cfg, 5, "ar").tokens.tolist()



def test_generate_shows_the_stream_parameters():
    """generate is generate_stream run to the end: one signature, which help() and editors show."""
    stream, whole = inspect.signature(ptp.generate_stream), inspect.signature(ptp.generate)
    assert whole.parameters == stream.parameters and whole.return_annotation == "GenerateOutput | list[GenerateOutput]"
    assert ptp.generate.__name__ == "generate" and "generate_stream" in ptp.generate.__doc__

def test_outputs_report_calls_and_timings():
    model = ptp_model("llama", "c-ptp")
    out = run(model, [1, 2, 3], 20, SAMPLINGS["t1.3"], 0, "draft-verify")
    assert out.calls == 2 * out.teacher_calls
    assert out.mat == pytest.approx(20 / out.teacher_calls)
    assert out.prefill_seconds > 0 and out.decode_seconds > 0 and out.first_token_seconds >= out.prefill_seconds
    assert out.tokens.dtype == torch.long and out.tokens.dim() == 1


@pytest.mark.parametrize(
    ("prompt", "kwargs", "message"),
    [
        ([], {}, "empty"),
        (list(range(300)), {}, "context holds 256"),
        (torch.zeros(2, 2, 2, dtype=torch.long), {}, "one prompt"),
        ([1, 2], {"method": "beam"}, "method"),
        ([1, 2], {"max_new_tokens": 0}, "max_new_tokens"),
        ([1, 2], {"slot_budget": 0}, "slot_budget"),
        ([1, 2], {"stop_strings": ["x"]}, "tokenizer"),
        ([1, -5], {}, "outside the vocabulary"),
        ([1, 48], {}, "outside the vocabulary"),
        (torch.tensor([1.0, 2.0]), {}, "integer token ids"),
    ],
)
def test_bad_requests_raise_clear_errors(prompt, kwargs, message):
    model = ptp_model("llama", "o-ptp")
    with pytest.raises(ValueError, match=message):
        ptp.generate(model, prompt, **{"sampling": SAMPLINGS["greedy"], **kwargs})
    with pytest.raises(ValueError, match=message):  # the stream form fails before any work too
        ptp.generate_stream(model, prompt, **{"sampling": SAMPLINGS["greedy"], **kwargs})
