"""Run a generator ahead of its consumer in a background thread.

The producer (VCF parsing, REF checks, window cutting) is mostly numpy and
cyvcf2 work; the consumer spends its time in the model's forward pass, which
releases the GIL. Items keep their order; an exception in the producer is
raised in the consumer; when the consumer stops early the producer stops too.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator, TypeVar

T = TypeVar("T")
_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetch(items: Iterator[T], depth: int = 4) -> Iterator[T]:
    """Yield ``items`` in order, produced up to ``depth`` ahead in a thread (depth 0: inline)."""
    if depth <= 0:
        yield from items
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(obj) -> bool:
        while not stop.is_set():
            try:
                q.put(obj, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(_Failure(exc))

    thread = threading.Thread(target=work, name="varfx-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            obj = q.get()
            if obj is _DONE:
                break
            if isinstance(obj, _Failure):
                raise obj.exc
            yield obj
    finally:
        stop.set()
        thread.join()


class WorkerInfo:
    """What the worker processes report at the end (records read from the VCF)."""

    def __init__(self):
        self.records_read = 0


def _worker_main(make, w: int, workers: int, q, parent: int) -> None:
    import os

    def put(obj):  # stop when the parent is gone (killed): nobody would read the queue
        while True:
            try:
                q.put(obj, timeout=1.0)
                return
            except queue.Full:
                if os.getppid() != parent:
                    os._exit(1)

    try:
        stream, reader = make(w, workers)
        for item in stream:
            put(item)
        put(("done", reader.records_read))
    except BaseException as exc:  # handed to the consumer, which re-raises it
        try:
            q.put(_Failure(exc))
        except Exception:  # an exception that does not pickle
            q.put(_Failure(RuntimeError(f"{type(exc).__name__}: {exc}")))


def worker_batches(make, workers: int, info: WorkerInfo, depth: int = 2) -> Iterator:
    """Batches built by ``workers`` processes, in block order.

    ``make(w, workers)`` (picklable: a module-level function or a partial of one) runs in process ``w``
    and returns ``(batches, reader)``: a generator of batches (each with a ``block``), in increasing
    block order, for the blocks that worker owns, and the reader whose ``records_read`` it reports.
    The streams are merged by block, so the consumer sees exactly the batches, in exactly the order,
    that one producer would give.  Batches carry uint8 base codes, not one-hot tensors.
    """
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # the parent holds torch threads: no fork
    queues = [ctx.Queue(maxsize=depth) for _ in range(workers)]
    import os

    procs = [ctx.Process(target=_worker_main, args=(make, w, workers, queues[w], os.getpid()), daemon=True,
                         name=f"varfx-worker-{w}") for w in range(workers)]
    for p in procs:
        p.start()
    heads: dict[int, object] = {}
    live = set(range(workers))
    try:
        def fill(w):
            while w not in heads and w in live:
                try:
                    obj = queues[w].get(timeout=1.0)
                except queue.Empty:
                    if not procs[w].is_alive():
                        raise RuntimeError(f"window-building worker {w} died (exit code {procs[w].exitcode})")
                    continue
                if isinstance(obj, _Failure):
                    raise obj.exc
                if isinstance(obj, tuple) and obj and obj[0] == "done":
                    info.records_read = max(info.records_read, obj[1])
                    live.discard(w)
                    return
                heads[w] = obj

        while True:
            for w in list(live):
                fill(w)
            if not heads:
                break
            w = min(heads, key=lambda k: heads[k].block)
            yield heads.pop(w)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=5)
