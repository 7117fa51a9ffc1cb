"""Rendering results for people (text) and machines (JSON, GitHub annotations)."""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import IO, Any

from oomfix.classify import describe
from oomfix.model import Diagnosis


class Style:
    """ANSI colour, only on a terminal and never with NO_COLOR (https://no-color.org: a NO_COLOR that is present
    and not an empty string turns colour off; an empty one does not)."""

    def __init__(self, stream: IO[str] | None = None, color: bool | None = None) -> None:
        stream = stream or sys.stdout
        if color is None:
            color = stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
        self.color = color

    def _wrap(self, code: str, s: str) -> str:
        return f"\x1b[{code}m{s}\x1b[0m" if self.color else s

    def bold(self, s: str) -> str:
        return self._wrap("1", s)

    def red(self, s: str) -> str:
        return self._wrap("31", s)

    def yellow(self, s: str) -> str:
        return self._wrap("33", s)

    def green(self, s: str) -> str:
        return self._wrap("32", s)

    def dim(self, s: str) -> str:
        return self._wrap("2", s)


def _ranks(ranks: Sequence[int | None]) -> str:
    known = sorted({r for r in ranks if r is not None})
    if not known:
        return ""
    return ("rank " if len(known) == 1 else "ranks ") + ", ".join(map(str, known))


def headline(d: Diagnosis) -> str:
    if d.cls == "none":
        return f"No failure found ({d.reason})."
    rc = d.root_cause
    what = describe(d.cls, d.confidence)
    if d.cls == "python_exception" and rc.exception:
        msg = rc.message or ""
        # a cut message says so: "(world_size=8" read as the whole text looks like a broken log line
        what = f"{rc.exception.rsplit('.', 1)[-1]}: {msg[:120]}" + ("..." if len(msg) > 120 else "")
    # a bare SIGKILL: who sent it is unknown; said after where and when, so that "on rank N" follows the kill and
    # not the list of possible senders
    sender = ""
    if d.cls == "host_oom" and d.confidence == "low":
        what, _, sender = what.partition("; ")
    parts = [f"Root cause: {what}"]
    who = None
    if rc.rank is not None:
        who = f"rank {rc.rank}"
    elif rc.local_rank is not None:
        who = f"local rank {rc.local_rank}"
    if who:
        parts.append(f" on {who}")
        if rc.host:
            parts.append(f" ({rc.host})")
    if rc.phase:
        phase = rc.phase
        parts.append(f" at {phase}" if phase.startswith(("step", "training step")) else f" during {phase}")
        if phase.startswith("training step"):
            parts[-1] = f" at step {phase.split()[-1]}"
    if sender:
        parts.append(f"; {sender}")
    n = len(d.cascade)
    if n:
        named = _ranks([c.rank for c in d.cascade])
        sigs = sorted({c.signal for c in d.cascade if c.signal})
        by = f" ({'/'.join(sigs)})" if sigs else ""
        if d.cls in ("sighup", "sigterm"):
            parts.append(f"; torchrun stopped {n} worker{'s' if n != 1 else ''}{by}")
        else:
            who = named if named and len([c for c in d.cascade if c.rank is not None]) == n else \
                f"{n} other worker{'s' if n != 1 else ''}"
            parts.append(f"; {who} {'was' if n == 1 else 'were'} stopped by torchrun as a consequence{by}")
    return "".join(parts)


