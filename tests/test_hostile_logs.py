"""Hostile logs (issue 23, the log-side cost items): each is diagnosed within a time and memory limit, by both engines.

The logs are CONSTRUCTED (an attacker's or a broken program's output, not a producer's wording): blank lines before an
error, 16 KB runs of blanks after the markers the patterns look for, a stream of carriage returns, one 8 MB line,
hundreds of thousands of identical error lines. Before the fixes these took 20 s to more than 120 s, or 1.8 GB.
Each runs `oomfix diagnose` in a subprocess; the limits are generous (a shared CI machine), far below what the
quadratic or cubic behaviour cost. A second battery runs every pattern's own regex, and the line-cleaning regexes, on
pathological lines in-process: linear regexes take milliseconds there, a quadratic one a second.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from oomfix import events as E
from oomfix import patterns as P

ROOT = Path(__file__).resolve().parent.parent
OOM = ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.25 "
       "GiB of which 1.06 GiB is free.\n")
TIME_LIMIT = 30.0  # seconds per diagnosis (each takes well under 2 s unloaded)
RSS_LIMIT = 200  # MB per diagnosis (Hyperscan and its database included; each takes under 80)


def _engines() -> list[str]:
    try:
        import hyperscan  # noqa: F401
        return ["hyperscan", "python"]
    except ImportError:
        return ["python"]


_HWM = ("import sys\nfrom oomfix.cli import main\ncode = 0\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
        "finally:\n    sys.stdout.flush()\n"
        "    sys.stderr.write('HWM ' + [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]"
        " + '\\n')\nsys.exit(code)\n")


def _diagnose(log: Path, engine: str, *args: str) -> tuple[float, int, int, str]:
    """Wall seconds, peak RSS (MB), exit status and stdout of one `oomfix diagnose` in its own process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("OOMFIX_ENGINE", None)
    if engine == "python":
        env["OOMFIX_ENGINE"] = "python"
    t = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-c", _HWM, "diagnose", "--format", "json", *args, str(log)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    killer = threading.Timer(TIME_LIMIT * 2, p.kill)  # no hang, whatever happens
    killer.start()
    try:
        out = p.stdout.read() if p.stdout else b""
        _pid, status, ru = os.wait4(p.pid, 0)  # (the peak RSS of this one process)
    finally:
        killer.cancel()
        if p.stdout:
            p.stdout.close()
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    if p.stderr:
        p.stderr.close()
    hwm = [ln.split()[1] for ln in err.splitlines() if ln.startswith("HWM ")]
    # the child's own peak (VmHWM): wait4's ru_maxrss also counts the pytest process the child was forked from
    # (Linux carries the pre-exec peak across execve), so it grew with the tests that ran before this one
    return time.perf_counter() - t, int(hwm[-1]) // 1024 if hwm else ru.ru_maxrss // 1024, p.returncode, out.decode()


def _write(path: Path, parts: list[bytes]) -> Path:
    with open(path, "wb") as f:
        for part in parts:
            f.write(part)
    return path


