"""The `diagnose` use case: classify the logs of one job and attach the rules' advice."""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

from oomfix.classify import diagnose as classify_logs
from oomfix.errors import ConfigError, UsageError
from oomfix.model import Diagnosis
from oomfix.reader import Prefilter

if TYPE_CHECKING:
    from oomfix.configs import Config


def _config_near(ref: str, logs: Sequence[str]) -> "Config | None":
    """The config a log names (`run.config`, or --config), read where the run read it: relative to the current
    directory, or to the log's directory and the two above it (logs/ under the project the job ran in)."""
    tried: list[str] = [ref]
    if not os.path.isabs(ref):
        for log in logs:
            if log == "-":
                continue
            d = os.path.dirname(os.path.abspath(log))
            for _ in range(3):
                tried.append(os.path.join(d, ref))
                d = os.path.dirname(d)
    for path in tried:
        if os.path.isfile(path) and _plain(path):
            from oomfix.configs import try_load  # only when there is a config to read: diagnose starts fast

            cfg = try_load(path)
            if cfg is not None:
                return cfg
    return None


_MAX_CONFIG_BYTES = 1 << 20
_MAX_DEPTH = 64
_BRACKET = re.compile(rb"[\[\]{}]")


def _plain(path: str) -> bool:
    """Worth reading for advice: a training config is small and shallow. A huge or deeply nested file (a hostile
    one costs the YAML parser seconds) is left to `apply` and `check`, which refuse it with a message."""
    try:
        if os.path.getsize(path) > _MAX_CONFIG_BYTES:
            return False
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return False
    depth = 0
    for m in _BRACKET.finditer(data):
        depth = depth + 1 if m[0] in (b"[", b"{") else max(depth - 1, 0)
        if depth > _MAX_DEPTH:
            return False
    return True


def diagnosis_facts(d: Diagnosis, config: "Config | None" = None) -> dict[str, Any]:
    """What rule preconditions may ask about a diagnosis: the log's facts, and the config's values when the config it
    names can be read (so that advice says what fits that config: never "halve" a value that is already 0)."""
    config_values = dict(config.values) if config is not None else {}
    config_values.update(d.run.canonical_values())  # what the run used wins over the file as it is now
    return {
        "class": d.cls,
        "phase": d.root_cause.phase or "",
        "memory": asdict(d.memory) if d.memory is not None else {},
        "config": config_values,
    }


def diagnose_logs(paths: Sequence[str], config: str | None = None, rules_dir: str | None = None,
                  prefilter: Prefilter | None = None) -> Diagnosis:
    if not paths:
        raise UsageError("no log given")
    if list(paths).count("-") > 1:
        raise UsageError("'-' (stdin) can be given only once")
    if config is not None and not os.path.isfile(config):
        # --config names the file the run used: a typo must not be shown back as if it were that file
        raise ConfigError(f"{config}: " + ("is a directory, not a config" if os.path.isdir(config)
                                           else "config not found"))
    from oomfix.rules import advice_for, load_rules

    rules = load_rules(rules_dir)
    d = classify_logs(paths, prefilter, rules.user_patterns())
    ref = config or d.run.config
    cfg = _config_near(ref, paths) if ref else None
    advice = advice_for(d.cls, diagnosis_facts(d, cfg), rules)
    if d.cls == "unknown" and (d.root_cause.rank is not None or d.root_cause.local_rank is not None):
        who = d.root_cause.rank if d.root_cause.rank is not None else d.root_cause.local_rank
        advice.insert(0, f"Rank {who} exited first; its own error is not in this log. Look for its "
                         f"[rank{who}]: traceback (or its node's log) above the summary.")
    run = d.run
    if config is not None:
        run = replace(run, config=config)
    return replace(d, advice=tuple(advice), run=run)
