"""Token shards: round trip, resume order, crash safety and clear errors."""

from __future__ import annotations

import json

import pytest

from ptp.data.shards import MANIFEST, ShardWriter, TokenShards
from ptp.sampling import SamplingConfig

FIELDS = {"kind": "teacher-samples", "sampling": SamplingConfig(0.7, 50, 0.95),
          "teacher_fingerprint": {"weight_hash": "abc"}, "tokenizer": "tok", "extra": {"note": 1}}


def _sequences(n):
    return [([i] * (1 + i % 5), i % 3 if i % 5 >= 2 else 0) for i in range(n)]


def test_round_trip_and_manifest(tmp_path):
    seqs = _sequences(23)
    with ShardWriter(tmp_path, FIELDS, rows_per_shard=5) as writer:
        for tokens, plen in seqs:
            writer.add(tokens, plen)
    shards = TokenShards(tmp_path)
    assert list(shards.iter_sequences()) == seqs
    assert len(shards) == 23 and shards.num_tokens == sum(len(t) for t, _ in seqs)
    m = shards.manifest
    assert m["format"] == "ptp-token-shards" and m["version"] == 1 and m["complete"]
    assert m["sampling"] == {"temperature": 0.7, "top_k": 50, "top_p": 0.95, "order": "id"}
    assert shards.sampling == SamplingConfig(0.7, 50, 0.95)
    assert [s["rows"] for s in m["shards"]] == [5, 5, 5, 5, 3]
    assert sum(s["tokens"] for s in m["shards"]) == shards.num_tokens


@pytest.mark.parametrize("start", [0, 4, 5, 11, 23])
def test_iter_from_start(tmp_path, start):
    seqs = _sequences(23)
    with ShardWriter(tmp_path, {"kind": "documents"}, rows_per_shard=5) as writer:
        for tokens, plen in seqs:
            writer.add(tokens, plen)
    assert list(TokenShards(tmp_path).iter_sequences(start)) == seqs[start:]


def test_crash_loses_only_open_shard_and_resume_continues(tmp_path):
    seqs = _sequences(12)
    writer = ShardWriter(tmp_path, FIELDS, rows_per_shard=4)
    for tokens, plen in seqs[:10]:
        writer.add(tokens, plen)
    (tmp_path / "shard-00002.parquet.tmp").write_bytes(b"half written")  # as if killed mid-write
    del writer  # "killed": two full shards on disk, two rows buffered and lost
    shards = TokenShards(tmp_path)
    assert len(shards) == 8 and not shards.manifest["complete"]
    with pytest.raises(ValueError, match="resume"):
        ShardWriter(tmp_path, FIELDS, rows_per_shard=4)
    with pytest.raises(ValueError, match="differs"):
        ShardWriter(tmp_path, {**FIELDS, "tokenizer": "other"}, rows_per_shard=4, resume=True)
    writer = ShardWriter(tmp_path, FIELDS, rows_per_shard=4, resume=True)
    assert writer.num_sequences == 8
    for tokens, plen in seqs[8:]:
        writer.add(tokens, plen)
    writer.close()
    assert list(TokenShards(tmp_path).iter_sequences()) == seqs
    assert not list(tmp_path.glob("*.tmp"))


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="missing"):
        TokenShards(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(ValueError, match="corrupt manifest"):
        TokenShards(tmp_path)
    (tmp_path / MANIFEST).unlink()
    with pytest.raises(ValueError, match="kind"):
        ShardWriter(tmp_path, {"kind": "nope"})
    with pytest.raises(ValueError, match="rows_per_shard"):
        ShardWriter(tmp_path, {"kind": "documents"}, rows_per_shard=0)
    with ShardWriter(tmp_path, {"kind": "documents"}, rows_per_shard=2) as writer:
        with pytest.raises(ValueError, match="prompt_len"):
            writer.add([1, 2], 3)
        with pytest.raises(ValueError, match="empty"):
            writer.add([], 0)
        writer.add([1, 2, 3], 1)
    (tmp_path / "shard-00000.parquet").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt shard"):
        list(TokenShards(tmp_path).iter_sequences())
    (tmp_path / "shard-00000.parquet").unlink()
    with pytest.raises(ValueError, match="missing"):
        TokenShards(tmp_path)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    (tmp_path / MANIFEST).write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(ValueError, match="version"):
        TokenShards(tmp_path)
