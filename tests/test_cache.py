"""The per-user cache (oomfix/cache.py): atomic, best effort, pruned."""
import os
import time

from oomfix import cache


def test_an_entry_round_trips_and_entries_unused_for_a_month_go(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache.store("a.bin", b"one")
    cache.store("b.bin", b"two")
    old = time.time() - (cache.MAX_AGE_DAYS + 1) * 86400
    os.utime(tmp_path / "oomfix" / "a.bin", (old, old))
    os.utime(tmp_path / "oomfix" / "b.bin", (old, old))
    assert cache.load("b.bin") == b"two"  # read: marked used
    cache.store("c.bin", b"three")
    assert sorted(p.name for p in (tmp_path / "oomfix").iterdir()) == ["b.bin", "c.bin"]
    assert cache.load("a.bin") is None


def test_a_cache_that_cannot_be_written_is_no_error(tmp_path, monkeypatch):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")  # (a read-only home does not stop root, who runs CI here: a file where the folder goes does)
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    cache.store("x.bin", b"data")
    assert cache.load("x.bin") is None
