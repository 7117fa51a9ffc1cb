"""The rules engine: failure classes, their meaning, advice and remediation ladders, loaded from `rules/*.yaml`.

A rule file describes one failure class and its ladder of rungs. A rung has a precondition (`when`), edits in
canonical names (`edit`), the invariant it keeps, whether it changes training semantics, why it helps, and
examples that the test-suite runs. Code here only evaluates conditions and performs the few edit operations
(`OPS`); what to do for which failure is data.
"""
from __future__ import annotations

import math
import os
import re
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
        """The user patterns, each with a fresh total time budget (userregex.TOTAL_BUDGET): called once per diagnosis."""
        pats = tuple(p for fc in self.classes.values() for p in fc.patterns)
        for p in pats:
            if hasattr(p.regex, "spent"):
                p.regex.spent = 0.0
        return pats

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


# --- the schema: every key of a rule file is checked for presence, type and range (unknown keys rejected), with a
# message naming the file and the key, the way pre-commit's clientlib validates .pre-commit-hooks.yaml -------------

LAUNCHER_FIXES = ("setsid", "unique_master_port")
_INT_KEYS = {"micro_batch": 1, "grad_accum": 1, "global_batch": 1, "eval_batch": 1, "seq_len": 1, "lora_rank": 1,
             "ddp_timeout": 1, "preprocessing_workers": 0, "dataloader_workers": 0}  # key -> smallest valid value
_BOOL_KEYS = ("grad_checkpointing", "fp16", "bf16")
QUANT_BITS = (2, 3, 4, 5, 6, 8)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FILE_NAME = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9_.+-]*\.json")
_RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
MAX_RULE_FILE_BYTES = 1 << 20


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def canonical_value_problem(key: str, value: Any) -> str | None:
    """Why `value` is not a valid value for canonical `key` (type and range), or None. Used for rule files and,
    again, by the memory guard on whatever a rung computes."""
    if key in _INT_KEYS:
        low = _INT_KEYS[key]
        if not _is_int(value) or value < low:
            return f"must be an integer >= {low}, not {value!r}"
    elif key in _BOOL_KEYS:
        if not isinstance(value, bool):
            return f"must be true or false, not {value!r}"
    elif key == "quantization_bit":
        if value is not None and (not _is_int(value) or value not in QUANT_BITS):
            return f"must be null or one of {', '.join(map(str, QUANT_BITS))}, not {value!r}"
    elif key == "zero_stage":
        if not _is_int(value) or not 0 <= value <= 3:
            return f"must be 0, 1, 2 or 3, not {value!r}"
    elif key == "offload":
        if value not in (None, "none", "cpu", "nvme"):
            return f"must be null, none, cpu or nvme, not {value!r}"
    elif key in ("zero_config", "optimizer"):
        if not (value is None and key == "zero_config") and (not isinstance(value, str) or not value.strip()
                                                             or any(c in value for c in "\n\r\x00")):
            return f"must be a one-line string, not {value!r}"
    return None


def _check_keys(obj: Any, allowed: set[str], source: str, where: str, required: tuple[str, ...] = ()) -> None:
    if not isinstance(obj, Mapping):
        raise _err(source, f"{where} must be a mapping, not {type(obj).__name__}")
    for k in obj:
        if k not in allowed:
            raise _err(source, f"unknown key '{k}' in {where} (allowed: {', '.join(sorted(allowed))})")
    for k in required:
        if k not in obj:
            raise _err(source, f"{where}: missing key '{k}'")


def _want(ok: bool, source: str, where: str, what: str, value: Any) -> None:
    if not ok:
        shown = repr(value)
        raise _err(source, f"{where} must be {what}, not {shown[:60] + '...' if len(shown) > 60 else shown}")


def _validate_condition(when: Any, source: str, where: str) -> None:
    if not isinstance(when, Mapping):
        raise _err(source, f"{where}.when must be a mapping of subject: test")
    for subject, test in when.items():
        if not isinstance(subject, str) or subject.split(".", 1)[0] not in _SUBJECT_ROOTS:
            raise _err(source, f"unknown subject '{subject}' in {where}.when (subjects start with "
                               f"{', '.join(_SUBJECT_ROOTS)})")
        if isinstance(test, Mapping):
            for op, arg in test.items():
                w = f"{where}.when.{subject}.{op}"
                if op not in CONDITION_OPS:
                    raise _err(source, f"unknown test '{op}' for '{subject}' in {where}.when "
                                       f"(one of: {', '.join(sorted(CONDITION_OPS))})")
                if op == "in":
                    _want(isinstance(arg, list), source, w, "a list", arg)
                elif op in ("gte", "gt", "lte", "lt"):
                    _want(_is_num(arg), source, w, "a number", arg)
                elif op in ("contains", "not_contains"):
                    _want(isinstance(arg, str), source, w, "a string", arg)
                elif op in ("set", "unset"):
                    _want(isinstance(arg, bool), source, w, "true or false", arg)
                else:
                    _want(arg is None or isinstance(arg, (str, int, float, bool)), source, w, "a scalar", arg)
        else:
            _want(test is None or isinstance(test, (str, int, float, bool)), source, f"{where}.when.{subject}",
                  "a scalar or a mapping of tests", test)


