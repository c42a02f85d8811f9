"""Teacher samples with the teacher's own features, for training a feature-head drafter.

One pass of batched sampling gives, for every row (prompt + completion):

- ``tokens`` [S]: the prompt, then tokens sampled as t_g = pick(u_g, process(z_g)) (the sampler every
  decoding method uses);
- ``features`` [S, H] float16: the teacher's last hidden state (after its final norm, what its lm_head
  reads) at every position but the last, i.e. its state after reading that token;
- ``left``/``right`` [S] float32: the interval of [0, 1) that each sampled token owns under the
  teacher's processed distribution (a training u for that token is drawn inside it); prompt
  positions have left = right = 0.

*Teacher-forced* rows (``responses`` given) replace sampling by one batched forward over prompt +
given response + EOS: about four times cheaper per token on a CPU (no token-by-token loop) and not
limited to what the teacher happens to write. A response token the teacher could not have picked
(zero mass after top-k / top-p) gets an empty interval (left = right): it is no training target, and
no window of u's runs through it, since the teacher's picks could never have followed that path.
Every other token is exactly what the teacher picks for any u in its interval, so the O-PTP targets
stay exact; only how often each region of u is seen differs from the teacher's own samples.

Rows are written as safetensors shards (``features-00000.safetensors``, one per ``rows_per_shard``
prompts) plus ``manifest.json``. Shard k depends only on its prompts and the seed, so a killed run
resumes at the first missing shard and computes what an uninterrupted run would have.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.nn import functional
from transformers import DynamicCache, PreTrainedModel
from transformers.cache_utils import DynamicLayer

from ptp.cache import padding_buckets
from ptp.checkpoint_format import fingerprint
from ptp.data.pregenerate import PAD_ID, left_padded, row_seed
from ptp.sampling import SamplingConfig, bin_edges, pick, process
from ptp.ustream import UStream

MANIFEST = "manifest.json"
SHARD_PATTERN = "features-{:05d}.safetensors"
FORMAT = "ptp-feature-shards"


@dataclass(frozen=True)
class FeatureConfig:
    """How rows are sampled and stored."""

    sampling: SamplingConfig
    max_new_tokens: int = 160  # completion length unless EOS comes first
    batch_size: int = 16  # rows per teacher forward
    rows_per_shard: int = 64  # prompts per shard (one completion each)
    seed: int = 0  # row i's u-stream seed is row_seed(seed, i, 0)
    eos_token_id: int | None = None
    teacher_forced: bool = False  # rows read given responses instead of sampling (see the module docstring)

    def record(self) -> dict:
        data = asdict(self)
        data["sampling"] = self.sampling.to_dict()
        if not self.teacher_forced:  # manifests written before teacher-forced rows existed still match
            del data["teacher_forced"]
        return data


@dataclass
class FeatureRow:
    tokens: torch.Tensor  # [S] long
    prompt_len: int
    features: torch.Tensor  # [S, H] float16 (the last row is zeros: never fed to the teacher)
    left: torch.Tensor  # [S] float32
    right: torch.Tensor  # [S] float32


def teacher_step(model: PreTrainedModel, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """(last-layer features [B, Q, H], logits of the last query [B, V]) of one teacher forward."""
    hidden = model.base_model(**kwargs).last_hidden_state  # [B, Q, H], after the final norm
    return hidden, model.get_output_embeddings()(hidden[:, -1])


PREFILL_PADDING = 1.25  # a prefill call's padded tokens may be at most this multiple of its real ones
COMPACT_SHARE = 8  # finished rows leave the batch once they are this fraction (1/8) of it


@torch.inference_mode()
def sample_with_features(model: PreTrainedModel, prompts: Sequence[Sequence[int]], seeds: Sequence[int],
                         cfg: FeatureConfig) -> list[FeatureRow]:
    """Sample one completion per prompt (one left-padded batch) and keep the teacher's features.

    Prompts are prefilled in calls of similar lengths (``padding_buckets``) whose caches are joined;
    finished rows leave the batch (and padding every remaining row has is cut) once they are an eighth
    of it, so neither long prompts nor early ends make the others pay.
    """
    device = next(model.parameters()).device
    batch, lengths = len(prompts), [len(p) for p in prompts]
    width = max(lengths)
    u = torch.stack([UStream(s).take(0, cfg.max_new_tokens) for s in seeds]).to(device)  # [B, N]
    plain = all(type(layer) is DynamicLayer for layer in DynamicCache(config=model.config).layers)
    buckets = padding_buckets(lengths, PREFILL_PADDING) if plain else [list(range(batch))]
    caches, logits, prompt_feats = [], [], [None] * batch
    for bucket in buckets:
        ids, attention = left_padded([prompts[b] for b in bucket])
        cache = DynamicCache(config=model.config)
        hidden, last = teacher_step(model, input_ids=ids.to(device), attention_mask=attention.to(device),
                                    position_ids=(attention.cumsum(-1) - 1).clamp(min=0).to(device),
                                    cache=cache, use_cache=True)
        hidden = hidden.to(torch.float16).cpu()
        for i, b in enumerate(bucket):
            prompt_feats[b] = hidden[i, hidden.shape[1] - lengths[b]:]
        caches.append(cache)
        logits.append(last)
    active = torch.tensor([b for bucket in buckets for b in bucket], device=device)  # batch position -> row
    cache = caches[0] if len(caches) == 1 else _join_left_padded(caches, width, model.config)
    logits = torch.cat(logits)
    pad = width - torch.tensor(lengths, device=device)[active]  # leading padding columns of each position
    attention = (torch.arange(width, device=device)[None] >= pad[:, None]).long()
    sampled = torch.full((batch, cfg.max_new_tokens), PAD_ID, dtype=torch.long, device=device)
    left_all = torch.zeros(batch, cfg.max_new_tokens, device=device)
    right_all = torch.zeros_like(left_all)
    new_feats = torch.zeros(batch, cfg.max_new_tokens, prompt_feats[0].shape[-1], dtype=torch.float16)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)  # per batch position
    for g in range(cfg.max_new_tokens):
        probs = process(logits, cfg.sampling)
        t = pick(u[active, g], probs, cfg.sampling.order)  # [A]
        left, right = bin_edges(probs, t, cfg.sampling.order)
        sampled[active, g], left_all[active, g], right_all[active, g] = t, left.float(), right.float()
        if cfg.eos_token_id is not None:
            finished |= t == cfg.eos_token_id
        if bool(finished.all()) or g + 1 == cfg.max_new_tokens:
            break
        if int(finished.sum()) * COMPACT_SHARE >= len(active):
            keep = (~finished).nonzero()[:, 0]
            cache.batch_select_indices(keep)
            active, pad, attention, t = active[keep], pad[keep], attention[keep], t[keep]
            finished = finished[keep]
            cut = int(pad.min()) if plain else 0
            if cut:
                for layer in cache.layers:
                    layer.keys, layer.values = layer.keys[..., cut:, :], layer.values[..., cut:, :]
                pad, attention = pad - cut, attention[:, cut:]
        attention = torch.cat([attention, torch.ones_like(attention[:, :1])], 1)
        next_pos = attention.sum(-1, keepdim=True) - 1
        hidden, logits = teacher_step(model, input_ids=t[:, None], attention_mask=attention, position_ids=next_pos,
                                      cache=cache, use_cache=True)
        new_feats[active.cpu(), g] = hidden[:, 0].to(torch.float16).cpu()
    sampled, left_all, right_all = sampled.cpu(), left_all.cpu(), right_all.cpu()
    rows = []
    for b, p in enumerate(prompts):
        g = cfg.max_new_tokens
        if cfg.eos_token_id is not None and bool((sampled[b] == cfg.eos_token_id).any()):
            g = int((sampled[b] == cfg.eos_token_id).nonzero()[0]) + 1
        tokens = torch.cat([torch.as_tensor(p, dtype=torch.long), sampled[b, :g]])
        features = torch.cat([prompt_feats[b], new_feats[b, : g - 1], torch.zeros_like(new_feats[b, :1])])
        zeros = torch.zeros(len(p))
        rows.append(FeatureRow(tokens, len(p), features, torch.cat([zeros, left_all[b, :g]]),
                               torch.cat([zeros, right_all[b, :g]])))
    return rows


def _join_left_padded(caches: Sequence[DynamicCache], width: int, config) -> DynamicCache:
    """One cache whose rows are the given caches' rows in order, left-padded (with zeros) to ``width``."""
    joined = DynamicCache(config=config)
    for i in range(len(caches[0].layers)):
        keys, values = (torch.cat([functional.pad(getattr(c.layers[i], name), (0, 0, width - c.get_seq_length(), 0))
                                   for c in caches]) for name in ("keys", "values"))
        joined.update(keys, values, i)
    return joined


