"""Read logs as streams of bytes and hand out only the lines that can matter.

A multi-GB log is mostly tqdm bars and loss dicts. The reader never decodes or splits those: a prefilter
finds the offsets of marker literals in large binary buffers, and only the lines around those offsets are
cut out, decoded and cleaned. Memory is bounded by the buffer size, whatever the log's size or line length.
"""
from __future__ import annotations

import gzip
import io
import os
import stat
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from oomfix.errors import InputError
from oomfix.patterns import MARKERS

CHUNK = 8 << 20
# a "line" longer than this (a \r-less progress stream, a binary blob) is cut; markers are still found
MAX_CARRY = 1 << 20
CONTEXT = 64 << 10  # bytes kept before each candidate for look-back (tracebacks, progress bars)
MAX_LINE = 16 << 10  # a candidate line is cut to this many bytes around its marker
SNIFF = 64 << 10


@dataclass(frozen=True)
class Candidate:
    line_no: int  # 1-based, counting "\n" as editors do
    offset: int  # byte offset of the line start in the (decompressed) stream
    raw: bytes  # the logical line: between "\r"/"\n" boundaries, at most MAX_LINE bytes
    before: bytes  # up to CONTEXT bytes preceding the line


class Prefilter:
    """Finds marker occurrences in a buffer. The pure-Python engine; see `fastscan` for Hyperscan."""

    name = "python"

    def __init__(self, markers: tuple[bytes, ...] = MARKERS) -> None:
        self.markers = markers

    def find(self, buf: bytes, end: int) -> list[int]:
        hits = []
        for m in self.markers:
            find = buf.find
            i = find(m, 0, end)
            while i != -1:
                hits.append(i)
                i = find(m, i + 1, end)
        return hits


def default_prefilter(markers: tuple[bytes, ...] = MARKERS) -> Prefilter:
    """Hyperscan where its wheel is installed (OOMFIX_ENGINE=python forces the pure-Python engine)."""
    if os.environ.get("OOMFIX_ENGINE", "") != "python":
        try:
            from oomfix.fastscan import HyperscanPrefilter
            return HyperscanPrefilter(markers)
        except ImportError:
            pass
    return Prefilter(markers)


def open_log(path: str) -> tuple[BinaryIO, str]:
    """Open a log (a path, "-" for stdin, gzip detected by its magic bytes). Returns the stream and its name."""
    if path == "-":
        raw: BinaryIO = sys.stdin.buffer
        name = "<stdin>"
    else:
        name = path
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise InputError(f"{path}: no such file") from None
        except OSError as e:
            raise InputError(f"{path}: cannot read: {e.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"{path}: is a directory, not a log")
        try:
            if stat.S_ISFIFO(st.st_mode):
                # a pipe (`<(zcat x.gz)`) is fine; a FIFO nobody writes to must not hang: open without blocking,
                # then read normally (no writer reads as end of file)
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
                os.set_blocking(fd, True)
                raw = os.fdopen(fd, "rb")
            else:
                raw = open(path, "rb")  # noqa: SIM115 - closed by the caller
        except PermissionError:
            raise InputError(f"{path}: permission denied") from None
        except OSError as e:
            raise InputError(f"{path}: cannot read: {e.strerror}") from None
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)  # type: ignore[arg-type]
    try:
        head = buffered.peek(2)[:2]
    except OSError as e:
        raise InputError(f"{name}: cannot read: {e.strerror}") from None
    if head == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=buffered, mode="rb"), name  # type: ignore[return-value]
    return buffered, name


def _looks_binary(sample: bytes) -> bool:
    if not sample:
        return False
    controls = sum(1 for b in sample[:SNIFF] if b < 32 and b not in (9, 10, 12, 13, 27, 8))
    return sample.count(0) > 16 or controls > len(sample[:SNIFF]) // 10


def _read(stream: BinaryIO, n: int, name: str) -> bytes:
    try:
        return stream.read(n)
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise InputError(f"{name}: truncated or corrupt gzip data ({e})") from None
    except OSError as e:
        raise InputError(f"{name}: cannot read: {e.strerror or e}") from None


def scan(stream: BinaryIO, name: str, prefilter: Prefilter | None = None,
         chunk_size: int = CHUNK, stats: dict[str, int] | None = None) -> Iterator[Candidate]:
    """Yield the candidate lines of a log in order; `stats` gets the byte and line counts."""
    prefilter = prefilter or default_prefilter()
    carry = b""
    prev_tail = b""
    base = 0  # stream offset of buf[0]
    line_no = 1
    first = True
    eof = False
    while not eof:
        data = _read(stream, chunk_size, name)
        if first:
            if _looks_binary(data):
                raise InputError(f"{name}: not a text log (binary data)")
            first = False
        eof = not data
        if stats is not None:
            stats["bytes"] = stats.get("bytes", 0) + len(data)
        buf = carry + data if carry else data
        if not buf:
            break
        if eof:
            end = len(buf)
        else:
            end = max(buf.rfind(b"\n"), buf.rfind(b"\r")) + 1
            if end == 0:
                if len(buf) < MAX_CARRY:
                    carry = buf
                    continue
                end = len(buf) - 256  # cut an endless line; the 256 carried bytes catch a split marker
        counted = 0
        seen_starts = set()
        for hit in sorted(prefilter.find(buf, end)):
            start = max(buf.rfind(b"\n", 0, hit), buf.rfind(b"\r", 0, hit)) + 1
            if start in seen_starts:
                continue
            seen_starts.add(start)
            stop_n = buf.find(b"\n", hit, end)
            stop_r = buf.find(b"\r", hit, end)
            stops = [s for s in (stop_n, stop_r) if s != -1]
            stop = min(stops) if stops else end
            line_no += buf.count(b"\n", counted, start)
            counted = start
            lo = start if stop - start <= MAX_LINE else max(start, hit - MAX_LINE // 2)
            hi = min(stop, lo + MAX_LINE)
            before = buf[max(0, start - CONTEXT):start]
            if len(before) < CONTEXT and start < CONTEXT:
                before = prev_tail[len(prev_tail) - (CONTEXT - len(before)):] + before if prev_tail else before
            yield Candidate(line_no, base + start, buf[lo:hi], before)
        line_no += buf.count(b"\n", counted, end)
        prev_tail = buf[max(0, end - CONTEXT):end]
        carry = buf[end:]
        base += end
