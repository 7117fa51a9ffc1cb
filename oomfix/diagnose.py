"""The `diagnose` use case: classify the logs of one job and attach the rules' advice."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any

from oomfix.classify import diagnose as classify_logs
from oomfix.errors import UsageError
from oomfix.model import Diagnosis
from oomfix.reader import Prefilter


def diagnosis_facts(d: Diagnosis) -> dict[str, Any]:
    """What rule preconditions may ask about a diagnosis."""
    config = d.run.canonical_values()
    return {
        "class": d.cls,
        "phase": d.root_cause.phase or "",
        "memory": asdict(d.memory) if d.memory is not None else {},
        "config": config,
    }


def diagnose_logs(paths: Sequence[str], config: str | None = None, rules_dir: str | None = None,
                  prefilter: Prefilter | None = None) -> Diagnosis:
    if not paths:
        raise UsageError("no log given")
    if list(paths).count("-") > 1:
        raise UsageError("'-' (stdin) can be given only once")
    from oomfix.rules import advice_for, load_rules

    rules = load_rules(rules_dir)
    d = classify_logs(paths, prefilter, rules.user_patterns())
    advice = advice_for(d.cls, diagnosis_facts(d), rules)
    if d.cls == "unknown" and (d.root_cause.rank is not None or d.root_cause.local_rank is not None):
        who = d.root_cause.rank if d.root_cause.rank is not None else d.root_cause.local_rank
        advice.insert(0, f"Rank {who} exited first; its own error is not in this log. Look for its "
                         f"[rank{who}]: traceback (or its node's log) above the summary.")
    run = d.run
    if config is not None:
        run = replace(run, config=config)
    return replace(d, advice=tuple(advice), run=run)
