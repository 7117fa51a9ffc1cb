"""Limits for the regexes users put in rule files (`patterns[].regex`), which oomfix compiles and runs on logs.

Two costs are bounded, because a per-match timeout alone bounds neither:
- compiling: the `regex` module expands nested counted repeats, so `(?:(?:a{1000}){1000}){1000}` asks for ~10^9
  nodes (it reached 23.8 GB before this limit). `regex_problem` estimates that size from the pattern's text, with
  no compile, and refuses a pattern that is too long, nested too deeply or expands past `MAX_EXPANSION`.
- running: each search has the per-line timeout (`patterns.USER_REGEX_TIMEOUT`) and every pattern a total budget
  (`TOTAL_BUDGET` seconds per diagnosis); a pattern that spends it is dropped and reported in `warnings`, so that a
  pattern costing 0.2 s a line cannot make a 2-million-line log take days.
"""
from __future__ import annotations

import re

MAX_PATTERN_CHARS = 2000  # the longest built-in pattern is under 300 characters
MAX_GROUP_DEPTH = 50
MAX_EXPANSION = 100_000  # (?:x{999}){99} compiles in 30 ms and 40 MB; ten times that already needs 280 MB
TOTAL_BUDGET = 2.0  # seconds of matching per user pattern per diagnosis

_QUANT = re.compile(r"\{(\d*)(?:,(\d*))?\}")


def regex_problem(source: str) -> str | None:
    """Why a user regex must not be compiled (a phrase that completes "pattern 'x' ..."), or None."""
    if len(source) > MAX_PATTERN_CHARS:
        return f"is too large: {len(source)} characters (the limit is {MAX_PATTERN_CHARS})"
    try:
        size = expansion(source)
    except _TooDeep:
        return f"is too large: groups nested more than {MAX_GROUP_DEPTH} deep"
    if size > MAX_EXPANSION:
        return (f"is too large: its counted repeats expand to about {size:.3g} nodes when compiled (the limit is "
                f"{MAX_EXPANSION}); use an unbounded repeat (+, *) instead")
    return None


class _TooDeep(Exception):
    pass


def expansion(source: str) -> int:
    """An upper estimate of the nodes the compiled pattern needs: literals and classes count 1, a group the sum of
    its parts, and a counted repeat `{m,n}` multiplies what it repeats by its largest count (nested repeats
    multiply). Escapes, classes and groups are read well enough for an estimate; it never compiles anything."""
    stack: list[list[int]] = [[]]  # per open group: the weights of its atoms so far
    i, n = 0, len(source)
    while i < n:
        c = source[i]
        if c == "\\":
            stack[-1].append(1)
            i += 2
            continue
        if c == "[":
            j = i + 1
            if j < n and source[j] == "^":
                j += 1
            if j < n and source[j] == "]":
                j += 1
            while j < n and source[j] != "]":
                j += 2 if source[j] == "\\" else 1
            stack[-1].append(1)
            i = j + 1
            continue
        if c == "(":
            stack.append([])
            if len(stack) > MAX_GROUP_DEPTH:
                raise _TooDeep
            i += 1
            continue
        if c == ")" and len(stack) > 1:
            inner = stack.pop()
            stack[-1].append(max(1, sum(inner)))
            i += 1
            continue
        if c == "{":
            m = _QUANT.match(source, i)
            if m and (m.group(1) or m.group(2)) and stack[-1]:
                count = max(int(m.group(1) or 0), int(m.group(2) or 0), 1) if len(m.group(0)) < 12 else 10 ** 9
                stack[-1][-1] = min(stack[-1][-1] * count, 10 ** 12)
                i = m.end()
                continue
        if c not in "*+?|^$":
            stack[-1].append(1)
        i += 1
    while len(stack) > 1:
        inner = stack.pop()
        stack[-1].append(max(1, sum(inner)))
    return sum(stack[0])
