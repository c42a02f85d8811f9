"""The feature-head drafter: lossless decoding, train/decode agreement, persistence, and that it learns."""

import argparse
from dataclasses import replace

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ptp
from conftest import head_model
from ptp.cache import padding_buckets
from ptp.cli import train_head as train_head_cli
from ptp.data.features import (
    PREFILL_PADDING,
    FeatureConfig,
    read_features,
    relayout,
    sample_with_features,
    write_features,
)
from ptp.decoding.batching import drive
from ptp.decoding.row_cache import RowCache
from ptp.decoding.step import head_draft
from ptp.head import frequent_tokens
from ptp.model import TRAIN_WINDOW
from ptp.testing import FAMILIES, tiny_teacher
from ptp.training.head import HeadTrainConfig, evaluate, train_head, window_pass

SAMPLINGS = {
    "greedy": ptp.SamplingConfig(temperature=0),
    "t0.7-k10-p0.9": ptp.SamplingConfig(temperature=0.7, top_k=10, top_p=0.9),
    "t1.3": ptp.SamplingConfig(temperature=1.3),
}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    family=st.sampled_from(FAMILIES),
    mode=st.sampled_from(["o-ptp", "c-ptp", "mtp"]),
    sampling=st.sampled_from(sorted(SAMPLINGS)),
    vocab=st.sampled_from([0, 24]),
    prompt_len=st.integers(1, 10),
    max_new=st.integers(1, 40),
    draft_len=st.integers(0, 6),
    seed=st.integers(0, 2**31 - 1),
    order=st.sampled_from(["id", "argmax"]),
)
def test_head_draft_verify_equals_ar(family, mode, sampling, vocab, prompt_len, max_new, draft_len, seed, order):
    model = head_model(family, mode, vocab, order=order)
    cfg = replace(SAMPLINGS[sampling], order=order)
    prompt = torch.randint(48, (prompt_len,), generator=torch.Generator().manual_seed(seed))
    ref = ptp.generate(model, prompt, max_new, cfg, seed, "ar")
    out = ptp.generate(model, prompt, max_new, cfg, seed, "draft-verify", draft_len=draft_len)
    assert out.tokens.tolist() == ref.tokens.tolist()
    assert out.calls == 2 * out.teacher_calls and sum(out.accepted_per_call) == len(ref.tokens)


def test_head_refuses_pqd_and_lora_slots():
    model = head_model()
    with pytest.raises(ValueError, match="draft-verify"):
        ptp.generate(model, [1, 2, 3], 4, method="pqd")
    assert model.default_method == "draft-verify"


def _row(model, prompt_len=6, new=20, seed=3):
    cfg = FeatureConfig(sampling=ptp.SamplingConfig(temperature=1.0), max_new_tokens=new)
    prompt = torch.randint(48, (prompt_len,), generator=torch.Generator().manual_seed(seed)).tolist()
    return sample_with_features(model.teacher, [prompt], [seed], cfg)[0]


