"""Teacher-forced feature rows (the teacher reads a given answer), windows that stop where the teacher could
not have followed, the distillation term, and the built-in (instruction, answer) pairs."""

import textwrap

import pytest
import torch

import ptp
from conftest import head_model
from ptp.data.chat_prompts import chat_pairs, documented_code
from ptp.data.features import FeatureConfig, FeatureRow, forced_with_features, sample_with_features, write_features
from ptp.sampling import bin_edges, pick, process
from ptp.training.head import _starts, window_pass

SHARP = ptp.SamplingConfig(temperature=0.7, top_k=5, top_p=0.9, order="argmax")


def test_forced_rows_of_a_sampled_answer_are_the_sampled_rows():
    """Reading back what the teacher sampled gives the same tokens, features and u intervals."""
    model = head_model(order="argmax")
    cfg = FeatureConfig(sampling=SHARP, max_new_tokens=12)
    prompts = [[1, 2, 3, 4], [5, 6]]
    sampled = sample_with_features(model.teacher, prompts, [7, 8], cfg)
    answers = [r.tokens[r.prompt_len :].tolist() for r in sampled]
    forced = forced_with_features(model.teacher, prompts, answers, FeatureConfig(sampling=SHARP, max_new_tokens=12,
                                                                                 teacher_forced=True))
    for a, b in zip(sampled, forced, strict=True):
        assert b.tokens.tolist() == a.tokens.tolist() and b.prompt_len == a.prompt_len
        torch.testing.assert_close(b.features.float(), a.features.float(), atol=2e-3, rtol=1e-2)
        torch.testing.assert_close(b.left, a.left, atol=1e-5, rtol=0)
        torch.testing.assert_close(b.right, a.right, atol=1e-5, rtol=0)


def test_forced_rows_mark_tokens_the_teacher_could_not_pick():
    model = head_model(order="argmax")
    cfg = FeatureConfig(sampling=SHARP, max_new_tokens=30, eos_token_id=0, teacher_forced=True)
    sampled = sample_with_features(model.teacher, [[3, 4, 5]], [1], FeatureConfig(sampling=SHARP, max_new_tokens=40))
    answer = sampled[0].tokens[3:].tolist()
    for i in (4, 11, 20):  # tokens the teacher would not have written
        answer[i] = 1 + (answer[i] + 17) % 47
    row = forced_with_features(model.teacher, [[3, 4, 5]], [answer], cfg)[0]
    assert row.tokens.tolist() == [3, 4, 5, *answer[:29], 0]  # capped, then EOS
    with torch.no_grad():
        hidden = model.teacher.base_model(row.tokens[None]).last_hidden_state[0]
        probs = process(model.teacher.get_output_embeddings()(hidden[2:-1]), SHARP)
    torch.testing.assert_close(row.features[:-1].float(), hidden[:-1], atol=2e-3, rtol=1e-2)
    possible = probs.gather(-1, row.tokens[3:, None])[:, 0] > 0
    assert 0 < int(possible.sum()) < possible.numel()  # random answers: some tokens in the support, some not
    left, right = row.left[3:], row.right[3:]
    assert torch.equal(right > left, possible)
    u = (left + right) / 2
    assert torch.equal(pick(u, probs, "argmax")[possible], row.tokens[3:][possible])
    lo, hi = bin_edges(probs, row.tokens[3:], "argmax")
    torch.testing.assert_close(left[possible], lo[possible].float(), atol=1e-6, rtol=0)
    torch.testing.assert_close(right[possible], hi[possible].float(), atol=1e-6, rtol=0)


def test_write_features_teacher_forced_needs_one_answer_per_prompt(tmp_path):
    model = head_model()
    forced = FeatureConfig(sampling=SHARP, max_new_tokens=8, teacher_forced=True)
    with pytest.raises(ValueError, match="one response per prompt"):
        write_features(model.teacher, [[1, 2]], forced, tmp_path / "a", responses=[[3], [4]])
    with pytest.raises(ValueError, match="one response per prompt"):
        write_features(model.teacher, [[1, 2]], FeatureConfig(sampling=SHARP), tmp_path / "b", responses=[[3]])
    write_features(model.teacher, [[1, 2], [3]], forced, tmp_path / "c", responses=[[5, 6, 7], [8]])
    with pytest.raises(ValueError, match="other settings"):  # a sampled run cannot resume a forced one
        write_features(model.teacher, [[1, 2], [3]], FeatureConfig(sampling=SHARP, max_new_tokens=8), tmp_path / "c")


