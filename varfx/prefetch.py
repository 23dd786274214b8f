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
