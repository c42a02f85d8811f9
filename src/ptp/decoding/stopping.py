"""When to stop: EOS, the token limit, stop strings and the model's context length."""

from __future__ import annotations

from collections.abc import Sequence


class StopChecker:
    """Truncates each call's verified tokens at the first stop condition and says which one fired."""

    def __init__(
        self,
        max_new_tokens: int,
        eos_ids: Sequence[int],
        stop_strings: Sequence[str] = (),
        tokenizer=None,
        max_total: int | None = None,  # no more tokens than this may be generated (context room)
    ) -> None:
        if stop_strings and tokenizer is None:
            raise ValueError("stop_strings need a tokenizer to decode the generated text")
        self.limit = max_new_tokens if max_total is None else min(max_new_tokens, max_total)
        self.limit_reason = "length" if max_total is None or max_new_tokens <= max_total else "context"
        self.eos_ids = frozenset(eos_ids)
        self.stop_strings = tuple(stop_strings)
        self.tokenizer = tokenizer
        self.generated: list[int] = []
        # Decode only a tail long enough to contain the longest stop string (bytes may split tokens).
        self._tail = max((len(s) for s in self.stop_strings), default=0) + 8

    def push(self, tokens: list[int]) -> tuple[list[int], str | None]:
        """Accept verified tokens; return the ones to emit and the stop reason (None = go on)."""
        kept: list[int] = []
        for token in tokens:
            kept.append(token)
            self.generated.append(token)
            if token in self.eos_ids:
                return kept, "eos"
            if self.stop_strings and self._hit_stop_string():
                return kept, "stop_string"
            if len(self.generated) >= self.limit:
                return kept, self.limit_reason
        return kept, None

    def _hit_stop_string(self) -> bool:
        # Checked after every token, so the first hit is the token that completes the string.
        tail = self.tokenizer.decode(self.generated[-self._tail :])
        return any(s in tail for s in self.stop_strings)
