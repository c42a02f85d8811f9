"""Pregeneration: teacher completions for a prompt set, written as token shards of kind "teacher-samples".

Each row is prompt + completion (``prompt_len`` = prompt length). Completion j of prompt i is sampled
with its own u-stream, seed ``row_seed(seed, i, j)``: new token g is ``pick(u_g, process(z_g, sampling))``,
the same sampler every decoding method uses, so a row is a deterministic function of the
arguments and does not depend on which other rows share its batch.

Resumability: prompts are processed in chunks of ``prompts_per_shard``; each chunk becomes exactly one
shard, and the shard writer commits the manifest after every shard. A restart with the same arguments
(checked: the manifest's ``extra`` must match) continues at the first prompt without a shard. The
batches of a chunk depend only on the chunk, so the restarted run computes exactly what an
uninterrupted run would have.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow.compute as pc
import torch
from transformers import DynamicCache, PreTrainedModel

from ptp.checkpoint_format import fingerprint
from ptp.data.shards import ShardWriter, TokenShards
from ptp.sampling import SamplingConfig, pick, process
from ptp.ustream import UStream

PAD_ID = 0  # any valid id: left padding is masked out and never attended to
SEED_BITS = 63  # row seeds are non-negative int64


@dataclass(frozen=True)
class PregenConfig:
    """How teacher completions are sampled and stored."""

    sampling: SamplingConfig  # the processed distribution completions are drawn from
    completions_per_prompt: int = 4  # rows per prompt, each with its own u-stream
    max_new_tokens: int = 128  # completion length unless EOS comes first
    batch_size: int = 32  # rows per teacher forward
    prompts_per_shard: int = 256  # one shard (and one resume point) per this many prompts
    seed: int = 0  # base seed of every row's u-stream
    eos_token_id: int | None = None  # stop a row after sampling it (kept in the row); None: never stop

    def __post_init__(self) -> None:
        for name in ("completions_per_prompt", "max_new_tokens", "batch_size", "prompts_per_shard"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    def record(self) -> dict:
        """What a resumed run must agree on (everything that changes the rows or their order)."""
        data = asdict(self)
        data["sampling"] = self.sampling.to_dict()
        return data


def row_seed(seed: int, prompt_index: int, completion: int) -> int:
    """The u-stream seed of one row: a hash, so rows of nearby prompts are unrelated."""
    digest = hashlib.sha256(f"{seed}:{prompt_index}:{completion}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - SEED_BITS)


def left_padded(seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input ids, attention mask: 1 = real token) [B, longest], each sequence right-aligned after PAD_IDs."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), PAD_ID, dtype=torch.long)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, width - len(s):] = torch.as_tensor(s, dtype=torch.long)
        attention[b, width - len(s):] = 1
    return ids, attention


@torch.inference_mode()
def sample_rows(model: PreTrainedModel, prompts: Sequence[Sequence[int]], seeds: Sequence[int],
                cfg: PregenConfig) -> list[list[int]]:
    """Completions (new tokens only; ending with EOS if one was sampled) for a left-padded batch."""
    device = next(model.parameters()).device
    batch = len(prompts)
    input_ids, attention = left_padded(prompts)  # [B, S]
    u = torch.stack([UStream(s).take(0, cfg.max_new_tokens) for s in seeds]).to(device)  # [B, N]
    input_ids, attention = input_ids.to(device), attention.to(device)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)  # [B, S]; real tokens at 0..len-1
    cache = DynamicCache(config=model.config)
    logits = model(input_ids, attention_mask=attention, position_ids=positions, cache=cache,
                   use_cache=True).logits[:, -1]  # [B, V]
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    new = []
    for g in range(cfg.max_new_tokens):
        t = pick(u[:, g], process(logits, cfg.sampling), cfg.sampling.order)  # [B]
        new.append(t)
        if cfg.eos_token_id is not None:
            done |= t == cfg.eos_token_id
        if bool(done.all()) or g + 1 == cfg.max_new_tokens:
            break
        attention = torch.cat([attention, torch.ones_like(attention[:, :1])], 1)
        next_pos = attention.sum(-1, keepdim=True) - 1  # [B, 1]
        logits = model(t[:, None], attention_mask=attention, position_ids=next_pos, cache=cache,
                       use_cache=True).logits[:, -1]
    tokens = torch.stack(new, 1).tolist()  # [B, G]
    return [_cut_at_eos(row, cfg.eos_token_id) for row in tokens]


def _cut_at_eos(row: list[int], eos: int | None) -> list[int]:
    return row[: row.index(eos) + 1] if eos is not None and eos in row else row


def _chunk_rows(model: PreTrainedModel, prompts: Sequence[Sequence[int]], first: int, cfg: PregenConfig,
                on_rows: Callable[[int], None] | None) -> list[tuple[list[int], int]]:
    """(prompt + completion, prompt_len) for every row of the prompts first, first + 1, ..., in row order."""
    rows = [(i, j) for i in range(len(prompts)) for j in range(cfg.completions_per_prompt)]  # chunk-local
    # Batch rows of similar prompt length together (less padding); the order depends on the chunk only.
    order = sorted(range(len(rows)), key=lambda r: (len(prompts[rows[r][0]]), r))
    out: list[tuple[list[int], int]] = [([], 0)] * len(rows)
    for start in range(0, len(order), cfg.batch_size):
        members = order[start : start + cfg.batch_size]
        seeds = [row_seed(cfg.seed, first + rows[r][0], rows[r][1]) for r in members]
        completions = sample_rows(model, [prompts[rows[r][0]] for r in members], seeds, cfg)
        for r, completion in zip(members, completions, strict=True):
            prompt = list(prompts[rows[r][0]])
            out[r] = (prompt + completion, len(prompt))
        if on_rows is not None:
            on_rows(len(members))
    return out


def prompts_digest(prompts: Sequence[Sequence[int]]) -> str:
    """SHA-256 of the prompt token ids: a resumed run must use the very same prompts."""
    digest = hashlib.sha256()
    for p in prompts:
        digest.update(repr(list(p)).encode())
    return digest.hexdigest()


def pregenerate(model: PreTrainedModel, prompts: Sequence[Sequence[int]], cfg: PregenConfig,
                out_dir: str | Path, *, tokenizer_name: str | None = None, provenance: dict | None = None,
                on_rows: Callable[[int], None] | None = None) -> dict:
    """Sample ``completions_per_prompt`` completions per prompt into ``out_dir``; returns the manifest.

    An existing ``out_dir`` written with the same arguments is resumed (a complete one is returned as
    is); one written with other arguments is refused. ``on_rows(n)`` is called after each batch.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("need at least one prompt, and no empty prompts")
    limit = getattr(model.config, "max_position_embeddings", None)
    longest = max(len(p) for p in prompts) + cfg.max_new_tokens
    if limit is not None and longest > limit:
        raise ValueError(f"longest prompt + max_new_tokens = {longest} exceeds the teacher's {limit} positions")
    extra = {"pregen": cfg.record(), "num_prompts": len(prompts), "prompts_sha256": prompts_digest(prompts),
             **(provenance or {})}
    fields = {"kind": "teacher-samples", "sampling": cfg.sampling, "teacher_fingerprint": fingerprint(model),
              "tokenizer": tokenizer_name, "extra": extra}
    writer = ShardWriter(out_dir, fields, cfg.prompts_per_shard * cfg.completions_per_prompt, resume=True)
    done_prompts, partial = divmod(writer.num_sequences, cfg.completions_per_prompt)
    if partial or (done_prompts % cfg.prompts_per_shard and done_prompts != len(prompts)):
        raise ValueError(f"{out_dir}: {writer.num_sequences} rows do not end on a chunk of prompts; "
                         "the directory was not written by this pregeneration")
    if on_rows is not None and done_prompts:
        on_rows(done_prompts * cfg.completions_per_prompt)
    was_training = model.training
    model.eval()
    for first in range(done_prompts, len(prompts), cfg.prompts_per_shard):
        chunk = prompts[first : first + cfg.prompts_per_shard]
        for tokens, prompt_len in _chunk_rows(model, chunk, first, cfg, on_rows):
            writer.add(tokens, prompt_len)
        writer.flush()  # one shard per chunk, also for the short last chunk
    model.train(was_training)
    return writer.close()


