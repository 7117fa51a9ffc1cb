"""The rules engine: failure classes, their meaning, advice and remediation ladders, loaded from `rules/*.yaml`.

A rule file describes one failure class and its ladder of rungs. A rung has a precondition (`when`), edits in
canonical names (`edit`), the invariant it keeps, whether it changes training semantics, why it helps, and
examples that the test-suite runs. Code here only evaluates conditions and performs the few edit operations
(`OPS`); what to do for which failure is data.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from oomfix.dialects import CANONICAL
from oomfix.errors import RuleError
from oomfix.model import CLASSES

CLASS_KEYS = {"class", "title", "meaning", "advice", "config_edits", "ladder", "launcher_fix", "patterns"}
PATTERN_KEYS = {"id", "markers", "regex", "confidence"}
RUNG_KEYS = {"id", "when", "edit", "keeps", "semantic", "why", "examples"}
EXAMPLE_KEYS = {"name", "dialect", "diagnosis", "config", "launcher", "expect", "files"}
OPS = ("set", "multiply", "divide", "shift_factor", "switch_file", "launcher_env")
CONDITION_OPS = {"eq", "ne", "gte", "gt", "lte", "lt", "in", "contains", "set", "unset", "not_contains"}
_SUBJECT_ROOTS = ("class", "phase", "memory", "config", "launcher", "zero", "files")


@dataclass(frozen=True)
class Rung:
    id: str
    cls: str
    index: int
    when: Mapping[str, Any]
    edit: tuple[Mapping[str, Any], ...]
    keeps: str | None
    semantic: bool
    why: str
    examples: tuple[Mapping[str, Any], ...]
    source: str


@dataclass(frozen=True)
class FailureClass:
    cls: str
    title: str
    meaning: str
    advice: tuple[str, ...]
    config_edits: bool
    launcher_fix: str | None
    ladder: tuple[Rung, ...]
    source: str
    patterns: tuple[Any, ...] = ()  # user log patterns (oomfix.patterns.UserPattern) that evidence this class


@dataclass(frozen=True)
class RuleSet:
    classes: Mapping[str, FailureClass] = field(default_factory=dict)

    def rung(self, rule_id: str) -> Rung | None:
        for fc in self.classes.values():
            for r in fc.ladder:
                if r.id == rule_id:
                    return r
        return None

    def user_patterns(self) -> tuple[Any, ...]:
        return tuple(p for fc in self.classes.values() for p in fc.patterns)

    def all_rungs(self) -> list[Rung]:
        return [r for fc in self.classes.values() for r in fc.ladder]


def builtin_rules_dir() -> Path:
    """`rules/` beside the package in a checkout; `oomfix/rules_data` (the same files) in an installed wheel."""
    here = Path(__file__).resolve().parent
    for cand in (here.parent / "rules", here / "rules_data"):
        if cand.is_dir() and any(cand.glob("*.yaml")):
            return cand
    raise RuleError("the built-in rules directory is missing from this installation")


def _err(source: str, msg: str) -> RuleError:
    return RuleError(f"{source}: {msg}")


def _check_keys(obj: Any, allowed: set[str], source: str, where: str) -> None:
    if not isinstance(obj, Mapping):
        raise _err(source, f"{where} must be a mapping")
    for k in obj:
        if k not in allowed:
            raise _err(source, f"unknown key '{k}' in {where} (allowed: {', '.join(sorted(allowed))})")


def _validate_condition(when: Any, source: str, where: str) -> None:
    if not isinstance(when, Mapping):
        raise _err(source, f"{where}.when must be a mapping of subject: test")
    for subject, test in when.items():
        if str(subject).split(".", 1)[0] not in _SUBJECT_ROOTS:
            raise _err(source, f"unknown subject '{subject}' in {where}.when")
        if isinstance(test, Mapping):
            for op in test:
                if op not in CONDITION_OPS:
                    raise _err(source, f"unknown test '{op}' for '{subject}' in {where}.when")


def _validate_edit(edit: Any, source: str, where: str) -> None:
    if not isinstance(edit, Mapping) or len(edit) != 1:
        raise _err(source, f"each item of {where}.edit must be a one-key mapping ({', '.join(OPS)})")
    op, args = next(iter(edit.items()))
    if op not in OPS:
        raise _err(source, f"unknown edit operation '{op}' in {where}.edit")
    if not isinstance(args, Mapping):
        raise _err(source, f"{where}.edit.{op} must be a mapping")
    allowed = {"set": {"key", "value"}, "multiply": {"key", "by"}, "divide": {"key", "by"},
               "shift_factor": {"from", "to"}, "switch_file": {"key", "candidates", "require"},
               "launcher_env": {"name", "value"}}[op]
    _check_keys(args, allowed, source, f"{where}.edit.{op}")
    for k in ("key", "from", "to"):
        if k in args and args[k] not in CANONICAL:
            raise _err(source, f"unknown canonical key '{args[k]}' in {where}.edit.{op}")


def parse_rule_file(text: str, source: str) -> FailureClass:
    try:
        doc = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as e:
        raise _err(source, f"not valid YAML: {str(e).splitlines()[0]}") from None
    _check_keys(doc, CLASS_KEYS, source, "the file")
    for req in ("class", "title", "meaning"):
        if req not in doc:
            raise _err(source, f"missing key '{req}'")
    cls = doc["class"]
    if cls not in CLASSES:
        raise _err(source, f"unknown class '{cls}' (one of: {', '.join(CLASSES)})")
    advice = doc.get("advice") or []
    if not isinstance(advice, list) or not all(isinstance(a, str) for a in advice):
        raise _err(source, "advice must be a list of strings")
    rungs = []
    for i, r in enumerate(doc.get("ladder") or []):
        where = f"ladder[{i}]"
        _check_keys(r, RUNG_KEYS, source, where)
        if "id" not in r or "why" not in r:
            raise _err(source, f"{where} needs 'id' and 'why'")
        _validate_condition(r.get("when") or {}, source, where)
        edits = r.get("edit") or []
        if not isinstance(edits, list):
            raise _err(source, f"{where}.edit must be a list")
        for e in edits:
            _validate_edit(e, source, where)
        for j, ex in enumerate(r.get("examples") or []):
            _check_keys(ex, EXAMPLE_KEYS, source, f"{where}.examples[{j}]")
        keeps = r.get("keeps")
        if keeps not in (None, "global_batch"):
            raise _err(source, f"{where}.keeps must be 'global_batch' or absent")
        rungs.append(Rung(str(r["id"]), cls, i, dict(r.get("when") or {}), tuple(edits), keeps,
                          bool(r.get("semantic", False)), str(r["why"]).strip(),
                          tuple(r.get("examples") or ()), source))
    pats = []
    for i, p in enumerate(doc.get("patterns") or []):
        where = f"patterns[{i}]"
        _check_keys(p, PATTERN_KEYS, source, where)
        markers = p.get("markers")
        if not p.get("id") or not p.get("regex") or not isinstance(markers, list) or not markers or \
                not all(isinstance(m, str) and m for m in markers):
            raise _err(source, f"{where} needs 'id', 'regex' and 'markers' (literal strings a matching line contains)")
        if p.get("confidence", "medium") not in ("high", "medium", "low"):
            raise _err(source, f"{where}.confidence must be high, medium or low")
        from oomfix.patterns import user_pattern

        try:
            pats.append(user_pattern(str(p["id"]), markers, str(p["regex"]), cls, p.get("confidence", "medium"),
                                     source))
        except ValueError as e:
            raise RuleError(str(e)) from None
    return FailureClass(cls, str(doc["title"]), str(doc["meaning"]).strip(), tuple(a.strip() for a in advice),
                        bool(doc.get("config_edits", False)), doc.get("launcher_fix"), tuple(rungs), source,
                        tuple(pats))


@lru_cache(maxsize=8)
def _load_dir(path: str) -> tuple[FailureClass, ...]:
    out = []
    for f in sorted(Path(path).glob("*.yaml")):
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise RuleError(f"{f}: cannot read: {e}") from None
        out.append(parse_rule_file(text, str(f)))
    return tuple(out)


def load_rules(extra_dir: str | None = None) -> RuleSet:
    """The built-in rules plus, with `extra_dir`, a user's: user rungs are tried before the built-in ones."""
    classes: dict[str, FailureClass] = {fc.cls: fc for fc in _load_dir(str(builtin_rules_dir()))}
    if extra_dir is not None:
        if not os.path.isdir(extra_dir):
            raise RuleError(f"{extra_dir}: not a directory of rules")
        for fc in _load_dir(os.path.abspath(extra_dir)):
            base = classes.get(fc.cls)
            if base is None:
                classes[fc.cls] = fc
            else:
                ladder = tuple(fc.ladder) + tuple(base.ladder)
                classes[fc.cls] = FailureClass(base.cls, base.title, base.meaning, base.advice + fc.advice,
                                               base.config_edits or fc.config_edits, base.launcher_fix,
                                               ladder, base.source, base.patterns + fc.patterns)
    ids: dict[str, str] = {}
    for fc in classes.values():
        for r in fc.ladder:
            if r.id in ids:
                raise RuleError(f"{r.source}: rule id '{r.id}' is also defined in {ids[r.id]}")
            ids[r.id] = r.source
    return RuleSet(classes)


