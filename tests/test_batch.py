"""Batched decoding: every row of a batch emits exactly its prompt's own AR tokens, whatever it is batched with."""

from dataclasses import replace

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ptp
from conftest import head_model, ptp_model
from ptp.decoding import BatchDecoder, DecodeConfig, OracleDrafter, prepare
from ptp.decoding.row_cache import RowCache, keys_visible
from ptp.testing import FAMILIES, tiny_teacher

SAMPLINGS = [
    ptp.SamplingConfig(temperature=0),
    ptp.SamplingConfig(temperature=0.7, top_k=10, top_p=0.9),
    ptp.SamplingConfig(temperature=1.3),
]


def _prompt(length: int, seed: int) -> list[int]:
    return torch.randint(48, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


def _alone(model, prompts, max_new, samplings, seeds) -> list[list[int]]:
    return [ptp.generate(model, p, n, s, seed, "ar").tokens.tolist()
            for p, n, s, seed in zip(prompts, max_new, samplings, seeds, strict=True)]


row_mix = st.lists(
    st.tuples(st.integers(1, 14), st.integers(1, 24), st.integers(0, 2), st.integers(0, 2**31 - 1)),
    min_size=2, max_size=5,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    family=st.sampled_from(FAMILIES),
    mode=st.sampled_from(["o-ptp", "c-ptp", "mtp"]),
    rows=row_mix,
    oracle=st.booleans(),
    max_batch=st.integers(0, 3),
    budget=st.integers(1, 16),
)
def test_each_row_equals_its_own_ar(family, mode, rows, oracle, max_batch, budget):
    """Random mixes of prompt lengths, lengths to generate, samplings and seeds, every method; rows
    join as others finish when max_batch is below the number of prompts."""
    model = ptp_model(family, mode, sharpness=8.0)
    prompts = [_prompt(length, seed) for length, _, _, seed in rows]
    max_new = [n for _, n, _, _ in rows]
    samplings = [SAMPLINGS[k] for _, _, k, _ in rows]
    seeds = [seed for *_, seed in rows]
    expected = _alone(model, prompts, max_new, samplings, seeds)
    for method in ("ar", "draft-verify", "pqd"):
        drafters = None
        if oracle:
            drafters = [OracleDrafter(model, s, error_rate=0.3, seed=seed)
                        for s, seed in zip(samplings, seeds, strict=True)]
        outs = ptp.generate(model, prompts, max_new, samplings, seeds, method, slot_budget=budget,
                            drafter=drafters, max_batch=max_batch)
        assert [o.tokens.tolist() for o in outs] == expected, method
        for out, n in zip(outs, max_new, strict=True):
            assert sum(out.accepted_per_call) == n and out.teacher_calls == len(out.accepted_per_call)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(family=st.sampled_from(FAMILIES), mode=st.sampled_from(["o-ptp", "c-ptp"]), rows=row_mix)
def test_feature_head_rows_equal_their_own_ar(family, mode, rows):
    model = head_model(family, mode, window=4)
    prompts = [_prompt(length, seed) for length, _, _, seed in rows]
    max_new = [n for _, n, _, _ in rows]
    samplings = [SAMPLINGS[k] for _, _, k, _ in rows]
    seeds = [seed for *_, seed in rows]
    outs = ptp.generate(model, prompts, max_new, samplings, seeds, "draft-verify")
    assert [o.tokens.tolist() for o in outs] == _alone(model, prompts, max_new, samplings, seeds)


def test_rows_join_and_leave_between_steps():
    """A row added mid-way, a row cancelled mid-way: the others are untouched, and the cache is freed."""
    model = ptp_model("llama", "o-ptp", sharpness=8.0)
    sampling = SAMPLINGS[1]
    batch = BatchDecoder(model)
    cfg = DecodeConfig(method="pqd", max_new_tokens=20)
    first = batch.add(prepare(model, _prompt(5, 1), cfg, sampling, seed=1))
    doomed = batch.add(prepare(model, _prompt(9, 2), cfg, sampling, seed=2))
    tokens: dict[int, list[int]] = {first: [], doomed: []}
    late = None
    for step in range(200):
        if step == 3:
            late = batch.add(prepare(model, _prompt(7, 3), cfg, sampling, seed=3))
            tokens[late] = []
        if step == 5:
            batch.cancel(doomed)
        for chunk in batch.step():
            tokens[chunk.request] += chunk.tokens
        if not batch:
            break
    assert not batch and batch.cache.rows == 0
    assert tokens[first] == _alone(model, [_prompt(5, 1)], [20], [sampling], [1])[0]
    assert tokens[late] == _alone(model, [_prompt(7, 3)], [20], [sampling], [3])[0]
    assert len(tokens[doomed]) < 20


def test_a_stream_names_each_chunks_prompt():
    model = ptp_model()
    prompts = [_prompt(3, 0), _prompt(6, 1)]
    chunks = list(ptp.generate_stream(model, prompts, [4, 9], seed=[0, 1], method="ar"))
    for request, n in ((0, 4), (1, 9)):
        mine = [c for c in chunks if c.request == request]
        assert mine[0].tokens == [] and sum(len(c.tokens) for c in mine) == n
        assert mine[-1].stop_reason == "length"


def test_batch_arguments_are_checked():
    model = ptp_model()
    with pytest.raises(ValueError, match="one per prompt"):
        ptp.generate(model, [[1, 2], [3]], max_new_tokens=[4, 5, 6])
    with pytest.raises(ValueError, match="max_batch"):
        ptp.generate(model, [[1, 2], [3]], max_batch=-1)
    with pytest.raises(ValueError, match="empty"):  # every prompt is checked before any work
        ptp.generate(model, [[1, 2], []])
    single = ptp.generate(model, torch.tensor([[1, 2, 3]]), 3, method="ar")  # [1, N] is one prompt
    assert isinstance(single, ptp.GenerateOutput)


def test_row_cache_keeps_rows_apart():
    """Writes land at each row's own offset; crop and removal act on one row; buffers grow and are freed."""
    cache = RowCache()
    a, b = cache.add_row(), cache.add_row()
    for length, rows in ((3, [a, b]), (100, [b])):  # the second call outgrows the first buffer
        keys = cache.begin_call(rows, length)
        new = torch.arange(len(rows) * length, dtype=torch.float32).reshape(len(rows), 1, length, 1) + 1
        got, _ = cache.update(new, new, 0)
        assert got.shape == (len(rows), 1, keys, 1)
        cache.end_call(rows, [length] * len(rows))
    assert cache.lengths == [3, 103]
    cache.view(b).crop(-100)
    assert cache.lengths == [3, 3]
    keys = cache.begin_call([b], 1)
    got, _ = cache.update(torch.full((1, 1, 1, 1), -7.0), torch.zeros(1, 1, 1, 1), 0)
    assert got[0, 0, 3, 0] == -7.0 and got[0, 0, :3, 0].tolist() == [4.0, 5.0, 6.0]
    cache.end_call([b], [1])
    cache.remove_row(a)
    cache.remove_row(b)
    assert cache.rows == 0 and cache._keys == []


def test_call_mask_hides_other_rows_unverified_entries():
    local = [torch.ones(1, 1, dtype=torch.bool), torch.tril(torch.ones(3, 3, dtype=torch.bool))]
    mask = keys_visible([4, 2], local, keys=7, width=3)[:, 0]
    assert mask[0, 0].tolist() == [True] * 5 + [False] * 2  # its 4 entries and its one new row
    assert mask[0, 1].tolist() == [False] * 5 + [True, False]  # padding sees only itself
    assert mask[1, 2].tolist() == [True] * 5 + [False] * 2  # 2 cached + 3 new, causal
    assert mask[1, 0].tolist() == [True] * 3 + [False] * 4


@pytest.mark.parametrize("method", ["draft-verify", "pqd"])
def test_batch_budgets_follow_the_rows_decoded_together(method):
    """((1, 8), (3, 0)): no drafting while three rows share the calls, drafting again once rows leave;
    every row still equals its own AR."""
    model = ptp_model("llama", "o-ptp", sharpness=8.0)
    sampling = SAMPLINGS[1]
    prompts, max_new, seeds = [_prompt(4, 0), _prompt(6, 1), _prompt(3, 2)], [6, 6, 30], [0, 1, 2]
    drafters = [OracleDrafter(model, sampling, seed=s) for s in seeds]  # always right: MAT > 1 where it drafts
    outs = ptp.generate(model, prompts, max_new, sampling, seeds, method, drafter=drafters,
                        batch_budgets=[(1, 8), (3, 0)])
    assert [o.tokens.tolist() for o in outs] == _alone(model, prompts, max_new, [sampling] * 3, seeds)
    assert outs[0].accepted_per_call == [1] * 6  # its whole life in a batch of 3: one token per call
    assert max(outs[2].accepted_per_call) > 1  # alone after the others finished: it drafts again
    with pytest.raises(ValueError, match="batch_budgets"):
        ptp.generate(model, prompts, 4, batch_budgets=[(3, 0), (1, 8)])


def test_batch_budgets_survive_a_checkpoint(tmp_path):
    model = ptp.PTPModel.from_teacher(tiny_teacher("llama"), lora_rank=4, window=4)
    model.cfg = replace(model.cfg, batch_budgets=((1, 6), (8, 0)))
    model.save_pretrained(tmp_path / "m")
    loaded = ptp.PTPModel.from_pretrained(tmp_path / "m", teacher=tiny_teacher("llama"))
    assert loaded.cfg.batch_budgets == ((1, 6), (8, 0))


@pytest.mark.parametrize("drafter", ["lora", "head"])
def test_long_prompts_prefill_in_chunks_between_the_others_steps(monkeypatch, drafter):
    """With 3-token prefill chunks, a long prompt joins over several steps while the rows already
    running keep emitting tokens; every row still equals its own AR."""
    monkeypatch.setattr(ptp.decoding.loop, "PREFILL_CHUNK", 3)
    model = ptp_model("llama", "o-ptp", sharpness=8.0) if drafter == "lora" else head_model(window=4)
    sampling = SAMPLINGS[1]
    method = "pqd" if drafter == "lora" else "draft-verify"
    batch = BatchDecoder(model)
    first = batch.add(prepare(model, _prompt(2, 5), DecodeConfig(method=method, max_new_tokens=12), sampling, 5))
    batch.step()  # its prefill
    late = batch.add(prepare(model, _prompt(14, 6), DecodeConfig(method=method, max_new_tokens=8), sampling, 6))
    tokens: dict[int, list[int]] = {first: [], late: []}
    steps_before_late = 0
    while batch:
        chunks = batch.step()
        for chunk in chunks:
            tokens[chunk.request] += chunk.tokens
        if not any(c.request == late for c in chunks):
            steps_before_late += 1
    assert steps_before_late >= 3  # 13 prompt tokens to cache, 3 a step: the first row ran meanwhile
    assert tokens[first] == _alone(model, [_prompt(2, 5)], [12], [sampling], [5])[0]
    assert tokens[late] == _alone(model, [_prompt(14, 6)], [8], [sampling], [6])[0]
