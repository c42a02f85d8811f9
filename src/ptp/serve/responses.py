"""OpenAI response bodies (whole or streamed as server-sent events) built from a job's chunks.

A ``Generation`` accumulates one request's verified chunks: the text (through ``TextStream``), the
token count and the call counts for ``usage`` and the ``ptp`` block. ``ptp`` reports the decoding
method, the seed (so a request without one can be replayed), calls (network calls after the
prefill), teacher_calls (calls that verified tokens) and MAT = tokens / teacher_calls.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

from ptp.decoding import Chunk
from ptp.serve.protocol import GenerationRequest
from ptp.serve.text import TextStream

# ptp's stop reasons -> OpenAI's finish_reason ("context": the model's context is full).
FINISH_REASONS = {"eos": "stop", "stop_string": "stop", "length": "length", "context": "length"}
SSE_DONE = "data: [DONE]\n\n"


@dataclass
class Generation:
    """What one request has received so far (mutable; lives in its handler only)."""

    request: GenerationRequest
    text: TextStream
    chat: bool  # chat.completion shapes instead of text_completion
    method: str
    model_name: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))
    tokens: int = 0
    calls: int = 0
    teacher_calls: int = 0
    stop_reason: str | None = None

    def add(self, chunk: Chunk) -> str:
        """Count a verified chunk; return the text delta that may be sent now."""
        self.tokens += len(chunk.tokens)
        self.calls += chunk.forward_calls
        self.teacher_calls += 1
        self.stop_reason = chunk.stop_reason or self.stop_reason
        return self.text.push(chunk.tokens)

    @property
    def finish_reason(self) -> str:
        if self.text.stopped:  # a stop string ended the text (ptp reports "stop_string")
            return "stop"
        return FINISH_REASONS[self.stop_reason or "length"]

    # -- whole responses ----------------------------------------------------------------------
    def body(self) -> dict:
        """The non-streaming response (call after the job finished)."""
        text = self.text.sent + self.text.finish()
        choice = {"index": 0, "finish_reason": self.finish_reason, "logprobs": None}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        return {**self._head(streamed=False), "choices": [choice], "usage": self.usage(), "ptp": self.ptp()}

    def usage(self) -> dict:
        prompt = len(self.request.prompt_ids)
        return {"prompt_tokens": prompt, "completion_tokens": self.tokens, "total_tokens": prompt + self.tokens}

    def ptp(self) -> dict:
        mat = self.tokens / self.teacher_calls if self.teacher_calls else 0.0
        return {"method": self.method, "seed": self.request.seed, "calls": self.calls,
                "teacher_calls": self.teacher_calls, "mat": round(mat, 4)}

    # -- server-sent events -------------------------------------------------------------------
    def sse_start(self) -> str:
        """Chat streams open with the assistant role; completions have no opening event."""
        return self._event({"role": "assistant", "content": ""}) if self.chat else ""

    def sse_delta(self, delta: str) -> str:
        return self._event({"content": delta} if self.chat else delta) if delta else ""

    def sse_end(self) -> str:
        """The rest of the text, the finish reason with usage and ptp, then [DONE]."""
        rest = self.sse_delta(self.text.finish())
        final = self._event({} if self.chat else "", self.finish_reason)
        return rest + final + SSE_DONE

    def _event(self, delta: dict | str, finish_reason: str | None = None) -> str:
        choice = {"index": 0, "finish_reason": finish_reason, "logprobs": None}
        choice["delta" if self.chat else "text"] = delta
        body = {**self._head(streamed=True), "choices": [choice]}
        if finish_reason is not None:
            body |= {"usage": self.usage(), "ptp": self.ptp()}
        return sse(body)

    def _head(self, streamed: bool) -> dict:
        if self.chat:
            kind, prefix = ("chat.completion.chunk" if streamed else "chat.completion"), "chatcmpl-"
        else:
            kind, prefix = "text_completion", "cmpl-"
        return {"id": prefix + self.id, "object": kind, "created": self.created, "model": self.model_name}


def sse(body: dict) -> str:
    """One server-sent event carrying a JSON body."""
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"
