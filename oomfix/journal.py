"""Atomic writes, the write journal, the lock, and undo.

Protocol of one apply (a transaction), chosen so that a SIGKILL at any instant leaves every file entirely old or
entirely new and the journal never claims a write that did not happen:
  1. back up every original (atomically) under .oomfix/backups/<txid>/
  2. journal `begin` with the files and their before/after hashes
  3. per file: atomic replace (temp file in the same directory, fsync, rename), then journal `written`
  4. journal `commit`
Undo takes the newest transaction that was not undone and puts back, from the backups, every file whose bytes
are still what that apply wrote; it refuses, naming the file, if a file changed since.

A journal is input like any other: a cloned repository can carry a committed `.oomfix/` written by anyone. So every
path read from it is confined before use (`Journal.confined`): relative, no `..`, resolved through symlinks to a
place inside the project root (and, for a backup, inside `.oomfix/backups/`); `.oomfix` itself must be a real
directory. Records are validated by shape; anything else is a one-line JournalError, never a traceback.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import signal
import stat
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


MAX_JOURNAL_BYTES = 64 << 20  # years of applies; a journal larger than this is not one oomfix wrote
MAX_FILE_BYTES = 64 << 20  # a config or a backup (configs themselves are refused above 8 MB)


def _read_bytes(path: str | os.PathLike[str], limit: int = MAX_FILE_BYTES) -> bytes:
    """A regular file's bytes. A FIFO, a device or a directory in a path read from a journal would block or fail
    deep inside a read: refused by what it is, before reading (opened non-blocking so a FIFO cannot hang)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
        if not stat.S_ISREG(st.st_mode):
            raise JournalError(f"{path}: not a regular file")
        if st.st_size > limit:
            raise JournalError(f"{path}: {st.st_size} bytes is larger than oomfix reads ({limit})")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(limit + 1)
    finally:
        os.close(fd)


def file_sha256(path: str) -> str | None:
    """The SHA-256 of a regular file's bytes, streamed (logs can be hundreds of MB); None when there is no regular
    file there (missing, a directory, a FIFO: opened non-blocking, so a FIFO cannot hang it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        if e.errno == errno.EISDIR:
            return None
        raise JournalError(f"{path}: cannot read: {e.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        h = hashlib.sha256()
        with os.fdopen(os.dup(fd), "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    except OSError as e:
        raise JournalError(f"{path}: cannot read: {e.strerror}") from None
    finally:
        os.close(fd)


def _fsync_dir(d: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str, data: bytes, expect: bytes | None = None, expect_sha: str | None = None) -> None:
    """Replace `path` with `data`: readers see the old bytes or the new ones, never a mix; the mode is kept.
    `expect`: the bytes the file must still hold at the moment of the rename. The check runs after the temp file's
    fsync (the slow part), so a line someone appends meanwhile is not silently replaced; the window left is the
    few microseconds between that read and the rename. `expect_sha`: the same, given as the SHA-256 of those bytes."""
    if expect is not None:
        expect_sha = sha256(expect)
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
        if expect_sha is not None and file_sha256(target) != expect_sha:
            raise JournalError(f"{path}: changed on disk while oomfix was writing it; nothing of it was replaced, "
                               f"run again")
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


_EVENTS = ("begin", "written", "commit", "undone")


def _record_problem(rec: Any) -> str | None:
    """What is wrong with one journal record's shape, or None. Paths are checked later, where they are used."""
    if not isinstance(rec, dict):
        return f"a record must be a JSON object, not {type(rec).__name__}"
    ev = rec.get("event")
    if ev not in _EVENTS:
        return f"unknown event {ev!r}"
    if not isinstance(rec.get("tx"), str) or not rec["tx"]:
        return "'tx' must be a non-empty string"
    if ev == "written" and not isinstance(rec.get("file"), str):
        return "'file' must be a string"
    if ev == "begin":
        files = rec.get("files")
        if not isinstance(files, list):
            return "'files' must be a list"
        for f in files:
            if not isinstance(f, dict):
                return "each of 'files' must be an object"
            if not isinstance(f.get("file"), str) or not isinstance(f.get("backup"), str):
                return "each of 'files' needs 'file' and 'backup' paths"
            if not _is_sha(f.get("before_sha256")) or not _is_sha(f.get("after_sha256")):
                return "each of 'files' needs 'before_sha256' and 'after_sha256' (hex SHA-256)"
        if rec.get("log_sha256") is not None and not isinstance(rec["log_sha256"], str):
            return "'log_sha256' must be a string"
    return None