def render_diagnosis_text(d: Diagnosis, style: Style | None = None) -> str:
    s = style or Style()
    out = [s.bold(headline(d)), f"class: {d.cls}   confidence: {d.confidence}"
           + (f" ({d.reason})" if d.reason and d.confidence != "high" else "")]
    rc = d.root_cause
    if rc.exception or rc.exitcode is not None or rc.signal:
        bits = []
        if rc.exception:
            bits.append(f"exception {rc.exception}")
        if rc.exitcode is not None:
            bits.append(f"exit code {rc.exitcode}")
        if rc.signal:
            bits.append(f"signal {rc.signal}")
        if rc.pid is not None:
            bits.append(f"pid {rc.pid}")
        if rc.raised_at:
            bits.append(f"raised at {rc.raised_at}")
        out.append("root: " + ", ".join(bits))
    if d.memory is not None:
        m = d.memory
        nums = []
        for label, v in (("requested", m.requested_gib), ("total", m.total_gib), ("free", m.free_gib),
                         ("allocated by PyTorch", m.allocated_gib),
                         ("reserved but unallocated", m.reserved_unallocated_gib)):
            if v is not None:
                nums.append(f"{label} {v:g} GiB")
        if nums:
            out.append("memory: " + ", ".join(nums) + (f" (GPU {m.gpu})" if m.gpu is not None else ""))
        if m.foreign_process:
            out.append(s.yellow("another process holds memory on this GPU: "
                                + ", ".join(f"pid {p} ({g:g} GiB)" for p, g in m.other_processes)))
    if d.evidence:
        out.append("")
        out.append(s.bold("Evidence"))
        for e in d.evidence:
            out.append(f"  {s.dim(f'{e.file}:{e.line}:')} {e.text[:200]}")
    r = d.run
    params = [(k, v) for k, v in (("config", r.config), ("master port", r.master_port), ("world size", r.world_size),
                                  ("per-device batch", r.per_device_train_batch_size),
                                  ("grad accumulation", r.gradient_accumulation_steps),
                                  ("global batch", r.global_batch_size)) if v is not None]
    if params:
        out.append("")
        out.append(s.bold("Run (as the log shows it)"))
        out.append("  " + ", ".join(f"{k} {v}" for k, v in params))
    for w in d.warnings:
        out.append(s.yellow(f"warning: {w}"))
    if d.advice:
        out.append("")
        out.append(s.bold("What to do"))
        for a in d.advice:
            out.append(f"  - {a}")
    return "\n".join(out) + "\n"


# Every JSON document oomfix prints carries this first. It goes up when a key is renamed or removed or its meaning
# changes; new keys do not change it (readers ignore keys they do not know).
SCHEMA_VERSION = 1


def versioned(obj: dict[str, Any]) -> dict[str, Any]:
    """A JSON document as printed: `schema_version` first, then the document's own keys."""
    return {"schema_version": SCHEMA_VERSION, **obj}


def render_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def shown_path(path: str) -> str:
    """How a file is named in summaries: relative to the current directory when below it, else absolute (one rule
    for every file of a plan, however the planner reached it)."""
    rel = os.path.relpath(path)
    return rel if rel != ".." and not rel.startswith("../") else os.path.abspath(path)


def diff_path(path: str) -> str:
    """The path in a diff header: always relative to the current directory, so `git apply` (and `patch -p1`) take
    the diff run from here; `a//abs/path` is rejected by both. A file outside the current directory gets `../`,
    which `git apply` takes with `--unsafe-paths`."""
    return os.path.relpath(path).replace(os.sep, "/")


def unified_diff(path: str, before: str, after: str) -> str:
    import difflib

    a = before.splitlines(keepends=True)
    b = after.splitlines(keepends=True)
    out = []
    name = diff_path(path)
    for line in difflib.unified_diff(a, b, fromfile=f"a/{name}", tofile=f"b/{name}"):
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)


def render_plan_text(plan: Any, written: bool, style: Style | None = None) -> str:
    s = style or Style()
    d = plan.diagnosis
    out = []
    if plan.log_picked:
        out.append(s.dim(f"(no LOG given: using the newest log, {plan.log})"))
    out.append(s.bold("Aligning sibling configs (no log)" if not plan.log else headline(d)))
    if plan.status in ("nothing", "advice", "already"):
        out.append(plan.message or "nothing to change")
        return "\n".join(out) + "\n"
    if plan.status == "no_rung":
        out.append(s.red(plan.message or "no applicable rung"))
        return "\n".join(out) + "\n"
    out.append(f"rule: {plan.rule}" + (" (changes training semantics)" if plan.semantic else ""))
    if plan.why:
        out.append(f"why: {plan.why}")
    out.extend(getattr(plan, "prediction", ()))
    out.append("")
    for e in plan.edits:
        diff = unified_diff(e.path, e.before, e.after)
        if s.color:
            diff = "".join(s.green(l) if l.startswith("+") and not l.startswith("+++") else
                           s.red(l) if l.startswith("-") and not l.startswith("---") else l
                           for l in diff.splitlines(keepends=True))
        out.append(diff.rstrip("\n"))
    out.append("")
    out.append(s.bold("Summary"))
    for e in plan.edits:
        bits = ", ".join(f"{k}: {o} -> {n}" if o is not None else f"{k}: add {n}" for k, o, n in e.changes)
        gb = ""
        if e.global_before is not None:
            gb = f"; global batch {e.global_before} -> {e.global_after} (world size {e.world_size})"
        link = ""
        if os.path.islink(e.path):
            link = f" (a symlink: its target {shown_path(os.path.realpath(e.path))} is edited, the link is kept)"
        out.append(f"  {shown_path(e.path)}{link}: {bits}{gb}")
    for note in plan.skipped:
        out.append(s.dim(f"  note: {note}"))
    out.append("")
    if written:
        out.append(s.green(f"written {len(plan.edits)} file(s); `oomfix undo` restores them"))
    else:
        out.append(s.yellow("dry run: nothing written; add --write to apply"))
    return "\n".join(out) + "\n"


