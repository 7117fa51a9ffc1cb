"""The per-user cache, `$XDG_CACHE_HOME/oomfix` (or ~/.cache/oomfix): what takes longer to derive than to diagnose a
small log (the prefilter's tables, Hyperscan's compiled database), keyed by everything it is derived from.

Best effort throughout: a read-only or full home only costs the derivation next time. Entries nobody has read for
MAX_AGE_DAYS go when a new one is written (every code change makes new keys).
"""
from __future__ import annotations

import os
import tempfile
import time

MAX_AGE_DAYS = 30


def _dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "oomfix")


def load(name: str) -> bytes | None:
    """The entry's bytes, or None. Reading it marks it used (its mtime), so that pruning spares it."""
    path = os.path.join(_dir(), name)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:
        os.utime(path)
    except OSError:
        pass
    return data


def store(name: str, data: bytes) -> None:
    """Write an entry atomically (a reader never sees half of it); then drop entries unused for MAX_AGE_DAYS."""
    d = _dir()
    try:
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".new-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, os.path.join(d, name))
        except BaseException:
            os.unlink(tmp)
            raise
        old = time.time() - MAX_AGE_DAYS * 86400
        for entry in os.scandir(d):
            if entry.name != name and entry.is_file() and entry.stat().st_mtime < old:
                os.unlink(entry.path)
    except OSError:
        pass
