"""Training windows: masks vs a loop-built reference, what each u-slot sees, and agreement with decoding."""

import numpy as np
import pytest
import torch

import ptp
from ptp.cache import crop_cache
from ptp.decoding.batching import drive
from ptp.decoding.row_cache import RowCache
from ptp.decoding.step import prefill_call, run_call
from ptp.masks import PAD_DOC, document_mask, window_mask
from ptp.model import slot_offset
from ptp.testing import randomize_adapters, tiny_teacher
from ptp.training.objectives import model_mode, teacher_pass, window_pass
from ptp.training.packing import PackedBatch
from ptp.training.windows import Windows, choose_windows, slot_layout, slot_positions

VOCAB = 48


def make_batch(doc_lens=((7, 9), (12,)), seq_len=18, prompt=1, seed=0) -> PackedBatch:
    """Rows of packed documents with random tokens; the first ``prompt`` tokens of a document are context."""
    gen = torch.Generator().manual_seed(seed)
    b = len(doc_lens)
    tokens = torch.randint(VOCAB, (b, seq_len), generator=gen)
    doc_ids = torch.full((b, seq_len), PAD_DOC)
    positions = torch.zeros(b, seq_len, dtype=torch.long)
    target_ok = torch.zeros(b, seq_len, dtype=torch.bool)
    for r, lens in enumerate(doc_lens):
        at = 0
        for d, n in enumerate(lens):
            doc_ids[r, at : at + n] = d
            positions[r, at : at + n] = torch.arange(n)
            target_ok[r, at + max(1, prompt) : at + n] = True
            at += n
    tokens = torch.where(doc_ids == PAD_DOC, 0, tokens)
    return PackedBatch(tokens, doc_ids, positions, target_ok, torch.arange(b))


def reference_window_mask(doc_ids, starts, q_slots, k_slots, drop=0):
    """Loop-built: slot (n, j) sees doc tokens < s_n - drop of its document and slots (n, j' <= j)."""
    b, s = doc_ids.shape
    q_win, q_idx = q_slots
    k_win, k_idx = k_slots
    out = torch.zeros(b, 1, len(q_win), s + len(k_win), dtype=torch.bool)
    for r in range(b):
        for q in range(len(q_win)):
            start = int(starts[r, q_win[q]])
            for k in range(s):
                out[r, 0, q, k] = k < start - drop and doc_ids[r, k] == doc_ids[r, start]
            for k in range(len(k_win)):
                out[r, 0, q, s + k] = k_win[k] == q_win[q] and k_idx[k] <= q_idx[q]
    return out


def test_document_mask_matches_reference():
    batch = make_batch(((3, 5, 4), (10,)), seq_len=14)
    mask = document_mask(batch.doc_ids)
    for r in range(2):
        for q in range(14):
            for k in range(14):
                dq, dk = int(batch.doc_ids[r, q]), int(batch.doc_ids[r, k])
                expected = (q == k) if dq == PAD_DOC else (dq == dk and k <= q)
                assert bool(mask[r, 0, q, k]) == expected


@pytest.mark.parametrize("length", [1, 3, 4])
def test_window_mask_matches_loop_reference(length):
    batch = make_batch(((7, 9), (12,)), seq_len=18)
    windows = choose_windows(batch, 5, length, 0, 0.3, seed=3)
    layout = slot_layout(5, length)
    got = window_mask(batch.doc_ids, windows.starts, layout, layout)
    assert torch.equal(got, reference_window_mask(batch.doc_ids, windows.starts, layout, layout))
    got = window_mask(batch.doc_ids, windows.starts, layout, layout, first_slot_token=True)
    assert torch.equal(got, reference_window_mask(batch.doc_ids, windows.starts, layout, layout, drop=1))
    # An incremental layout (one slot index per call, as inverse-ar uses) against the same reference.
    keys = (layout[0].view(5, length).T.flatten(), layout[1].view(5, length).T.flatten())
    query = (torch.arange(5), torch.full((5,), length - 1))
    got = window_mask(batch.doc_ids, windows.starts, query, keys)
    assert torch.equal(got, reference_window_mask(batch.doc_ids, windows.starts, query, keys))


