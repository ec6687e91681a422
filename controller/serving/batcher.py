"""Greedy dynamic batching, exactly as the planner's queueing model assumes.

When the slice is free and requests wait, take all of them up to the maximum batch size as one
batch and run it; while it runs, new requests queue; when it ends, repeat. One batch at a time,
no waiting to fill a batch (controller/planning/queueing.py models this queue).

Why not Ray Serve's `@serve.batch`: it forms the next batch as soon as the previous one has
*started*, so under load every batch holds one request and the replica never batches — its
capacity is then 1/S(1) instead of B/S(B), far below what the planner sized it for.
Pure asyncio: no Ray, tested directly.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GreedyBatcher(Generic[T, R]):
    """`await submit(item)` returns the item's result from `run(batch)`, batches formed greedily."""

    def __init__(self, run: Callable[[list[T]], Awaitable[Sequence[R]]], max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self._run = run
        self.max_batch = max_batch
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._work())
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._wake.set()
        return await future

    async def _work(self) -> None:
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch:]
            batch = [(item, f) for item, f in batch if not f.cancelled()]
            if not batch:
                continue
            try:
                results = await self._run([item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"batch of {len(batch)} returned {len(results)} results")
                for (_, f), r in zip(batch, results):
                    if not f.done():
                        f.set_result(r)
            except Exception as exc:  # noqa: BLE001 - the batch's requests fail, the batcher lives on
                for _, f in batch:
                    if not f.done():
                        f.set_exception(exc)
