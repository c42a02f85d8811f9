"""ptp inside vLLM: the exact-match sampling functions the vLLM patch calls, the draft worker, the plugin hook.

vLLM itself is not installed here (it lives in its own environment, scripts/setup_vllm.sh); these tests
run vLLM's side of the loop by hand with the same functions, and check it reproduces ptp's decoding.
"""

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ptp
from conftest import head_model
from ptp.sampling import SamplingConfig
from ptp.ustream import UStream
from ptp.vllm_plugin import drafter_order, exact_order, patch, register
from ptp.vllm_plugin.draft_worker import IncrementalDrafter, drafts_from_scratch, oracle_drafts
from ptp.vllm_plugin.exact import (
    PLACEHOLDER,
    RowSampling,
    UStreams,
    draft_u,
    request_seed,
    sample_rows,
    sampling_config,
    verify_rows,
)
from ptp.vllm_plugin.proposer import PTPProposer
from ptp.vllm_plugin.wire import decode_features, encode_features

SAMPLED = SamplingConfig(temperature=0.8, top_k=20, top_p=0.9, order="argmax")


@torch.no_grad()
def teacher_logits(model, tokens: list[int]) -> torch.Tensor:
    return model.teacher(torch.tensor([tokens])).logits[0].float()  # [len(tokens), V]


@torch.no_grad()
def vllm_loop(model, prompt: list[int], max_new: int, cfg: SamplingConfig, seed: int, k: int, oracle: bool = False):
    """vLLM's decoding with PTPProposer and the exact verifier, by hand: it samples the first token after
    the prefill, then each step the worker drafts with the next tokens' u's, the teacher scores
    [pending, drafts] and ``verify_rows`` keeps the matching prefix plus one pick."""
    streams, head = UStreams(), IncrementalDrafter(model)
    first = RowSampling(seed, len(prompt), 0, cfg)
    tokens = [*prompt, int(sample_rows(teacher_logits(model, prompt)[-1:], [first], streams)[0])]
    accepted = []
    while len(tokens) - len(prompt) < max_new:
        row = RowSampling(seed, len(prompt), len(tokens) - len(prompt), cfg)
        u = draft_u(row, row.generated, k, streams)
        drafts = oracle_drafts(model, tokens, u, cfg) if oracle else head.draft(tokens, u)
        logits = teacher_logits(model, tokens + drafts)[len(tokens) - 1 :]  # [k + 1, V]
        out = verify_rows(logits[:-1], logits[-1:], [drafts], [row], streams, k)[0].tolist()
        new = [t for t in out if t != PLACEHOLDER]
        accepted.append(len(new) - 1)
        tokens += new
    return tokens[len(prompt) : len(prompt) + max_new], accepted


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), greedy=st.booleans(), k=st.integers(1, 4), prompt_len=st.integers(1, 8))
def test_vllm_loop_equals_ptp_ar(seed, greedy, k, prompt_len):
    model = head_model(order="argmax")
    cfg = SamplingConfig(temperature=0, order="argmax") if greedy else SAMPLED
    prompt = torch.randint(48, (prompt_len,), generator=torch.Generator().manual_seed(seed)).tolist()
    ref = ptp.generate(model, prompt, 24, cfg, seed, "ar").tokens.tolist()
    tokens, accepted = vllm_loop(model, prompt, 24, cfg, seed, k)
    assert tokens == ref
    assert all(0 <= a <= k for a in accepted)


@pytest.mark.parametrize("greedy", [False, True])
def test_perfect_drafter_is_accepted_in_full(greedy):
    """The teacher's own picks under the drafts' u's (the worker's oracle) pass exact verification every time:
    k + 1 tokens per teacher step, where vLLM's rejection sampler would accept each with probability p."""
    model = head_model(order="argmax")
    cfg = SamplingConfig(temperature=0, order="argmax") if greedy else SAMPLED
    prompt, k = [2, 7, 1, 8], 3
    tokens, accepted = vllm_loop(model, prompt, 1 + 4 * (k + 1), cfg, 5, k, oracle=True)
    assert tokens == ptp.generate(model, prompt, 1 + 4 * (k + 1), cfg, 5, "ar").tokens.tolist()
    assert accepted == [k] * 4


def test_exact_match_acceptance_is_deterministic():
    """A draft is accepted iff it equals the teacher's pick under its own u: the true future is always
    accepted in full, a wrong token at slot j stops acceptance at j with the teacher's own correction."""
    model = head_model(order="argmax")
    prompt, seed, k = [3, 1, 4, 1, 5], 11, 4
    future = ptp.generate(model, prompt, 2 + k + 1, SAMPLED, seed, "ar").tokens.tolist()
    streams = UStreams()
    context = prompt + future[:2]  # two tokens generated; the next is index 2
    row = RowSampling(seed, len(prompt), 2, SAMPLED)
    for wrong_at in [None, 0, 2, k - 1]:
        drafts = future[2 : 2 + k]
        if wrong_at is not None:
            drafts = drafts.copy()
            drafts[wrong_at] = (drafts[wrong_at] + 1) % model.vocab_size
        logits = teacher_logits(model, context + drafts)[len(context) - 1 :]
        out = verify_rows(logits[:-1], logits[-1:], [drafts], [row], streams, k)[0].tolist()
        n = k if wrong_at is None else wrong_at
        assert out == future[2 : 2 + n + 1] + [PLACEHOLDER] * (k - n)