@torch.inference_mode()
def forced_with_features(model: PreTrainedModel, prompts: Sequence[Sequence[int]],
                         responses: Sequence[Sequence[int]], cfg: FeatureConfig,
                         logit_chunk: int = 1024) -> list[FeatureRow]:
    """Teacher-forced rows: one right-padded forward over each prompt + response (+ EOS), no sampling."""
    device = next(model.parameters()).device
    eos = [] if cfg.eos_token_id is None else [cfg.eos_token_id]
    seqs = [list(p) + list(r)[: cfg.max_new_tokens - len(eos)] + eos for p, r in zip(prompts, responses, strict=True)]
    width = max(len(t) for t in seqs)
    input_ids = torch.full((len(seqs), width), PAD_ID, dtype=torch.long)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)
    for b, t in enumerate(seqs):
        input_ids[b, : len(t)] = torch.as_tensor(t)
        attention[b, : len(t)] = 1
    hidden = model.base_model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).last_hidden_state
    rows = []
    for b, (prompt, t) in enumerate(zip(prompts, seqs, strict=True)):
        tokens, p, s = torch.as_tensor(t, dtype=torch.long), len(prompt), len(t)
        left, right = torch.zeros(s), torch.zeros(s)
        lo, hi, empty = token_intervals(model, hidden[b, p - 1 : s - 1], tokens[p:], cfg.sampling, logit_chunk)
        left[p:], right[p:] = lo, torch.where(empty, lo, hi)  # a token the teacher could not pick: no interval
        features = torch.zeros(s, hidden.shape[-1], dtype=torch.float16)
        features[: s - 1] = hidden[b, : s - 1].to(torch.float16).cpu()
        rows.append(FeatureRow(tokens, p, features, left, right))
    return rows