def plan_json(plan: Any, written: bool, tx: str | None) -> dict[str, Any]:
    # `apply --align-siblings` reads no log: log, class and diagnosis are unknown (null), not an empty path and a
    # made-up "none" diagnosis
    no_log = not plan.log
    return {
        "log": plan.log or None,
        "status": plan.status,
        "written": written,
        "transaction": tx,
        "rule": plan.rule,
        "why": plan.why,
        "message": plan.message,
        "class": None if no_log else plan.diagnosis.cls,
        "diagnosis": None if no_log else plan.diagnosis.to_json(),
        "edits": [{"file": shown_path(e.path), "kind": e.kind, "changes": [{"key": k, "old": o, "new": n} for k, o, n in e.changes],
                   "world_size": e.world_size, "global_batch_before": e.global_before,
                   "global_batch_after": e.global_after, "diff": unified_diff(e.path, e.before, e.after)}
                  for e in plan.edits],
        "notes": list(plan.skipped),
        "prediction": list(getattr(plan, "prediction", ())),
    }


def _rung_lines(r: Any) -> list[str]:
    flags = []
    if r.keeps:
        flags.append(f"keeps {r.keeps}")
    if r.semantic:
        flags.append("opt-in: --allow-semantic-changes")
    when = ", ".join(f"{k} {v}" for k, v in r.when.items()) or "always"
    edits = "; ".join(f"{op} {args}" for e in r.edit for op, args in e.items()) or "advice only"
    return [f"  {r.index + 1}. {r.id}" + (f" ({', '.join(flags)})" if flags else ""),
            f"     when: {when}", f"     edit: {edits}", f"     why:  {r.why}"]


def render_explain(rules: Any, name: str) -> str:
    from oomfix.errors import UsageError

    fc = rules.classes.get(name)
    if fc is not None:
        out = [f"{fc.cls}: {fc.title}", "", fc.meaning, ""]
        if fc.advice:
            out.append("What to do:")
            out += [f"  - {a}" for a in fc.advice]
        if fc.ladder:
            out += ["", "Ladder (one rung per apply, the first that applies):"]
            for r in fc.ladder:
                out += _rung_lines(r)
        elif not fc.config_edits:
            out += ["", "No config edit for this class" + (f"; launcher fix: {fc.launcher_fix}" if fc.launcher_fix
                                                          else ".")]
        return "\n".join(out) + "\n"
    r = rules.rung(name)
    if r is None:
        raise UsageError(f"unknown class or rule '{name}' (see `oomfix rules`)")
    return "\n".join([f"{r.id} (class {r.cls}, {r.source})"] + _rung_lines(r)) + "\n"


def render_rules(rules: Any) -> str:
    out = []
    for fc in rules.classes.values():
        out.append(f"{fc.cls:18s} {fc.title}")
        for r in fc.ladder:
            out.append(f"  {r.id}" + ("  [opt-in]" if r.semantic else ""))
    return "\n".join(out) + "\n"


