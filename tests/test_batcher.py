"""Greedy dynamic batching: one batch at a time, each taking everything queued up to the maximum."""
import asyncio

import pytest

from controller.serving.batcher import GreedyBatcher


def test_requests_that_queue_while_a_batch_runs_form_the_next_full_batch():
    sizes: list[int] = []
    running = 0

    async def run(items: list[int]) -> list[int]:
        nonlocal running
        running += 1
        assert running == 1, "two batches at once"
        sizes.append(len(items))
        await asyncio.sleep(0.05)
        running -= 1
        return [x * 10 for x in items]

    async def main() -> list[int]:
        b = GreedyBatcher(run, max_batch=4)
        first = asyncio.ensure_future(b.submit(0))
        await asyncio.sleep(0.01)  # the first batch (alone) is running now
        rest = [asyncio.ensure_future(b.submit(i)) for i in range(1, 10)]
        return await asyncio.gather(first, *rest)

    assert asyncio.run(main()) == [x * 10 for x in range(10)]
    assert sizes == [1, 4, 4, 1]  # Serve's @serve.batch gives [1, 1, 1, ...] here


def test_a_failing_batch_fails_its_requests_and_the_next_batch_runs():
    calls = 0

    async def run(items: list[str]) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("bad batch")
        return items

    async def main() -> None:
        b = GreedyBatcher(run, max_batch=2)
        with pytest.raises(ValueError, match="bad batch"):
            await b.submit("a")
        assert await b.submit("b") == "b"

    asyncio.run(main())
    with pytest.raises(ValueError, match="max_batch"):
        GreedyBatcher(lambda items: items, 0)
