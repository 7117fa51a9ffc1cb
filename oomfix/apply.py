"""The `apply` use case: from a diagnosis to the next rung of its ladder, planned for every sibling config."""
from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from oomfix.configs import (Config, display_path, inside, read_text, job_for_config, launchers_in, load_config,
                            same_file, siblings)
from oomfix.diagnose import diagnose_logs, diagnosis_facts
from oomfix.dialects import is_explicit
from oomfix.editor import ValueEdit, edit_text, parse_config_text
from oomfix.errors import ConfigError, OomfixError, RuleError, UsageError
from oomfix.journal import Journal, PlannedWrite, file_sha256, sha256
from oomfix.launcher import Job, Launcher, concurrent, job_path, log_matches
from oomfix.model import MEMORY_CLASSES, Diagnosis
from oomfix.rules import CanonicalChange, FailureClass, Rung, compute_changes, holds, load_rules


@dataclass(frozen=True)
class FileEdit:
    path: str
    before: str
    after: str
    changes: tuple[tuple[str, Any, Any], ...]  # (key as written, old, new)
    world_size: int | None = None
    global_before: int | None = None
    global_after: int | None = None
    kind: str = "config"  # config | deepspeed | launcher


@dataclass(frozen=True)
class Plan:
    log: str
    log_picked: bool
    diagnosis: Diagnosis
    status: str  # edits | nothing | advice | no_rung | already
    rule: str | None = None
    why: str | None = None
    message: str | None = None
    edits: tuple[FileEdit, ...] = ()
    skipped: tuple[str, ...] = ()  # notes about files that got no edit, rungs that need an opt-in
    semantic: bool = False
    prediction: tuple[str, ...] = ()  # the memory model's verdict on the rungs (oomfix.fit), shown beside the diff

    @property
    def exit_code(self) -> int:
        return 1 if self.status == "no_rung" else 0

    def to_json(self, written: bool = False, transaction: str | None = None) -> dict[str, Any]:
        """What `oomfix apply --format json` prints, less `schema_version` (a dry run unless told it was written)."""
        from oomfix.report import plan_json

        return plan_json(self, written, transaction)


SAME_MOMENT_S = 2.0  # logs written this close together are "the newest" alike (sibling jobs end together)


