"""The model worker: one thread owns the model and decodes every running request as one batch.

Requests wait in a bounded queue in front of it; when the queue is full, ``submit`` raises
``QueueFull`` and the caller answers 429. Between decoding steps the worker lets waiting requests
join the batch (up to ``max_batch`` rows: continuous batching), drops the rows of requests that were
cancelled (their client went away), and hands each row's ``Chunk`` to its request's asyncio queue as
soon as the step verified it. A finished row leaves the batch at once, freeing its cache row.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import logging
import queue
import threading
from dataclasses import dataclass

from ptp.decoding import BatchDecoder, Chunk, decode_config, prepare
from ptp.model import PTPModel
from ptp.serve.metrics import Metrics
from ptp.serve.protocol import GenerationRequest

logger = logging.getLogger(__name__)
STOP_JOIN_SECONDS = 30.0  # how long stop() waits for the running step to end


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None elsewhere."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def release_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps a batch's freed activations otherwise)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


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
        self.tokens = 0  # generated so far (worker thread only)
        self.teacher_calls = 0

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
    """A thread that decodes the running jobs together (``ptp.decoding.BatchDecoder``)."""

    def __init__(
        self, model: PTPModel, tokenizer, method: str, slot_budget: int | None, queue_size: int, metrics: Metrics,
        max_batch: int = 1,
    ) -> None:
        self.model = model
        self.metrics = metrics  # counts every generated token and call, cancelled generations included
        self.tokenizer = tokenizer
        self.method = method
        self.slot_budget = slot_budget
        self.max_batch = max_batch
        self._jobs: queue.Queue[Job | None] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._serve_forever, name="ptp-model-worker", daemon=True)
        self._running: dict[int, Job] = {}  # batch row id -> job
        self._stopping = threading.Event()

    @property
    def busy(self) -> bool:
        """True while some request is being generated (read by /metrics)."""
        return bool(self._running)

    @property
    def batch_size(self) -> int:
        """Rows in the running batch (read by /metrics)."""
        return len(self._running)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Cancel every queued and running job (running ones end after the current step); join the thread."""
        self._stopping.set()
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
        """Requests waiting (not counting the running batch)."""
        return self._jobs.qsize()

    def _serve_forever(self) -> None:
        batch = BatchDecoder(self.model)
        while not self._stopping.is_set():
            if not self._admit(batch):
                break
            self._drop_cancelled(batch)
            if not batch:
                continue
            try:
                chunks = batch.step()
            except Exception as err:  # a failed call fails the rows in it; the worker keeps serving
                logger.exception("generation failed")
                for key, job in list(self._running.items()):
                    batch.cancel(key)
                    job.emit(Failed(f"generation failed: {type(err).__name__}: {err}", bad_input=False))
                self._running.clear()
                continue
            self.metrics.observe_step(len(chunks))
            for chunk in chunks:
                self._deliver(batch, chunk)
        for key, job in list(self._running.items()):  # shutting down
            batch.cancel(key)
            job.emit(Finished(cancelled=True))
        self._running.clear()

    def _admit(self, batch: BatchDecoder) -> bool:
        """Let waiting jobs join (blocking while the batch is empty); False once stop() was called."""
        while len(self._running) < self.max_batch:
            try:
                job = self._jobs.get(block=not self._running)
            except queue.Empty:
                return True
            if job is None or self._stopping.is_set():
                if job is not None:
                    job.emit(Finished(cancelled=True))
                return False
            if job.cancelled:
                job.emit(Finished(cancelled=True))
                continue
            r = job.request
            try:
                cfg = decode_config(self.model, self.method, r.max_tokens, slot_budget=self.slot_budget,
                                    stop_strings=r.stop)
                request = prepare(self.model, list(r.prompt_ids), cfg, r.sampling, r.seed, tokenizer=self.tokenizer)
            except ValueError as err:
                job.emit(Failed(str(err), bad_input=True))
                continue
            self.metrics.observe_prompt(len(r.prompt_ids))
            self._running[batch.add(request)] = job
        return True

    def _drop_cancelled(self, batch: BatchDecoder) -> None:
        """Rows whose client went away leave the batch before the next call."""
        dropped = False
        for key, job in list(self._running.items()):
            if job.cancelled:
                batch.cancel(key)
                del self._running[key]
                job.emit(Finished(cancelled=True))
                dropped = True
        if dropped and not self._running:
            release_memory()

    def _deliver(self, batch: BatchDecoder, chunk: Chunk) -> None:
        job = self._running[chunk.request]
        if chunk.forward_calls:  # not the prefill
            self.metrics.observe_chunk(len(chunk.tokens), chunk.forward_calls)
            job.tokens += len(chunk.tokens)
            job.teacher_calls += 1
        job.emit(chunk)
        if chunk.stop_reason is not None:
            del self._running[chunk.request]
            if job.teacher_calls:
                self.metrics.observe_request_mat(job.tokens / job.teacher_calls)
            job.emit(Finished())
            if not self._running:  # the batch emptied: its cache rows are gone, return the pages too
                release_memory()
