"""The dynamic batcher groups by size or by wait, returns each result to its own caller, isolates failures and
answers everything pending before it closes."""
import asyncio
import threading
import time

import pytest

from latentqa.serving.batching import Batching, DynamicBatcher


class Recorder:
    """A model stand-in: doubles numbers, fails on 'bad', records the batches it saw."""

    def __init__(self, delay: float = 0.0):
        self.batches, self.delay, self.threads = [], delay, set()

    def __call__(self, items):
        self.batches.append(list(items))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if "bad" in items:
            raise RuntimeError("bad item")
        return [item * 2 for item in items]


def run(coroutine):
    return asyncio.run(coroutine)


def test_a_full_batch_goes_at_once_and_each_caller_gets_its_own_result():
    model = Recorder()

    async def main():
        batcher = DynamicBatcher(model, Batching(max_batch_size=4, max_wait_ms=10_000))  # only a full batch can start it
        batcher.start()
        started = time.perf_counter()
        results = await asyncio.gather(*(batcher.submit(i) for i in range(8)))
        await batcher.close()
        return results, time.perf_counter() - started, batcher

    results, seconds, batcher = run(main())
    assert [r.result for r in results] == [i * 2 for i in range(8)]
    assert model.batches == [[0, 1, 2, 3], [4, 5, 6, 7]] and {r.batch_size for r in results} == {4}
    assert seconds < 5  # never waited out the 10 s window
    assert batcher.counters.as_dict() == {"requests": 8, "batches": 2, "failures": 0, "largest_batch": 4,
                                          "mean_batch_size": 4.0}
    assert model.threads and all(name.startswith("latentqa-model") for name in model.threads)


def test_a_partial_batch_goes_after_the_wait():
    model = Recorder()

    async def main():
        batcher = DynamicBatcher(model, Batching(max_batch_size=8, max_wait_ms=50))
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(batcher.submit(2))  # joins the first one's batch
        results = await asyncio.gather(first, second)
        await asyncio.sleep(0.2)
        late = await batcher.submit(3)  # a batch of its own
        await batcher.close()
        return results, late

    (one, two), late = run(main())
    assert model.batches == [[1, 2], [3]]
    assert (one.result, two.result, late.result) == (2, 4, 6)
    assert one.queue_ms >= 40 and late.batch_size == 1


def test_a_failing_query_gets_its_own_error_and_its_batch_mates_their_answers():
    model = Recorder()

    async def main():
        batcher = DynamicBatcher(model, Batching(max_batch_size=3, max_wait_ms=1000))
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(x) for x in (1, "bad", 3)), return_exceptions=True)
        await batcher.close()
        return results, batcher.counters

    (one, bad, three), counters = run(main())
    assert (one.result, three.result) == (2, 6) and one.batch_size == 1
    assert isinstance(bad, RuntimeError) and str(bad) == "bad item"
    assert model.batches == [[1, "bad", 3], [1], ["bad"], [3]] and counters.failures == 1


def test_close_answers_what_is_pending_and_then_refuses():
    model = Recorder(delay=0.05)

    async def main():
        batcher = DynamicBatcher(model, Batching(max_batch_size=2, max_wait_ms=5_000))
        batcher.start()
        waiting = [asyncio.ensure_future(batcher.submit(i)) for i in range(5)]
        await asyncio.sleep(0)
        await batcher.close()  # does not wait out the 5 s window for the fifth
        assert all(w.done() for w in waiting)
        with pytest.raises(RuntimeError, match="shutting down"):
            await batcher.submit(9)
        return [w.result().result for w in waiting]

    assert run(main()) == [0, 2, 4, 6, 8]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        DynamicBatcher(Recorder(), Batching(max_batch_size=0))