HOSTILE = {
    # events._last_progress ran patterns.PROGRESS (adjacent `\s*` that also matched newlines) over them: 20 s
    "blank_lines_before_error": lambda: [b"\n" * 2000, b"RuntimeError: boom\n"],
    "blank_lines_after_bar": lambda: [b" 10%|#         | 1/10 [00:01<00:09,  1.00it/s]", b"\n  \t " * 2000, OOM.encode()],
    # a run of blanks after a marker: table_field, exception, slurm_cancelled, nan_loss regexes were quadratic/cubic
    **{f"blanks_after_{name}": (lambda pre=pre: [pre + b" " * 16384 + b"x\n", pre + b" " * 16384 + b"\n",
                                                 OOM.encode()])
       for name, pre in [("cancelled", b"slurmstepd: error: *** JOB 1 ON n1 CANCELLED AT 2024 DUE TO"),
                         ("loss", b"{'loss':"), ("valueerror", b"ValueError:"), ("time", b"  time      :"),
                         ("error", b"Error:"), ("assertion", b"Assertion " * 1500)]},
    # 10 MB of carriage returns (a progress bar that never ends its line)
    "carriage_returns": lambda: [b"\r" * (10 << 20), b"\n", OOM.encode()],
    # one 8 MB line of blanks after "Error:": Hyperscan reported every offset of it (1.75 GB)
    "one_8mb_line": lambda: [b"Error:", b" " * (8 << 20), b"\n", OOM.encode()],
    # 300,000 identical error lines: every one was a candidate (2M: 40 s)
    "identical_errors": lambda: [b"RuntimeError: boom\n" * 300_000],
    # short ones (500,000: 12 s, 150 MB), and one 4 MB line of one error word (Hyperscan held every match: 330 MB)
    "identical_short_errors": lambda: [b"Error: x\n" * 500_000],
    "one_line_of_error_words": lambda: [b"Error " * ((4 << 20) // 6), b"\n", OOM.encode()],
}
EXPECTED = {"blank_lines_before_error": "python_exception", "identical_errors": "python_exception",
            "identical_short_errors": "unknown",
            "blanks_after_valueerror": "python_exception"}


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hostile")
    for name, parts in HOSTILE.items():
        _write(d / f"{name}.log", parts())
    return d


@pytest.mark.parametrize("engine", _engines())
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_log_is_diagnosed_in_bounded_time_and_memory(hostile_dir: Path, name: str, engine: str) -> None:
    wall, rss, rc, out = _diagnose(hostile_dir / f"{name}.log", engine)
    assert rc == 0, out
    assert wall < TIME_LIMIT, f"{name} ({engine}): {wall:.1f} s"
    assert rss < RSS_LIMIT, f"{name} ({engine}): {rss} MB"
    cls = json.loads(out)["class"]
    assert cls == EXPECTED.get(name, cls if name.startswith("blanks_after_") else "cuda_oom"), cls


def test_identical_error_lines_keep_their_first_and_last_line(tmp_path: Path) -> None:
    """A run of identical lines is counted at C speed (reader.run_of), but the diagnosis still sees where it starts
    and where it ends: the evidence is the first line, the run's cluster reaches its last line."""
    log = _write(tmp_path / "run.log", [b"step 1 ok\n", b"RuntimeError: boom\n" * 5000, b"exiting\n"])
    wall, rss, rc, out = _diagnose(log, _engines()[0])
    d = json.loads(out)
    assert (d["class"], d["root_cause"]["exception"], d["root_cause"]["message"]) == \
        ("python_exception", "RuntimeError", "boom")
    assert d["evidence"][0]["line"] == 2


def test_identical_lines_handed_on_match_every_engine(tmp_path: Path) -> None:
    from oomfix.reader import Prefilter, default_prefilter, open_log, scan

    log = _write(tmp_path / "run.log", [b"x\n", b"RuntimeError: boom\n" * 1234, b"ValueError: bad\n",
                                        b"RuntimeError: boom\n" * 7])
    got = []
    for pf in {Prefilter(), default_prefilter()}:
        stream, name = open_log(str(log))
        with stream:
            got.append([(c.line_no, c.raw) for c in scan(stream, name, pf)])
    assert all(g == got[0] for g in got)
    lines = [n for n, _raw in got[0]]
    assert lines[0] == 2 and 1235 in lines and 1236 in lines and lines[-1] == 1243  # the last of each run
    assert max(b - a for a, b in zip(lines, lines[1:])) <= 50  # and one in 50 between (events.REPEAT_GAP: 100)


# --- the regexes themselves: linear on pathological lines ---------------------------------------------------------
N = 16384
FILLS = [" ", "\t", "a ", "0", "=", "\r", ": ", "a.", "-0"]
REGEX_LIMIT = 0.5  # seconds for one search of a 16 KB line (linear ones: a few ms; quadratic ones: seconds)


def _regexes() -> list[tuple[str, re.Pattern, tuple[bytes, ...]]]:
    out = [(p.name, p.regex, p.markers) for p in P.PATTERNS]
    for mod, label in ((P, "patterns"), (E, "events")):
        for name, v in sorted(vars(mod).items()):
            if isinstance(v, re.Pattern):
                out.append((f"{label}.{name}", v, ()))
    return out


@pytest.mark.parametrize("name,rx,markers", _regexes(), ids=[r[0] for r in _regexes()])
def test_regex_is_linear_on_pathological_lines(name: str, rx: re.Pattern, markers: tuple[bytes, ...]) -> None:
    marks = [m.decode("utf-8", "replace") for m in markers[:2]] or [""]
    worst, what = 0.0, ""
    for m in marks:
        for f in FILLS:
            body = f * (N // len(f))
            for s in (m + body, body + m, m + body + "!", (m + f) * (N // (len(m) + len(f)) + 1)):
                probe = s.encode() if isinstance(rx.pattern, bytes) else s
                t = time.perf_counter()
                rx.search(probe)
                d = time.perf_counter() - t
                if d > worst:
                    worst, what = d, repr(s[:30])
    assert worst < REGEX_LIMIT, f"{name}: {worst:.2f} s on {what}..."


def test_check_on_a_small_hostile_log_is_quick(tmp_path: Path) -> None:
    """`oomfix check` reads the project's logs with the same reader: a 3 KB log of blank lines and blank runs after
    markers (which took `check` and `apply` about a minute, issue 23) is read in about a second."""
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "run.log").write_bytes(b"\n" * 1000 + b"ValueError:" + b" " * 1500 + b"x\n" +
                                                b"{'loss':" + b" " * 500 + b"x\n" + b"  time      :" + b" " * 400 + b"x\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "oomfix", "check", str(tmp_path)], capture_output=True, env=env,
                       timeout=TIME_LIMIT * 2)
    assert p.returncode in (0, 1), p.stderr
    assert time.perf_counter() - t < TIME_LIMIT
