"""Surgical edits of YAML and JSON configs: splice new values into the original text, never re-dump.

ruamel.yaml composes the document to find where each scalar starts and ends; the new value's text replaces
exactly those characters. Everything else (comments, the inline comment on the edited line, quotes, key order,
indentation, blank lines, CRLF, a BOM, trailing spaces) stays byte for byte. Then the edited text is loaded again
with PyYAML, the YAML 1.1 loader that LLaMA-Factory/axolotl use (OmegaConf reads the same way), and the result
must differ from the original only where we meant it to; otherwise the edit is refused.
"""
from __future__ import annotations

import copy
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from oomfix.errors import EditRefused

MAX_ALIASES = 100  # more than this many aliases in a config is an alias bomb, not a training config
MAX_DEPTH = 200


@dataclass(frozen=True)
class ValueEdit:
    path: tuple[str, ...]
    value: Any
    after: tuple[str, ...] = ()  # where to add the key if it is missing: after the first of these keys present


def _yaml_scalar(value: Any, like: str | None = None, style: str | None = None) -> str:
    if isinstance(value, bool):
        word = "true" if value else "false"
        if like:
            if like[:1].isupper() and like[1:2].islower():
                word = word.capitalize()
            elif like.isupper():
                word = word.upper()
        return word
    if value is None:
        return like if like in ("~", "null", "Null", "NULL") else "null"
    if isinstance(value, (int, float)):
        return repr(value)
    s = str(value)
    if style == "'":
        return "'" + s.replace("'", "''") + "'"
    if style == '"':
        return json.dumps(s, ensure_ascii=False)
    plain_ok = re.fullmatch(r"[A-Za-z0-9_./\-][A-Za-z0-9_./\-: ]*", s) is not None and not s.endswith(" ") \
        and ": " not in s
    import yaml

    if plain_ok:
        try:
            if yaml.safe_load(s) == s:
                return s
        except yaml.YAMLError:
            pass
    return json.dumps(s, ensure_ascii=False)


def _newline_of(text: str, pos: int) -> str:
    end = text.find("\n", pos)
    if end > 0 and text[end - 1] == "\r":
        return "\r\n"
    if end == -1:
        return "\r\n" if "\r\n" in text else "\n"
    return "\n"


MAX_EXPANDED = 1_000_000  # values in the document once aliases are expanded