_EDIT_ARGS = {"set": ({"key", "value"}, ("key", "value")), "multiply": ({"key", "by"}, ("key", "by")),
              "divide": ({"key", "by"}, ("key", "by")), "shift_factor": ({"from", "to"}, ("from", "to")),
              "switch_file": ({"key", "candidates", "require"}, ("key", "candidates")),
              "launcher_env": ({"name", "value"}, ("name", "value"))}


def _validate_edit(edit: Any, source: str, where: str) -> None:
    if not isinstance(edit, Mapping) or len(edit) != 1:
        raise _err(source, f"each item of {where}.edit must be a one-key mapping ({', '.join(OPS)})")
    op, args = next(iter(edit.items()))
    if op not in OPS:
        raise _err(source, f"unknown edit operation '{op}' in {where}.edit (one of: {', '.join(OPS)})")
    w = f"{where}.edit.{op}"
    allowed, required = _EDIT_ARGS[op]
    _check_keys(args, allowed, source, w, required)
    for k in ("key", "from", "to"):
        if k in args and (not isinstance(args[k], str) or args[k] not in CANONICAL):
            raise _err(source, f"unknown canonical key '{args[k]}' in {w}.{k} (one of: {', '.join(CANONICAL)})")
    if op == "set":
        problem = canonical_value_problem(args["key"], args["value"])
        if problem:
            raise _err(source, f"{w}.value for {args['key']} {problem}")
    elif op in ("multiply", "divide"):
        _want(args["key"] in _INT_KEYS, source, f"{w}.key", "an integer setting", args["key"])
        _want(_is_int(args["by"]) and args["by"] >= 2, source, f"{w}.by", "an integer >= 2", args["by"])
    elif op == "shift_factor":
        for k in ("from", "to"):
            _want(args[k] in _INT_KEYS, source, f"{w}.{k}", "an integer setting", args[k])
        _want(args["from"] != args["to"], source, f"{w}.to", "a different key than 'from'", args["to"])
    elif op == "switch_file":
        _want(args["key"] == "zero_config", source, f"{w}.key", "zero_config", args["key"])
        cands = args["candidates"]
        _want(isinstance(cands, list) and all(isinstance(c, str) and _FILE_NAME.fullmatch(c) for c in cands),
              source, f"{w}.candidates", "a list of plain *.json file names (no directories: the candidates sit "
                                         "beside the current DeepSpeed config)", cands)
        req = args.get("require") or {}
        _check_keys(req, {"stage", "offload"}, source, f"{w}.require")
        if "stage" in req:
            _want(_is_int(req["stage"]) and 0 <= req["stage"] <= 3, source, f"{w}.require.stage", "0, 1, 2 or 3",
                  req["stage"])
        if "offload" in req:
            _want(isinstance(req["offload"], bool), source, f"{w}.require.offload", "true or false", req["offload"])
    elif op == "launcher_env":
        # written into a shell script: the name must be an identifier, the value one line (it is shell-quoted)
        name, value = args["name"], args["value"]
        _want(isinstance(name, str) and _ENV_NAME.fullmatch(name) is not None, source, f"{w}.name",
              "an environment variable name ([A-Za-z_][A-Za-z0-9_]*)", name)
        _want(isinstance(value, (str, int, float)) and not isinstance(value, bool) and len(str(value)) <= 4096
              and not any(c in str(value) for c in "\n\r\x00"), source, f"{w}.value", "a one-line string", value)


def _validate_example(ex: Any, source: str, where: str) -> None:
    _check_keys(ex, EXAMPLE_KEYS, source, where)
    for k in ("name", "dialect", "config", "launcher"):
        if k in ex:
            _want(isinstance(ex[k], str), source, f"{where}.{k}", "a string", ex[k])
    if "expect" in ex:
        _want(ex["expect"] is None or isinstance(ex["expect"], str), source, f"{where}.expect", "a string or null",
              ex["expect"])
    for k in ("diagnosis", "files"):
        if k in ex:
            _want(isinstance(ex[k], Mapping), source, f"{where}.{k}", "a mapping", ex[k])