def test_batch_rows_are_independent():
    """Rows of one batch, with different seeds, samplings and draft counts, each equal to their lone verification;
    unused columns hold vLLM's placeholder."""
    model = head_model(order="argmax")
    streams = UStreams()
    rows = [RowSampling(5, 3, 0, SAMPLED), RowSampling(request_seed(None, "req-2"), 4, 7, SamplingConfig(0.0)),
            RowSampling(9, 2, 1, SAMPLED), RowSampling(4, 2, 3, SamplingConfig(1.3, order="argmax"))]
    drafts = [[1, 2, 3], [], [4], [2, 2]]
    contexts = [[1, 2, 3], [7, 7, 7, 7, 1, 2, 3, 4, 5, 6, 7], [9, 8, 1], [3, 3, 3, 3, 3]]
    target, bonus = [], []
    for context, d in zip(contexts, drafts, strict=True):
        logits = teacher_logits(model, context + d)[len(context) - 1 :]
        target.append(logits[:-1])
        bonus.append(logits[-1:])
    out = verify_rows(torch.cat(target), torch.cat(bonus), drafts, rows, streams, 3)
    assert out.shape == (4, 4) and out.dtype == torch.int32
    for i in range(4):
        alone = verify_rows(target[i], bonus[i], [drafts[i]], [rows[i]], UStreams(), 3)[0]
        assert out[i].tolist() == alone.tolist()
        kept = [t for t in out[i].tolist() if t != PLACEHOLDER]
        assert 1 <= len(kept) <= len(drafts[i]) + 1 and out[i, len(kept) :].eq(PLACEHOLDER).all()
    plain = sample_rows(torch.cat(bonus), rows, streams)  # no drafts: the bonus position's picks
    assert plain.tolist() == [verify_rows(torch.empty(0, bonus[i].shape[-1]), bonus[i], [[]], [rows[i]], streams, 0)
                              [0, 0].item() for i in range(4)]
    with pytest.raises(ValueError, match="draft"):
        verify_rows(torch.cat(target), torch.cat(bonus), drafts[:3], rows[:3], streams, 3)


def test_u_is_a_function_of_seed_and_index():
    streams = UStreams(capacity=2)
    reference = UStream(123).take(0, 600)
    assert torch.equal(streams.take(123, 300, 5), reference[300:305])
    for seed in (1, 2, 3):  # evict 123
        streams.take(seed, 0, 1)
    assert torch.equal(streams.take(123, 598, 2), reference[598:600])
    row = RowSampling(123, 10, 0, SAMPLED)
    assert torch.equal(draft_u(row, 4, 3, streams), reference[4:7])
    greedy = RowSampling(123, 10, 0, SamplingConfig(0.0, order="argmax"))
    assert draft_u(greedy, 4, 3, streams).eq(0).all()  # u = 0: the most likely chain
    assert torch.equal(draft_u(RowSampling(123, 10, 0, SamplingConfig(0.0)), 4, 3, streams), reference[4:7])


def test_seeds_and_sampling_parameters():
    assert request_seed(42, "any") == 42
    derived = request_seed(None, "chatcmpl-1")
    assert derived == request_seed(None, "chatcmpl-1") != request_seed(None, "chatcmpl-2")
    assert 0 <= derived < 2**63
    assert sampling_config(0.7, -1, 1.0, "id") == SamplingConfig(0.7, 0, 1.0, "id")
    assert sampling_config(0.7, 50, 0.95, "argmax") == SamplingConfig(0.7, 50, 0.95, "argmax")
    assert sampling_config(1e-7, 50, 0.9, "argmax").greedy


@pytest.mark.parametrize("u_values", [[0.0, 0.0, 0.0], [0.9, 0.1, 0.5]])
def test_incremental_drafter_equals_from_scratch(u_values):
    model = head_model(order="argmax")
    drafter = IncrementalDrafter(model, capacity=2)
    u = torch.tensor(u_values)
    for context in ([5, 6], [5, 6, 7, 8], [9, 9, 9], [5, 6, 7, 8, 1], [5, 6, 2]):
        assert drafter.draft(context, u) == drafts_from_scratch(model, context, u)


@torch.no_grad()
def test_drafter_reads_given_features():
    """Teacher features handed in (vLLM's hidden states) replace the worker's own teacher pass: same drafts,
    the worker's teacher runs only for positions they do not cover, and its cache catches up then."""
    model = head_model(order="argmax")
    fed, own = IncrementalDrafter(model), IncrementalDrafter(model)
    u = torch.tensor([0.3, 0.6, 0.1])
    full = [5, 6, 7, 8, 9, 1, 2, 3, 4, 10, 11]
    features = model.teacher.base_model(torch.tensor([full])).last_hidden_state[0]  # [len, H]
    # (context length, first position handed in): fresh prompt, a decode step, positions 5..7 not covered
    # (the worker's teacher, which has run nothing yet, catches up on 0..7), then covered again
    for n, start in [(4, 0), (6, 3), (9, 7), (11, 8)]:
        context = full[:n]
        given = decode_features(encode_features(start, features[start : n - 1]))
        assert fed.draft(context, u, given) == own.draft(context, u)
    assert fed.teacher_tokens == 8 and own.teacher_tokens == 10  # positions 0..7, against all of 0..9


