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
from dataclasses import dataclass, replace

import torch

from ptp.cache import crop_cache
from ptp.decoding.batching import execute
from ptp.decoding.budget import allocate_slots, survival
from ptp.decoding.drafters import Drafter, PTPDrafter
from ptp.decoding.row_cache import RowCache, RowView
from ptp.decoding.step import Request, Result, Step, head_draft, prefill_call, run_call
from ptp.decoding.stopping import StopChecker
from ptp.decoding.types import Chunk, DecodeConfig, Draft, GenerateOutput
from ptp.model import PTPModel, budget_for
from ptp.sampling import SamplingConfig, pick, process, verify
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
    cache: RowView  # this request's row of the batch's teacher cache
    context: list[int]  # prompt + verified tokens; the last one is pending (not cached)
    prompt_len: int
    max_positions: int
    drafts: Draft | None = None  # pqd: the drafts to verify in the next call
    head_cache: RowView | None = None  # feature head: its row of the head's cache of context rows
    head_features: torch.Tensor | None = None  # feature head: teacher features not yet in head_cache [C, H]
    head_last: torch.Tensor | None = None  # feature head: the teacher's feature of the last cached token [H]
    batch_rows: int = 1  # rows decoded together in the current step (picks cfg.batch_budgets' entry)

    @property
    def generated(self) -> int:
        return len(self.context) - self.prompt_len

    @property
    def cache_len(self) -> int:
        return len(self.context) - 1

    def draft_len(self) -> int:
        """draft-verify: drafts to propose this step."""
        tuned = budget_for(self.cfg.batch_budgets, self.batch_rows)
        return (self.cfg.draft_len or self.model.cfg.window) if tuned is None else tuned

    def slot_budget(self) -> int:
        """pqd: u-slots for this step's hypothesis groups."""
        tuned = budget_for(self.cfg.batch_budgets, self.batch_rows)
        return self.cfg.slot_budget if tuned is None else tuned

    def room(self, first_position: int) -> int:
        """How many consecutive positions from first_position still fit in the context."""
        return max(0, self.max_positions - first_position)


def _ar_step(s: _State) -> Step:
    call = yield from run_call(s.model, s.cache, [s.context[-1]], [], s.generated, s.ustream)
    return verify(call.teacher, [], s.ustream.take(s.generated, 1), s.sampling), 1


def _head_step(s: _State) -> Step:
    """Draft-verify with a feature head: a head call drafts, one teacher call verifies."""
    n = s.generated
    slots = min(s.draft_len(), s.room(s.cache_len + 1))
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
        logits = yield from head_draft(s.model, s.head_cache, s.head_features, s.head_last, s.context[-1],
                                       s.cache_len, u)
        s.head_features = s.head_features[:0]
        drafts = s.drafter.propose(logits, anchor, s.context, ustream).tokens.tolist()
    verifier = yield from run_call(s.model, s.cache, [s.context[-1], *drafts], [], n, s.ustream)
    verdict = verify(verifier.teacher, drafts, s.ustream.take(n, len(drafts) + 1), s.sampling)
    # The pending token and the accepted drafts enter the teacher's cache: their features join the head's.
    s.head_features = torch.cat([s.head_features, verifier.features[: verdict.accepted + 1]])
    s.head_last = s.head_features[-1]
    return verdict, 2 if slots else 1


def _draft_verify_step(s: _State) -> Step:
    if s.model.is_head:
        return (yield from _head_step(s))
    if s.draft_len() == 0:  # no drafting at this batch size (batch_budgets): one call per token
        return (yield from _ar_step(s))
    n, offset = s.generated, s.model.cfg.slot_offset
    slots = min(s.draft_len(), s.room(s.cache_len + offset))
    call = yield from run_call(s.model, s.cache, [s.context[-1]], [slots] if slots else [], n, s.ustream)
    crop_cache(s.cache, s.cache_len)
    drafts: list[int] = []
    if offset:  # C-PTP: the first draft is the teacher's own pick from the pending row
        drafts.append(int(pick(s.ustream.take(n, 1)[0], process(call.teacher[0], s.sampling), s.sampling.order)))
    if slots:
        drafts += s.drafter.propose(call.groups[0], n, s.context, s.ustream).tokens.tolist()
    drafts = drafts[: s.room(s.cache_len + 1)]
    verifier = yield from run_call(s.model, s.cache, [s.context[-1], *drafts], [], n, s.ustream)
    u = s.ustream.take(n, len(drafts) + 1)
    return verify(verifier.teacher, drafts, u, s.sampling), 2