def test_windows_start_on_predictable_tokens_and_are_reproducible():
    batch = make_batch(((7, 9), (12,)), seq_len=18, prompt=3)
    a = choose_windows(batch, 6, 4, 1, 0.3, seed=1)
    b = choose_windows(batch, 6, 4, 1, 0.3, seed=1)
    assert torch.equal(a.starts, b.starts) and torch.equal(a.z, b.z)
    for r in range(2):
        starts = a.starts[r][a.valid[r].any(-1)]
        assert bool(batch.target_ok[r, starts].all())  # never a prompt token, never a document's first token
        assert len(set(starts.tolist())) == len(starts)
    # A row's windows depend on its row id, not on which other rows share the batch.
    single = choose_windows(batch.rows(1, 2), 6, 4, 1, 0.3, seed=1)
    assert torch.equal(single.starts[0], a.starts[1]) and torch.equal(single.z[0], a.z[1])
    # Slot targets: token s + j + slot_offset, valid only inside the window's document.
    for r in range(2):
        for n in range(6):
            s = int(a.starts[r, n])
            for j in range(4):
                k = s + j + 1
                ok = k < 18 and int(batch.doc_ids[r, min(k, 17)]) == int(batch.doc_ids[r, s])
                assert bool(a.valid[r, n, j]) == ok


def _model(mode, seed=0, first_slot_token=False):
    model = ptp.PTPModel.from_teacher(tiny_teacher("llama", seed), mode=mode, lora_rank=4, window=4,
                                      first_slot_token=first_slot_token)
    randomize_adapters(model, seed)
    return model.eval()


def _window_logits(model, batch, windows, u, sampling):
    teacher = teacher_pass(model, batch, sampling)
    with torch.no_grad():
        return window_pass(model, batch, windows, u, teacher.cache, model.cfg.first_slot_token)


@pytest.mark.parametrize("objective", ["o-ptp", "c-ptp"])
def test_slot_sees_only_its_context_and_its_window(objective):
    model = _model("o-ptp" if objective == "o-ptp" else "c-ptp")
    sampling = model.cfg.sampling
    batch = make_batch(((9, 9),), seq_len=18)
    starts = torch.tensor([[3, 6, 12]])  # two windows in document 0, one in document 1
    length, offset = 4, slot_offset(model_mode(objective))
    base = choose_windows(batch, 3, length, offset, 0.3, seed=0)
    windows = Windows(starts, base.targets, base.valid, base.z, offset)
    u = torch.rand(1, 3, length, generator=torch.Generator().manual_seed(0))
    ref = _window_logits(model, batch, windows, u, sampling)  # [1, 3, L, V]

    def changed(other_batch=batch, other_u=u):
        return (_window_logits(model, other_batch, windows, other_u, sampling) - ref).abs().amax(dim=(0, 2, 3))

    # Tokens at and after window 0's start (position 3) of document 0: window 0 unchanged, window 1 changed.
    tokens = batch.tokens.clone()
    tokens[0, 3:9] = (tokens[0, 3:9] + 1) % VOCAB
    delta = changed(PackedBatch(tokens, batch.doc_ids, batch.positions, batch.target_ok, batch.row_ids))
    assert delta[0] < 1e-5 and delta[1] > 1e-4 and delta[2] < 1e-5  # document 1's window never sees document 0
    # Another window's u's: no effect on the others.
    other = u.clone()
    other[0, 1] = torch.rand(length)
    delta = changed(other_u=other)
    assert delta[0] < 1e-5 and delta[1] > 1e-4 and delta[2] < 1e-5
    # Inside a window: slot j sees u's of slots <= j only.
    other = u.clone()
    other[0, 0, 2] = (other[0, 0, 2] + 0.5) % 1.0
    per_slot = (_window_logits(model, batch, windows, other, sampling) - ref)[0, 0].abs().amax(-1)
    assert per_slot[:2].max() < 1e-5 and per_slot[2:].min() > 1e-5