@torch.no_grad()
def token_intervals(model: PreTrainedModel, hidden: torch.Tensor, tokens: torch.Tensor, sampling: SamplingConfig,
                    chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For teacher states ``hidden`` [n, H] and the token after each [n]: the token's interval (left,
    right) under the teacher's processed distribution, and whether it has no mass there; float32 on the
    CPU, logits computed ``chunk`` rows at a time."""
    head = model.get_output_embeddings()
    left, right, empty = torch.zeros(len(tokens)), torch.zeros(len(tokens)), torch.zeros(len(tokens), dtype=torch.bool)
    for a in range(0, len(tokens), chunk):
        probs = process(head(hidden[a : a + chunk].to(head.weight.dtype)), sampling)
        target = tokens[a : a + chunk].to(probs.device)
        lo, hi = bin_edges(probs, target, sampling.order)
        left[a : a + chunk], right[a : a + chunk] = lo.float().cpu(), hi.float().cpu()
        empty[a : a + chunk] = (probs.gather(-1, target[:, None])[:, 0] <= 0).cpu()
    return left, right, empty


def write_features(model: PreTrainedModel, prompts: Sequence[Sequence[int]], cfg: FeatureConfig,
                   out_dir: str | Path, progress: Callable[[int, int], None] | None = None,
                   responses: Sequence[Sequence[int]] | None = None) -> dict:
    """Write (or resume) the shards for ``prompts``; returns the manifest. ``progress(done, total)``.

    With ``responses`` (one per prompt; needs ``cfg.teacher_forced``) rows are teacher-forced instead of sampled.
    """
    if (responses is not None) != cfg.teacher_forced or (responses is not None and len(responses) != len(prompts)):
        raise ValueError("teacher-forced rows need cfg.teacher_forced and exactly one response per prompt")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {"format": FORMAT, "config": cfg.record(), "num_prompts": len(prompts),
              "teacher_fingerprint": fingerprint(model)}
    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        if {k: old.get(k) for k in record} != record:
            raise ValueError(f"{out} holds features written with other settings; use another directory")
    manifest_path.write_text(json.dumps(record, indent=1) + "\n")
    num_shards = (len(prompts) + cfg.rows_per_shard - 1) // cfg.rows_per_shard
    was_training = model.training
    model.eval()
    for k in range(num_shards):
        path = out / SHARD_PATTERN.format(k)
        first = k * cfg.rows_per_shard
        chunk = list(prompts[first : first + cfg.rows_per_shard])
        if path.is_file():
            if progress:
                progress(first + len(chunk), len(prompts))
            continue
        answers = None if responses is None else list(responses[first : first + cfg.rows_per_shard])
        sizes = [len(c) + (len(answers[i]) if answers is not None else 0) for i, c in enumerate(chunk)]
        order = sorted(range(len(chunk)), key=lambda i: (sizes[i], i))  # similar lengths batch together
        rows: list[FeatureRow | None] = [None] * len(chunk)
        for start in range(0, len(order), cfg.batch_size):
            members = order[start : start + cfg.batch_size]
            if answers is None:
                seeds = [row_seed(cfg.seed, first + i, 0) for i in members]
                made = sample_with_features(model, [chunk[i] for i in members], seeds, cfg)
            else:
                made = forced_with_features(model, [chunk[i] for i in members], [answers[i] for i in members], cfg)
            for i, row in zip(members, made, strict=True):
                rows[i] = row
            if progress:
                progress(first + start + len(members), len(prompts))
        _save_shard(path, [r for r in rows if r is not None])
    model.train(was_training)
    return record


def _save_shard(path: Path, rows: list[FeatureRow]) -> None:
    lengths = torch.tensor([r.tokens.numel() for r in rows])
    tensors = {
        "tokens": torch.cat([r.tokens for r in rows]).to(torch.int32),
        "prompt_len": torch.tensor([r.prompt_len for r in rows], dtype=torch.int32),
        "lengths": lengths.to(torch.int32),
        "features": torch.cat([r.features for r in rows]),
        "left": torch.cat([r.left for r in rows]),
        "right": torch.cat([r.right for r in rows]),
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, path)


def read_features(directory: str | Path) -> Iterator[FeatureRow]:
    """Every row of every complete shard, in order."""
    root = Path(directory)
    if not (root / MANIFEST).is_file():
        raise ValueError(f"{root} holds no feature shards ({MANIFEST} is missing)")
    for path in sorted(root.glob("features-*.safetensors")):
        data = load_file(str(path))
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), data["lengths"].long().cumsum(0)])
        for i in range(data["lengths"].numel()):
            a, b = int(offsets[i]), int(offsets[i + 1])
            yield FeatureRow(data["tokens"][a:b].long(), int(data["prompt_len"][i]), data["features"][a:b],
                             data["left"][a:b], data["right"][a:b])


@torch.no_grad()
def relayout(rows: Sequence[FeatureRow], model: PreTrainedModel, sampling: SamplingConfig,
             batch_tokens: int = 4096) -> list[FeatureRow]:
    """The rows with each sampled token's interval recomputed under ``sampling`` (e.g. another CDF order).

    Any CDF order gives the same sequence distribution, so samples drawn in one order are valid
    training data for a drafter of another; only u's interval changes. Logits come from the stored
    float16 features through the teacher's lm_head, so edges are exact to about 1e-3 (training only
    needs a u inside the interval; verification always uses the teacher's exact numbers).
    """
    out = []
    for row in rows:
        p = row.prompt_len
        lo, hi, empty = token_intervals(model, row.features[p - 1 : -1], row.tokens[p:], sampling, batch_tokens)
        # fp16 features may drop a kept tail token out of top-p: give it a minimal interval at its edge.
        # A token without a target (an empty stored interval: teacher-forced rows) keeps none.
        hi = torch.where(empty, torch.nextafter(lo, torch.ones_like(lo)), hi)
        none = row.right[p:] <= row.left[p:]
        left, right = row.left.clone(), row.right.clone()
        left[p:], right[p:] = lo, torch.where(none, lo, hi)
        out.append(FeatureRow(row.tokens, p, row.features, left, right))
    return out


def feature_manifest(directory: str | Path) -> dict:
    return json.loads((Path(directory) / MANIFEST).read_text())
