"""Values passed between the decoding pieces.

Terms (used across ptp.decoding):
- pending token: the last verified token; it is not yet in the KV cache.
- draft: an unverified token proposed by the drafter.
- accepted: drafts equal to the teacher's own pick at their position (a leading run).
- bonus / correction: the teacher's pick right after the accepted drafts; every teacher call yields
  accepted + 1 tokens.
- MAT: tokens emitted / teacher calls after the prefill (plain autoregressive decoding = 1.00).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ptp.model import DEFAULT_SLOT_BUDGET, check_batch_budgets
from ptp.sampling import Verdict  # noqa: F401  (re-exported by ptp.decoding)

METHODS = ("ar", "draft-verify", "pqd")


@dataclass(frozen=True)
class DecodeConfig:
    """How to decode; every field has a default that works."""

    method: str = "pqd"  # one of METHODS
    max_new_tokens: int = 128  # stop after this many new tokens
    slot_budget: int = DEFAULT_SLOT_BUDGET  # pqd: u-slots per call, split over the hypothesis groups
    max_group_slots: int = 0  # pqd: most u-slots one group may get; 0 = the model's training window
    draft_len: int = 0  # draft-verify: u-slots per drafter call; 0 = the model's training window
    stop_strings: tuple[str, ...] = ()  # stop once the decoded text contains one (needs a tokenizer)
    # (batch size, budget) pairs: a step over B rows uses the budget of the largest size <= B instead of
    # slot_budget (pqd) or draft_len (draft-verify); 0 = no drafts. Empty: those fields, whatever the batch.
    batch_budgets: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        for name in ("max_new_tokens", "slot_budget"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("max_group_slots", "draft_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0 (0 = the model's window), got {value!r}")
        check_batch_budgets(self.batch_budgets)
        if any(not isinstance(s, str) or not s for s in self.stop_strings):
            raise ValueError(f"stop_strings must be non-empty strings, got {self.stop_strings!r}")


@dataclass(frozen=True)
class Draft:
    """A drafter's predictions for consecutive positions, starting at generated index ``first``."""

    first: int  # generated-token index the first prediction is for
    tokens: torch.Tensor  # [n] long
    confidence: torch.Tensor  # [n] float in [0, 1]: the drafter's belief that each token is right

    def after(self, index: int) -> Draft:
        """The predictions for generated indices > index."""
        skip = max(0, index + 1 - self.first)
        return Draft(self.first + skip, self.tokens[skip:], self.confidence[skip:])


@dataclass(frozen=True)
class Chunk:
    """What one teacher call verified, as soon as it is verified (the streaming unit)."""

    tokens: list[int]  # verified new tokens (after stop truncation)
    accepted: int  # drafts accepted by this call (tokens = accepted + 1 unless truncated)
    forward_calls: int  # network calls this chunk used (draft-verify: 2)
    seconds: float  # wall time of those calls and their bookkeeping
    stop_reason: str | None = None  # "eos" | "length" | "stop_string" | "context" when this ends it
    request: int = 0  # which request of a batch (the order prompts were given in); 0 for a single prompt


@dataclass
class GenerateOutput:
    """Result of ``ptp.generate``: new tokens only, plus how they were obtained."""

    tokens: torch.Tensor  # [N] long, verified new tokens
    calls: int  # network calls after the prefill (draft-verify counts drafter and verifier calls)
    teacher_calls: int  # calls that verified tokens; MAT's denominator
    accepted_per_call: list[int] = field(default_factory=list)  # tokens emitted by each teacher call
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    first_token_seconds: float = 0.0  # prefill + the first teacher call
    stop_reason: str = "length"

    @property
    def mat(self) -> float:
        """Mean accepted tokens per teacher call, bonus included (AR = 1.00)."""
        return len(self.tokens) / self.teacher_calls if self.teacher_calls else 0.0

    @property
    def tokens_per_second(self) -> float:
        total = self.prefill_seconds + self.decode_seconds
        return len(self.tokens) / total if total > 0 else 0.0
