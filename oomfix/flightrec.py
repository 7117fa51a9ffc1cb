"""PyTorch's Flight Recorder: the environment that turns it on for a relaunch after an NCCL timeout, and a reader of
its dumps that says which ranks did not enter which collective.

The names and the dump format are torch's (2.13: torch/csrc/distributed/c10d/FlightRecorder.hpp,
ProcessGroupNCCL.hpp, torch/distributed/flight_recorder/components/loader.py):
- `TORCH_NCCL_TRACE_BUFFER_SIZE` (newer alias `TORCH_FR_BUFFER_SIZE`): entries kept per process; 0 turns the recorder
  off (the default before torch 2.7, 2000 since).
- `TORCH_NCCL_DUMP_ON_TIMEOUT=1`: ProcessGroupNCCL's watchdog writes the dump when a collective times out.
- `TORCH_NCCL_DEBUG_INFO_TEMP_FILE` (alias `TORCH_FR_DUMP_TEMP_FILE`): the dump's path prefix; rank R writes
  PREFIX + str(R) (default /tmp/nccl_trace_rank_).
A dump is one pickle of plain containers: {"version", "pg_config", "pg_status", "entries": [{"record_id", "pg_id",
"process_group": (name, desc), "collective_seq_id", "p2p_seq_id", "op_id", "profiling_name" ("nccl:all_reduce"),
"time_created_ns", "input_sizes", "output_sizes", "state" (scheduled | started | completed), "retired", "timeout_ms",
"is_p2p", "frames": [{"name", "filename", "line"}]}, ...]}. gloo records into the same recorder (torch 2.13), which
is how the tests get genuine dumps on a CPU machine.

A dump is read with a restricted unpickler: plain containers, numbers, strings, bytes, booleans and None only. Any
pickle that names a class or a function (which is how a pickle runs code) is refused, and so is anything over
MAX_DUMP_BYTES.
"""
from __future__ import annotations

import io
import os
import pickle
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oomfix.errors import InputError

BUFFER_ENV = "TORCH_NCCL_TRACE_BUFFER_SIZE"
DUMP_ENV = "TORCH_NCCL_DUMP_ON_TIMEOUT"
PREFIX_ENV = "TORCH_NCCL_DEBUG_INFO_TEMP_FILE"
ENV_NAMES = (BUFFER_ENV, DUMP_ENV, PREFIX_ENV)
DEFAULT_PREFIX = "/tmp/nccl_trace_rank_"  # ProcessGroupNCCL's default for TORCH_NCCL_DEBUG_INFO_TEMP_FILE
BUFFER_ENTRIES = "2000"  # torch's own default since the recorder went on by default
MAX_DUMP_BYTES = 64 << 20
_RANK_SUFFIX = re.compile(r"(\d+)$")


def prefix_for(log: str) -> str:
    """Where an attempt's dumps go: a directory beside its log, `logs/run-attempt2.fr/nccl_trace_rank_R`."""
    p = Path(log)
    return str(p.with_name(p.stem + ".fr") / "nccl_trace_rank_")


def relaunch_env(log: str) -> dict[str, str]:
    """The environment that turns the recorder on and dumps on a timeout, for the attempt logging to `log`."""
    return {BUFFER_ENV: BUFFER_ENTRIES, DUMP_ENV: "1", PREFIX_ENV: os.path.abspath(prefix_for(log))}


class RefusedPickle(InputError):
    """A dump that is not plain data."""


class _PlainUnpickler(pickle.Unpickler):
    # find_class is the only way a pickle reaches a class or a function (and so runs code); plain containers,
    # numbers, strings and bytes never need it
    def find_class(self, module: str, name: str) -> Any:
        raise RefusedPickle(f"the dump names {module}.{name}: not plain data; refusing to load it")

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedPickle("the dump uses persistent ids: not plain data; refusing to load it")


