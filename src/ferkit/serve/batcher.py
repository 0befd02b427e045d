"""Micro-batching: images from concurrent requests go through the model together.

A single model forward on 32 faces costs far less than 32 forwards on one face
(the per-call overhead of the framework, the detector set-up and Python itself
dominate at batch size 1). The :class:`MicroBatcher` puts every submitted image
on an asyncio queue; one worker task takes the first waiting image, keeps
collecting for at most ``window_ms`` (or until ``max_batch`` images), and runs
the whole group through ``predict_batch`` in a dedicated thread so the event
loop keeps accepting and parsing requests while the model works.

Under light load the window costs at most a few milliseconds of latency; under
heavy load the queue is already full when the model finishes, so batches fill
without waiting and throughput grows with the number of clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("ferkit.serve")


class QueueFullError(RuntimeError):
    """The batcher has more images waiting than it accepts; the caller should retry later."""


@dataclass
class BatchResult:
    """What one submitted image gets back.

    Attributes:
        faces: the recognizer's faces for this image.
        queue_ms: time the image waited before its batch started.
        inference_ms: wall time of the whole batch's ``predict_batch`` call.
        batch_size: number of images in that batch (useful to see batching work).
    """

    faces: list[Any]
    queue_ms: float
    inference_ms: float
    batch_size: int


@dataclass
class _Item:
    image: Any
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class BatcherStats:
    """Counters exposed on ``/healthz`` (images, batches, largest batch seen)."""

    images: int = 0
    batches: int = 0
    largest_batch: int = 0

    @property
    def mean_batch(self) -> float:
        return self.images / self.batches if self.batches else 0.0


class MicroBatcher:
    """Groups images submitted by concurrent coroutines into model batches.

    Args:
        predict_batch: ``fn(images) -> list[list[Face]]``, one list per image, in order
            (``Recognizer.predict_batch``). Called from a worker thread, one call at a time.
        max_batch: most images per call.
        window_ms: how long the worker waits for more images after the first one arrives.
        max_queue: most images waiting; beyond that :meth:`submit` raises
            :class:`QueueFullError` (the service answers 503) instead of letting memory grow.

    The worker is started lazily on the first :meth:`submit` in the running event
    loop (and restarted if the loop changed, as happens with test clients that run
    each request in a fresh loop); call :meth:`close` on shutdown.
    """

    def __init__(
        self,
        predict_batch: Callable[[Sequence[Any]], list[list[Any]]],
        max_batch: int = 64,
        window_ms: float = 5.0,
        max_queue: int | None = None,
    ):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if window_ms < 0:
            raise ValueError("window_ms must be >= 0")
        self.predict_batch = predict_batch
        self.max_batch = int(max_batch)
        self.window_s = float(window_ms) / 1000.0
        self.max_queue = int(max_queue) if max_queue else self.max_batch * 16
        self.stats = BatcherStats()
        # One thread: the model runs one batch at a time (torch parallelises inside
        # the forward); a second thread would only make batches smaller.
        self._executor: ThreadPoolExecutor | None = None
        self._queue: asyncio.Queue[_Item] | None = None
        self._worker: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def pending(self) -> int:
        """Images waiting in the queue (not counting the batch being run)."""
        return self._queue.qsize() if self._queue is not None else 0

    def _ensure_worker(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop and self._worker is not None and not self._worker.done():
            return
        self._loop = loop
        if self._executor is None:
            # Created here, not in __init__, so an app whose lifespan ran (and shut the
            # thread down) can serve again, as test clients and schemathesis do.
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ferkit-model")
        self._queue = asyncio.Queue()
        self._worker = loop.create_task(self._run(self._queue), name="ferkit-microbatcher")

    async def submit(self, image: Any) -> BatchResult:
        """Queue one decoded image and wait for its faces."""
        self._ensure_worker()
        assert self._queue is not None
        if self._queue.qsize() >= self.max_queue:
            raise QueueFullError(f"{self._queue.qsize()} images waiting; try again shortly")
        item = _Item(image, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(item)
        return await item.future

    async def submit_many(
        self, images: Sequence[Any], return_exceptions: bool = False
    ) -> list[BatchResult | BaseException]:
        """Queue several images (one request's batch); they may share model calls with others.

        With ``return_exceptions`` an image the model fails on gets its exception in
        its slot and the others their results; otherwise the first failure is raised.
        """
        return list(await asyncio.gather(*(self.submit(im) for im in images),
                                         return_exceptions=return_exceptions))

    async def _collect(self, queue: asyncio.Queue[_Item]) -> list[_Item]:
        batch = [await queue.get()]
        deadline = time.perf_counter() + self.window_s
        while len(batch) < self.max_batch:
            # Take whatever is already waiting without yielding to the timer.
            try:
                batch.append(queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except (asyncio.TimeoutError, TimeoutError):
                break
        return batch

    async def _run(self, queue: asyncio.Queue[_Item]) -> None:
        while True:
            batch = await self._collect(queue)
            # Requests cancelled while waiting (client went away) need no model time.
            batch = [it for it in batch if not it.future.done()]
            if batch:
                await self._call(batch)

    async def _call(self, batch: list[_Item]) -> None:
        """Run one model call and answer its futures; a failure never stops the worker."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(
                self._executor, self.predict_batch, [it.image for it in batch]
            )
            if len(results) != len(batch):
                raise RuntimeError(
                    f"predict_batch returned {len(results)} results for {len(batch)} images"
                )
        except asyncio.CancelledError:
            for it in batch:
                if not it.future.done():
                    it.future.cancel()
            raise
        except Exception as e:  # noqa: BLE001 - answered per image, the worker carries on
            if len(batch) > 1:
                # One bad image must not fail the others (other requests' images among
                # them): run each alone, so only an image that fails by itself gets an error.
                log.warning("model batch of %d images failed (%s); running them one by one",
                            len(batch), type(e).__name__)
                for it in batch:
                    if not it.future.done():
                        await self._call([it])
                return
            log.warning("model call failed on one image: %s: %s", type(e).__name__, e)
            if not batch[0].future.done():
                batch[0].future.set_exception(e)
            return
        done = time.perf_counter()
        inference_ms = (done - started) * 1000.0
        self.stats.images += len(batch)
        self.stats.batches += 1
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        for it, faces in zip(batch, results):
            if not it.future.done():
                it.future.set_result(
                    BatchResult(
                        faces=list(faces),
                        queue_ms=(started - it.enqueued) * 1000.0,
                        inference_ms=inference_ms,
                        batch_size=len(batch),
                    )
                )

    async def close(self) -> None:
        """Stop the worker; images still queued get a cancelled future."""
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._queue is not None:
            while not self._queue.empty():
                it = self._queue.get_nowait()
                if not it.future.done():
                    it.future.cancel()
        self._worker = None

    def shutdown(self) -> None:
        """Release the model thread (after :meth:`close`); a later :meth:`submit` makes a new one."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
