"""Packing: deterministic, resumable, documents isolated, prompts never targets; held-out split."""

import pytest
import torch

from ptp.data.shards import ShardWriter, TokenShards
from ptp.masks import PAD_DOC
from ptp.training.packing import DataPosition, PackedBatch, PackingConfig, SequenceSource, eval_share, pack


def write_shards(path, lengths, prompt=0, rows_per_shard=5):
    with ShardWriter(path, {"kind": "documents"}, rows_per_shard=rows_per_shard) as writer:
        for i, n in enumerate(lengths):
            writer.add([(1000 * i + j) % 50000 for j in range(n)], min(prompt, n))
    return TokenShards(path)


LENGTHS = [5, 9, 3, 30, 7, 12, 1, 8, 4, 6, 11, 2, 10]


def test_rows_hold_whole_documents_with_their_own_positions(tmp_path):
    shards = write_shards(tmp_path / "d", LENGTHS, prompt=2)
    source = SequenceSource(shards, shuffle=False, seed=0)
    batch, _ = pack(source, DataPosition(), PackingConfig(seq_len=16, rows=6))
    for r in range(6):
        doc = batch.doc_ids[r]
        for d in doc.unique().tolist():
            if d == PAD_DOC:
                assert batch.tokens[r][doc == d].eq(0).all() and not batch.target_ok[r][doc == d].any()
                continue
            where = (doc == d).nonzero().flatten()
            assert torch.equal(where, torch.arange(int(where[0]), int(where[-1]) + 1))  # contiguous
            assert batch.positions[r, where].tolist() == list(range(len(where)))
            ok = batch.target_ok[r, where].tolist()
            continued = int(batch.tokens[r, where[0]]) % 1000 != 0  # a later chunk of a long document
            first_target = 1 if continued else 2  # the prompt (2 tokens) is never a target
            assert ok == [i >= first_target for i in range(len(where))]
    # The 30-token document is chunked into 16 + 14; sequence 6 (1 token) has no target and is skipped.
    sizes = [int((batch.doc_ids[r] == d).sum()) for r in range(6) for d in range(4) if (batch.doc_ids[r] == d).any()]
    assert 16 in sizes and 14 in sizes and 1 not in sizes


def test_resume_from_any_position_gives_the_same_rows(tmp_path):
    shards = write_shards(tmp_path / "d", LENGTHS * 3)
    cfg = PackingConfig(seq_len=16, rows=3, shuffle=True, seed=7)
    source = SequenceSource(shards, cfg.shuffle, cfg.seed)
    position, batches, positions = DataPosition(), [], []
    for _ in range(12):  # runs over several epochs
        positions.append(position)
        batch, position = pack(source, position, cfg)
        batches.append(batch)
    assert position.epoch >= 1 and position.rows == 36
    fresh = SequenceSource(TokenShards(tmp_path / "d"), cfg.shuffle, cfg.seed)
    for i in (0, 5, 9):
        again, _ = pack(fresh, positions[i], cfg)
        for name in ("tokens", "doc_ids", "positions", "target_ok", "row_ids"):
            assert torch.equal(getattr(again, name), getattr(batches[i], name))
    # Round trip through the checkpoint JSON form.
    assert DataPosition.from_dict(positions[5].to_dict()) == positions[5]


def test_shuffle_changes_per_epoch_and_by_seed(tmp_path):
    shards = write_shards(tmp_path / "d", [4] * 20)
    first = [t[0] for _, t, _ in SequenceSource(shards, True, 0).iterate(0, 0)]
    second = [t[0] for _, t, _ in SequenceSource(shards, True, 0).iterate(1, 0)]
    other = [t[0] for _, t, _ in SequenceSource(shards, True, 1).iterate(0, 0)]
    assert sorted(first) == sorted(second) and first != second and first != other


def test_held_out_split_is_disjoint(tmp_path):
    shards = write_shards(tmp_path / "d", [4] * 20)
    train = {t[0] for _, t, _ in SequenceSource(shards, True, 0, keep=(0, 16)).iterate(0, 0)}
    val = {t[0] for _, t, _ in SequenceSource(shards, False, 0, keep=(16, 20)).iterate(0, 0)}
    assert len(train) == 16 and len(val) == 4 and not train & val
    with pytest.raises(ValueError):
        SequenceSource(shards, True, 0, keep=(0, 21))


def test_finite_packing_stops_at_the_end(tmp_path):
    shards = write_shards(tmp_path / "d", [10, 10, 10])
    batch, _ = pack(SequenceSource(shards, False, 0), DataPosition(), PackingConfig(seq_len=16, rows=8),
                    epochs=False)
    assert batch.tokens.shape == (3, 16)


def test_validation_packing_takes_one_piece_per_sequence(tmp_path):
    shards = write_shards(tmp_path / "d", [40, 5, 40, 6])
    batch, _ = pack(SequenceSource(shards, False, 0), DataPosition(), PackingConfig(seq_len=16, rows=8),
                    epochs=False, first_only=True)
    firsts = sorted(int(batch.tokens[r, 0]) for r in range(batch.tokens.shape[0]))
    assert batch.num_tokens == 16 + 5 + 16 + 6 and firsts[:2] == [0, 1000]


def test_processes_take_disjoint_contiguous_shares_and_validation_never_skips_a_call():
    rows = torch.arange(5)[:, None].expand(5, 4)
    batch = PackedBatch(rows, torch.zeros(5, 4, dtype=torch.long), torch.zeros(5, 4, dtype=torch.long),
                        torch.ones(5, 4, dtype=torch.bool), torch.arange(5))
    assert [batch.share(r, 2).row_ids.tolist() for r in range(2)] == [[0, 1, 2], [3, 4]]
    assert [batch.share(r, 3).row_ids.tolist() for r in range(3)] == [[0, 1], [2, 3], [4]]
    assert batch.share(0, 1).row_ids.tolist() == [0, 1, 2, 3, 4]
    one = batch.rows(0, 1)
    mine, counts = eval_share(one, 0, 2)
    assert counts and mine.row_ids.tolist() == [0]
    spare, counts = eval_share(one, 1, 2)  # nothing left for process 1: it still runs a row, uncounted
    assert not counts and spare.tokens.shape[0] == 1