@pytest.mark.parametrize("vocab", [0, 24])
@pytest.mark.parametrize("mode", ["o-ptp", "c-ptp"])
def test_training_windows_see_what_decoding_sees(vocab, mode):
    """A training window's slot logits equal the decoding head call's at the same context and u's."""
    model = head_model(vocab=vocab, window=4, mode=mode)
    row = _row(model)
    starts = torch.tensor([7, 9, 12])
    z = torch.rand(3, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        trained = window_pass(model, row, starts, z)
        for n, s in enumerate(starts.tolist()):
            left, right = row.left[s : s + 4], row.right[s : s + 4]
            u = left + z[n] * (right - left)
            if mode == "c-ptp":  # slot j carries u_{s+j-1}, slot 0 a constant
                u = torch.cat([torch.tensor([0.5]), u[:-1]])
            head_cache = RowCache()
            logits = drive(model, head_draft(model, head_cache.view(head_cache.add_row()),
                                             row.features[: s - 1].float(), row.features[s - 2].float(),
                                             int(row.tokens[s - 1]), s - 1, u))
            expected = logits[:, model.head.vocab_ids]
            torch.testing.assert_close(trained.logits[n], expected, atol=2e-5, rtol=1e-4)


def test_features_match_a_full_teacher_pass():
    """Stored features and intervals are the teacher's own on the sampled sequence."""
    model = head_model()
    row = _row(model, new=15)
    sampling = ptp.SamplingConfig(temperature=1.0)
    with torch.no_grad():
        hidden = model.teacher.base_model(row.tokens[None]).last_hidden_state[0]
        probs = ptp.sampling.process(model.teacher.get_output_embeddings()(hidden), sampling)
    torch.testing.assert_close(row.features[:-1].float(), hidden[:-1], atol=2e-3, rtol=1e-2)
    p = row.prompt_len
    left, right = ptp.sampling.bin_edges(probs[p - 1 : -1], row.tokens[p:])
    torch.testing.assert_close(row.left[p:], left, atol=1e-5, rtol=0)
    torch.testing.assert_close(row.right[p:], right, atol=1e-5, rtol=0)
    assert bool((row.left[p:] < row.right[p:]).all())


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_sampling_gives_each_row_what_it_gets_alone(family):
    """Prompts of mixed lengths in one batch (prefilled in length buckets, finished rows leaving it) give
    every row the tokens, features and intervals it gets alone, and the tokens ``ar`` samples with its seed."""
    model = head_model(family)
    sampling = ptp.SamplingConfig(temperature=1.0)
    gen = torch.Generator().manual_seed(1)
    lengths = (2, 9, 3, 17, 5, 4, 12, 6, 3, 8, 2, 7)
    prompts = [torch.randint(3, 48, (n,), generator=gen).tolist() for n in lengths]
    seeds = list(range(len(prompts)))
    free = sample_with_features(model.teacher, prompts, seeds, FeatureConfig(sampling=sampling, max_new_tokens=30))
    eos = torch.cat([r.tokens[r.prompt_len :] for r in free]).bincount().argmax().item()  # rows end at many steps
    cfg = FeatureConfig(sampling=sampling, max_new_tokens=30, eos_token_id=eos)
    rows = sample_with_features(model.teacher, prompts, seeds, cfg)
    generated = [r.tokens.numel() - r.prompt_len for r in rows]
    assert len(padding_buckets(lengths, PREFILL_PADDING)) > 1 and len(set(generated)) > 4 and 30 in generated, generated
    for seed, (prompt, row) in enumerate(zip(prompts, rows, strict=True)):
        alone = sample_with_features(model.teacher, [prompt], [seed], cfg)[0]
        assert row.tokens.tolist() == alone.tokens.tolist() and row.prompt_len == len(prompt)
        torch.testing.assert_close(row.features.float(), alone.features.float(), atol=2e-3, rtol=1e-2)
        torch.testing.assert_close(row.left, alone.left, atol=1e-5, rtol=0)
        torch.testing.assert_close(row.right, alone.right, atol=1e-5, rtol=0)
        ar = ptp.generate(model, prompt, 30, sampling, seed, "ar", eos_token_id=eos)
        assert row.tokens[len(prompt) :].tolist() == ar.tokens.tolist()


def test_padding_buckets_bound_padding():
    lengths = [5, 100, 6, 7, 90, 5, 300]
    buckets = padding_buckets(lengths, PREFILL_PADDING)
    assert sorted(b for bucket in buckets for b in bucket) == list(range(len(lengths)))
    for bucket in buckets:
        sizes = [lengths[b] for b in bucket]
        assert len(sizes) * max(sizes) <= 1.25 * sum(sizes)
    assert [[lengths[b] for b in bucket] for bucket in buckets] == [[5, 5, 6, 7], [90, 100], [300]]


def test_relayout_gives_each_order_its_intervals():
    """Recomputed intervals match the sampling-time ones in the same order, and hold the token in another."""
    model = head_model()
    row = _row(model, new=30)
    same = relayout([row], model.teacher, ptp.SamplingConfig(temperature=1.0))[0]
    p = row.prompt_len
    torch.testing.assert_close(same.left[p:], row.left[p:], atol=2e-3, rtol=0)
    torch.testing.assert_close(same.right[p:], row.right[p:], atol=2e-3, rtol=0)
    argmax = ptp.SamplingConfig(temperature=1.0, order="argmax")
    other = relayout([row], model.teacher, argmax)[0]
    with torch.no_grad():
        probs = ptp.sampling.process(model.teacher.get_output_embeddings()(row.features[p - 1 : -1].float()), argmax)
    middle = (other.left[p:] + other.right[p:]) / 2
    assert ptp.sampling.pick(middle, probs, "argmax").tolist() == row.tokens[p:].tolist()


def test_feature_shards_resume(tmp_path):
    model = head_model()
    prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9], [10]]
    cfg = FeatureConfig(sampling=ptp.SamplingConfig(temperature=1.0), max_new_tokens=6, batch_size=2,
                        rows_per_shard=2)
    write_features(model.teacher, prompts, cfg, tmp_path / "a")
    whole = list(read_features(tmp_path / "a"))
    (tmp_path / "a" / "features-00001.safetensors").unlink()  # as if killed before the second shard
    write_features(model.teacher, prompts, cfg, tmp_path / "a")
    again = list(read_features(tmp_path / "a"))
    assert [r.tokens.tolist() for r in again] == [r.tokens.tolist() for r in whole]
    assert [r.prompt_len for r in whole] == [3, 2, 4, 1]
    with pytest.raises(ValueError, match="other settings"):
        write_features(model.teacher, prompts, FeatureConfig(sampling=cfg.sampling, max_new_tokens=7),
                       tmp_path / "a")