@dataclass(frozen=True)
class PlannedWrite:
    path: str
    before: bytes
    after: bytes


_SHA = frozenset("0123456789abcdef")


def _is_sha(v: Any) -> bool:
    return isinstance(v, str) and len(v) == 64 and set(v) <= _SHA


def _within(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip(os.sep) + os.sep)


class Journal:
    def __init__(self, root: str | os.PathLike[str] = ".") -> None:
        self.root = Path(root)
        self.dir = self.root / STATE_DIR
        self.path = self.dir / "journal.jsonl"

    def _check_state(self) -> None:
        """`.oomfix` must be a real directory of this project (a symlink could point the journal, the backups and
        the undo anywhere), and the journal a regular file."""
        if self.dir.is_symlink():
            raise JournalError(f"{self.dir}: is a symbolic link; oomfix keeps its journal and backups only in a real "
                               f"directory inside the project (remove the link)")
        if self.dir.exists() and not self.dir.is_dir():
            raise JournalError(f"{self.dir}: exists and is not a directory; move it aside (oomfix keeps its journal "
                               f"there)")
        for p in (self.path, self.dir / "backups", self.dir / "lock"):
            if p.is_symlink():
                raise JournalError(f"{p}: is a symbolic link; oomfix writes its state only inside {self.dir} "
                                   f"(remove the link)")
        if self.path.exists() and not self.path.is_file():
            raise JournalError(f"{self.path}: is not a regular file; move it aside")

    def confined(self, stored: Any, what: str = "file", under: str | None = None) -> str:
        """A path read from the journal, as an absolute path that is safe to read or write: refused (JournalError)
        unless it is relative, has no `..`, and resolves (symlinks followed) inside the project root, not onto the
        root itself nor into `.oomfix` (or, with `under`, inside that directory of the root)."""
        bad = None
        if not isinstance(stored, str) or not stored.strip():
            bad = "not a path"
        elif "\x00" in stored or "\\" in stored:
            bad = "not a plain path"
        elif os.path.isabs(stored):
            bad = "an absolute path"
        elif ".." in stored.split("/"):
            bad = "a path with '..'"
        if bad is None:
            root = os.path.realpath(self.root)
            real = os.path.realpath(os.path.join(root, stored))
            base = os.path.realpath(os.path.join(root, under)) if under else root
            state = os.path.join(root, STATE_DIR)
            if under and not _within(base, os.path.join(root, under)):
                bad = f"under {under}, which is a symbolic link"
            elif not _within(real, base) or real == base:
                bad = f"outside {under or 'the project'} once symlinks are resolved ({real})"
            elif not under and _within(real, state):
                bad = f"inside {STATE_DIR}"
            else:
                return real
        raise JournalError(f"{self.path}: the {what} path {stored!r} is {bad}; oomfix only restores files inside "
                           f"{os.path.realpath(self.root)} from backups in {STATE_DIR}/backups (restore it by hand "
                           f"if you trust it)")

    def rel(self, path: str) -> str:
        """How a path is stored: relative to the journal's root, so that a committed journal still names the right
        files in a fresh clone or a moved tree (absolute only for a file outside the root)."""
        a = os.path.abspath(path)
        r = os.path.relpath(a, os.path.abspath(self.root))
        return a if r.startswith("..") else r

    def resolve(self, stored: str) -> str:
        """A stored path back to a usable one, for display and comparison only (never to write: see `confined`)."""
        return stored if os.path.isabs(stored) else os.path.join(os.path.abspath(self.root), stored)

    def _ensure(self) -> None:
        self._check_state()
        try:
            (self.dir / "backups").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise JournalError(f"{self.dir}: cannot create the journal directory: {e.strerror}") from None

    @contextlib.contextmanager
    def lock(self, wait: float = LOCK_WAIT_SECONDS) -> Iterator[None]:
        """One writer at a time per tree: a second apply waits for the first, then gives up with a clear error."""
        self._ensure()
        try:
            fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            raise JournalError(f"{self.dir / 'lock'}: cannot open the lock file: {e.strerror}") from None
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
        self._check_state()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            raise JournalError(f"{self.path}: cannot write the journal: {e.strerror}") from None
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # a torn last line from a crash stays a line of its own
            os.write(fd, line)  # one write of one line with O_APPEND: lines never interleave
            os.fsync(fd)
        finally:
            os.close(fd)

    def records(self) -> list[dict[str, Any]]:
        """The journal's records, validated by shape. A torn last line (a crash mid-write) claims nothing and is
        ignored; any other line that is not a record is a damaged journal: JournalError."""
        self._check_state()
        try:
            raw = _read_bytes(self.path, MAX_JOURNAL_BYTES)
        except FileNotFoundError:
            return []
        except OSError as e:
            raise JournalError(f"{self.path}: cannot read the journal: {e.strerror}") from None
        lines = raw.split(b"\n")
        out = []
        for n, bline in enumerate(lines, 1):
            if not bline.strip():
                continue
            torn = n == len(lines)  # no newline after it: cut short by a crash
            try:
                rec = json.loads(bline.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError) as e:
                if torn:
                    continue
                why = "not UTF-8" if isinstance(e, UnicodeDecodeError) else "not a JSON record"
                raise JournalError(f"{self.path}: line {n} is {why}; the journal is damaged (move it aside, after "
                                   f"restoring by hand what it recorded)") from None
            problem = _record_problem(rec)
            if problem:
                raise JournalError(f"{self.path}: line {n}: {problem}; the journal is damaged (move it aside, after "
                                   f"restoring by hand what it recorded)")
            out.append(rec)
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
                    atomic_write(w.path, w.after, expect=w.before)
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
            atomic_write(w.path, w.before)  # immediately after writing it: milliseconds
        self._append({"event": "undone", "tx": tx, "reason": reason})

    def undo(self) -> tuple[str, list[str]]:
        """Restore the newest apply that was not undone. Returns (txid, restored files). Call with the lock held."""
        txs = [t for t in self.transactions() if t["status"] != "undone"]
        if not txs:
            raise JournalError(f"nothing to undo: no apply recorded in {self.path}")
        tx = txs[-1]
        # every path is confined before anything is touched, temp files swept included
        targets = [(f, self.confined(f["file"], "file"), self.confined(f["backup"], "backup", f"{STATE_DIR}/backups"))
                   for f in tx["files"]]
        sweep_temps([t for _, t, _ in targets], older_than=0.0)
        todo = []
        for f, target, backup in targets:
            cur = file_sha256(target)
            if cur == f["before_sha256"]:
                continue  # never written (a crash before its rename), or already restored
            if cur != f["after_sha256"]:
                raise JournalError(f"{f['file']}: changed since oomfix wrote it; not undoing (restore it from "
                                   f"{backup} by hand if you are sure)")
            todo.append((f, target, backup))
        restored = []
        datas = []
        for f, target, backup in todo:  # every backup read and verified before the first file is replaced
            try:
                data = _read_bytes(backup)
            except OSError as e:
                raise JournalError(f"{f['backup']}: backup unreadable: {e.strerror}") from None
            if sha256(data) != f["before_sha256"]:
                raise JournalError(f"{f['backup']}: backup does not match the recorded hash; not undoing")
            datas.append(data)
        for (f, target, _), data in zip(todo, datas):
            atomic_write(target, data, expect_sha=f["after_sha256"])
            restored.append(self.resolve(f["file"]))
        self._append({"event": "undone", "tx": tx["tx"], "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        return tx["tx"], restored