# --- conditions ------------------------------------------------------------------------------------------

def _lookup(facts: Mapping[str, Any], subject: str) -> Any:
    if subject in facts:
        return facts[subject]
    cur: Any = facts
    for part in subject.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _test(value: Any, test: Any) -> bool:
    if not isinstance(test, Mapping):
        if test == "unset":
            return value is None
        if test == "set":
            return value is not None
        return value == test
    for op, arg in test.items():
        if op == "set" and (value is not None) != bool(arg):
            return False
        if op == "unset" and (value is None) != bool(arg):
            return False
        if op == "eq" and value != arg:
            return False
        if op == "ne" and value == arg:
            return False
        if op == "in" and value not in (arg or []):
            return False
        if op == "contains" and (value is None or str(arg) not in str(value)):
            return False
        if op == "not_contains" and value is not None and str(arg) in str(value):
            return False
        if op in ("gte", "gt", "lte", "lt"):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                return False
            ok = {"gte": value >= arg, "gt": value > arg, "lte": value <= arg, "lt": value < arg}[op]
            if not ok:
                return False
    return True


def holds(when: Mapping[str, Any], facts: Mapping[str, Any]) -> bool:
    return all(_test(_lookup(facts, s), t) for s, t in when.items())


# --- edit operations on canonical values -------------------------------------------------------------------