def test_save_load_keeps_the_drafts(tmp_path):
    model = head_model(vocab=24)
    model.save_pretrained(tmp_path / "d", storage_dtype=torch.float16)
    loaded = ptp.PTPModel.from_pretrained(tmp_path / "d", teacher=model.teacher).eval()
    assert torch.equal(loaded.head.vocab_ids, model.head.vocab_ids) and loaded.cfg == model.cfg
    cfg = SAMPLINGS["t0.7-k10-p0.9"]
    a = ptp.generate(model, [1, 2, 3], 30, cfg, 5, "draft-verify")
    b = ptp.generate(loaded, [1, 2, 3], 30, cfg, 5, "draft-verify")
    assert a.tokens.tolist() == b.tokens.tolist()
    with pytest.raises(ValueError, match="different teacher"):
        ptp.PTPModel.from_pretrained(tmp_path / "d", teacher=tiny_teacher("llama", seed=1))


def test_frequent_tokens_keeps_the_most_frequent_and_eos():
    counts = torch.tensor([5, 0, 9, 1, 9, 0])
    assert frequent_tokens(counts, 3).tolist() == [0, 2, 4]
    assert frequent_tokens(counts, 3, always=[5]).tolist() == [2, 4, 5]


def test_training_raises_held_out_mat(tmp_path):
    """A few hundred steps on a sharp tiny teacher's samples beat the untrained head (and resume works)."""
    model = head_model(sharpness=8.0, window=4)
    cfg = FeatureConfig(sampling=ptp.SamplingConfig(temperature=0.7), max_new_tokens=40, batch_size=16)
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(48, (4,), generator=gen).tolist() for _ in range(48)]
    rows = sample_with_features(model.teacher, prompts, list(range(48)), cfg)
    train, val = rows[:40], rows[40:]
    before = evaluate(model, val, 16, 4)["metrics"]
    train_cfg = HeadTrainConfig(steps=120, rows_per_step=4, windows_per_row=16, lr=3e-3, eval_every=60,
                                warmup_steps=10)
    torch.manual_seed(0)
    result = train_head(model, train, val, train_cfg, tmp_path / "run")
    assert result["val_loss"] < 0.8 * before["val_loss"] and result["mat"] > before["mat"] + 0.05, (before, result)
    assert (tmp_path / "run" / "best" / "adapter.safetensors").is_file()
    longer = HeadTrainConfig(**{**train_cfg.__dict__, "steps": 130})
    resumed = train_head(model, train, val, longer, tmp_path / "run", resume=True)
    assert resumed["step"] == 130