@pytest.mark.parametrize(("mode", "first_slot_token"), [("o-ptp", False), ("c-ptp", False), ("o-ptp", True)])
def test_window_pass_equals_a_decoding_call(mode, first_slot_token):
    """A training window at s gives the logits decoding computes for a group anchored at token s."""
    model = _model(mode, seed=1, first_slot_token=first_slot_token)
    batch = make_batch(((8, 10),), seq_len=18)
    offset = slot_offset(mode)
    starts = torch.tensor([[4, 12]])
    base = choose_windows(batch, 2, 4, offset, 0.3, seed=0)
    windows = Windows(starts, base.targets, base.valid, base.z, offset)
    u = torch.rand(1, 2, 4, generator=torch.Generator().manual_seed(2))
    logits = _window_logits(model, batch, windows, u, model.cfg.sampling)
    for n, (doc_start, s) in enumerate([(0, 4), (8, 12)]):
        context = batch.tokens[:, doc_start:s]  # the document's tokens before the window
        c = context.shape[1] - 1  # decoding caches all but the pending token
        rows = RowCache()
        cache = rows.view(rows.add_row())
        drive(model, prefill_call(cache, context[0, :c].tolist()))
        call = drive(model, run_call(model, cache, context[0, c:].tolist(), [4], 0, FixedU(u[0, n])))
        torch.testing.assert_close(logits[0, n], call.groups[0], atol=1e-5, rtol=1e-5)


class FixedU:
    """A u-stream stand-in: u of generated index i = given[i]."""

    def __init__(self, given: torch.Tensor) -> None:
        self.given = given

    def take(self, first: int, n: int) -> torch.Tensor:
        return self.given[first : first + n]


def test_first_slot_token_starts_from_the_teachers_state():
    """With zero adapters and a zero u-embedding, the first slot computes exactly the teacher's row s - 1."""
    model = _model("o-ptp", first_slot_token=True)
    for p in model.lora.parameters():
        torch.nn.init.zeros_(p)
    for p in model.u_embed.parameters():
        torch.nn.init.zeros_(p)
    batch = make_batch(((8, 10),), seq_len=18)
    windows = choose_windows(batch, 3, 4, 0, 0.3, seed=0)
    logits = _window_logits(model, batch, windows, torch.rand(1, 3, 4), model.cfg.sampling)
    with torch.no_grad():
        rows = model.teacher(batch.tokens, position_ids=batch.positions,
                             attention_mask=document_mask(batch.doc_ids).float().log()).logits  # [1, S, V]
    before = (windows.starts - 1)[0]
    torch.testing.assert_close(logits[0, :, 0], rows[0, before], atol=1e-4, rtol=1e-4)
    plain = _model("o-ptp")  # without it the first slot sees no token and differs
    plain.load_state_dict(model.state_dict())
    other = _window_logits(plain, batch, windows, torch.rand(1, 3, 4), plain.cfg.sampling)
    assert (other[0, :, 0] - rows[0, before]).abs().max() > 1e-2


def test_slot_positions_follow_the_decoding_convention():
    batch = make_batch(((8, 10),), seq_len=18)
    for offset in (0, 1):
        base = choose_windows(batch, 2, 3, offset, 0.3, seed=0)
        windows = Windows(torch.tensor([[4, 12]]), base.targets, base.valid, base.z, offset)
        pos = slot_positions(batch, windows)
        # Window at row 12 is document position 4 of the second document.
        assert pos[0, 0].tolist() == [4 + j + offset - 1 for j in range(3)]
        assert pos[0, 1].tolist() == [4 + j + offset - 1 for j in range(3)]


def test_cache_crop_restores_the_context():
    model = _model("c-ptp")
    batch = make_batch(((8, 10),), seq_len=18)
    teacher = teacher_pass(model, batch, model.cfg.sampling)
    windows = choose_windows(batch, 3, 4, 1, 0.3, seed=0)
    with torch.no_grad():
        first = window_pass(model, batch, windows, torch.full((1, 3, 4), 0.3), teacher.cache)
        crop_cache(teacher.cache, 18)
        again = window_pass(model, batch, windows, torch.full((1, 3, 4), 0.3), teacher.cache)
    assert teacher.cache.get_seq_length() == 18 + 12
    torch.testing.assert_close(first, again)
    assert np.isfinite(first.numpy()).all()
