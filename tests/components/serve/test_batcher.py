"""The dynamic batcher alone, with a recording model in place of generation: how requests are merged,
how one failing request is kept from failing the others, and when a swapped-in version takes effect."""
import asyncio
import threading

import pytest

from components.serve.batcher import Batcher, Overloaded
from components.serve.follower import ModelSlot
from components.serve.metrics import ServeMetrics
from components.serve.models import LoadedModel


class Recording:
    """Upper-cases its inputs; records each call; fails on 'boom'; can block until released."""

    def __init__(self):
        self.calls: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()

    def predict(self, texts):
        self.gate.wait(10)
        self.calls.append(list(texts))
        if "boom" in texts:
            raise RuntimeError("model failed on 'boom'")
        return [t.upper() for t in texts]


def slot_with(version: str, pyfunc) -> ModelSlot:
    slot = ModelSlot()
    slot.swap(LoadedModel("m", version, "champion", f"models:/m/{version}", pyfunc))
    return slot


async def run_batches(batcher: Batcher, requests: list[list[str]]):
    task = asyncio.create_task(batcher.run())
    pending = [batcher.submit(r) for r in requests]
    results = await asyncio.gather(*(p.future for p in pending), return_exceptions=True)
    task.cancel()
    return results


def test_queued_requests_merge_up_to_max_batch_in_order():
    model = Recording()
    batcher = Batcher(slot_with("1", model), ServeMetrics(), max_batch=4, max_wait_ms=50, max_queue=100)
    results = asyncio.run(run_batches(batcher, [["a"], ["b", "c"], ["d"], ["e", "f"], ["g"]]))
    assert [r.predictions for r in results] == [["A"], ["B", "C"], ["D"], ["E", "F"], ["G"]]
    assert model.calls == [["a", "b", "c", "d"], ["e", "f", "g"]]  # never more than max_batch inputs
    assert {r.version for r in results} == {"1"}


def test_max_batch_1_generates_each_request_alone():
    model = Recording()
    batcher = Batcher(slot_with("1", model), ServeMetrics(), max_batch=1, max_wait_ms=50, max_queue=100)
    asyncio.run(run_batches(batcher, [["a"], ["b", "c"], ["d"]]))
    assert model.calls == [["a"], ["b", "c"], ["d"]]  # a request is never split


def test_a_failing_request_fails_alone():
    model = Recording()
    batcher = Batcher(slot_with("1", model), ServeMetrics(), max_batch=8, max_wait_ms=50, max_queue=100)
    results = asyncio.run(run_batches(batcher, [["a"], ["boom"], ["c"]]))
    assert results[0].predictions == ["A"] and results[2].predictions == ["C"]
    assert isinstance(results[1], RuntimeError) and "boom" in str(results[1])
    assert model.calls[0] == ["a", "boom", "c"] and model.calls[1:] == [["a"], ["boom"], ["c"]]


def test_a_swap_takes_effect_from_the_next_batch():
    old, new = Recording(), Recording()
    slot = slot_with("1", old)
    batcher = Batcher(slot, ServeMetrics(), max_batch=1, max_wait_ms=0, max_queue=100)

    async def scenario():
        task = asyncio.create_task(batcher.run())
        old.gate.clear()  # the first batch is generating when the swap happens
        first = batcher.submit(["a"])
        await asyncio.sleep(0.1)
        second = batcher.submit(["b"])
        slot.swap(LoadedModel("m", "2", "champion", "models:/m/2", new))
        old.gate.set()
        done = await asyncio.gather(first.future, second.future)
        task.cancel()
        return done

    first, second = asyncio.run(scenario())
    assert (first.version, second.version) == ("1", "2")  # in flight on the old, next on the new
    assert old.calls == [["a"]] and new.calls == [["b"]]


def test_the_queue_is_bounded():
    async def scenario():
        batcher = Batcher(slot_with("1", Recording()), ServeMetrics(), max_batch=4, max_wait_ms=10, max_queue=3)
        batcher.submit(["a", "b"])
        with pytest.raises(Overloaded, match="2 inputs are waiting"):
            batcher.submit(["c", "d"])
        batcher.submit(["c"])  # still fits
    asyncio.run(scenario())
