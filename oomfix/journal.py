"""Atomic writes, the write journal, the lock, and undo.

Protocol of one apply (a transaction), chosen so that a SIGKILL at any instant leaves every file entirely old or
entirely new and the journal never claims a write that did not happen:
  1. back up every original (atomically) under .oomfix/backups/<txid>/
  2. journal `begin` with the files and their before/after hashes
  3. per file: atomic replace (temp file in the same directory, fsync, rename), then journal `written`
  4. journal `commit`
Undo takes the newest transaction that was not undone and puts back, from the backups, every file whose bytes
are still what that apply wrote; it refuses, naming the file, if a file changed since.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oomfix.errors import JournalError

STATE_DIR = ".oomfix"
LOCK_WAIT_SECONDS = 30.0


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[Any]:
    """Hold Ctrl-C while files are being replaced; the caller asks `interrupted()` between files. A SIGINT in the
    middle of a rename-and-journal step would otherwise leave a file written but not recorded for the rollback."""
    hit: list[bool] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    previous = signal.signal(signal.SIGINT, lambda *_: hit.append(True))
    try:
        yield lambda: bool(hit)
    finally:
        signal.signal(signal.SIGINT, previous)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str) -> str | None:
    try:
        return sha256(Path(path).read_bytes())
    except FileNotFoundError:
        return None


def _fsync_dir(d: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str, data: bytes) -> None:
    """Replace `path` with `data`: readers see the old bytes or the new ones, never a mix; the mode is kept."""
    target = os.path.realpath(path)
    d = os.path.dirname(target) or "."
    try:
        mode = os.stat(target).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    try:
        fd, tmp = tempfile.mkstemp(prefix=".oomfix-", suffix=".tmp", dir=d)
    except OSError as e:
        raise JournalError(f"{path}: cannot create a temporary file beside it: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            what = "no space left on device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
            raise JournalError(f"{path}: write failed ({what}); the original is intact") from None
        raise
    _fsync_dir(d)


def sweep_temps(paths: Sequence[str], older_than: float = 60.0) -> list[str]:
    """Remove temp files a killed oomfix left beside the files it was replacing (ours by their name).
    Called with the lock held, so no oomfix of this tree is writing one right now."""
    removed = []
    now = time.time()
    for d in sorted({os.path.dirname(os.path.realpath(p)) or "." for p in paths}):
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            if name.startswith(".oomfix-") and name.endswith(".tmp"):
                full = os.path.join(d, name)
                with contextlib.suppress(OSError):
                    if now - os.stat(full).st_mtime > older_than:
                        os.unlink(full)
                        removed.append(full)
    return removed


@dataclass(frozen=True)
class PlannedWrite:
    path: str
    before: bytes
    after: bytes


class Journal:
    def __init__(self, root: str | os.PathLike[str] = ".") -> None:
        self.root = Path(root)
        self.dir = self.root / STATE_DIR
        self.path = self.dir / "journal.jsonl"

    def rel(self, path: str) -> str:
        """How a path is stored: relative to the journal's root, so that a committed journal still names the right
        files in a fresh clone or a moved tree (absolute only for a file outside the root)."""
        a = os.path.abspath(path)
        r = os.path.relpath(a, os.path.abspath(self.root))
        return a if r.startswith("..") else r

    def resolve(self, stored: str) -> str:
        """A stored path back to a usable one (records written before paths were relative are absolute)."""
        return stored if os.path.isabs(stored) else os.path.join(os.path.abspath(self.root), stored)

    def _ensure(self) -> None:
        try:
            (self.dir / "backups").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise JournalError(f"{self.dir}: cannot create the journal directory: {e.strerror}") from None

    @contextlib.contextmanager
    def lock(self, wait: float = LOCK_WAIT_SECONDS) -> Iterator[None]:
        """One writer at a time per tree: a second apply waits for the first, then gives up with a clear error."""
        self._ensure()
        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise JournalError(f"another oomfix is writing in {self.root.resolve()} (lock "
                                           f"{self.dir / 'lock'}); try again when it is done") from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _append(self, rec: dict[str, Any]) -> None:
        line = (json.dumps(rec, sort_keys=True) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write of one line with O_APPEND: lines never interleave
            os.fsync(fd)
        finally:
            os.close(fd)

    def records(self) -> list[dict[str, Any]]:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        out = []
        for line in raw.splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line from a crash: ignore it, it claims nothing
        return out

    def transactions(self) -> list[dict[str, Any]]:
        """begin records, each with the set of files recorded as written and its final status."""
        txs: dict[str, dict[str, Any]] = {}
        order: list[str] = []
        for r in self.records():
            tx = r.get("tx")
            if r.get("event") == "begin":
                txs[tx] = {**r, "written": set(), "status": "incomplete"}
                order.append(tx)
            elif tx in txs:
                if r["event"] == "written":
                    txs[tx]["written"].add(r["file"])
                elif r["event"] in ("commit", "undone"):
                    txs[tx]["status"] = "committed" if r["event"] == "commit" else "undone"
        return [txs[t] for t in order]

    def applied(self, log_sha: str) -> dict[str, Any] | None:
        """The newest transaction of this log that still stands (committed, or cut short by a crash)."""
        for tx in reversed(self.transactions()):
            if tx["status"] in ("committed", "incomplete") and tx.get("log_sha256") == log_sha:
                return tx
        return None

    def write(self, writes: Sequence[PlannedWrite], *, log: str | None, log_sha: str | None, rule: str | None,
              cls: str | None) -> str:
        """Carry out the writes under the protocol above. Call with the lock held."""
        self._ensure()
        sweep_temps([w.path for w in writes])
        for w in writes:
            if file_sha256(w.path) != sha256(w.before):
                raise JournalError(f"{w.path}: changed on disk since it was read; nothing written, run again")
        tx = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
        bdir = self.dir / "backups" / tx
        bdir.mkdir(parents=True)
        files = []
        for i, w in enumerate(writes):
            backup = bdir / f"{i}.orig"
            atomic_write(str(backup), w.before)
            files.append({"file": self.rel(w.path), "before_sha256": sha256(w.before),
                          "after_sha256": sha256(w.after), "backup": str(backup.relative_to(self.root))})
        self._append({"event": "begin", "tx": tx, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                      "log": self.rel(log) if log else log,
                      "log_sha256": log_sha, "rule": rule, "class": cls, "files": files})
        done: list[PlannedWrite] = []
        with _sigint_deferred() as interrupted:
            try:
                for w in writes:
                    if interrupted():
                        break
                    atomic_write(w.path, w.after)
                    done.append(w)
                    self._append({"event": "written", "tx": tx, "file": self.rel(w.path)})
            except BaseException:
                self._rollback(tx, done, "write failed")
                raise
            if interrupted():
                # Ctrl-C half-way: put back what this transaction wrote, so that the tree is all old again.
                # (SIGKILL cannot be caught: `oomfix undo` covers it.)
                self._rollback(tx, done, "interrupted")
                raise KeyboardInterrupt
        self._append({"event": "commit", "tx": tx})
        return tx

    def _rollback(self, tx: str, done: Sequence[PlannedWrite], reason: str) -> None:
        for w in reversed(done):
            atomic_write(w.path, w.before)
        self._append({"event": "undone", "tx": tx, "reason": reason})

    def undo(self) -> tuple[str, list[str]]:
        """Restore the newest apply that was not undone. Returns (txid, restored files). Call with the lock held."""
        txs = [t for t in self.transactions() if t["status"] != "undone"]
        if not txs:
            raise JournalError(f"nothing to undo: no apply recorded in {self.path}")
        tx = txs[-1]
        sweep_temps([self.resolve(f["file"]) for f in tx["files"]], older_than=0.0)
        todo = []
        for f in tx["files"]:
            cur = file_sha256(self.resolve(f["file"]))
            if cur == f["before_sha256"]:
                continue  # never written (a crash before its rename), or already restored
            if cur != f["after_sha256"]:
                raise JournalError(f"{f['file']}: changed since oomfix wrote it; not undoing (restore it from "
                                   f"{self.root / f['backup']} by hand if you are sure)")
            todo.append(f)
        restored = []
        for f in todo:
            try:
                data = (self.root / f["backup"]).read_bytes()
            except OSError as e:
                raise JournalError(f"{f['backup']}: backup unreadable: {e.strerror}") from None
            if sha256(data) != f["before_sha256"]:
                raise JournalError(f"{f['backup']}: backup does not match the recorded hash; not undoing")
            atomic_write(self.resolve(f["file"]), data)
            restored.append(self.resolve(f["file"]))
        self._append({"event": "undone", "tx": tx["tx"], "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        return tx["tx"], restored
