"""The decode loops: ``ar``, ``draft-verify`` and ``pqd`` (Partial Quadratic Decoding).

Every method keeps the same state: the KV cache holds every verified token but the last (the
pending token), and u_g drives generated token g. Each step makes its calls, verifies with the same
u's the drafter used, and emits only verified tokens, so all methods emit the same tokens for a seed.

- ``ar``: one call per token over the pending token.
- ``draft-verify``: a drafter call (pending token + one group of u-slots), then a verifier call over
  the pending token and the drafts. Simple; the reference for correctness.
- ``draft-verify`` with a feature head (``ptp.head``): the head drafts from the teacher's features
  (its own small call), then the teacher verifies; the verifier call's features of the accepted rows
  feed the head's next call.
- ``pqd``: one call holding the verify rows (pending + drafts) and hypothesis groups d = 0..m;
  after verification, the group for the actual number accepted supplies the next drafts, and the
  slot budget for the next call is split over groups by expected gain (see ``budget``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from ptp.cache import crop_cache
from ptp.decoding.budget import allocate_slots, survival
from ptp.decoding.drafters import Drafter, PTPDrafter
from ptp.decoding.step import head_draft, run_call, verify
from ptp.decoding.stopping import StopChecker
from ptp.decoding.types import Chunk, DecodeConfig, Draft, GenerateOutput, Verdict
from ptp.model import PTPModel
from ptp.sampling import SamplingConfig, pick, process
from ptp.ustream import UStream


class _ZeroStream:
    """A u-stream of zeros: what a drafter is asked for under greedy decoding (see ``_head_step``)."""

    def take(self, start: int, n: int) -> torch.Tensor:
        return torch.zeros(n)


ZERO_STREAM = _ZeroStream()


@dataclass
class _State:
    """Mutable decoding state of one request (never shared between requests)."""

    model: PTPModel
    cfg: DecodeConfig
    sampling: SamplingConfig
    drafter: Drafter
    ustream: UStream
    cache: DynamicCache
    context: list[int]  # prompt + verified tokens; the last one is pending (not cached)
    prompt_len: int
    max_positions: int
    drafts: Draft | None = None  # pqd: the drafts to verify in the next call
    head_cache: DynamicCache | None = None  # feature head: its cache of context rows
    head_features: torch.Tensor | None = None  # feature head: teacher features not yet in head_cache [C, H]
    head_last: torch.Tensor | None = None  # feature head: the teacher's feature of the last cached token [H]

    @property
    def generated(self) -> int:
        return len(self.context) - self.prompt_len

    @property
    def cache_len(self) -> int:
        return len(self.context) - 1

    def room(self, first_position: int) -> int:
        """How many consecutive positions from first_position still fit in the context."""
        return max(0, self.max_positions - first_position)


def _ar_step(s: _State) -> tuple[Verdict, int]:
    call = run_call(s.model, s.cache, [s.context[-1]], [], s.generated, s.ustream)
    return verify(call.teacher, [], s.ustream.take(s.generated, 1), s.sampling), 1


def _head_step(s: _State) -> tuple[Verdict, int]:
    """Draft-verify with a feature head: a head call drafts, one teacher call verifies."""
    n = s.generated
    slots = min(s.cfg.draft_len or s.model.cfg.window, s.room(s.cache_len + 1))
    drafts: list[int] = []
    if slots:
        ustream = s.ustream
        if s.sampling.greedy and s.model.cfg.sampling.order != "id":
            # Greedy takes the most likely token at every step: u = 0 under a most-likely-first layout,
            # so the drafter (trained at a temperature) is asked for exactly that chain.
            ustream = ZERO_STREAM
        if s.model.cfg.slot_offset == 0:  # o-ptp / mtp: slot j carries u_{n+j} and predicts token n+j
            u, anchor = ustream.take(n, slots), n
        else:  # c-ptp: slot j carries u_{n+j-1} (slot 0 a constant) and its distribution is picked with u_{n+j}
            u, anchor = torch.cat([torch.full((1,), 0.5), ustream.take(n, slots - 1)]), n - 1
        logits = head_draft(s.model, s.head_cache, s.head_features, s.head_last, s.context[-1], s.cache_len, u)
        s.head_features = s.head_features[:0]
        drafts = s.drafter.propose(logits, anchor, s.context, ustream).tokens.tolist()
    verifier = run_call(s.model, s.cache, [s.context[-1], *drafts], [], n, s.ustream)
    verdict = verify(verifier.teacher, drafts, s.ustream.take(n, len(drafts) + 1), s.sampling)
    # The pending token and the accepted drafts enter the teacher's cache: their features join the head's.
    s.head_features = torch.cat([s.head_features, verifier.features[: verdict.accepted + 1]])
    s.head_last = s.head_features[-1]
    return verdict, 2


def _draft_verify_step(s: _State) -> tuple[Verdict, int]:
    if s.model.is_head:
        return _head_step(s)
    n, offset = s.generated, s.model.cfg.slot_offset
    slots = min(s.cfg.draft_len or s.model.cfg.window, s.room(s.cache_len + offset))
    call = run_call(s.model, s.cache, [s.context[-1]], [slots] if slots else [], n, s.ustream)
    crop_cache(s.cache, s.cache_len)
    drafts: list[int] = []
    if offset:  # C-PTP: the first draft is the teacher's own pick from the pending row
        drafts.append(int(pick(s.ustream.take(n, 1)[0], process(call.teacher[0], s.sampling), s.sampling.order)))
    if slots:
        drafts += s.drafter.propose(call.groups[0], n, s.context, s.ustream).tokens.tolist()
    drafts = drafts[: s.room(s.cache_len + 1)]
    verifier = run_call(s.model, s.cache, [s.context[-1], *drafts], [], n, s.ustream)
    u = s.ustream.take(n, len(drafts) + 1)
    return verify(verifier.teacher, drafts, u, s.sampling), 2


def _pqd_step(s: _State) -> tuple[Verdict, int]:
    n, cfg = s.generated, s.model.cfg
    pending = s.drafts.tokens.tolist() if s.drafts is not None else []
    pending = pending[: s.room(s.cache_len + 1)]
    confidence = s.drafts.confidence[: len(pending)] if s.drafts is not None else torch.ones(0)
    offset = cfg.slot_offset
    sizes = allocate_slots(
        confidence,
        survival(cfg.correct_hist, cfg.window),
        s.cfg.slot_budget,
        # an O-PTP group's first slot yields no draft, so it may hold one slot more than the window
        s.cfg.max_group_slots or cfg.window + 1 - offset,
        offset,
    )
    sizes = [min(b, s.room(s.cache_len + d + offset)) for d, b in enumerate(sizes)]
    call = run_call(s.model, s.cache, [s.context[-1], *pending], sizes, n, s.ustream)
    verdict = verify(call.teacher, pending, s.ustream.take(n, len(pending) + 1), s.sampling)
    a = verdict.accepted
    s.drafts = None
    if sizes[a]:
        context = s.context + verdict.tokens[:-1]  # tokens before the group's anchor n + a
        draft = s.drafter.propose(call.groups[a], n + a, context, s.ustream)
        s.drafts = draft.after(n + a)
    return verdict, 1


STEPS = {"ar": _ar_step, "draft-verify": _draft_verify_step, "pqd": _pqd_step}


def _prefill(model: PTPModel, cache: DynamicCache, prompt: list[int]) -> torch.Tensor | None:
    """Cache every prompt token but the last (which becomes the pending token); a feature-head model
    also returns the teacher's features of those tokens [P - 1, H]."""
    if len(prompt) < 2:
        return torch.zeros(0, model.teacher.config.hidden_size, device=model.device) if model.is_head else None
    tokens = torch.tensor(prompt[:-1], device=model.device)[None]
    no_slots = torch.zeros_like(tokens, dtype=torch.bool)
    positions = torch.arange(tokens.shape[1], device=model.device)[None]
    out = model(tokens, torch.zeros(tokens.shape), no_slots, positions, cache=cache, logits_to_keep=1)
    return out.features[0] if model.is_head else None