def test_train_head_cli_mixes_orders_and_continues_from_init(tmp_path):
    """Feature directories sampled in two CDF orders train together; --init continues a trained head."""
    from ptp.cli import main

    teacher = tiny_teacher("llama", sharpness=4.0)
    teacher.save_pretrained(tmp_path / "teacher")
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(48, (4,), generator=gen).tolist() for _ in range(12)]
    for name, order in (("a", "id"), ("b", "argmax")):
        sampling = ptp.SamplingConfig(temperature=0.7, order=order)
        write_features(teacher, prompts, FeatureConfig(sampling=sampling, max_new_tokens=12, batch_size=6,
                                                       seed=len(name + order)), tmp_path / name)
    common = ["--threads", "1", "train-head", "--features", str(tmp_path / "a"), str(tmp_path / "b"),
              "--teacher", str(tmp_path / "teacher"), "--val-rows", "4", "--window", "4", "--draft-vocab", "20",
              "--eval-every", "2", "--rows-per-step", "2", "--windows-per-row", "4"]
    assert main([*common, "--out", str(tmp_path / "r1"), "--steps", "2"]) == 0
    first = ptp.PTPModel.from_pretrained(tmp_path / "r1" / "best", teacher=teacher)
    assert main([*common, "--out", str(tmp_path / "r2"), "--steps", "2", "--lr", "1e-9",
                 "--init", str(tmp_path / "r1" / "best")]) == 0
    second = ptp.PTPModel.from_pretrained(tmp_path / "r2" / "best", teacher=teacher)
    assert torch.equal(second.head.vocab_ids, first.head.vocab_ids)
    for key, value in first.trainable_state_dict().items():  # a negligible learning rate: the init's weights
        torch.testing.assert_close(second.trainable_state_dict()[key], value, atol=1e-4, rtol=0)
    assert main([*common, "--out", str(tmp_path / "r3"), "--mode", "mtp", "--init",
                 str(tmp_path / "r1" / "best")]) == 2  # a mode the init was not trained in
    assert main([*common, "--out", str(tmp_path / "v"), "--steps", "1", "--mode", "mtp", "--order", "id",
                 "--vocab-from", str(tmp_path / "r1" / "best")]) == 0  # another head's draft vocabulary, any mode
    fresh = ptp.PTPModel.from_pretrained(tmp_path / "v" / "best", teacher=teacher)
    assert torch.equal(fresh.head.vocab_ids, first.head.vocab_ids) and fresh.cfg.mode == "mtp"
    assert main([*common, "--out", str(tmp_path / "m1"), "--steps", "1", "--mode", "mtp", "--order", "id"]) == 0
    assert main([*common, "--out", str(tmp_path / "m2"), "--steps", "1", "--init", str(tmp_path / "m1" / "best")]) == 0
    continued = ptp.PTPModel.from_pretrained(tmp_path / "m2" / "best", teacher=teacher).cfg  # the init's mode, order
    assert (continued.mode, continued.sampling.order) == ("mtp", "id")


def test_train_head_window_default_is_the_library_one():
    """ptp train-head writes its --window default as a literal (--help imports no torch); it is TRAIN_WINDOW."""
    parser = argparse.ArgumentParser()
    train_head_cli.add_arguments(parser)
    assert parser.get_default("window") == TRAIN_WINDOW