def encode_prompts(texts: Sequence[str], tokenizer, max_prompt_tokens: int) -> list[list[int]]:
    """Token ids of prompt texts (with the tokenizer's special tokens), keeping the last max_prompt_tokens."""
    if max_prompt_tokens < 1:
        raise ValueError(f"max_prompt_tokens must be positive, got {max_prompt_tokens!r}")
    ids = tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    return [list(t[-max_prompt_tokens:]) for t in ids]


def prompts_from_documents(shards: TokenShards, prompt_tokens: int, max_prompts: int,
                           seed: int = 0) -> list[list[int]]:
    """Contexts cut from document shards: a fixed random sample of the aligned ``prompt_tokens`` chunks.

    Chunk k of a document is its tokens [k L, (k + 1) L) with L = prompt_tokens (only whole chunks).
    """
    if prompt_tokens < 1 or max_prompts < 1:
        raise ValueError(f"prompt_tokens and max_prompts must be positive, got {prompt_tokens!r}, {max_prompts!r}")
    counts = [n // prompt_tokens for i in range(shards.num_shards)
              for n in pc.list_value_length(shards.read_shard(i).column("tokens")).to_pylist()]
    total = sum(counts)
    if total == 0:
        raise ValueError(f"no document in {shards.directory} has {prompt_tokens} tokens")
    chosen = sorted(random.Random(seed).sample(range(total), min(max_prompts, total)))
    return list(_take_chunks(shards.iter_sequences(), counts, chosen, prompt_tokens))


def _take_chunks(sequences: Iterator[tuple[list[int], int]], counts: list[int], chosen: list[int],
                 length: int) -> Iterator[list[int]]:
    """The chunks with the given flat indices (sorted), walking the documents once."""
    it = iter(chosen)
    want = next(it, None)
    offset = 0  # flat index of the current document's first chunk
    for (tokens, _), n in zip(sequences, counts, strict=True):
        while want is not None and want < offset + n:
            k = want - offset
            yield tokens[k * length : (k + 1) * length]
            want = next(it, None)
        offset += n
