"""Between two attempts of `oomfix run`: what the relaunch does differently, and what carries from one attempt to
the next.

After a failed attempt (`Remedies.after`): a memory class (or nan_loss) with a rung left gets the rung, written as
`apply --write` writes it (journalled, undoable); `port_in_use` gets a free master port; the first NCCL timeout gets
the Flight Recorder (oomfix/flightrec.py), a second one the reading of its dumps and a stop; everything else stops,
with the verdict a scheduler gets (oomfix/verdicts.py). Two checks keep a rung from being climbed for nothing: a log
written before the last fix is the same failure seen again, and a relaunch whose log still shows the old value of a
key the last rung changed did not pick the edit up (`not_picked_up`).
Before an attempt (`Remedies.launch`): CMD on the free port, with the environment the remedies set, resuming from
the newest whole checkpoint (oomfix/checkpoints.py) under --resume.
"""
from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oomfix import ledger
from oomfix.checkpoints import resume_argv
from oomfix.child import Launch, Terminal
from oomfix.command import PORT_ENV, free_port, with_port
from oomfix.errors import OomfixError
from oomfix.ledger import Attempt
from oomfix.model import MEMORY_CLASSES, Diagnosis
from oomfix.verdicts import FIXED, NO_RUNG, PERMANENT, Verdict, for_class_without_remedy, unexplained_end

if TYPE_CHECKING:
    from oomfix.supervise import RunOptions

PORT_RULE = "port-in-use-free-master-port"
FR_RULE = "nccl-timeout-flight-recorder"


@dataclass(frozen=True)
class Remedy:
    """What happens after a failed attempt: the fix applied (if any), why the loop does not relaunch by itself
    (None: it does), and the verdict a scheduler gets."""

    rule: str | None
    files: tuple[str, ...]
    why: str | None
    verdict: Verdict