def test_worker_refuses_c_ptp_heads():
    with pytest.raises(ValueError, match="C-PTP"):
        IncrementalDrafter(head_model(mode="c-ptp"))


def test_order_and_register(tmp_path, monkeypatch):
    model = head_model(order="argmax")
    model.save_pretrained(tmp_path / "head", include_teacher=True)
    assert drafter_order(str(tmp_path / "head")) == "argmax"
    with pytest.raises(FileNotFoundError, match=r"ptp_config\.json"):
        drafter_order(str(tmp_path))
    monkeypatch.delenv("PTP_VLLM_ORDER", raising=False)
    monkeypatch.setenv("PTP_HEAD", str(tmp_path / "head"))
    assert exact_order() == "argmax"
    monkeypatch.setenv("PTP_VLLM_ORDER", "id")
    assert exact_order() == "id"
    monkeypatch.delenv("PTP_VLLM_EXACT", raising=False)
    register()  # off: nothing imported, nothing patched
    assert "vllm" not in sys.modules


def test_worker_protocol(tmp_path):
    """The worker over its pipe answers one draft per u, equal to the drafter's in-process drafts."""
    model = head_model(order="argmax")
    model.save_pretrained(tmp_path / "head", include_teacher=True)
    contexts, us = [[5, 6, 7], [1, 2]], [[0.1, 0.7], [0.0, 0.0, 0.3]]
    worker = subprocess.run([sys.executable, "-m", "ptp.vllm_plugin.draft_worker", "--model", str(tmp_path / "head")],
                            input=json.dumps({"contexts": contexts, "u": us}) + "\n", capture_output=True,
                            text=True, timeout=120, check=True)
    ready, answer = (json.loads(line) for line in worker.stdout.splitlines())
    assert ready["ready"]
    expected = [drafts_from_scratch(model, c, torch.tensor(u)) for c, u in zip(contexts, us, strict=True)]
    assert answer["drafts"] == expected


@torch.no_grad()
def test_proposer_follows_batch_budgets(tmp_path, monkeypatch):
    """vLLM's calls to the proposer, by hand: drafts per request follow the batch size (none from two running
    requests on); vLLM's hidden states of the steps without drafts are held and sent when drafting resumes,
    so the worker's teacher runs nothing, and the drafts are the head's for the context (u = 0 chain)."""
    model = head_model(order="argmax")
    model.save_pretrained(tmp_path / "head", include_teacher=True)
    monkeypatch.setenv("PTP_PYTHON", sys.executable)
    monkeypatch.setenv("PTP_HEAD", str(tmp_path / "head"))
    monkeypatch.setenv("PTP_BATCH_BUDGETS", "[[1, 2], [2, 0]]")
    monkeypatch.setattr(patch, "install_features", lambda: None)  # vLLM's runner is not here
    config = SimpleNamespace(speculative_config=SimpleNamespace(num_speculative_tokens=3),
                             model_config=SimpleNamespace(max_model_len=64))
    a, b = [5, 6, 7, 8, 9], [1, 2, 3]  # request a: prompt 5 6 7, then 8 and 9 sampled; b: prompt 1 2, then 3
    features = {name: model.teacher.base_model(torch.tensor([seq])).last_hidden_state[0] for name, seq in
                [("a", a), ("b", b)]}
    tokens = np.zeros((2, 64), dtype=np.int64)
    tokens[0, :5], tokens[1, :3] = a, b
    proposer = PTPProposer(config)
    try:
        # step 1: both prompts ran (prefill), both running: no drafts, the worker is not called
        monkeypatch.setattr(patch, "step_features", lambda: [("a", 0, features["a"][:3]), ("b", 0, features["b"][:2])])
        assert proposer.propose([[8], [3]], [4, 3], tokens) == [[], []] and proposer.steps == 0
        # step 2: a ran its token 8; b finished: one running, 2 drafts for a from the held features
        monkeypatch.setattr(patch, "step_features", lambda: [("a", 3, features["a"][3:4]), ("b", 0, features["b"][:0])])
        drafts = proposer.propose([[9], []], [5, 3], tokens)
        assert drafts == [drafts_from_scratch(model, a, torch.zeros(2)), []]
        assert proposer.steps == 1 and proposer.new_tokens == 4 and proposer.teacher_tokens == 0
        proposer._worker.kill()
        proposer._worker.wait()
        with pytest.raises(RuntimeError, match="draft worker stopped"):
            proposer.propose([[9], []], [5, 3], tokens)
    finally:
        proposer.close()
