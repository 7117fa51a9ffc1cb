"""The prefilter's plan: what each engine searches, derived from PATTERNS, and its per-user cache."""
import re

from oomfix import prefilter
from oomfix.patterns import ANCHORS, PATTERNS
from oomfix.reader import Prefilter


def test_the_plan_is_cached_per_user_and_a_bad_cache_is_derived_again(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    fresh = prefilter.Plan(PATTERNS, ANCHORS, frozenset(range(5)), frozenset({7}))
    (cached,) = (tmp_path / "oomfix").glob("plan-*.marshal")
    again = prefilter.Plan(PATTERNS, ANCHORS, frozenset(range(5)), frozenset({7}))
    assert again.tail_lit_markers == fresh.tail_lit_markers and again.loose == fresh.loose
    cached.write_bytes(b"\x00garbage")
    assert prefilter.Plan(PATTERNS, ANCHORS, frozenset(range(5)), frozenset({7})).loose == fresh.loose
    other = prefilter.Plan(PATTERNS, ANCHORS, frozenset(range(6)), frozenset({7}))  # another key, another file
    assert len(list((tmp_path / "oomfix").glob("plan-*.marshal"))) == 2 and other.anchors != ()


def test_a_read_only_cache_costs_only_the_derivation(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    monkeypatch.setenv("XDG_CACHE_HOME", str(ro / "cache"))
    plan = prefilter.Plan(PATTERNS, ANCHORS, frozenset(), frozenset())
    assert plan.prx[0] is not None and plan.prx[0].search(b"Received Signals.SIGHUP death signal")


def test_state_patterns_are_searched_apart_and_the_python_engine_has_few_passes_past_the_head():
    pf = Prefilter()
    plan = pf.plan
    state = {PATTERNS[i].name for i in plan.lazy}
    assert {"phase_save", "phase_eval", "phase_eval_done"} <= state and "phase_training" not in state  # FOLLOW
    assert not set(plan.tail_literals) & set(plan.state_literals)
    # in blocks of lines that differ by words the pure-Python engine makes one bytes.find pass per anchor and per
    # state literal (the rest only in windows): the cost of a multi-GB log of them
    assert len(pf.always) + len(plan.state_literals) <= 25
    assert set(pf.always) | set(pf.rest) == set(plan.tail_literals)


def test_loosened_regexes_compile_for_every_pattern():
    from oomfix.prefilter import _source, loosen

    for p in PATTERNS:
        lo = loosen(*_source(p))
        assert lo is not None, p.name
        assert not re.search(lo.encode(), b""), p.name  # never matches everything


def test_loosening_keeps_a_superset_through_backreferences_anchors_and_lookarounds():
    from oomfix.prefilter import loosen

    lo = loosen(r"^Attempted loss scale: (?P<a>[\d.]+), reducing to (?:(?P=a)|1)\s*$")
    assert lo is not None and "P=" not in lo
    assert re.search(lo.encode(), b"[rank0]: Attempted loss scale: 2, reducing to 2 [repeated 3x]")
    assert not re.search(lo.encode(), b"Attempted loss scale: 2, reducing")
    lo = loosen(r"^(?!.*\bINFO\b).*\b(?:Error|failed)\b")
    assert re.search(lo.encode(), b"x INFO failed") and not re.search(lo.encode(), b"indexing errors")



def test_a_coloured_line_shares_its_verdict_with_its_template_only_when_digits_cannot_matter():
    pf = Prefilter()
    esc = b"\x1b[32m"
    # the same template but for a digit; only the first is a scale stuck at its floor (loss_scale_floor names "1")
    floor = esc + b"[deepspeed] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 1, reducing to 1\x1b[0m"
    halving = esc + b"[deepspeed] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 2, reducing to 1\x1b[0m"
    got = []
    for line in (floor, halving, floor):
        lits = {m for m in pf.markers if m in line}
        got.append(pf.check(line, True, lits))
        assert got[-1] == pf.accept(line, True, lits)
    assert [p.name for p in got[0]] == ["loss_scale_floor"] and got[1] is False
    tok = esc + b"Token indices sequence length is longer than the specified maximum (2049 > 2048) indexing errors"
    assert not pf.plan.digits_in_variants(tok)
    assert pf.check(tok, True, {b"rror"}) == pf.check(tok.replace(b"2049", b"3071"), True, {b"rror"})