def _row_with_a_gap(model, gap: int) -> FeatureRow:
    cfg = FeatureConfig(sampling=ptp.SamplingConfig(temperature=1.0), max_new_tokens=20)
    row = sample_with_features(model.teacher, [[1, 2, 3]], [4], cfg)[0]
    left, right = row.left.clone(), row.right.clone()
    right[gap] = left[gap]  # as if the teacher could not have picked that token
    return FeatureRow(row.tokens, row.prompt_len, row.features, left, right)


def test_windows_stop_where_the_teacher_could_not_have_followed():
    model = head_model(window=4)
    row = _row_with_a_gap(model, gap=10)
    out = window_pass(model, row, torch.tensor([5, 8, 11]), torch.rand(3, 4))
    assert out.target.tolist() == [[True] * 4, [True, True, False, False], [True] * 4]
    assert out.full.tolist() == [True, False, True]
    assert not bool(out.valid[1, 2:].any())
    import random

    starts = _starts(row, 100, random.Random(0))
    assert 10 not in starts.tolist() and starts.numel() == row.tokens.numel() - row.prompt_len - 1


@pytest.mark.parametrize("mode", ["o-ptp", "mtp"])
def test_distill_adds_the_weighted_soft_cross_entropy(mode):
    """loss(distill=w) - loss(distill=0) = w x the cross-entropy of the head's distribution under the
    teacher's processed one (from the teacher's own lm_head on the stored features)."""
    model = head_model(mode=mode, vocab=24, window=4)
    row = _row_with_a_gap(model, gap=12)
    starts, z = torch.tensor([4, 9, 15]), torch.rand(3, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = window_pass(model, row, starts, z)
        mixed = window_pass(model, row, starts, z, distill=0.5)
        index = (starts[:, None] + torch.arange(4)).clamp(max=row.tokens.numel() - 1)
        full = model.teacher.get_output_embeddings()(row.features[index - 1].float())[..., model.head.vocab_ids]
        teacher = process(full, model.cfg.sampling)
        soft = -(teacher * torch.log_softmax(plain.logits, -1)).sum(-1)
    expected = float((soft * plain.target).sum())
    assert abs(float(mixed.loss_sum - plain.loss_sum) - 0.5 * expected) < 1e-3 * max(1.0, expected)
    assert torch.equal(mixed.correct, plain.correct)


def _package(root):
    pkg = root / "pkg"
    (pkg / "tests").mkdir(parents=True)
    prose = ("This helper exists because callers often need a stable way to combine values that arrive "
             "in no particular order. It walks the inputs once, keeps a running total, and never allocates "
             "more than a constant amount of memory, which matters for very long iterators.")
    (pkg / "maths.py").write_text(textwrap.dedent(f'''
        """Small arithmetic helpers."""


        def total(values):
            """Return the sum of the values in an iterable of numbers.

            {prose}
            """
            return sum(values)


        class Box:
            """A box that holds one value and remembers how many times it was read by anybody at all."""

            def get(self):
                """Return the value held in the box and count the read."""
                return self.value
    '''))
    (pkg / "tests" / "test_x.py").write_text('def test_y():\n    """Return nothing at all, this is a test."""\n')
    return pkg


def test_documented_code_and_chat_pairs(tmp_path):
    pkg = _package(tmp_path)
    names = [d.name for d in documented_code([pkg])]
    assert names == ["maths", "maths.total", "maths.Box", "maths.Box.get"]  # tests/ skipped
    get = next(d for d in documented_code([pkg]) if d.name == "maths.Box.get")
    assert get.source.startswith("def get(self):\n") and get.source.endswith("return self.value")
    pairs = chat_pairs(40, seed=3, roots=[pkg])
    assert pairs == chat_pairs(40, seed=3, roots=[pkg]) and pairs != chat_pairs(40, seed=4, roots=[pkg])
    kinds = {q.split()[0] for q, _ in pairs}
    assert kinds == {"What", "Write", "Explain"}
    for question, answer in pairs:
        if question.startswith("Write a Python function to return the sum"):
            assert answer.startswith("```python\ndef total(values):") and answer.endswith("```")
        if question.startswith("What does `total`"):
            assert "in the Python module `maths`" in question and answer.startswith("Return the sum")
        if question.startswith("Explain"):
            assert answer.startswith("This helper exists") and question.endswith("in no particular order.")
    with pytest.raises(ValueError, match="too little"):
        chat_pairs(5, roots=[pkg / "tests"])