def parse_rule_file(text: str, source: str) -> FailureClass:
    try:
        doc = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as e:
        raise _err(source, f"not valid YAML: {str(e).splitlines()[0]}") from None
    except ValueError as e:  # an integer beyond Python's int-str limit, and the like
        raise _err(source, f"not valid YAML: {str(e).splitlines()[0][:120]}") from None
    except RecursionError:
        raise _err(source, "nested too deeply") from None
    if not isinstance(doc, Mapping):
        raise _err(source, f"a rule file must be a mapping (class, title, meaning, ...), not "
                           f"{'an empty file' if doc is None else type(doc).__name__}")
    _check_keys(doc, CLASS_KEYS, source, "the file", ("class", "title", "meaning"))
    cls = doc["class"]
    if not isinstance(cls, str) or cls not in CLASSES:
        raise _err(source, f"unknown class {cls!r} (one of: {', '.join(CLASSES)})")
    for k in ("title", "meaning"):
        _want(isinstance(doc[k], str), source, k, "a string", doc[k])
    advice = doc.get("advice") or []
    if not isinstance(advice, list) or not all(isinstance(a, str) for a in advice):
        raise _err(source, "advice must be a list of strings")
    _want(isinstance(doc.get("config_edits", False), bool), source, "config_edits", "true or false",
          doc.get("config_edits"))
    _want(doc.get("launcher_fix") in (None, *LAUNCHER_FIXES), source, "launcher_fix",
          f"one of {', '.join(LAUNCHER_FIXES)}", doc.get("launcher_fix"))
    ladder = doc.get("ladder") or []
    _want(isinstance(ladder, list), source, "ladder", "a list of rungs", ladder)
    rungs = []
    for i, r in enumerate(ladder):
        where = f"ladder[{i}]"
        _check_keys(r, RUNG_KEYS, source, where, ("id", "why"))
        _want(isinstance(r["id"], str) and _RULE_ID.fullmatch(r["id"]) is not None, source, f"{where}.id",
              "a rule id (letters, digits, '-', '_', '.')", r["id"])
        where = f"{where} ({r['id']})"
        _want(isinstance(r["why"], str), source, f"{where}.why", "a string", r["why"])
        _want(isinstance(r.get("semantic", False), bool), source, f"{where}.semantic", "true or false",
              r.get("semantic"))
        _validate_condition(r.get("when") or {}, source, where)
        edits = r.get("edit") or []
        if not isinstance(edits, list):
            raise _err(source, f"{where}.edit must be a list")
        for one in edits:
            _validate_edit(one, source, where)
        examples = r.get("examples") or []
        _want(isinstance(examples, list), source, f"{where}.examples", "a list", examples)
        for j, ex in enumerate(examples):
            _validate_example(ex, source, f"{where}.examples[{j}]")
        keeps = r.get("keeps")
        if keeps not in (None, "global_batch"):
            raise _err(source, f"{where}.keeps must be 'global_batch' or absent")
        rungs.append(Rung(str(r["id"]), cls, i, dict(r.get("when") or {}), tuple(edits), keeps,
                          bool(r.get("semantic", False)), str(r["why"]).strip(),
                          tuple(r.get("examples") or ()), source))
    pats = []
    patterns = doc.get("patterns") or []
    _want(isinstance(patterns, list), source, "patterns", "a list", patterns)
    for i, p in enumerate(patterns):
        where = f"patterns[{i}]"
        _check_keys(p, PATTERN_KEYS, source, where)
        markers = p.get("markers")
        if not isinstance(p.get("id"), str) or not p.get("id") or not isinstance(p.get("regex"), str) \
                or not p.get("regex") or not isinstance(markers, list) or not markers or \
                not all(isinstance(m, str) and m for m in markers):
            raise _err(source, f"{where} needs 'id', 'regex' (strings) and 'markers' (literal strings a matching "
                               f"line contains)")
        if p.get("confidence", "medium") not in ("high", "medium", "low"):
            raise _err(source, f"{where}.confidence must be high, medium or low")
        from oomfix.patterns import user_pattern
        from oomfix.userregex import regex_problem

        problem = regex_problem(p["regex"])
        if problem:
            raise _err(source, f"{where}: pattern '{p['id']}' {problem}")
        try:
            pats.append(user_pattern(str(p["id"]), markers, str(p["regex"]), cls, p.get("confidence", "medium"),
                                     source))
        except (ValueError, MemoryError, RecursionError) as e:
            raise RuleError(f"{source}: {where}: pattern '{p['id']}' does not compile: "
                            f"{str(e).splitlines()[0][:200] if str(e) else type(e).__name__}") from None
    return FailureClass(cls, str(doc["title"]), str(doc["meaning"]).strip(), tuple(a.strip() for a in advice),
                        bool(doc.get("config_edits", False)), doc.get("launcher_fix"), tuple(rungs), source,
                        tuple(pats))


@lru_cache(maxsize=8)
def _load_dir(path: str) -> tuple[FailureClass, ...]:
    out = []
    for f in sorted(Path(path).glob("*.yaml")):
        try:
            if not f.is_file():
                raise RuleError(f"{f}: not a regular file")
            if f.stat().st_size > MAX_RULE_FILE_BYTES:
                raise RuleError(f"{f}: larger than {MAX_RULE_FILE_BYTES} bytes; not a rule file")
            text = f.read_bytes().decode("utf-8")
        except OSError as e:
            raise RuleError(f"{f}: cannot read: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise RuleError(f"{f}: not UTF-8 (byte {e.start})") from None
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