def load_dump(path: str) -> dict[str, Any]:
    """One dump, loaded with the restricted unpickler."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_DUMP_BYTES + 1)
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None
    if len(data) > MAX_DUMP_BYTES:
        raise InputError(f"{path}: over {MAX_DUMP_BYTES >> 20} MiB; not a Flight Recorder dump")
    try:
        obj = _PlainUnpickler(io.BytesIO(data)).load()
    except RefusedPickle as e:
        raise RefusedPickle(f"{path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            MemoryError, RecursionError, UnicodeDecodeError, OverflowError) as e:
        raise InputError(f"{path}: not a readable Flight Recorder dump ({type(e).__name__})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("entries"), list):
        raise InputError(f"{path}: not a Flight Recorder dump (no entries list)")
    return obj


def find_dumps(log: str | None = None, prefix: str | None = None) -> dict[int, str]:
    """rank -> dump path: PREFIX<rank> files for the prefix given, else beside the log (prefix_for)."""
    prefixes = [p for p in (prefix, prefix_for(log) if log else None) if p]
    for pre in prefixes:
        d, base = (pre, "") if os.path.isdir(pre) else os.path.split(pre)
        try:
            names = os.listdir(d or ".")
        except OSError:
            continue
        found = {}
        for name in names:
            if not name.startswith(base):
                continue
            rest = name[len(base):]
            # PREFIX<rank> exactly; in a directory given as such, any name ending in the rank
            m = re.fullmatch(r"\d+", rest) if base else _RANK_SUFFIX.search(rest)
            if m and os.path.isfile(os.path.join(d, name)):
                found[int(m.group(0) if base else m.group(1))] = os.path.join(d, name)
        if found:
            return dict(sorted(found.items()))
    return {}


@dataclass(frozen=True)
class Missed:
    """On process group `pg`, collective number `seq` (`op`) that `entered` ranks entered and `missing` did not."""

    pg: str
    seq: int
    op: str
    entered: tuple[int, ...]
    missing: tuple[int, ...]
    last_seq: Mapping[int, int] = field(default_factory=dict)  # each missing rank's last collective there


@dataclass(frozen=True)
class Mismatch:
    """On process group `pg`, collective number `seq` is a different collective on different ranks (a desync)."""

    pg: str
    seq: int
    ops: Mapping[int, str]  # rank -> the collective it entered as that number


@dataclass(frozen=True)
class Analysis:
    """What the dumps of one timeout say: the collectives some ranks did not enter, and the desyncs."""

    ranks: tuple[int, ...]  # the ranks with a dump
    unreadable: tuple[str, ...]  # "path: why"
    missed: tuple[Missed, ...]
    mismatches: tuple[Mismatch, ...]
    no_dump: tuple[int, ...] = ()  # ranks the pg_config names that left no dump

    def to_json(self) -> dict[str, Any]:
        """The stable JSON form (`diagnose --format json`'s `flight_recorder`)."""
        return {"ranks": list(self.ranks), "no_dump": list(self.no_dump), "unreadable": list(self.unreadable),
                "missed": [{"process_group": m.pg, "seq": m.seq, "collective": m.op, "entered": list(m.entered),
                            "missing": list(m.missing), "last_seq": {str(k): v for k, v in m.last_seq.items()}}
                           for m in self.missed],
                "mismatches": [{"process_group": m.pg, "seq": m.seq, "collectives": {str(k): v
                                                                                      for k, v in m.ops.items()}}
                               for m in self.mismatches]}


def _pg_name(e: Mapping[str, Any]) -> str:
    pg = e.get("process_group")
    if isinstance(pg, (tuple, list)) and pg:
        desc = str(pg[1]) if len(pg) > 1 and pg[1] else ""
        return f"{pg[0]}" + (f" ({desc})" if desc else "")
    return str(e.get("pg_id", "?"))


def _world(dumps: Mapping[int, Mapping[str, Any]]) -> set[int]:
    ranks: set[int] = set()
    for d in dumps.values():
        cfg = d.get("pg_config")
        if isinstance(cfg, dict):
            for pg in cfg.values():
                rs = pg.get("ranks") if isinstance(pg, dict) else None
                if isinstance(rs, str):
                    ranks |= {int(x) for x in re.findall(r"\d+", rs)}
                elif isinstance(rs, (list, tuple)):
                    ranks |= {x for x in rs if isinstance(x, int)}
    return ranks


def analyze(paths: Mapping[int, str]) -> Analysis:
    """Which ranks did not enter which collective: per process group, the highest collective sequence number any
    rank entered, and the ranks whose last entry is below it; a sequence number entered as different collectives
    on different ranks is a desync."""
    dumps: dict[int, dict[str, Any]] = {}
    bad = []
    for rank, path in paths.items():
        try:
            dumps[rank] = load_dump(path)
        except InputError as e:
            bad.append(str(e))
    # pg -> rank -> seq -> op
    seen: dict[str, dict[int, dict[int, str]]] = {}
    for rank, d in dumps.items():
        for entry in d["entries"]:
            if not isinstance(entry, dict) or entry.get("is_p2p"):
                continue
            seq = entry.get("collective_seq_id")
            if not isinstance(seq, int) or isinstance(seq, bool) or seq <= 0:
                continue
            seen.setdefault(_pg_name(entry), {}).setdefault(rank, {})[seq] = str(entry.get("profiling_name") or "?")
    missed: list[Missed] = []
    mismatches: list[Mismatch] = []
    for pg, by_rank in sorted(seen.items()):
        ranks = sorted(dumps)  # a rank with a dump but no entry on this pg entered nothing there
        top = max(max(s) for s in by_rank.values())
        last = {r: max(by_rank.get(r, {0: ""})) for r in ranks}
        entered = tuple(r for r in ranks if last[r] >= top)
        missing = tuple(r for r in ranks if last[r] < top)
        if missing:
            op = next(by_rank[r][top] for r in entered)
            missed.append(Missed(pg, top, op, entered, missing, {r: last[r] for r in missing}))
        common = set.intersection(*(set(s) for s in by_rank.values())) if by_rank else set()
        for seq in sorted(common):
            ops = {r: by_rank[r][seq] for r in sorted(by_rank)}
            if len(set(ops.values())) > 1:
                mismatches.append(Mismatch(pg, seq, ops))
                break  # the first desync; everything after it is a consequence
    world = _world(dumps)
    return Analysis(tuple(sorted(dumps)), tuple(bad), tuple(missed), tuple(mismatches),
                    tuple(sorted(world - set(dumps))))


def render_text(a: Analysis) -> str:
    """The analysis as lines of text: which rank did not enter which collective."""
    lines = [f"Flight Recorder: dumps from rank{'s' if len(a.ranks) != 1 else ''} "
             f"{', '.join(map(str, a.ranks)) or 'none'}"]
    for m in a.missed:
        lines.append(f"  process group {m.pg}: collective #{m.seq} ({m.op}) was entered by rank"
                     f"{'s' if len(m.entered) != 1 else ''} {', '.join(map(str, m.entered))}; "
                     + "; ".join(f"rank {r} did not enter it (its last was #{m.last_seq.get(r, 0)})"
                                 for r in m.missing))
    for x in a.mismatches:
        lines.append(f"  process group {x.pg}: collective #{x.seq} is "
                     + ", ".join(f"{op} on rank {r}" for r, op in x.ops.items()) + ": the ranks are out of step")
    if not a.missed and not a.mismatches and a.ranks:
        lines.append("  every rank entered the same collectives: the stall is inside one (a slow or stuck rank)")
    if a.no_dump:
        lines.append(f"  no dump from rank{'s' if len(a.no_dump) != 1 else ''} {', '.join(map(str, a.no_dump))} "
                     f"(it died first, or hung before it could write)")
    for b in a.unreadable:
        lines.append(f"  skipped {b}")
    return "\n".join(lines) + "\n"


def dumps_for_logs(logs: Sequence[str], prefix: str | None = None) -> dict[int, str]:
    """rank -> dump path: the dumps beside the first log that has some, else under the prefix given."""
    for log in logs:
        found = find_dumps(log if log != "-" else None, prefix)
        if found:
            return found
    return find_dumps(None, prefix) if prefix else {}
