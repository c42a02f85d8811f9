"""The model worker: one thread owns the model and runs one generation at a time.

Requests wait in a bounded queue in front of it; when the queue is full, ``submit`` raises
``QueueFull`` and the caller answers 429. Each teacher call's ``Chunk`` is handed to the request's
asyncio queue as soon as it is verified. Between chunks the worker checks whether the request was
cancelled (its client went away) and then closes the generator, which frees its KV cache.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass

from ptp.decoding import Chunk, generate_stream
from ptp.model import PTPModel
from ptp.serve.metrics import Metrics
from ptp.serve.protocol import GenerationRequest

logger = logging.getLogger(__name__)
STOP_JOIN_SECONDS = 30.0  # how long stop() waits for a running generation to notice it was cancelled


@dataclass(frozen=True)
class Finished:
    """End of a job's events; ``cancelled`` when its client went away before the end."""

    cancelled: bool = False


@dataclass(frozen=True)
class Failed:
    """The generation raised; ``bad_input`` for ValueErrors (the request's fault, a 4xx)."""

    message: str
    bad_input: bool


Event = Chunk | Finished | Failed


class QueueFull(Exception):
    """The bounded request queue has no room."""


class Job:
    """One request's generation: its events flow from the worker thread to the request's event loop."""

    def __init__(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop) -> None:
        self.request = request
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self._loop = loop
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Ask the worker to stop this job at its next chunk boundary (or skip it if still queued)."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def emit(self, event: Event) -> None:
        """Called from the worker thread."""
        try:
            self._loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            self.cancel()


class ModelWorker:
    """A thread that runs queued jobs one at a time with ``ptp.generate_stream``."""

    def __init__(
        self, model: PTPModel, tokenizer, method: str, slot_budget: int | None, queue_size: int, metrics: Metrics
    ) -> None:
        self.model = model
        self.metrics = metrics  # counts every generated token and call, cancelled generations included
        self.tokenizer = tokenizer
        self.method = method
        self.slot_budget = slot_budget
        self._jobs: queue.Queue[Job | None] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._serve_forever, name="ptp-model-worker", daemon=True)
        self.busy = False  # True while a generation runs (read by /metrics)
        self._running: Job | None = None  # the job being generated, cancelled by stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Cancel every queued job and the running one (it stops at its next chunk); join the thread."""
        running = self._running
        if running is not None:
            running.cancel()
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.cancel()
                job.emit(Finished(cancelled=True))
        self._jobs.put(None)
        self._thread.join(STOP_JOIN_SECONDS)

    def submit(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop) -> Job:
        job = Job(request, loop)
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"{self._jobs.maxsize} requests are already waiting") from None
        return job

    def depth(self) -> int:
        """Requests waiting (not counting the one running)."""
        return self._jobs.qsize()

    def _serve_forever(self) -> None:
        while (job := self._jobs.get()) is not None:
            if job.cancelled:
                job.emit(Finished(cancelled=True))
                continue
            self.busy, self._running = True, job
            try:
                job.emit(self._generate(job))
            finally:
                self.busy, self._running = False, None

    def _generate(self, job: Job) -> Finished | Failed:
        """Stream one job's chunks; return its last event. Never raises: one request must not stop the rest."""
        r = job.request
        try:
            stream = generate_stream(
                self.model, list(r.prompt_ids), r.max_tokens, r.sampling, r.seed, self.method,
                slot_budget=self.slot_budget, stop_strings=r.stop, tokenizer=self.tokenizer,
            )
        except ValueError as err:
            return Failed(str(err), bad_input=True)
        self.metrics.observe_prompt(len(r.prompt_ids))
        try:
            for i, chunk in enumerate(stream):
                if i:  # the first chunk is the prefill
                    self.metrics.observe_chunk(len(chunk.tokens), chunk.forward_calls)
                job.emit(chunk)
                if job.cancelled:  # checked between chunks: the client went away
                    return Finished(cancelled=True)
        except Exception as err:  # isolate the failure to this request; the worker keeps serving
            logger.exception("generation failed")
            return Failed(f"generation failed: {type(err).__name__}: {err}", bad_input=False)
        finally:
            stream.close()  # drops the generator's state, KV cache included
        return Finished()
