"""A node's small persistent state (simulated MIG instances, MPS shares, slice leases) as JSON.

Why one helper: each of these is read and changed by several processes at once (the node
agent, `gpu-node mig` commands, the fake `nvidia-smi` of the tests), and a restarted agent
must find exactly what its predecessor left. Every transaction re-reads the file under an
exclusive `flock`, and a changed document is written to a temporary file and renamed over the
old one, so a reader never sees half a file and a crash never leaves one. Without a path the
state lives in memory (one process, tests, one-off commands).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

from mig.errors import MigError

T = TypeVar("T")


class StateFile(Generic[T]):
    """Transactions over one versioned JSON document decoded into a `T`.

    `decode(doc)` builds the state from the stored document (`{}` when the file does not exist
    yet) and `encode(state)` turns it back into one; `what` names the state in error messages.
    Transactions are re-entrant within a process, so an operation built from smaller ones runs
    as one transaction, and nothing is written when it fails part-way.
    """

    def __init__(self, path: Path | str | None, *, version: int, what: str,
                 decode: Callable[[dict], T], encode: Callable[[T], dict]) -> None:
        self.path = Path(path) if path else None
        self.version = version
        self.what = what
        self._decode = decode
        self._encode = encode
        self._lock = threading.RLock()
        self._memory: T = decode({})
        self._active: T | None = None

    def _read(self) -> T:
        assert self.path is not None
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return self._decode({})
        except json.JSONDecodeError as exc:
            raise MigError(f"{self.what} file {self.path} is not valid JSON ({exc}); delete it") from None
        if raw.get("version") != self.version:
            raise MigError(f"{self.what} file {self.path} has version {raw.get('version')!r}, "
                           f"expected {self.version}; delete it")
        return self._decode(raw)

    def _write(self, doc: dict) -> None:
        assert self.path is not None
        data = json.dumps({"version": self.version, **doc}, indent=1)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name, suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    @contextlib.contextmanager
    def transaction(self) -> Iterator[T]:
        """The state, fresh from the file under an exclusive lock, written back if it changed."""
        with self._lock:
            if self._active is not None:
                yield self._active
                return
            if self.path is None:
                self._active = self._memory
                try:
                    yield self._memory
                finally:
                    self._active = None
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                state = self._read()
                before = self._encode(state)
                self._active = state
                try:
                    yield state
                finally:
                    self._active = None
                after = self._encode(state)
                if after != before:
                    self._write(after)