def _pqd_step(s: _State) -> Step:
    n, cfg = s.generated, s.model.cfg
    pending = s.drafts.tokens.tolist() if s.drafts is not None else []
    pending = pending[: s.room(s.cache_len + 1)]
    confidence = s.drafts.confidence[: len(pending)] if s.drafts is not None else torch.ones(0)
    offset = cfg.slot_offset
    sizes = allocate_slots(
        confidence,
        survival(cfg.correct_hist, cfg.window),
        s.slot_budget(),
        # an O-PTP group's first slot yields no draft, so it may hold one slot more than the window
        s.cfg.max_group_slots or cfg.window + 1 - offset,
        offset,
    )
    sizes = [min(b, s.room(s.cache_len + d + offset)) for d, b in enumerate(sizes)]
    call = yield from run_call(s.model, s.cache, [s.context[-1], *pending], sizes, n, s.ustream)
    verdict = verify(call.teacher, pending, s.ustream.take(n, len(pending) + 1), s.sampling)
    a = verdict.accepted
    s.drafts = None
    if sizes[a]:
        context = s.context + verdict.tokens[:-1]  # tokens before the group's anchor n + a
        draft = s.drafter.propose(call.groups[a], n + a, context, s.ustream)
        s.drafts = draft.after(n + a)
    return verdict, 1


STEPS = {"ar": _ar_step, "draft-verify": _draft_verify_step, "pqd": _pqd_step}


PREFILL_CHUNK = 256  # prompt tokens a row caches per step: a long prompt joining a batch stalls it one chunk at a time


def _prefill_step(s: _State) -> Step:
    """Cache the next PREFILL_CHUNK prompt tokens (all but the last, which becomes the pending token);
    True once the whole prompt is cached. A feature-head model keeps the teacher's features of those
    tokens [P - 1, H] for its head."""
    if s.model.is_head and s.head_features is None:
        s.head_features = torch.zeros(0, s.model.teacher.config.hidden_size, device=s.model.device)
    todo = s.context[s.cache.get_seq_length() : -1]
    chunk = todo[:PREFILL_CHUNK]
    if chunk:
        features = yield from prefill_call(s.cache, chunk)
        if s.model.is_head:
            s.head_features = torch.cat([s.head_features, features])
    done = len(chunk) == len(todo)
    if done and s.model.is_head:
        features = s.head_features
        s.head_last = features[-1] if len(features) else features.new_zeros(features.shape[-1])
    return done


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
        raise ValueError("input_ids must be one prompt (1-D or [1, N]) or several (a list of prompts or a "
                         f"[B, N] tensor), got shape {tuple(ids.shape)}")
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


@dataclass
class DecodeRequest:
    """A checked request, ready to join a batch (``prepare``)."""

    prompt: list[int]
    cfg: DecodeConfig
    sampling: SamplingConfig
    seed: int
    drafter: Drafter | None
    stops: StopChecker


def prepare(
    model: PTPModel,
    input_ids: torch.Tensor | list[int],
    cfg: DecodeConfig,
    sampling: SamplingConfig,
    seed: int,
    drafter: Drafter | None = None,
    tokenizer=None,
    eos_token_id: int | list[int] | None = None,
) -> DecodeRequest:
    """Check one request (a clear ValueError for bad input) before any work is done for it."""
    if model.is_head and cfg.method == "pqd":
        raise ValueError("pqd needs a one-network (lora) drafter; a feature-head drafter decodes with draft-verify")
    max_positions = model.max_positions
    prompt = _prompt_list(input_ids, max_positions, model.vocab_size)
    stops = StopChecker(
        cfg.max_new_tokens, _eos_ids(model, eos_token_id), cfg.stop_strings, tokenizer,
        max_total=max_positions - len(prompt) + 1,
    )
    return DecodeRequest(prompt, cfg, sampling, seed, drafter, stops)


def decode_many(model: PTPModel, requests: list[DecodeRequest], max_batch: int = 0) -> Iterator[Chunk]:
    """Decode checked requests together, at most ``max_batch`` rows at once (0: all); a waiting request
    joins as soon as a row finishes. Each chunk names its request (its index in ``requests``); each
    request's first chunk is its prefill."""
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 0:
        raise ValueError(f"max_batch must be an integer >= 0 (0 = every request at once), got {max_batch!r}")
    return _stream(BatchDecoder(model), list(requests), max_batch or len(requests))


def _stream(batch: BatchDecoder, waiting: list[DecodeRequest], max_batch: int) -> Iterator[Chunk]:
    index: dict[int, int] = {}  # batch row id -> position in the caller's list
    admitted = 0
    while True:
        while admitted < len(waiting) and len(batch) < max_batch:
            index[batch.add(waiting[admitted])] = admitted
            admitted += 1
        if not batch:
            return
        for chunk in batch.step():
            yield replace(chunk, request=index[chunk.request])


@dataclass
class _Row:
    state: _State
    stops: StopChecker
    prefilled: bool = False
    prefill_seconds: float = 0.0