def render_jobs_text(launchers: Any) -> str:
    """`oomfix jobs`: one block per job; unknown values say "unset" or "not determinable", never None."""
    out = []
    for lau in launchers:
        if not lau.jobs:
            out.append(f"{lau.path}: no training job found")
            continue
        for j in lau.jobs:
            how = ", ".join(x for x in ("background" if j.background else "foreground", "nohup" if j.nohup else "",
                                        f"protected by {j.protected_by}" if j.protected_by else "unprotected",
                                        f"on {j.remote}" if j.remote else "") if x)
            port = j.port_json
            port_s = {"random": "random (computed at launch)", "free": "free (the launcher picks one)"}.get(
                str(port), str(port) if port is not None else
                ("29500 (default)" if j.port == "default" else "not determinable from the text"))
            out.append(f"{j.file}:{j.line}: {j.kind} ({how})")
            out.append(f"    config: {_job_config_text(j)}   master port: {port_s}")
            out.append(f"    GPUs: {j.cuda_visible_devices or 'unset (all visible)'}   processes per node: "
                       f"{j.nproc if j.nproc is not None else 'unknown'}   log: {j.log or 'unset (terminal)'}")
    return "\n".join(out) + "\n"


def _job_config_text(j: Any) -> str:
    """The config as written, and the file it resolves to (saying so when more than one directory fits)."""
    import os

    from oomfix.launcher import job_paths

    if not j.config:
        return "unset"
    if j.remote:
        return f"{j.config} (on {j.remote})"
    found = job_paths(j, j.config)
    if not found:
        return f"{j.config} (not found from here)"
    shown = [os.path.relpath(p) if not os.path.relpath(p).startswith("../../..") else p for p in found]
    where = "the directory it cds to" if j.cwd else "where it is started from"
    if len(found) > 1:
        return f"{j.config} (ambiguous, relative to {where}: {shown[0]}, or {', '.join(shown[1:])}; using the first)"
    return f"{j.config} (= {shown[0]})"


# --- GitHub Actions workflow commands and SARIF, for `oomfix check` ---------------------------------------------

def _gh_data(s: str) -> str:
    # GitHub's escaping of a workflow command's message (actions/toolkit, core/src/command.ts: escapeData)
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_property(s: str) -> str:
    # ... and of a property value (escapeProperty): ':' and ',' separate properties, so they are escaped too
    return _gh_data(s).replace(":", "%3A").replace(",", "%2C")


def github_command(level: str, props: dict[str, str | None], message: str) -> str:
    """One `::error file=...,line=...,title=...::message` line; a file named `sft,v1:100%.yaml` stays one property."""
    bits = ",".join(f"{k}={_gh_property(v)}" for k, v in props.items() if v is not None)
    return f"::{level} {bits}::{_gh_data(message)}"


SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def _sarif_uri(path: str) -> str:
    """A finding's file as SARIF wants it: a relative URI reference (against %SRCROOT%, the directory oomfix ran in,
    which is the repository root in CI) with '/' separators and percent-encoding; an absolute path as a file: URI."""
    from urllib.parse import quote

    if os.path.isabs(path):
        return "file://" + quote(path.replace(os.sep, "/"))
    return quote(os.path.normpath(path).replace(os.sep, "/"))


def render_check_sarif(res: Any, version: str) -> str:
    """`oomfix check --format sarif`: a SARIF 2.1.0 log (GitHub code scanning's upload-sarif reads it). One run, the
    rules that fired, one result per finding with its file and line."""
    rules: dict[str, int] = {}
    results = []
    for f in res.findings:
        idx = rules.setdefault(f.id, len(rules))
        loc: dict[str, Any] = {"artifactLocation": {"uri": _sarif_uri(f.file)}}
        if not os.path.isabs(f.file):
            loc["artifactLocation"]["uriBaseId"] = "%SRCROOT%"
        if f.line:
            loc["region"] = {"startLine": f.line}
        results.append({"ruleId": f.id, "ruleIndex": idx, "level": "error" if f.severity == "error" else "warning",
                        "message": {"text": f"{f.message} -- fix: {f.fix}"},
                        "locations": [{"physicalLocation": loc}]})
    doc = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "oomfix", "version": version, "semanticVersion": version,
                                "rules": [{"id": r, "name": r, "shortDescription": {"text": f"oomfix check: {r}"}}
                                          for r in rules]}},
            "originalUriBaseIds": {"%SRCROOT%": {"uri": _dir_uri(os.getcwd())}},
            "results": results,
        }],
    }
    return render_json(doc)


def _dir_uri(d: str) -> str:
    from urllib.parse import quote

    return "file://" + quote(d.replace(os.sep, "/").rstrip("/") + "/")
