"""Dynamic batching: requests that arrive within max_wait_ms of the oldest waiting one are generated
together, up to max_batch inputs, through the pyfunc's length-sorted batched generation (the same
code evaluate and infer run). One generation runs at a time, in a worker thread, so the event loop
keeps answering /health, /metrics and new requests while the model works; under load the queue
fills while a batch generates and the next batch is taken at once.

The model is read from the slot once per batch: a swap never changes a batch that has started.
If a merged batch fails, each request is generated alone, so one request's failure is its own.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from components.serve.follower import ModelSlot
from components.serve.metrics import ServeMetrics


class Overloaded(RuntimeError):
    """More inputs waiting than serve.max_queue: answered 503 at once."""


class NotReady(RuntimeError):
    """No model loaded yet."""


@dataclass
class Pending:
    texts: list[str]
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)
    abandoned: bool = False  # its caller timed out: skip it if it has not started


@dataclass(frozen=True)
class Answer:
    predictions: list[str]
    version: str


class Batcher:
    def __init__(self, slot: ModelSlot, metrics: ServeMetrics, max_batch: int, max_wait_ms: float, max_queue: int):
        self.slot, self.metrics = slot, metrics
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait_ms / 1000.0, max_queue
        self.queue: deque[Pending] = deque()
        self.queued_inputs = 0
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")

    def submit(self, texts: list[str]) -> Pending:
        if self.slot.current is None:
            raise NotReady("no model loaded yet")
        if self.queue and self.queued_inputs + len(texts) > self.max_queue:
            raise Overloaded(f"{self.queued_inputs} inputs are waiting (serve.max_queue {self.max_queue})")
        pending = Pending(texts, asyncio.get_running_loop().create_future())
        self.queue.append(pending)
        self._count(len(texts))
        self._wake.set()
        return pending

    def abandon(self, pending: Pending) -> None:
        """The caller gave up: drop the request if it is still waiting."""
        pending.abandoned = True
        try:
            self.queue.remove(pending)
        except ValueError:
            return  # already taken into a batch: it finishes, nobody reads it
        self._count(-len(pending.texts))

    def _count(self, delta: int) -> None:
        self.queued_inputs += delta
        self.metrics.queue_inputs.set(self.queued_inputs)

    async def _gather(self) -> list[Pending]:
        """Wait for a first request, then for more until max_batch inputs or max_wait after it arrived."""
        while not self.queue:
            self._wake.clear()
            await self._wake.wait()
        deadline = self.queue[0].arrived + self.max_wait
        while self.queued_inputs < self.max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                break
        batch, size = [], 0
        while self.queue and (not batch or size + len(self.queue[0].texts) <= self.max_batch):
            pending = self.queue.popleft()
            self._count(-len(pending.texts))
            if not pending.abandoned:
                batch.append(pending)
                size += len(pending.texts)
        return batch

    def _generate(self, batch: list[Pending]) -> list[Answer | Exception]:
        model = self.slot.current  # once per batch: a swap takes effect from the next batch
        if model is None:
            return [NotReady("no model loaded") for _ in batch]
        texts = [t for p in batch for t in p.texts]
        self.metrics.batch_inputs.observe(len(texts))
        self.metrics.batch_requests.observe(len(batch))
        started = time.perf_counter()
        try:
            out = model.predict(texts)
            if len(out) != len(texts):
                raise RuntimeError(f"model returned {len(out)} outputs for {len(texts)} inputs")
        except Exception as e:
            if len(batch) == 1:
                return [e]
            return [self._generate([p])[0] for p in batch]  # isolate the failing request
        finally:
            self.metrics.generate_seconds.observe(time.perf_counter() - started)
        answers, i = [], 0
        for p in batch:
            answers.append(Answer(out[i:i + len(p.texts)], model.version))
            i += len(p.texts)
        return answers

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            if not batch:
                continue
            results = await loop.run_in_executor(self._executor, self._generate, batch)
            for pending, result in zip(batch, results):
                if pending.future.done():
                    continue
                if isinstance(result, Exception):
                    pending.future.set_exception(result)
                else:
                    pending.future.set_result(result)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