class BatchDecoder:
    """Decode several requests together: each ``step`` advances every row by one decoding step.

    Rows join (``add``) and leave (when finished, or ``cancel``) between steps, so a server can batch
    continuously. The rows' network calls run padded into shared calls (``batching.execute``) over one
    ``RowCache``; every row keeps its own u-stream, sampling, stop conditions and drafts, so each row
    emits exactly the tokens it would emit alone.
    """

    def __init__(self, model: PTPModel) -> None:
        self.model = model
        self.cache = RowCache()
        self.head_cache = RowCache() if model.is_head else None
        self._rows: dict[int, _Row] = {}
        self._next_id = 0

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, request: DecodeRequest) -> int:
        """Add a checked request (``prepare``) as a new row, prefilled at the next step; returns its id."""
        model = self.model
        state = _State(
            model, request.cfg, request.sampling, request.drafter or PTPDrafter(model, request.sampling.order),
            UStream(request.seed), self.cache.view(self.cache.add_row()), list(request.prompt),
            len(request.prompt), model.max_positions,
            head_cache=self.head_cache.view(self.head_cache.add_row()) if self.head_cache is not None else None,
        )
        key = self._next_id
        self._next_id += 1
        self._rows[key] = _Row(state, request.stops)
        return key

    def cancel(self, request: int) -> None:
        """Drop a row now (its client went away); unknown or finished ids are ignored."""
        row = self._rows.pop(request, None)
        if row is not None:
            self.cache.remove_row(row.state.cache.row)
            if row.state.head_cache is not None:
                self.head_cache.remove_row(row.state.head_cache.row)

    @torch.no_grad()
    def step(self) -> list[Chunk]:
        """One step of every row: a new row's prefill (PREFILL_CHUNK prompt tokens per step; a chunk without
        tokens once the prompt is cached), the others' next tokens.

        Finished rows leave the batch after their last chunk (``stop_reason`` set).
        """
        start = time.perf_counter()
        for row in self._rows.values():
            row.state.batch_rows = len(self._rows)
        steps = {request: (_run_step if row.prefilled else _prefill_step)(row.state)
                 for request, row in self._rows.items()}
        values = _advance_together(self.model, steps)
        seconds = time.perf_counter() - start
        chunks = []
        for request, value in values.items():
            row = self._rows[request]
            if not row.prefilled:
                row.prefill_seconds += seconds
                if value:  # the whole prompt is cached: its (token-less) prefill chunk
                    row.prefilled = True
                    chunks.append(Chunk(tokens=[], accepted=0, forward_calls=0, seconds=row.prefill_seconds,
                                        request=request))
                continue
            verdict, calls = value
            tokens, reason = row.stops.push(verdict.tokens)
            row.state.context += tokens
            crop_cache(row.state.cache, row.state.cache_len)
            chunks.append(Chunk(tokens, verdict.accepted, calls, seconds, reason, request=request))
            if reason is not None:
                self.cancel(request)
        return chunks


def _run_step(state: _State) -> Step:
    return STEPS[state.cfg.method](state)


def _advance_together(model: PTPModel, steps: dict[int, Step]) -> dict[int, object]:
    """Run every row's step generator to its end, executing their pending requests together."""
    values: dict[int, object] = {}
    pending: dict[int, Request] = {}

    def advance(key: int, result: Result | None) -> None:
        try:
            pending[key] = steps[key].send(result)
        except StopIteration as stop:
            pending.pop(key, None)
            values[key] = stop.value

    for key in steps:
        advance(key, None)
    while pending:
        keys = list(pending)
        for key, result in zip(keys, execute(model, [pending[k] for k in keys]), strict=True):
            advance(key, result)
    return values


def collect(chunks: Iterator[Chunk]) -> GenerateOutput:
    """Run a one-request chunk stream to the end and summarise it."""
    return collect_many(chunks, 1)[0]


def collect_many(chunks: Iterator[Chunk], requests: int) -> list[GenerateOutput]:
    """Run a chunk stream of ``requests`` requests to the end; one summary per request."""
    tokens: list[list[int]] = [[] for _ in range(requests)]
    outs = [GenerateOutput(tokens=torch.empty(0, dtype=torch.long), calls=0, teacher_calls=0) for _ in range(requests)]
    seen = [0] * requests
    for chunk in chunks:
        out, i = outs[chunk.request], seen[chunk.request]
        seen[chunk.request] += 1
        if i == 0:
            out.prefill_seconds = chunk.seconds
            continue
        tokens[chunk.request] += chunk.tokens
        out.calls += chunk.forward_calls
        out.teacher_calls += 1
        out.accepted_per_call.append(len(chunk.tokens))
        out.decode_seconds += chunk.seconds
        if i == 1:
            out.first_token_seconds = out.prefill_seconds + chunk.seconds
        if chunk.stop_reason:
            out.stop_reason = chunk.stop_reason
    for out, new in zip(outs, tokens, strict=True):
        out.tokens = torch.tensor(new, dtype=torch.long)
    return outs