def newest_log(root: str = ".") -> str:
    """The default LOG: the newest *.log under root. Sibling jobs started side by side often end within the same
    second; among the logs written that close to the newest, one that shows a failure wins over a clean one (the
    log to fix is the one that failed, whichever file the file system stamped last)."""
    found: list[tuple[float, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in ("node_modules", "__pycache__")]
        for f in filenames:
            if f.endswith(".log"):
                p = os.path.join(dirpath, f)
                try:
                    found.append((os.stat(p).st_mtime, p))
                except OSError:
                    continue
    if not found:
        raise UsageError("no LOG given and no *.log under the current directory")
    found.sort(reverse=True)
    close = [p for m, p in found if m >= found[0][0] - SAME_MOMENT_S]
    if len(close) > 1:
        for p in close[:8]:  # newest first
            try:
                if diagnose_logs([p]).cls != "none":
                    return os.path.relpath(p)
            except OomfixError:
                continue
    return os.path.relpath(found[0][1])


def _launchers_for_log(log: str, launchers: Sequence[Launcher],
                       diag: Diagnosis | None = None) -> list[tuple[Launcher, Job]]:
    """The jobs that wrote this log: the job whose log path (a pattern where the launcher's path has unknown
    parts) the file matches; else what the log itself shows of its launch (a wrapper's echoed command, the
    launch command in a CalledProcessError): the config it names, or a master port and world size that only one
    job has."""
    hits = [(lau, j) for lau in launchers for j in lau.jobs if log_matches(j, log)]
    if hits or diag is None:
        return hits
    run = diag.run
    if run.config:
        name = os.path.normpath(run.config)
        hits = [(lau, j) for lau in launchers for j in lau.jobs
                if j.config and (os.path.normpath(j.config) == name or os.path.normpath(j.config).endswith("/" + name)
                                 or name.endswith("/" + os.path.normpath(j.config).lstrip("./")))]
        if hits:
            return hits
    if run.master_port:
        hits = [(lau, j) for lau in launchers for j in lau.jobs
                if (j.master_port or (29500 if j.port == "default" else None)) == run.master_port
                and (run.world_size is None or j.world_size in (None, run.world_size))]
        if len(hits) == 1:
            return hits
    return []


def find_config(diag: Diagnosis, log: str, explicit: str | None, launchers: Sequence[Launcher]) -> str:
    if explicit:
        if not os.path.isfile(explicit):
            raise ConfigError(f"{explicit}: config not found")
        return explicit
    ref = diag.run.config
    if ref:
        if os.path.isfile(ref):
            return ref
        for parent in Path(log).resolve().parents:
            c = parent / ref
            if c.is_file():
                return str(c)
    for lau, j in _launchers_for_log(log, launchers, diag):
        if j.config:
            p = job_path(j, j.config)
            if p:
                return p
    hint = f" (the log names {ref!r}, which does not exist here)" if ref else ""
    raise ConfigError(f"cannot find the config the run used{hint}; pass --config PATH")


# --- facts for rule preconditions --------------------------------------------------------------------------

def config_facts(diag_facts: Mapping[str, Any], cfg: Config, launchers: Sequence[Launcher]) -> dict[str, Any]:
    found = job_for_config(cfg.path, launchers)
    launcher: dict[str, Any] = {"found": found is not None, "llamafactory_cli": False, "env": {}}
    if found:
        lau, job = found
        env = dict(job.env)
        launcher.update(found=True, llamafactory_cli=job.kind == "llamafactory-cli", env=env, path=lau.path)
    zero = {"stage": cfg.zero.stage, "offload": cfg.zero.offload} if cfg.zero else {}
    return {**diag_facts, "config": {**cfg.values, "dialect": cfg.dialect.name}, "launcher": launcher, "zero": zero}


# --- turning a rung into edits for one config ----------------------------------------------------------------

def _switch_target(rung: Rung, cfg: Config) -> str | None:
    """The `deepspeed:` value pointing at an existing config that satisfies the rung's requirement."""
    spec = next((e["switch_file"] for e in rung.edit if "switch_file" in e), None)
    if spec is None or cfg.zero is None or cfg.zero.path is None:
        return None
    cur = Path(cfg.zero.path)
    req = spec.get("require") or {}
    names = list(spec.get("candidates") or [])
    names += sorted(p.name for p in cur.parent.glob("*.json") if p.name not in names)
    for name in names:
        cand = cur.parent / name
        if not cand.is_file() or cand.resolve() == cur.resolve():
            continue
        try:
            data = parse_config_text(cand.read_text(encoding="utf-8"), str(cand))
        except Exception:  # noqa: BLE001 - an unreadable candidate is simply not a candidate
            continue
        z = data.get("zero_optimization", {}) if isinstance(data, dict) else {}
        stage = z.get("stage") if isinstance(z, dict) else None
        off = (z.get("offload_optimizer") or {}).get("device") if isinstance(z, dict) else None
        offload = off not in (None, "none")
        if "stage" in req and stage != req["stage"]:
            continue
        if "offload" in req and offload != bool(req["offload"]):
            continue
        ref = cfg.zero.ref
        return ref[: len(ref) - len(cur.name)] + name if ref.endswith(cur.name) else ref.rsplit("/", 1)[0] + "/" + name
    return None


def _neighbours(cfg: Config, canonical: str) -> tuple[str, ...]:
    d = cfg.dialect
    order = ("grad_accum", "micro_batch", "eval_batch", "fp16", "bf16")
    out = []
    for c in order:
        if c != canonical and d.path(c):
            out.append(d.path(c)[-1])  # type: ignore[index]
    return tuple(out)


def _value_edits(cfg: Config, changes: Sequence[Any]) -> list[tuple[ValueEdit, Any, Any]]:
    out = []
    d = cfg.dialect
    for ch in changes:
        path = d.path(ch.key)
        if path is None:
            raise ConfigError(f"{cfg.path}: the {d.name} dialect has no key for '{ch.key}'")
        new = ch.new
        old = ch.old
        if ch.key in d.inverted and isinstance(new, bool):
            new, old = (not new), (None if old is None else not old)
        if d.name == "axolotl" and ch.key == "grad_accum" and not is_explicit(cfg.data, d, "grad_accum") \
                and is_explicit(cfg.data, d, "global_batch"):
            continue  # axolotl derives accumulation from batch_size // micro_batch_size: the micro edit is enough
        out.append((ValueEdit(path, new, _neighbours(cfg, ch.key)), old, new))
    return out


def _global(values: Mapping[str, Any], world: int | None) -> int | None:
    m, a = values.get("micro_batch"), values.get("grad_accum")
    if not isinstance(m, int) or not isinstance(a, int) or world is None:
        return None
    return world * m * a


def _memory_never_rises(cls: str, changes: Sequence[Any], rung: Rung, cfg: Config) -> None:
    # enforced in code (oomfix/guard.py), whatever a (user) rule file says: an OOM fix never raises per-device memory
    from oomfix.guard import check_rung

    switched = _switch_target(rung, cfg) if any("switch_file" in e for e in rung.edit) else None
    check_rung(cls, changes, rung, cfg, switched)


def _world_for(cfg: Config, primary: Config, diag: Diagnosis, launchers: Sequence[Launcher]) -> int | None:
    if same_file(cfg.path, primary.path) and diag.run.world_size:
        return diag.run.world_size  # what the run itself printed wins over a reading of its launcher (issue 21 7d)
    found = job_for_config(cfg.path, launchers)
    if found and found[1].world_size:
        return found[1].world_size
    return None


def _launcher_env_edit(lau_path: str, name: str, value: str) -> FileEdit | None:
    text = Path(lau_path).read_bytes().decode("utf-8", errors="surrogateescape")
    if re.search(rf"^\s*(?:export\s+)?{re.escape(name)}=", text, re.M):
        return None
    lines = text.splitlines(keepends=True)
    nl = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    i = 0
    while i < len(lines) and (lines[i].startswith("#") or not lines[i].strip()):
        i += 1
    if i and not lines[i - 1].strip():
        i -= 1
    new_line = f"export {name}={shlex.quote(str(value))}  # oomfix: allocator fragmentation{nl}"  # rules.py: name checked
    after = "".join(lines[:i]) + new_line + "".join(lines[i:])
    return FileEdit(lau_path, text, after, ((name, None, value),), kind="launcher")


def _memory_plan(diag: Diagnosis, log: str, log_picked: bool, fc: FailureClass, config: str | None,
                 all_configs: bool, allow_semantic: bool, launchers: Sequence[Launcher]) -> Plan:
    primary = load_config(find_config(diag, log, config, launchers))
    dfacts = diagnosis_facts(diag)
    pfacts = config_facts(dfacts, primary, launchers)
    run_vals = {k: v for k, v in diag.run.canonical_values().items() if isinstance(v, int)}
    failed_at = run_vals if any(primary.values.get(k) != v for k, v in run_vals.items()) else {}
    skipped: list[str] = []
    not_here: list[str] = []  # rungs whose condition does not hold for this config (not "in place": inapplicable)
    rung = None
    for r in fc.ladder:
        if not holds(r.when, pfacts):
            not_here.append(r.id)
            continue
        if r.semantic and not allow_semantic:
            skipped.append(f"{r.id} (changes training semantics: needs --allow-semantic-changes)")
            continue
        if any("switch_file" in e for e in r.edit) and _switch_target(r, primary) is None:
            skipped.append(f"{r.id} (no suitable DeepSpeed config next to {primary.zero.ref if primary.zero else '?'})")
            continue
        if any("launcher_env" in e for e in r.edit) and not pfacts["launcher"].get("found"):
            continue
        ch = compute_changes(r, primary.values)
        if ch is None:
            continue
        after = {**primary.values, **{c.key: c.new for c in ch}}
        if failed_at and all(after.get(k) == v for k, v in failed_at.items()):
            # the config moved since the run (e.g. raised after the OOM): this rung would only restore the values
            # the log shows failing, which is no fix
            back = ", ".join(f"{k} {v}" for k, v in failed_at.items())
            skipped.append(f"{r.id} (it would bring back {back}, the values the log's run failed with)")
            continue
        rung = r
        break
    if rung is None:
        verb = "its condition does" if len(not_here) == 1 else "their conditions do"
        left = "; ".join(skipped + ([f"{', '.join(not_here)} ({verb} not hold for this config)"] if not_here else []))
        left = left or "every rung of the ladder is already in place"
        return Plan(log, log_picked, diag, "no_rung", message=f"no applicable rung for {primary.path}: {left}",
                    skipped=tuple(skipped))
    if not rung.edit:
        return Plan(log, log_picked, diag, "advice", rule=rung.id, why=rung.why,
                    message="no config change: " + rung.why)
    parts: list[tuple[Rung, int]] = [(rung, 1)]
    prediction: tuple[str, ...] = ()
    if diag.cls == "cuda_oom":
        parts, prediction = fit_choice(diag, fc, primary, pfacts, allow_semantic, launchers, rung)
        rung = combined_rung(parts)
    targets = siblings(primary, launchers) if all_configs else [primary]
    edits: list[FileEdit] = []
    notes: list[str] = [f"{c.path}: deepspeed: {c.zero.ref} resolves outside the project tree, to {c.zero.path}"
                        for c in targets if c.zero and c.zero.path and not inside(c.zero.path)]
    notes += [f"{c.path}: {c.zero.problem}" for c in targets if c.zero and c.zero.problem]
    planned_values: dict[str, dict[str, Any]] = {}
    cfg_rung: dict[str, Rung] = {}  # a combined rung as it applies to each config (its parts that hold there)
    for cfg in targets:
        cfacts = config_facts(dfacts, cfg, launchers)
        values = rung_values(rung, cfg, cfacts, fc.cls, parts)
        if len(parts) > 1 or parts[0][1] > 1:
            cfg_rung[cfg.path] = combined_rung(applied_parts(parts, cfg, cfacts, fc.cls)[1] or parts)
        if values is None:
            notes.append(f"{cfg.path}: the rung's precondition does not hold, or it cannot keep the global batch "
                         f"here; left as it is")
            continue
        planned_values[cfg.path] = values
    _converge(targets, planned_values)
    for cfg in targets:
        if cfg.path in planned_values:
            world = _world_for(cfg, primary, diag, launchers)
            fes, more = file_edits(cfg_rung.get(cfg.path, rung), cfg, planned_values[cfg.path], launchers, world,
                                   edits, fc.cls)
            edits.extend(fes)
            notes.extend(more)
    if not edits:
        return Plan(log, log_picked, diag, "no_rung", rule=rung.id,
                    message="the rung applies to no file here: " + "; ".join(notes), skipped=tuple(notes),
                    prediction=prediction)
    return Plan(log, log_picked, diag, "edits", rule=rung.id, why=rung.why, edits=tuple(edits),
                skipped=tuple(notes + skipped), semantic=rung.semantic, prediction=prediction)


def fit_choice(diag: Diagnosis, fc: FailureClass, primary: Config, pfacts: Mapping[str, Any], allow_semantic: bool,
               launchers: Sequence[Launcher], plain: Rung) -> tuple[list[tuple[Rung, int]], tuple[str, ...]]:
    """The least disruptive rung the memory model predicts to fit (oomfix.fit), else the plain ladder's `plain`:
    rungs predicted to fail are skipped, none past the first predicted to fit is climbed. A model that cannot say
    (unknown architecture, world size or capacity) leaves the plain ladder as it was."""
    from oomfix import fit

    # the guard judges the ladder's own next rung first: a rule that would raise per-device memory is refused
    # whatever the model predicts for it (oomfix/guard.py)
    rung_values(plain, primary, pfacts, fc.cls)
    try:
        res = fit.predict(primary, _world_for(primary, primary, diag, launchers), diag, fc, pfacts, allow_semantic,
                          fit.switch_targets(primary))
    except Exception as e:  # noqa: BLE001 - the model is advice: whatever goes wrong in it, the plain ladder stands
        return [(plain, 1)], (f"memory model: cannot say ({e}); the plain ladder",)
    lines = tuple(fit.prediction_lines(res))
    if res.chosen is None:
        return [(plain, 1)], lines
    by_id = {r.id: r for r in fc.ladder}
    return [(by_id[i], n) for i, n in res.candidates[res.chosen].rules], lines


def combined_rung(parts: Sequence[tuple[Rung, int]]) -> Rung:
    """One rung for several (a split repeated, or the ladder's rungs in a row): their edits in order, the last
    DeepSpeed switch only (it names the final target)."""
    if len(parts) == 1 and parts[0][1] == 1:
        return parts[0][0]
    edits: list[Mapping[str, Any]] = []
    for r, n in parts:
        for _ in range(n):
            edits.extend(e for e in r.edit if "switch_file" not in e)
    switches = [e for r, _ in parts for e in r.edit if "switch_file" in e]
    edits.extend(switches[-1:])
    first = parts[0][0]
    ident = "+".join(r.id + (f"(x{n})" if n > 1 else "") for r, n in parts)
    return Rung(ident, first.cls, first.index, {}, tuple(edits),
                "global_batch" if all(r.keeps == "global_batch" for r, _ in parts) else None,
                any(r.semantic for r, _ in parts), " ".join(r.why for r, _ in parts), (), first.source)


def rung_values(rung: Rung, cfg: Config, facts: Mapping[str, Any], cls: str,
                parts: Sequence[tuple[Rung, int]] = ()) -> dict[str, Any] | None:
    """The config's canonical values after the rung, or None when the rung does not apply to it (a combined rung:
    see `applied_parts`)."""
    if len(parts) > 1 or (parts and parts[0][1] > 1):
        return applied_parts(parts, cfg, facts, cls)[0]
    if not holds(rung.when, facts):
        return None
    changes = compute_changes(rung, cfg.values)
    if changes is None:
        return None
    _memory_never_rises(cls, changes, rung, cfg)
    return {**cfg.values, **{c.key: c.new for c in changes}}


def applied_parts(parts: Sequence[tuple[Rung, int]], cfg: Config, facts: Mapping[str, Any], cls: str
                  ) -> tuple[dict[str, Any] | None, list[tuple[Rung, int]]]:
    """A combined rung, part by part, on one config: each part where its precondition holds on what the parts
    before it left (a DeepSpeed switch moves the ZeRO facts to its target's stage); a part that does not apply here
    (a split at micro 1, ZeRO-3 where it is already on) is left out. (values after, the parts applied)."""
    cur = dict(cfg.values)
    zero = dict(facts.get("zero") or {})
    done: list[tuple[Rung, int]] = []
    for r, n in parts:
        k = 0
        for _ in range(n):
            f = {**facts, "config": {**(facts.get("config") or {}), **cur}, "zero": zero}
            if not holds(r.when, f):
                break
            changes = compute_changes(r, cur)
            if changes is None:
                break
            # the guard judges each part against what the parts before it left
            _memory_never_rises(cls, changes, r, replace(cfg, values=dict(cur)))
            cur.update({c.key: c.new for c in changes})
            k += 1
            req = next((e["switch_file"].get("require") or {} for e in r.edit if "switch_file" in e), None)
            if req is not None:
                zero = {"stage": req.get("stage", zero.get("stage")),
                        "offload": "cpu" if req.get("offload") else None}
        if k:
            done.append((r, k))
    return (cur if done else None), done


def file_edits(rung: Rung, cfg: Config, new_values: Mapping[str, Any], launchers: Sequence[Launcher],
               world: int | None, done: Sequence[FileEdit], cls: str) -> tuple[list[FileEdit], list[str]]:
    """The text edits that take one config (and its launcher / DeepSpeed file) to `new_values`."""
    out: list[FileEdit] = []
    notes: list[str] = []
    changes = [CanonicalChange(k, cfg.values.get(k), v) for k, v in new_values.items() if cfg.values.get(k) != v
               and k not in ("zero_stage", "offload")]
    _memory_never_rises(cls, changes, rung, cfg)
    vedits = _value_edits(cfg, changes)
    for e in rung.edit:
        if "switch_file" in e:
            ref = _switch_target(rung, cfg)
            if ref is None:
                notes.append(f"{cfg.path}: no suitable DeepSpeed config next to its current one")
                continue
            path = cfg.dialect.path("zero_config")
            assert path is not None
            vedits.append((ValueEdit(path, ref), cfg.values.get("zero_config"), ref))
        if "launcher_env" in e:
            found = job_for_config(cfg.path, launchers)
            if found:
                fe = _launcher_env_edit(found[0].path, e["launcher_env"]["name"], e["launcher_env"]["value"])
                if fe and all(not same_file(x.path, fe.path) for x in [*done, *out]):
                    out.append(fe)
    if vedits:
        after = edit_text(cfg.text, cfg.path, [v for v, _, _ in vedits])
        if after != cfg.text:
            out.append(FileEdit(cfg.path, cfg.text, after, tuple((".".join(v.path), o, n) for v, o, n in vedits),
                                world, _global(cfg.values, world), _global(new_values, world)))
    out.extend(_deepspeed_edits(cfg, changes, [*done, *out]))
    return out, notes


def _converge(targets: Sequence[Config], planned: dict[str, dict[str, Any]]) -> None:
    """Siblings end on the same split: where two planned configs keep the same micro x accumulation product,
    both take the smaller micro batch (the lower-memory split), so none of them is raised."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    for cfg in targets:
        v = planned.get(cfg.path)
        if not v or not isinstance(v.get("micro_batch"), int) or not isinstance(v.get("grad_accum"), int):
            continue
        groups.setdefault((v["micro_batch"] * v["grad_accum"],), []).append(cfg.path)
    for paths in groups.values():
        low = min(planned[p]["micro_batch"] for p in paths)
        for p in paths:
            v = planned[p]
            if v["micro_batch"] != low and v["micro_batch"] % low == 0:
                factor = v["micro_batch"] // low
                v["micro_batch"], v["grad_accum"] = low, v["grad_accum"] * factor


def _deepspeed_edits(cfg: Config, changes: Sequence[Any], done: Sequence[FileEdit]) -> list[FileEdit]:
    """Explicit batch numbers in the referenced DeepSpeed JSON must follow the YAML (HF raises on a mismatch)."""
    if cfg.zero is None or cfg.zero.path is None or not cfg.zero.batch:
        return []
    if any(same_file(e.path, cfg.zero.path) for e in done):
        return []
    mapping = {"micro_batch": "train_micro_batch_size_per_gpu", "grad_accum": "gradient_accumulation_steps"}
    vedits = [ValueEdit((mapping[c.key],), c.new) for c in changes
              if c.key in mapping and mapping[c.key] in cfg.zero.batch]
    if not vedits:
        return []
    text = read_text(cfg.zero.path)
    after = edit_text(text, cfg.zero.path, vedits)
    return [FileEdit(cfg.zero.path, text, after, tuple((".".join(v.path), cfg.zero.batch.get(v.path[0]), v.value)
                                                       for v in vedits), kind="deepspeed")]


# --- launcher fixes for non-memory classes -----------------------------------------------------------------------

_PROG = re.compile(r"(?<![\w./-])(nohup|torchrun|llamafactory-cli|accelerate|deepspeed|python[\d.]*)(?=\s)")


def _setsid_edit(lau: Launcher) -> FileEdit | None:
    lines = lau.text.splitlines(keepends=True)
    changed = []
    for j in lau.jobs:
        if j.hup_safe:
            continue
        # the program word may sit on a continuation line after `VAR=value \` prefixes
        idx, m = j.line - 1, None
        where = list(range(j.line - 1, min(j.end_line, len(lines))))
        if j.own_line:
            where.append(j.own_line - 1)  # a job in a function: the fix goes into the function's body
        for k in where:
            m = _PROG.search(lines[k])
            if m:
                idx = k
                break
        if not m or lines[idx][: m.start()].rstrip().endswith("setsid"):
            continue
        lines[idx] = lines[idx][: m.start()] + "setsid " + lines[idx][m.start():]
        changed.append((f"line {j.line}", None, "setsid"))
    if not changed:
        return None
    return FileEdit(lau.path, lau.text, "".join(lines), tuple(changed), kind="launcher")


def _port_edit(lau: Launcher) -> FileEdit | None:
    jobs = list(lau.jobs)
    used = {j.master_port for j in jobs if j.master_port}
    lines = lau.text.splitlines(keepends=True)
    changed = []
    taken: set[int] = set()
    for j in jobs:
        known = [x for x in jobs if x.port == "default" or x.port.isdigit()]  # not free, random or unknown
        clash = j in known and any(concurrent(j, k) and (j.master_port or 29500) == (k.master_port or 29500)
                                   for k in known if k is not j)
        port = j.master_port or 29500
        if not clash or port not in taken:
            taken.add(port)
            continue
        new = next(p for p in range(29501, 65000) if p not in used and p not in taken)
        taken.add(new)
        used.add(new)
        idx = j.line - 1
        line = lines[idx]
        m = re.search(r"(--master[_-]port[= ])(\d+)", line)
        if m:
            line = line[: m.start(2)] + str(new) + line[m.end(2):]
        elif j.kind in ("llamafactory-cli", "python-wrapper"):
            # these read MASTER_PORT from the environment (a wrapper only when its source does)
            mm = _PROG.search(line)
            if not mm or (j.kind == "python-wrapper" and not j.reads_master_port):
                continue
            line = line[: mm.start()] + f"MASTER_PORT={new} " + line[mm.start():]
        else:
            # torchrun, torch.distributed.launch and deepspeed read --master_port, never MASTER_PORT;
            # accelerate reads --main_process_port
            opt = "--main_process_port" if j.kind == "accelerate" else "--master_port"
            mm = re.search(r"(?<![\w./-])(torchrun|torch\.distributed\.launch|torch\.distributed\.run|deepspeed|"
                           r"accelerate\s+launch)(?=\s|$)", line)
            if not mm:
                continue
            line = line[: mm.end()] + f" {opt} {new}" + line[mm.end():]
        lines[idx] = line
        changed.append((f"line {j.line}", port, new))
    if not changed:
        return None
    return FileEdit(lau.path, lau.text, "".join(lines), tuple(changed), kind="launcher")


def _launcher_plan(diag: Diagnosis, log: str, log_picked: bool, fc: FailureClass, config: str | None,
                   launchers: Sequence[Launcher]) -> Plan:
    related = [lau for lau, _ in _launchers_for_log(log, launchers, diag)]
    if not related and (config or diag.run.config):
        try:
            cpath = find_config(diag, log, config, launchers)
            found = job_for_config(cpath, launchers)
            related = [found[0]] if found else []
        except ConfigError:
            related = []
    if not related:
        return Plan(log, log_picked, diag, "nothing",
                    message="no launcher script found below the current directory for this log (oomfix looks for "
                            "the launcher from where it runs: run it from the project root); fix the launch by "
                            "hand: " + " ".join(fc.advice))
    edits = []
    for lau in {lau.path: lau for lau in related}.values():
        fe = _setsid_edit(lau) if fc.launcher_fix == "setsid" else _port_edit(lau)
        if fe is not None:
            edits.append(fe)
    if not edits and fc.launcher_fix != "setsid":
        # no two concurrent jobs of the launcher share a port (or the one that does cannot be given one: a wrapper
        # that ignores MASTER_PORT): the port was held by something else, which no launcher edit fixes
        port = diag.run.master_port
        held = f"port {port}" if port else "the port"
        names = ", ".join(display_path(lau.path) for lau in {lau.path: lau for lau in related}.values())
        return Plan(log, log_picked, diag, "nothing",
                    message=f"no launcher change: the concurrent jobs of {names} do not share a master port oomfix "
                            f"can move, so {held} was held by something else (another job, a stale process of an "
                            f"earlier run); free it (`ss -ltnp | grep {port or 'PORT'}`) or start the job on another "
                            f"port (MASTER_PORT / --master_port); no config change")
    if not edits:
        return Plan(log, log_picked, diag, "nothing", message="the launcher already has the fix; no config change")
    key = fc.launcher_fix.rsplit("_", 1)[-1] if fc.launcher_fix else ""
    why = next((a for a in fc.advice if key in a), fc.meaning)
    return Plan(log, log_picked, diag, "edits", rule=f"{fc.cls}-launcher-{fc.launcher_fix}", why=why,
                edits=tuple(edits))


def plan_apply(log: str | None = None, config: str | None = None, all_configs: bool = False,
               allow_semantic: bool = False, rules_dir: str | None = None, root: str = ".") -> Plan:
    picked = log is None
    log = log or newest_log(root)
    diag = diagnose_logs([log], rules_dir=rules_dir)
    done = already_applied(log, root)
    if done is not None:
        journal = Journal(root)
        files = ", ".join(os.path.relpath(journal.resolve(f["file"])) for f in done["files"])
        back = [os.path.relpath(journal.resolve(f)) for f in reverted_files(journal, done)]
        more = (f" {', '.join(back)} is back at its values from before that fix while the other files keep it; "
                f"restore it with `oomfix undo` and apply again, or edit it by hand." if back else "")
        return Plan(log, picked, diag, "already", rule=done.get("rule"),
                    message=f"this log was already applied ({done['tx']}, rule {done.get('rule')}: {files}); "
                            f"nothing changed. `oomfix undo` reverts it." + more)
    rules = load_rules(rules_dir)
    fc = rules.classes.get(diag.cls)
    if fc is None:
        raise RuleError(f"no rule file for class '{diag.cls}'")
    launchers = launchers_in([root])
    if fc.launcher_fix:
        return _launcher_plan(diag, log, picked, fc, config, launchers)
    if not fc.config_edits or diag.cls not in MEMORY_CLASSES and diag.cls != "nan_loss":
        return Plan(log, picked, diag, "nothing", message=f"{diag.cls}: no config change. " + _advice_text(fc))
    if diag.cls not in MEMORY_CLASSES and not allow_semantic and all(r.semantic for r in fc.ladder):
        # nan_loss: every rung changes what is trained, so without --allow-semantic-changes there is nothing to
        # propose, whatever the config says; no need to find it (an error would hide the diagnosis)
        opt_in = ", ".join(r.id for r in fc.ladder)
        return Plan(log, picked, diag, "no_rung",
                    message=f"{diag.cls}: no config change without --allow-semantic-changes (its rungs change "
                            f"training semantics: {opt_in}). " + " ".join(fc.advice),
                    skipped=tuple(f"{r.id} (changes training semantics: needs --allow-semantic-changes)"
                                  for r in fc.ladder))
    if diag.cls in MEMORY_CLASSES and diag.confidence == "low":
        return Plan(log, picked, diag, "nothing",
                    message=f"{diag.cls} is only a low-confidence diagnosis ({diag.reason}); confirm it before "
                            f"changing configs")
    return _memory_plan(diag, log, picked, fc, config, all_configs, allow_semantic, launchers)


def _advice_text(fc: FailureClass) -> str:
    """The class's advice after "no config change." (an advice line that says so itself is not said twice)."""
    text = " ".join(fc.advice)
    m = re.match(r"no config change\s*[:.]\s*", text, re.I)
    return text[m.end():][:1].upper() + text[m.end() + 1:] if m else text


def _encode(text: str) -> bytes:
    return text.encode("utf-8", errors="surrogateescape")


def check_writable(plan: Plan, root: str = ".", explicit: Sequence[str] = ()) -> None:
    """Refuse, before anything is written, edits that oomfix must not make on its own."""
    for e in plan.edits:
        named = any(same_file(e.path, x) for x in explicit if os.path.exists(x))
        if not inside(e.path, root) and not named:
            raise ConfigError(f"{e.path}: outside the directory tree being worked on ({os.path.realpath(root)}); "
                              f"not writing it unless named with --config")
        st = os.stat(e.path)
        if not st.st_mode & 0o222:
            raise ConfigError(f"{e.path}: read-only; not replacing it (chmod u+w it first if the edit is wanted)")


def write_plan(plan: Plan, root: str = ".", explicit: Sequence[str] = ()) -> str | None:
    """Write the plan's edits atomically and journal them. Returns the transaction id, None if nothing was written
    (a plan without edits, or a concurrent oomfix applied the same log while this one waited for the lock)."""
    if plan.status != "edits":
        return None
    check_writable(plan, root, explicit)
    journal = Journal(root)
    log_sha = file_sha256(plan.log) if plan.log else None  # --align-siblings has no log
    with journal.lock():
        if plan.log and already_applied(plan.log, root) is not None:
            return None
        for e in plan.edits:
            if file_sha256(e.path) != sha256(_encode(e.before)):
                raise ConfigError(f"{e.path}: changed on disk since it was read; nothing written, run again")
        writes = [PlannedWrite(e.path, _encode(e.before), _encode(e.after)) for e in plan.edits]
        return journal.write(writes, log=os.path.abspath(plan.log) if plan.log else None, log_sha=log_sha,
                             rule=plan.rule, cls=plan.diagnosis.cls if plan.log else None)


def already_applied(plan_log: str, root: str = ".") -> dict[str, Any] | None:
    """The journal's transaction for this log, if the files still carry its edit. Judged from the files' content:
    when every file it wrote is back at its hash from before the fix (`git checkout configs/`, an editor's undo),
    the edit no longer stands and the log's fix is proposed again. A file edited since in some other way (a further
    fix on top, a learning rate changed by hand) still counts as carrying it: proposing the log's fix again there
    would climb a second rung for one failure."""
    sha = file_sha256(plan_log)
    if sha is None:
        return None
    journal = Journal(root)
    tx = journal.applied(sha)
    if tx is None:
        return None
    return None if reverted_files(journal, tx) == [f["file"] for f in tx.get("files", [])] else tx


def reverted_files(journal: Journal, tx: Mapping[str, Any]) -> list[str]:
    """The files of a transaction whose content is back at its before-hash (and was not rewritten by a later
    transaction to that same content)."""
    return [f["file"] for f in tx.get("files", [])
            if file_sha256(journal.resolve(f["file"])) == f["before_sha256"]]


# --- aligning drifted siblings (no log needed) ---------------------------------------------------------------

ALIGN_RULE = "align-siblings"


def plan_align(root: str = ".") -> Plan:
    """`oomfix apply --align-siblings`: every sibling group (as `oomfix check` groups them: same directory and
    model/stage/finetuning type, or started side by side by one launcher) whose configs drift in their
    micro-batch/accumulation split moves to the group's lower-memory split: the smallest micro batch of the
    group, accumulation raised to keep each config's global batch exactly. Configs whose global batches differ, or
    whose batch cannot be split evenly, are left alone with a note (choosing a global batch changes training)."""
    from oomfix.checktree import _world, discover, sibling_groups
    from oomfix.model import RootCause

    tree = discover([root])
    rung = Rung(ALIGN_RULE, "cuda_oom", 0, {}, (), "global_batch", False,
                "Siblings train the same model the same way: every drifted sibling moves to the lower-memory split "
                "of its group (the smaller micro batch, accumulation raised to keep the global batch), so none "
                "of them is raised.", (), "oomfix apply --align-siblings")
    edits: list[FileEdit] = []
    notes: list[str] = []
    groups = [g for g in sibling_groups(tree) if len(g) > 1]
    for group in groups:
        by_world: dict[Any, list[Config]] = {}
        for c in group:
            by_world.setdefault(_world(tree, c), []).append(c)
        for world, cfgs in by_world.items():
            sized = [c for c in cfgs if isinstance(c.values.get("micro_batch"), int)
                     and isinstance(c.values.get("grad_accum"), int) and c.values["micro_batch"] >= 1]
            splits = {(c.values["micro_batch"], c.values["grad_accum"]) for c in sized}
            if len(splits) < 2:
                continue
            products = {m * a for m, a in splits}
            names = ", ".join(c.path for c in sized)
            if len(products) > 1:
                notes.append(f"{names}: their global batches differ ({sorted(products)} x world size); not aligning "
                             f"(choosing one changes training; `oomfix check` reports it)")
                continue
            product = products.pop()
            low = min(m for m, _ in splits)
            if product % low:
                notes.append(f"{names}: micro batch {low} does not divide the batch {product}; not aligning")
                continue
            for c in sized:
                if c.values["micro_batch"] == low:
                    continue
                new = {**c.values, "micro_batch": low, "grad_accum": product // low}
                fes, more = file_edits(rung, c, new, tree.launchers, world, edits, "cuda_oom")
                edits.extend(fes)
                notes.extend(more)
    diag = Diagnosis("none", "high", "no log: aligning sibling configs", RootCause())
    if not edits:
        if not groups:
            n = len(tree.configs)
            msg = (f"no sibling configs below {root} ({n} training config{'' if n == 1 else 's'} found, none with a "
                   f"sibling); nothing to align")
        elif notes:  # drift that cannot be aligned without choosing a global batch: not "they agree"
            msg = "nothing aligned: " + "; ".join(notes)
        else:
            msg = "the sibling configs already agree on their micro-batch/accumulation split; nothing to change"
        return Plan("", False, diag, "nothing", rule=ALIGN_RULE, skipped=tuple(notes), message=msg)
    return Plan("", False, diag, "edits", rule=ALIGN_RULE, why=rung.why, edits=tuple(edits), skipped=tuple(notes))