def _check_size(obj: Any, name: str) -> None:
    """Refuse documents whose aliases expand to an enormous tree (billion laughs) or that nest too deeply.
    Shared objects are counted once per reference without being walked again, so this stays linear."""
    memo: dict[int, int] = {}

    def count(o: Any, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise EditRefused(f"{name}: nested too deeply to edit safely")
        if not isinstance(o, (dict, list)):
            return 1
        key = id(o)
        if key in memo:
            return memo[key]
        children = o.values() if isinstance(o, dict) else o
        n = 1
        for c in children:
            n += count(c, depth + 1)
            if n > MAX_EXPANDED:
                raise EditRefused(f"{name}: aliases expand to more than {MAX_EXPANDED} values (an alias bomb?); "
                                  f"not editing it")
        memo[key] = n
        return n

    count(obj, 0)


def _set_path(obj: Any, path: Sequence[str], value: Any) -> None:
    cur = obj
    for k in path[:-1]:
        if not isinstance(cur, dict):
            raise EditRefused(f"cannot reach {'.'.join(path)}: a parent is not a mapping")
        cur = cur.setdefault(k, {})
    if not isinstance(cur, dict):
        raise EditRefused(f"cannot reach {'.'.join(path)}: a parent is not a mapping")
    cur[path[-1]] = value


def yaml_error_message(name: str, e: Exception) -> str:
    """`file:line:col: cannot parse as YAML: <problem> (<context> at line L, column C)`: the position editors jump
    to, and the cause (PyYAML and ruamel put it in `problem`; str(e) starts with the context and loses it)."""
    problem = getattr(e, "problem", None)
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    context, cmark = getattr(e, "context", None), getattr(e, "context_mark", None)
    where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark is not None else name
    what = problem or (str(e).strip().splitlines() or ["invalid YAML"])[0]
    if context:
        what += f" ({context}" + (f" at line {cmark.line + 1}, column {cmark.column + 1}" if cmark is not None and
                                  cmark is not mark else "") + ")"
    return f"{where}: cannot parse as YAML: {what}"


def load_yaml_safely(text: str, name: str) -> Any:
    """PyYAML safe load (YAML 1.1, what the frameworks use), refusing alias bombs and any tag that constructs objects."""
    import yaml

    aliases = 0
    try:
        for ev in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(ev, yaml.AliasEvent):
                aliases += 1
                if aliases > MAX_ALIASES:
                    raise EditRefused(f"{name}: more than {MAX_ALIASES} aliases (an alias bomb?): not editing it")
        data = yaml.load(text, Loader=yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader)
    except yaml.YAMLError as e:
        raise EditRefused(yaml_error_message(name, e)) from None
    except RecursionError:
        raise EditRefused(f"{name}: nested too deeply to parse") from None
    except ValueError as e:  # PyYAML's int(): a number beyond Python's int-str limit (4,300 digits)
        raise EditRefused(f"{name}: cannot parse as YAML: {_short(e)}") from None
    _check_size(data, name)
    return data


def _short(e: BaseException) -> str:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "integer string conversion" in msg:
        return "a number with more than 4300 digits (Python's int-str limit): not a training value"
    return msg[:200]


def _compose(text: str, name: str) -> Any:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError as RYAMLError

    y = YAML(typ="rt")
    try:
        return y.compose(text)
    except RYAMLError as e:
        raise EditRefused(yaml_error_message(name, e)) from None
    except RecursionError:
        raise EditRefused(f"{name}: nested too deeply to parse") from None


def _find_yaml(node: Any, path: Sequence[str], name: str) -> tuple[Any, Any, Any]:
    """(parent mapping node, key node, value node) for a path; value None when the last key is missing."""
    from ruamel.yaml.nodes import MappingNode

    cur = node
    for depth, key in enumerate(path):
        if not isinstance(cur, MappingNode):
            raise EditRefused(f"{name}: {'.'.join(path[:depth]) or 'the document'} is not a mapping")
        if getattr(cur, "flow_style", False):
            raise EditRefused(f"{name}: {'.'.join(path[:depth]) or 'the document'} is a flow mapping; not editing "
                              f"inside it")
        found = [(k, v) for k, v in cur.value if getattr(k, "value", None) == key]
        if any(k.value == "<<" for k, _ in cur.value) and not found:
            raise EditRefused(f"{name}: {'.'.join(path[: depth + 1])} may come from a merge key (<<); edit it where "
                              f"it is defined")
        if len(found) > 1:
            raise EditRefused(f"{name}: duplicate key '{key}' (line {found[1][0].start_mark.line + 1}); which one "
                              f"the framework reads is loader-specific: fix the file first")
        if not found:
            if depth == len(path) - 1:
                return cur, None, None
            raise EditRefused(f"{name}: {'.'.join(path[: depth + 1])} is missing")
        k, v = found[0]
        if depth == len(path) - 1:
            return cur, k, v
        cur = v
    raise EditRefused(f"{name}: empty key path")


def _edit_yaml(text: str, name: str, edits: Sequence[ValueEdit]) -> str:
    from ruamel.yaml.nodes import ScalarNode

    root = _compose(text, name)
    if root is None:
        raise EditRefused(f"{name}: empty document")
    splices: list[tuple[int, int, str]] = []
    for e in edits:
        parent, key, val = _find_yaml(root, e.path, name)
        if val is None:
            splices.append(_yaml_insertion(text, parent, e, name))
            continue
        if not isinstance(val, ScalarNode):
            raise EditRefused(f"{name}: {'.'.join(e.path)} is not a single value")
        if getattr(val, "anchor", None):
            raise EditRefused(f"{name}: {'.'.join(e.path)} is an anchor (&{val.anchor}) that other keys alias; "
                              f"editing it would change them too")
        if val.style in ("|", ">"):
            raise EditRefused(f"{name}: {'.'.join(e.path)} is a block scalar; not editing it")
        start, end = val.start_mark.index, val.end_mark.index
        if text[start:start + 1] == "*":
            raise EditRefused(f"{name}: {'.'.join(e.path)} is an alias (*); edit the anchored value instead")
        original = text[start:end]
        if val.tag and not str(val.tag).startswith("tag:yaml.org,2002:") and str(val.tag) not in ("!",) \
                and original.startswith("!"):
            raise EditRefused(f"{name}: {'.'.join(e.path)} carries a tag ({val.tag}); not editing it")
        new = _yaml_scalar(e.value, original if val.style is None else None, val.style)
        splices.append((start, end, new))
    return _apply_splices(text, splices, name)


def _yaml_insertion(text: str, parent: Any, e: ValueEdit, name: str) -> tuple[int, int, str]:
    if not parent.value:
        raise EditRefused(f"{name}: cannot add {'.'.join(e.path)} to an empty mapping")
    anchor_pair = None
    for want in e.after:
        for k, v in parent.value:
            if getattr(k, "value", None) == want:
                anchor_pair = (k, v)
                break
        if anchor_pair:
            break
    if anchor_pair is None:
        anchor_pair = parent.value[-1]
    k, v = anchor_pair
    indent = k.start_mark.column
    pos = v.end_mark.index
    # insert after the whole line the anchor value ends on (keeps its inline comment with it)
    if pos > 0 and text[pos - 1] == "\n":
        at = pos
    else:
        nl = text.find("\n", pos)
        at = len(text) if nl == -1 else nl + 1
    newline = _newline_of(text, max(k.start_mark.index, 0))
    line = " " * indent + f"{e.path[-1]}: {_yaml_scalar(e.value)}" + newline
    if at == len(text) and text and not text.endswith("\n"):
        line = newline + line.rstrip("\r\n")
    return at, at, line


def _apply_splices(text: str, splices: list[tuple[int, int, str]], name: str) -> str:
    splices.sort()
    for (_s1, e1, _), (s2, _e2, _) in zip(splices, splices[1:]):
        if s2 < e1:
            raise EditRefused(f"{name}: overlapping edits")
    out = text
    for start, end, new in reversed(splices):
        out = out[:start] + new + out[end:]
    return out


# --- JSON --------------------------------------------------------------------------------------------------

_WS = re.compile(r"[ \t\n\r]*")
def _skip_ws(s: str, i: int) -> int:
    return _WS.match(s, i).end()  # type: ignore[union-attr]  # "[ \t\n\r]*" always matches


_NUM = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")


class _JsonSpans:
    """A JSON parser that records the character span of every value by key path (for splicing)."""

    def __init__(self, text: str, name: str) -> None:
        self.s = text
        self.name = name
        self.spans: dict[tuple[str, ...], tuple[int, int]] = {}
        self.objects: dict[tuple[str, ...], list[tuple[str, int, int, int]]] = {}  # members: key, kstart, vs, ve

    def parse(self) -> None:
        i = self.value(_skip_ws(self.s, 0), ())
        if _skip_ws(self.s, i) != len(self.s):
            raise EditRefused(f"{self.name}: trailing data after the JSON document")

    def value(self, i: int, path: tuple[str, ...]) -> int:
        if len(path) > MAX_DEPTH:
            raise EditRefused(f"{self.name}: nested too deeply to edit safely")
        s = self.s
        if i >= len(s):
            raise EditRefused(f"{self.name}: unexpected end of JSON")
        c = s[i]
        start = i
        if c == "{":
            members = []
            i = _skip_ws(s, i + 1)
            if s[i:i + 1] == "}":
                i += 1
            else:
                while True:
                    if s[i:i + 1] != '"':
                        raise EditRefused(f"{self.name}: expected a key at offset {i}")
                    kstart = i
                    key, i = json.decoder.scanstring(s, i + 1)
                    i = _skip_ws(s, i)
                    if s[i:i + 1] != ":":
                        raise EditRefused(f"{self.name}: expected ':' at offset {i}")
                    i = _skip_ws(s, i + 1)
                    vs = i
                    i = self.value(i, path + (key,))
                    members.append((key, kstart, vs, i))
                    i = _skip_ws(s, i)
                    if s[i:i + 1] == ",":
                        i = _skip_ws(s, i + 1)
                        continue
                    if s[i:i + 1] == "}":
                        i += 1
                        break
                    raise EditRefused(f"{self.name}: expected ',' or '}}' at offset {i}")
            self.objects[path] = members
        elif c == "[":
            i = _skip_ws(s, i + 1)
            n = 0
            if s[i:i + 1] == "]":
                i += 1
            else:
                while True:
                    i = self.value(i, path + (f"[{n}]",))
                    n += 1
                    i = _skip_ws(s, i)
                    if s[i:i + 1] == ",":
                        i = _skip_ws(s, i + 1)
                        continue
                    if s[i:i + 1] == "]":
                        i += 1
                        break
                    raise EditRefused(f"{self.name}: expected ',' or ']' at offset {i}")
        elif c == '"':
            _, i = json.decoder.scanstring(s, i + 1)
        else:
            m = _NUM.match(s, i)
            if m:
                i = m.end()
            else:
                for lit in ("true", "false", "null"):
                    if s.startswith(lit, i):
                        i += len(lit)
                        break
                else:
                    raise EditRefused(f"{self.name}: invalid JSON at offset {i}")
        self.spans[path] = (start, i)
        return i


def relax_json(text: str) -> tuple[str, list[str]]:
    """DeepSpeed JSON as DeepSpeed's own loader reads it (hjson: `//`, `#` and `/* */` comments, trailing commas):
    the text with each comment and trailing comma replaced by spaces (newlines kept), so that every offset still
    points at the same character of the original and edits can be spliced into it; and what was relaxed, by line
    (an empty list for strict JSON). A leading BOM is the caller's business."""
    out = list(text)
    spots: list[tuple[str, int]] = []
    last_comma = -1  # offset of a comma with only blanks and comments after it so far
    for m in _JSON_TOKENS.finditer(text):
        tok = m.group()
        if tok[0] in "/#" and (tok[:2] in ("//", "/*") or tok[0] == "#"):
            spots.append(("a comment", m.start()))
            out[m.start():m.end()] = ["\n" if ch == "\n" else " " for ch in tok]
        elif tok == ",":
            last_comma = m.start()
        elif tok in ("}", "]") and last_comma >= 0:
            spots.append(("a trailing comma", last_comma))
            out[last_comma] = " "
            last_comma = -1
        else:
            last_comma = -1
    found, line, pos = [], 1, 0
    spots.sort(key=lambda w: w[1])
    for what, at in spots[:5]:  # line numbers of the first few are enough for a message
        line += text.count("\n", pos, at)
        pos = at
        found.append(f"{what} on line {line}")
    if len(spots) > 5:
        found.append(f"{len(spots) - 5} more")
    return "".join(out), found


# one token of JSON-with-comments: a string, a comment, a comma, a closing bracket, or a run of anything else
_JSON_TOKENS = re.compile(r'"(?:[^"\\\n]|\\.)*"?|//[^\n]*|#[^\n]*|/\*.*?(?:\*/|\Z)|[,}\]]|[^\s",}\]/#]+|/', re.S)


def json_strictness(text: str) -> list[str]:
    """What in a JSON config a strict `json.load` (transformers' and accelerate's HfDeepSpeedConfig, utf-8) refuses:
    a BOM, comments, trailing commas. Empty for strict JSON."""
    found = ["a UTF-8 BOM"] if text.startswith("\ufeff") else []
    return found + relax_json(text.lstrip("\ufeff"))[1]


def _edit_json(text: str, name: str, edits: Sequence[ValueEdit]) -> str:
    clean, _ = relax_json(text)  # same offsets as `text`: spans found in it splice into the original
    p = _JsonSpans(clean, name)
    p.parse()
    splices = []
    for e in edits:
        if e.path in p.spans:
            start, end = p.spans[e.path]
            if text[start] in "{[":
                raise EditRefused(f"{name}: {'.'.join(e.path)} is not a single value")
            splices.append((start, end, json.dumps(e.value)))
            continue
        members = p.objects.get(e.path[:-1])
        if not members:
            raise EditRefused(f"{name}: cannot add {'.'.join(e.path)}: its parent object is missing or empty")
        anchor = next((m for want in e.after for m in members if m[0] == want), members[-1])
        key, kstart, vs, ve = anchor
        line_start = clean.rfind("\n", 0, kstart) + 1
        indent = clean[line_start:kstart]
        if indent.strip():
            sep = " "  # one-line object
            indent = ""
        else:
            sep = _newline_of(text, kstart)
        splices.append((ve, ve, f",{sep}{indent}{json.dumps(e.path[-1])}: {json.dumps(e.value)}"))
    return _apply_splices(text, splices, name)


# --- entry point -----------------------------------------------------------------------------------------

def is_json_name(name: str) -> bool:
    return name.lower().endswith(".json")


def parse_config_text(text: str, name: str) -> Any:
    if is_json_name(name):
        text = text[1:] if text.startswith("\ufeff") else text
        try:
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                clean, relaxed = relax_json(text)
                if not relaxed:
                    raise
                return json.loads(clean)  # comments or trailing commas: read as DeepSpeed's hjson reads them
        except RecursionError:
            raise EditRefused(f"{name}: nested too deeply to parse") from None
        except ValueError as e:  # JSONDecodeError, and a number beyond Python's int-str limit
            raise EditRefused(f"{name}: cannot parse as JSON: {_short(e)}") from None
    return load_yaml_safely(text, name)


def edit_text(text: str, name: str, edits: Sequence[ValueEdit]) -> str:
    """Return `text` with the edits spliced in; raise EditRefused unless the only semantic change is the intended one."""
    if not edits:
        return text
    bom = text.startswith("\ufeff")
    body = text[1:] if bom else text
    before = parse_config_text(body, name)
    if not isinstance(before, dict):
        raise EditRefused(f"{name}: the document is not a mapping")
    new_body = _edit_json(body, name, edits) if is_json_name(name) else _edit_yaml(body, name, edits)
    after = parse_config_text(new_body, name)
    expected = copy.deepcopy(before)
    for e in edits:
        _set_path(expected, e.path, e.value)
    if after != expected or _types_differ(after, expected):
        raise EditRefused(f"{name}: the edit would change more than {', '.join('.'.join(e.path) for e in edits)}; "
                          f"not editing it")
    return ("\ufeff" if bom else "") + new_body


def _types_differ(a: Any, b: Any) -> bool:
    # 1 == 1.0 == True in Python: a bool turning into an int (or a float into an int) is a change of meaning
    if type(a) is not type(b):
        return True
    if isinstance(a, dict):
        return any(_types_differ(a[k], b[k]) for k in a if k in b)
    if isinstance(a, list):
        return any(_types_differ(x, y) for x, y in zip(a, b))
    return False
