"""Fault injection at the Chroma client boundary: a client wrapper whose collections fail on
the n-th write. ChromaStore takes its client through its constructor, so nothing is patched."""

from __future__ import annotations

import errno
import threading

WRITES = ("add", "upsert", "update", "delete")


class InjectedFault(RuntimeError):
    """The error a write raises when it is the one chosen to fail."""


class FaultPlan:
    """Counts writes across all collections; write number `fail_at` (1-based) fails, and with
    `sticky` every write after it too (a server that stays down, a disk that stays full)."""

    def __init__(self, fail_at: int | None = None, *, sticky: bool = False,
                 error: BaseException | None = None):
        self.fail_at = fail_at
        self.sticky = sticky
        self.error = error
        self.writes = 0
        self.failed = 0
        self._lock = threading.Lock()

    def check(self, what: str) -> None:
        with self._lock:
            self.writes += 1
            n = self.writes
            if self.fail_at is None:
                return
            if n == self.fail_at or (self.sticky and n > self.fail_at):
                self.failed += 1
                raise self.error or InjectedFault(f"injected failure on write {n} ({what})")


def disk_full() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


def connection_refused() -> ConnectionError:
    return ConnectionRefusedError(111, "Connection refused")


class FaultyCollection:
    def __init__(self, inner, plan: FaultPlan):
        self._inner = inner
        self._plan = plan

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if name in WRITES:
            def write(*args, **kwargs):
                self._plan.check(f"{self._inner.name}.{name}")
                return attr(*args, **kwargs)
            return write
        return attr


class FaultyClient:
    """Wraps a chromadb client; collection handles it returns share one FaultPlan."""

    def __init__(self, inner, plan: FaultPlan):
        self._inner = inner
        self.plan = plan

    def _wrap(self, col):
        return FaultyCollection(col, self.plan)

    def get_or_create_collection(self, *a, **kw):
        return self._wrap(self._inner.get_or_create_collection(*a, **kw))

    def get_collection(self, *a, **kw):
        return self._wrap(self._inner.get_collection(*a, **kw))

    def create_collection(self, *a, **kw):
        self.plan.check("create_collection")
        return self._wrap(self._inner.create_collection(*a, **kw))

    def delete_collection(self, *a, **kw):
        self.plan.check("delete_collection")
        return self._inner.delete_collection(*a, **kw)

    def __getattr__(self, name):
        return getattr(self._inner, name)
