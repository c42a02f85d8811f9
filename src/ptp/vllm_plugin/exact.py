"""PTP's exact-match sampling for vLLM's rows, as pure functions (no vLLM import).

What the plugin's patched sampler and rejection sampler compute, and the u's the proposer hands the
drafter. Every token of a request is picked by inverse CDF (``ptp.sampling.pick``) with
u_g = ``UStream(seed).take(g, 1)``, g the token's index among the request's generated tokens: a
function of (seed, g) only, so it survives batching, preemption and recomputation, and it is the u
ptp's own decoding uses for that seed. A draft is accepted when it equals the teacher's pick under
its own u (``ptp.sampling.verify``): the output is the teacher's sample whatever the drafts were
(lossless), and a drafter that reads u can be right more often than p(draft).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import torch

from ptp.sampling import SamplingConfig, pick, process, verify
from ptp.ustream import UStream

PLACEHOLDER = -1  # vLLM's PLACEHOLDER_TOKEN_ID: no token at this output position
GREEDY_BELOW = 1e-5  # vLLM treats temperatures under this as greedy


@dataclass(frozen=True)
class RowSampling:
    """What exact sampling needs to know about one request row of a vLLM batch."""

    seed: int  # the u-stream's seed
    prompt_len: int  # the request's prompt tokens
    generated: int  # tokens generated so far: the index g of the next token
    sampling: SamplingConfig


def request_seed(seed: int | None, request_id: str) -> int:
    """The request's own seed, or, without one, a seed derived from its id (the same in every process)."""
    if seed is not None:
        return int(seed)
    return int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "little") >> 1  # < 2**63


def sampling_config(temperature: float, top_k: int | None, top_p: float | None, order: str) -> SamplingConfig:
    """vLLM's sampling parameters as ptp's (top_k <= 0 or None and top_p None mean off; tiny T is greedy)."""
    greedy = temperature < GREEDY_BELOW
    k = int(top_k) if top_k and top_k > 0 else 0
    p = float(top_p) if top_p is not None else 1.0
    return SamplingConfig(0.0 if greedy else float(temperature), 0 if greedy else k, 1.0 if greedy else p, order)


class UStreams:
    """The u-streams of recently seen seeds (least recently used dropped beyond ``capacity``)."""

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._streams: OrderedDict[int, UStream] = OrderedDict()

    def take(self, seed: int, start: int, n: int) -> torch.Tensor:
        """u_start..u_{start+n-1} of ``seed``'s stream, [n] float32."""
        stream = self._streams.pop(seed, None) or UStream(seed)
        self._streams[seed] = stream
        while len(self._streams) > self.capacity:
            self._streams.popitem(last=False)
        return stream.take(start, n)


def sample_rows(logits: torch.Tensor, rows: list[RowSampling], streams: UStreams) -> torch.Tensor:
    """Each row's next token, picked with its own u: logits [R, V] (after vLLM's logits processors) → [R].
    Rows sharing sampling parameters are processed together."""
    if logits.shape[0] != len(rows):
        raise ValueError(f"{logits.shape[0]} logit rows for {len(rows)} requests")
    u = torch.cat([streams.take(row.seed, row.generated, 1) for row in rows]) if rows else torch.empty(0)
    tokens = torch.empty(len(rows), dtype=torch.int64, device=logits.device)
    groups: dict[SamplingConfig, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row.sampling, []).append(i)
    for sampling, members in groups.items():
        index = torch.tensor(members, device=logits.device)
        tokens[index] = pick(u[members].to(logits.device), process(logits[index], sampling), sampling.order)
    return tokens


def verify_rows(
    target_logits: torch.Tensor,  # [sum(m_i), V]: each row's draft positions, rows one after another
    bonus_logits: torch.Tensor,  # [R, V]: each row's position after its last draft
    drafts: list[list[int]],  # [R][m_i]
    rows: list[RowSampling],
    streams: UStreams,
    width: int,  # the output's draft columns (vLLM's max_spec_len)
) -> torch.Tensor:
    """vLLM's rejection-sampler output under exact match: [R, width + 1] int32, each row its accepted drafts
    and the teacher's next pick, then PLACEHOLDER."""
    if not len(drafts) == len(rows) == bonus_logits.shape[0]:
        raise ValueError(f"{len(drafts)} draft lists, {len(rows)} rows, {bonus_logits.shape[0]} bonus logit rows")
    if sum(len(d) for d in drafts) != target_logits.shape[0]:
        raise ValueError(f"{target_logits.shape[0]} target logit rows for {sum(len(d) for d in drafts)} drafts")
    out = torch.full((len(rows), width + 1), PLACEHOLDER, dtype=torch.int32)
    start = 0
    for i, (row, proposed) in enumerate(zip(rows, drafts, strict=True)):
        m = len(proposed)
        logits = torch.cat([target_logits[start : start + m], bonus_logits[i : i + 1]])  # [m + 1, V]
        start += m
        verdict = verify(logits, proposed, streams.take(row.seed, row.generated, m + 1).to(logits.device),
                         row.sampling)
        out[i, : len(verdict.tokens)] = torch.tensor(verdict.tokens, dtype=torch.int32)
    return out.to(target_logits.device)


def draft_u(row: RowSampling, generated: int, k: int, streams: UStreams) -> torch.Tensor:
    """The u's a drafter gets for the request's next k tokens (indices generated..generated+k-1), [k].

    Greedy rows under a most-likely-first CDF order get zeros: u = 0 asks such a drafter for the most
    likely token, which is what greedy decoding keeps (ptp's own decoding does the same).
    """
    if row.sampling.greedy and row.sampling.order != "id":
        return torch.zeros(k)
    return streams.take(row.seed, generated, k)