def _eos_ids(model: PTPModel, eos_token_id: int | list[int] | None) -> list[int]:
    if eos_token_id is None:
        eos_token_id = getattr(model.teacher.generation_config, "eos_token_id", None)
        if eos_token_id is None:
            eos_token_id = model.teacher.config.eos_token_id
    if eos_token_id is None:
        return []
    return [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)


def _prompt_list(input_ids: torch.Tensor | list[int], max_positions: int, vocab_size: int) -> list[int]:
    ids = torch.as_tensor(input_ids)
    if ids.dim() == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.dim() != 1:
        raise ValueError(f"input_ids must be 1-D or [1, N] (batch size 1), got shape {tuple(ids.shape)}")
    if ids.numel() == 0:
        raise ValueError("the prompt is empty: give at least one token (e.g. the BOS token)")
    if ids.numel() > max_positions:
        raise ValueError(f"the prompt has {ids.numel()} tokens; the model's context holds {max_positions}")
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"input_ids must be integer token ids, got dtype {ids.dtype}")
    bad = ids[(ids < 0) | (ids >= vocab_size)]
    if bad.numel():
        raise ValueError(f"token id {int(bad[0])} is outside the vocabulary [0, {vocab_size})")
    return [int(t) for t in ids]


def decode(
    model: PTPModel,
    input_ids: torch.Tensor | list[int],
    cfg: DecodeConfig,
    sampling: SamplingConfig,
    seed: int,
    drafter: Drafter | None = None,
    tokenizer=None,
    eos_token_id: int | list[int] | None = None,
) -> Iterator[Chunk]:
    """Check the request, then return a stream of each teacher call's verified tokens.

    The first chunk is the prefill (no tokens). Bad input raises here, before any work.
    """
    if model.is_head and cfg.method == "pqd":
        raise ValueError("pqd needs a one-network (lora) drafter; a feature-head drafter decodes with draft-verify")
    max_positions = model.max_positions
    prompt = _prompt_list(input_ids, max_positions, model.vocab_size)
    stops = StopChecker(
        cfg.max_new_tokens, _eos_ids(model, eos_token_id), cfg.stop_strings, tokenizer,
        max_total=max_positions - len(prompt) + 1,
    )
    state = _State(
        model, cfg, sampling, drafter or PTPDrafter(model, sampling.order), UStream(seed),
        DynamicCache(config=model.teacher.config), list(prompt), len(prompt), max_positions,
        head_cache=model.head.new_cache() if model.is_head else None,
    )
    return _run(state, stops)


