"""Verified tokens -> text deltas, for streaming and non-streaming responses alike.

Byte-level tokenizers can split one character over several tokens, and a stop string can span
calls, so a delta holds back (a) a trailing incomplete character (decoded as U+FFFD) and (b) the
last characters that could still grow into a stop string. The text ends just before the first
stop string, as in the OpenAI API. Non-streaming responses use the same class, so both give the
same text.
"""

from __future__ import annotations

REPLACEMENT = "\ufffd"  # what a tokenizer decodes an incomplete UTF-8 sequence to


class TextStream:
    """Accumulates verified tokens and hands out the text not yet sent."""

    def __init__(self, tokenizer, stop: tuple[str, ...] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self.tokens: list[int] = []
        self.sent = ""  # text already handed out
        self.stopped = False  # a stop string was found; the text ends before it
        self._hold = max((len(s) for s in stop), default=1) - 1  # chars that may start a stop string

    def push(self, tokens: list[int]) -> str:
        """Add a call's tokens; return the new text that is safe to send now (may be "")."""
        self.tokens += tokens
        text, stopped = self._text()
        if not stopped:
            end = len(text) - self._hold
            while end > len(self.sent) and text[end - 1] == REPLACEMENT:
                end -= 1
            text = text[:end]
        return self._advance(text)

    def finish(self) -> str:
        """The rest of the text once generation has ended."""
        text, _ = self._text()
        return self._advance(text)

    def _text(self) -> tuple[str, bool]:
        """The full text so far, cut before the first stop string, and whether one was found."""
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        cuts = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        if cuts:
            self.stopped = True
            return text[: min(cuts)], True
        return text, False

    def _advance(self, text: str) -> str:
        # A byte-level decode of a prefix is a prefix of the full decode, so text extends sent.
        if len(text) <= len(self.sent) or not text.startswith(self.sent):
            return ""
        delta = text[len(self.sent) :]
        self.sent = text
        return delta