class Remedies:
    """The remedies of one run, and the state they carry from attempt to attempt (recorded in the ledger with each
    attempt, so that a requeued attempt on another node carries on: `restore`)."""

    def __init__(self, opts: RunOptions, root: str, term: Terminal) -> None:
        self.opts = opts
        self.root = root
        self.term = term
        self.extra_env: dict[str, str] = {}  # what every later attempt sets on top of the supervisor's environment
        self.port: int | None = None
        # (real path, sha256) of every config state a relaunch started from: a rung that brings one back would
        # repeat a failure already seen
        self.seen_states: set[tuple[str, str]] = set()
        # canonical key -> (before, after) of the last rung on the primary config: the relaunch's log must not show
        # a "before" value of a key the rung changed (the keys the log shows: micro batch, accumulation)
        self.last_change: dict[str, tuple[Any, Any]] = {}
        self.zero_switched = False  # the last rung changed the DeepSpeed config: no resume across it
        self.fr_pending = False  # the next attempt gets the Flight Recorder environment
        self.current_env: dict[str, str] = {}  # what the attempt now running was given

    def restore(self, last: Attempt) -> None:
        """Carry on from the last attempt of this run that an earlier process recorded (a requeue, another node)."""
        self.extra_env.update(last.next_env)
        self.zero_switched = "zero_config" in last.changed  # no resume across a ZeRO stage switch
        self.last_change = dict(last.changed)
        if last.next_env.get(PORT_ENV[0], "").isdigit():  # an explicit port on CMD is replaced by it too
            self.port = int(last.next_env[PORT_ENV[0]])

    def flight_recorder_for(self, next_log: str) -> None:
        """When the last remedy turned the Flight Recorder on: its environment for the attempt logging to
        `next_log`, whose dumps then go beside its log."""
        if self.fr_pending:
            from oomfix import flightrec

            self.extra_env.update(flightrec.relaunch_env(next_log))
            self.fr_pending = False

    def launch(self, log: str, relaunch: bool) -> Launch:
        """What the attempt logging to `log` runs: CMD with the free port, the environment the remedies set, and (a
        relaunch under --resume) the newest whole checkpoint to resume from."""
        from oomfix import flightrec

        argv: tuple[str, ...] = tuple(self.opts.cmd)
        if self.port is not None:
            argv = with_port(argv, self.port)
        if flightrec.PREFIX_ENV in self.extra_env:
            # a fresh dump directory per attempt: a dump is then always this attempt's
            prefix = flightrec.prefix_for(log)
            self.extra_env[flightrec.PREFIX_ENV] = prefix
            Path(prefix).parent.mkdir(parents=True, exist_ok=True)
        if self.opts.resume and relaunch:
            if self.zero_switched:
                self.term.say("oomfix run: not resuming: the fix changed the ZeRO stage, and a DeepSpeed checkpoint "
                              "of one stage does not load under another (convert it to a universal checkpoint first)")
            else:
                new, why = resume_argv(argv, self.opts.config, say=self.term.say)
                self.term.say(f"oomfix run: {'' if new else 'not resuming: '}{why}")
                argv = new or argv
        return Launch(argv, dict(self.extra_env))

    def _no_relaunch(self) -> str:
        return f"no relaunch left (--retries {self.opts.retries})"

    def after(self, log: str, d: Diagnosis, relaunches_left: int, done: Sequence[Attempt],
              status: int | None = None) -> Remedy:
        """Apply what makes the relaunch different, and say what this failure means to a scheduler. `done`: this
        run's attempts so far, the ones earlier processes recorded first; `status`: the job's exit status, when
        known (a log with no failure in it, or only a bare SIGKILL, is judged by it: verdicts.unexplained_end)."""
        from oomfix.apply import plan_apply, write_plan
        from oomfix.report import Style, headline, render_plan_text
        from oomfix.rules import load_rules

        no_relaunch = self._no_relaunch()
        unexplained = unexplained_end(d, status, done)
        if unexplained is not None:  # no cause in the log: no fix; the verdict comes from how the job ended
            return Remedy(None, (), unexplained[1], unexplained[0])
        if d.cls == "port_in_use":
            if relaunches_left <= 0:
                return Remedy(None, (), no_relaunch, NO_RUNG)
            self.port = free_port()
            for k in PORT_ENV:
                self.extra_env[k] = str(self.port)
            self.term.say(f"oomfix run: {headline(d)}")
            self.term.say(f"oomfix run: relaunching with MASTER_PORT={self.port} (a free port)")
            return Remedy(PORT_RULE, (), None, FIXED)
        if d.cls == "nccl_timeout":
            return self._nccl_timeout(log, relaunches_left)
        fc = load_rules(self.opts.rules_dir).classes.get(d.cls)
        automatic = fc is not None and fc.config_edits and not fc.launcher_fix \
            and (d.cls in MEMORY_CLASSES or d.cls == "nan_loss")
        if not automatic:
            return Remedy(None, (), f"{d.cls} has no automatic remedy; fix its cause, then run again",
                          for_class_without_remedy(d.cls))
        if d.confidence == "low":
            return Remedy(None, (), f"{d.cls} is only a low-confidence diagnosis ({d.reason}); not changing configs "
                                    f"on it", PERMANENT)
        same = self._same_failure(log, d, done)
        if same is not None:
            return Remedy(None, (), same, FIXED)
        if relaunches_left <= 0:
            return Remedy(None, (), f"{no_relaunch}; `oomfix apply {log}` shows the next fix", NO_RUNG)
        prev = done[-1] if done else None
        stale = not_picked_up(self.last_change, d.run.canonical_values())
        if prev is not None and prev.files and prev.cls == d.cls and stale:
            return Remedy(None, (), f"the relaunch did not pick up the last edit ({prev.rule}): its log still shows "
                                    f"{stale}; is {self.opts.config or 'the config'} the one CMD trains with?",
                          PERMANENT)
        plan = plan_apply(log, self.opts.config, self.opts.all_configs, self.opts.allow_semantic, self.opts.rules_dir,
                          root=self.root)
        if plan.status == "already":  # the fix for this very log is in place: relaunching is what is left to do
            return Remedy(plan.rule, (), plan.message, FIXED)
        if plan.status != "edits":  # no rung left, advice only: the diagnosis and why
            return Remedy(None, (), plan.message or f"no fix to apply ({plan.status})",
                          NO_RUNG if plan.status == "no_rung" else PERMANENT)
        after = {(os.path.realpath(e.path), _sha_text(e.after)) for e in plan.edits if e.kind == "config"}
        if after and after <= self.seen_states:
            return Remedy(None, (), f"rule {plan.rule} would bring back a config already tried; not repeating it",
                          NO_RUNG)
        before = _canonical(plan)
        tx = write_plan(plan, root=self.root, explicit=[self.opts.config] if self.opts.config else [])
        if tx is None:
            return Remedy(plan.rule, (), "this log was already applied by another oomfix; not relaunching on top "
                                         "of it", FIXED)
        self.last_change = changed_keys(before, _canonical(plan))
        self.seen_states |= after
        for e in plan.edits:
            if e.kind == "launcher":
                # the rung's environment, for the relaunch too: CMD may not be the launcher script it went into
                self.extra_env.update({k: str(v) for k, _, v in e.changes if re.fullmatch(r"[A-Z_][A-Z0-9_]*", k)})
        self.term.say(render_plan_text(plan, True, Style(sys.stderr)).rstrip("\n"))
        self.zero_switched = any(k.split(".")[-1] == "deepspeed" for e in plan.edits for k, _, _ in e.changes)
        return Remedy(plan.rule, tuple(e.path for e in plan.edits), None, FIXED)

    def _nccl_timeout(self, log: str, relaunches_left: int) -> Remedy:
        """The first NCCL timeout of a run: relaunch with the Flight Recorder on (no config change), so that the
        next timeout leaves dumps saying which rank missed which collective. A timeout with the recorder already on:
        read its dumps and stop (a relaunch would only hang again)."""
        from oomfix import flightrec

        if flightrec.DUMP_ENV in self.current_env:
            dumps = flightrec.find_dumps(log, self.current_env.get(flightrec.PREFIX_ENV))
            text = flightrec.render_text(flightrec.analyze(dumps)) if dumps else "no Flight Recorder dump was found"
            for line in text.rstrip("\n").splitlines():
                self.term.say(f"oomfix run: {line}")
            return Remedy(None, (), "an NCCL timeout again, with the Flight Recorder on: the ranks above did not "
                                    "enter the collective; fix that, do not relaunch", PERMANENT)
        if relaunches_left <= 0:
            return Remedy(None, (), self._no_relaunch(), NO_RUNG)
        self.fr_pending = True
        self.term.say("oomfix run: an NCCL timeout: relaunching with the Flight Recorder on "
                      f"({', '.join(flightrec.ENV_NAMES)}); no config is changed")
        return Remedy(FR_RULE, (), None, FIXED)

    def _same_failure(self, log: str, d: Diagnosis, done: Sequence[Attempt]) -> str | None:
        """A log written before the last rung's edit cannot come from a run that used it: a second log of the same
        failure (another node's, or the same log under another name) gets no second rung."""
        try:  # any run's: two nodes' supervisors (two runs) see one OOM in their own logs
            recorded = ledger.read(self.root)
        except OomfixError:
            recorded = []
        last = next((a for a in reversed([*recorded, *done]) if a.files and a.rule), None)
        if last is None or last.cls != d.cls:
            return None
        if self.opts.config and not any(os.path.exists(f) and os.path.samefile(f, self.opts.config)
                                         for f in last.files):
            return None  # the last fix went to other configs: this log's config has not been fixed
        try:
            log_m = os.stat(log).st_mtime
            edit_m = max(os.stat(os.path.join(self.root, f)).st_mtime for f in last.files)
        except (OSError, ValueError):
            return None
        if log_m > edit_m:
            return None
        return (f"{log} was written before the last fix ({last.rule} after attempt {last.attempt}): the same "
                f"failure, seen again; not climbing a second rung for it")


def _canonical(plan: Any) -> dict[str, Any]:
    """The canonical values of the plan's first config (the primary one), as the dialect reads them now."""
    from oomfix.configs import try_load

    path = next((e.path for e in plan.edits if e.kind == "config"), None)
    cfg = try_load(path) if path else None
    return dict(cfg.values) if cfg is not None else {}


def changed_keys(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """What a rung changed, canonical key -> (before, after)."""
    return {k: (before.get(k), after.get(k)) for k in set(before) | set(after) if before.get(k) != after.get(k)}


def not_picked_up(change: Mapping[str, tuple[Any, Any]], shown: Mapping[str, Any]) -> dict[str, Any]:
    """The keys the last rung changed that the relaunch's log still shows at their old value (empty: picked up, or
    the log does not show any key the rung changed: gradient checkpointing, a ZeRO config switch, offload)."""
    return {k: shown[k] for k, (old, new) in change.items() if k in shown and shown[k] == old and old != new}


def _sha_text(text: str) -> str:
    from oomfix.journal import sha256

    return sha256(text.encode("utf-8", errors="surrogateescape"))