def smallest_prime_factor(n: int) -> int:
    for p in range(2, int(math.isqrt(n)) + 1):
        if n % p == 0:
            return p
    return n


@dataclass(frozen=True)
class CanonicalChange:
    key: str
    old: Any
    new: Any


def compute_changes(rung: Rung, values: Mapping[str, Any]) -> list[CanonicalChange] | None:
    """New canonical values for a config, or None when the rung cannot keep its invariant here."""
    cur = dict(values)
    changes: dict[str, CanonicalChange] = {}

    def put(key: str, new: Any) -> None:
        old = changes[key].old if key in changes else values.get(key)
        cur[key] = new
        changes[key] = CanonicalChange(key, old, new)

    for edit in rung.edit:
        op, a = next(iter(edit.items()))
        if op == "set":
            put(a["key"], a["value"])
        elif op in ("multiply", "divide"):
            v = cur.get(a["key"])
            if not isinstance(v, int) or isinstance(v, bool):
                return None
            by = int(a["by"])
            if op == "divide":
                if v % by or v // by < 1:
                    return None  # non-integer split: refuse rather than change the global batch
                put(a["key"], v // by)
            else:
                put(a["key"], v * by)
        elif op == "shift_factor":
            src, dst = cur.get(a["from"]), cur.get(a["to"])
            if not isinstance(src, int) or not isinstance(dst, int) or src < 2:
                return None
            p = smallest_prime_factor(src)
            put(a["from"], src // p)
            put(a["to"], dst * p)
        # switch_file and launcher_env are resolved by the planner: they need the file system
    if rung.keeps == "global_batch":
        before = (values.get("micro_batch") or 1) * (values.get("grad_accum") or 1)
        after = (cur.get("micro_batch") or 1) * (cur.get("grad_accum") or 1)
        if before != after:
            return None
    return [c for c in changes.values() if c.old != c.new]


def advice_for(cls: str, facts: Mapping[str, Any], rules: RuleSet | None = None) -> list[str]:
    """What to do, for diagnose: the class's advice plus the reason of the first rung that fits the failure."""
    rules = rules or load_rules()
    fc = rules.classes.get(cls)
    if fc is None:
        return []
    out = list(fc.advice)
    for r in _advice_rungs(fc, facts):
        out.append(r.why)
    return out


# the batch split is what a training log normally shows (HF's "Instantaneous batch size per device"); worker counts
# and the rest are known only from the config
_LOG_SHOWN = ("config.micro_batch", "config.grad_accum")


def _advice_rungs(fc: FailureClass, facts: Mapping[str, Any]) -> Sequence[Rung]:
    # diagnose has no config on disk, only what the log shows: a condition on something unknown is skipped,
    # and a rung is advised only when everything known about it holds
    picked = []
    for r in fc.ladder:
        if r.edit and any(k.startswith("config.") and k not in _LOG_SHOWN and _lookup(facts, k) is None
                          for k in r.when):
            continue  # an edit of a value neither the log nor a readable config shows: it may not apply (0 workers)
        known = {k: v for k, v in r.when.items() if _lookup(facts, k) is not None}
        if known and holds(known, facts):
            picked.append(r)
    return picked[:2]