@torch.no_grad()
def _run(state: _State, stops: StopChecker) -> Iterator[Chunk]:
    start = time.perf_counter()
    state.head_features = _prefill(state.model, state.cache, state.context)
    if state.model.is_head:
        features = state.head_features
        state.head_last = features[-1] if len(features) else features.new_zeros(features.shape[-1])
    yield Chunk(tokens=[], accepted=0, forward_calls=0, seconds=time.perf_counter() - start)
    step = STEPS[state.cfg.method]
    while True:
        start = time.perf_counter()
        verdict, calls = step(state)
        tokens, reason = stops.push(verdict.tokens)
        state.context += tokens
        crop_cache(state.cache, state.cache_len)
        yield Chunk(tokens, verdict.accepted, calls, time.perf_counter() - start, reason)
        if reason is not None:
            return


def collect(chunks: Iterator[Chunk]) -> GenerateOutput:
    """Run a chunk stream to the end and summarise it."""
    tokens: list[int] = []
    out = GenerateOutput(tokens=torch.empty(0, dtype=torch.long), calls=0, teacher_calls=0)
    for i, chunk in enumerate(chunks):
        if i == 0:
            out.prefill_seconds = chunk.seconds
            continue
        tokens += chunk.tokens
        out.calls += chunk.forward_calls
        out.teacher_calls += 1
        out.accepted_per_call.append(len(chunk.tokens))
        out.decode_seconds += chunk.seconds
        if i == 1:
            out.first_token_seconds = out.prefill_seconds + chunk.seconds
        if chunk.stop_reason:
            out.stop_reason = chunk.stop_reason
    out.tokens = torch.tensor(tokens, dtype=torch.long)
    return out
