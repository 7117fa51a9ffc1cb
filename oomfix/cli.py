"""The command line: parse, call the library, render, exit. Nothing else lives here."""
from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from oomfix import __version__
from oomfix.errors import EXIT_ERROR, EXIT_FINDINGS, EXIT_INTERRUPTED, OomfixError, exit_code_for

F = TypeVar("F", bound=Callable[..., Any])
EXIT_FAILED_RUN = EXIT_FINDINGS  # `diagnose --exit-code`: the logs show a failure


def _fail(msg: str, code: int) -> None:
    click.echo(f"oomfix: error: {msg}", err=True)
    sys.exit(code)


def _interrupted() -> None:
    """Ctrl-C: one line, then die of SIGINT, so that the shell sees a death by SIGINT and a loop such as
    `for f in *.log; do oomfix diagnose "$f"; done` stops too (bash ends a loop only when its child was killed by
    SIGINT, not when it exits 130). Writes are already whole or rolled back (journal.py) by the time we get here."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the cleanup below
    click.echo("oomfix: interrupted", err=True)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)
    os._exit(EXIT_INTERRUPTED)  # where SIGINT cannot kill us (it is blocked): the shell's code for it


def handled(fn: F) -> F:
    """The one place where errors become one line on stderr and an exit code."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except OomfixError as e:
            _fail(str(e), exit_code_for(e))
        except KeyboardInterrupt:
            _interrupted()
        except BrokenPipeError:
            sys.exit(EXIT_ERROR)
        except MemoryError:
            _fail("out of memory while reading the input", EXIT_ERROR)
        except RecursionError:
            _fail("input is nested too deeply to process", EXIT_ERROR)
        except ValueError as e:
            if "integer string conversion" not in str(e):
                raise
            # Python's int-str limit (a DoS guard of its own): a 4,300+ digit number in a log is not a real value
            _fail("the input holds a number with more than 4300 digits (Python's int-str limit); not reading it",
                  EXIT_ERROR)

    return wrapper  # type: ignore[return-value]


class _Group(click.Group):
    """Usage errors, like every expected error, are one line on stderr and exit 2."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.UsageError as e:
            hint = f" (see `oomfix {e.ctx.info_name} --help`)" if e.ctx and e.ctx.parent else " (see `oomfix --help`)"
            _fail(e.format_message() + hint, EXIT_ERROR)
        except click.exceptions.Abort:
            _interrupted()
        except click.exceptions.ClickException as e:
            _fail(e.format_message(), EXIT_ERROR)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="oomfix")
def main() -> None:
    """Say what really killed a distributed training run, and fix its configs surgically.

    \b
    oomfix diagnose train.log        what killed the run, and what to do
    oomfix apply --all-configs       the fix, as a diff, for the config and its siblings
    oomfix fit CONFIG --log LOG      will the relaunch fit? per-device memory now and per rung
    oomfix check                     pre-relaunch gate for CI / pre-commit
    oomfix run -- CMD [ARG...]       run a job; on a failure, fix and relaunch it until it trains
    oomfix demo                      a guided run on a bundled example
    """


@main.command()
@click.argument("logs", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--config", "config", type=str, default=None, help="The config the run used (shown with the run).")
@click.option("--rules", "rules_dir", type=click.Path(), default=None, help="A directory of extra rules.")
@click.option("--exit-code", is_flag=True, help=f"Exit {EXIT_FAILED_RUN} when the logs show a failure (any class "
              "but 'none'); 0 when they show none.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing; implies --exit-code (errors still go to stderr).")
@click.option("--flight-recorder", "fr_dumps", type=str, default=None, help="PyTorch Flight Recorder dumps: a "
              "directory, or the TORCH_NCCL_DEBUG_INFO_TEMP_FILE prefix (default: LOG's .fr/ directory).")
@handled
def diagnose(logs: tuple[str, ...], fmt: str, config: str | None, rules_dir: str | None, exit_code: bool,
             quiet: bool, fr_dumps: str | None) -> None:
    """Say what killed a run. LOGS: log files of one job (one per node), '-' for stdin, .gz accepted.

    \b
    Exit status: 0 a diagnosis was made (whatever it says), 2 an error; with --exit-code or --quiet,
    1 when the logs show a failure.
    Example:
      oomfix diagnose train.log
      oomfix diagnose --format json node0.log node1.log.gz
      oomfix diagnose -q train.log || echo "train.log shows a failure"
    """
    from oomfix import progress
    from oomfix.diagnose import diagnose_logs

    from oomfix import flightrec

    what = ("stdin" if logs[0] == "-" else logs[0]) if len(logs) == 1 else f"{len(logs)} logs"
    with progress.reading(f"reading {what}", logs, quiet):
        d = diagnose_logs(list(logs), config=config, rules_dir=rules_dir)
    dumps = flightrec.dumps_for_logs(list(logs), fr_dumps)
    fr = flightrec.analyze(dumps) if dumps else None
    if fr_dumps and not dumps:
        click.echo(f"oomfix: no Flight Recorder dump found at {fr_dumps}", err=True)
    if not quiet:
        from oomfix.report import Style, render_diagnosis_text, render_json, versioned

        if fmt == "json":
            # always present, null without dumps (README: every listed key is always there)
            click.echo(render_json(versioned({**d.to_json(), "flight_recorder": fr.to_json() if fr else None})),
                       nl=False)
        else:
            click.echo(render_diagnosis_text(d, Style()), nl=False)
            if fr is not None:
                click.echo(flightrec.render_text(fr), nl=False)
    if (exit_code or quiet) and d.cls != "none":
        sys.exit(EXIT_FAILED_RUN)


def _echo_plan(plan: Any, tx: str | None, fmt: str, quiet: bool) -> None:
    """`apply`'s output: the plan as text (its diff) or as versioned JSON; nothing with --quiet."""
    from oomfix.report import Style, plan_json, render_json, render_plan_text, versioned

    if quiet:
        return
    if fmt == "json":
        click.echo(render_json(versioned(plan_json(plan, tx is not None, tx))), nl=False)
    else:
        click.echo(render_plan_text(plan, tx is not None, Style()), nl=False)


@main.command()
@click.argument("log", required=False)
@click.option("--config", "config", type=str, default=None, help="The config the run used (else: from the log).")
@click.option("--all-configs", is_flag=True, help="Also fix every sibling config (same model/stage, or same launcher).")
@click.option("--write", is_flag=True, help="Write the edits (default: dry run, a diff).")
@click.option("--allow-semantic-changes", is_flag=True, help="Allow rungs that change what is trained (sequence "
              "length, precision).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--rules", "rules_dir", type=click.Path(), default=None, help="A directory of extra rules.")
@click.option("--align-siblings", is_flag=True, help="No log: move every drifted sibling config to the lower-memory "
              "micro/accumulation split of its group, keeping the global batch.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing; the exit status tells (errors still go to stderr).")
@handled
def apply(log: str | None, config: str | None, all_configs: bool, write: bool, allow_semantic_changes: bool,
          fmt: str, rules_dir: str | None, align_siblings: bool, quiet: bool) -> None:
    """Turn a diagnosis into the next fix, for the config and (with --all-configs) its siblings.

    \b
    Example:
      oomfix apply train.log --all-configs          # dry run: the diff
      oomfix apply train.log --all-configs --write  # write it (atomic, journalled)
      oomfix apply --align-siblings                 # no log: drifted siblings to their lower-memory split
    """
    from oomfix import progress
    from oomfix.apply import plan_align, plan_apply, write_plan
    from oomfix.errors import UsageError

    if align_siblings:
        if log or config or all_configs:
            raise UsageError("--align-siblings takes no LOG, --config or --all-configs: it aligns every sibling group")
        plan = plan_align()
        tx = write_plan(plan) if write else None
        _echo_plan(plan, tx, fmt, quiet)
        sys.exit(plan.exit_code)
    with progress.reading("reading " + (log or "the newest log"), [log] if log else [], quiet):
        plan = plan_apply(log, config, all_configs, allow_semantic_changes, rules_dir)
    tx = write_plan(plan, explicit=[config] if config else []) if write else None
    if write and plan.status == "edits" and tx is None:
        plan = plan_apply(log, config, all_configs, allow_semantic_changes, rules_dir)  # another oomfix got there first
    _echo_plan(plan, tx, fmt, quiet)
    sys.exit(plan.exit_code)


@main.command()
@click.argument("config")
@click.option("--log", "log", type=str, default=None, metavar="LOG",
              help="A CUDA OOM log of this config: calibrates the model.")
@click.option("--gpu-memory", "gpu_memory", type=float, default=None, metavar="GIB",
              help="The GPU's memory in GiB (else: from the log).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@handled
def fit(config: str, log: str | None, gpu_memory: float | None, fmt: str) -> None:
    """Will it fit? Per-device peak memory of CONFIG now and after each rung of the OOM ladder.

    \b
    Exit status: 0 an estimate, or "no estimate: WHY" where the model cannot say (an unknown or MoE model,
    model parallelism, no world size under ZeRO/FSDP); 2 a usage or input error.
    Example:
      oomfix fit configs/sft.yaml --log logs/train.log   # calibrated on the OOM message
      oomfix fit configs/sft.yaml --gpu-memory 80        # analytic only
    """
    from oomfix.fit import fit_config, render_text
    from oomfix.report import render_json, versioned

    res = fit_config(config, log, gpu_memory)
    if fmt == "json":
        click.echo(render_json(versioned(res.to_json())), nl=False)
    else:
        click.echo(render_text(res), nl=False)


@main.command()
@handled
def undo() -> None:
    """Restore the files of the newest apply --write not yet undone, byte for byte.

    \b
    The journal (.oomfix/journal.jsonl) is a stack: each undo takes back one more apply, newest first.
    It refuses, naming the file, when a file changed since that apply wrote it.
    Example:
      oomfix apply train.log --all-configs --write
      oomfix undo                       # the configs are as they were before that apply
    """
    from oomfix.journal import Journal
    from oomfix.report import shown_path

    journal = Journal(".")
    with journal.lock():
        tx, restored = journal.undo()
    if restored:
        click.echo(f"undid {tx}: restored " + ", ".join(shown_path(p) for p in restored))
    else:
        click.echo(f"undid {tx}: nothing had been written")


@main.command()
@click.argument("name")
@click.option("--rules", "rules_dir", type=click.Path(), default=None, help="A directory of extra rules.")
@handled
def explain(name: str, rules_dir: str | None) -> None:
    """What a failure class means and its remediation ladder, or what one rule does (NAME: class or rule id).

    \b
    Example:
      oomfix explain cuda_oom               # the class, its advice and its ladder
      oomfix explain cuda-oom-zero3         # one rung
    """
    from oomfix.rules import load_rules
    from oomfix.report import render_explain

    click.echo(render_explain(load_rules(rules_dir), name), nl=False)


@main.command("rules")
@click.option("--rules", "rules_dir", type=click.Path(), default=None, help="A directory of extra rules.")
@handled
def rules_cmd(rules_dir: str | None) -> None:
    """List the failure classes and the rules of their ladders.

    \b
    Example:
      oomfix rules
      oomfix rules --rules my_rules/       # with a directory of your own rules (tried first)
    """
    from oomfix.rules import load_rules
    from oomfix.report import render_rules

    click.echo(render_rules(load_rules(rules_dir)), nl=False)


@main.command()
@click.argument("paths", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["text", "json", "github", "sarif"]), default="text",
              show_default=True, help="github: GitHub Actions annotations; sarif: SARIF 2.1.0 for code scanning.")
@click.option("--strict", is_flag=True, help="Warnings fail the check too.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing; the exit status tells (errors still go to stderr).")
@handled
def check(paths: tuple[str, ...], fmt: str, strict: bool, quiet: bool) -> None:
    """Pre-relaunch gate: sibling drift, unsafe launchers, port/GPU clashes, unfixed or wrongly fixed failures.

    \b
    Exit status: 0 clean, 1 findings, 2 could not run.
    Example:
      oomfix check                      # the current directory
      oomfix check configs/ launch.sh --format github
      oomfix check --format sarif > oomfix.sarif
    """
    from oomfix import progress
    from oomfix.check import render_github, render_text, run_check
    from oomfix.report import render_check_sarif, render_json, versioned

    with progress.reading("reading logs", (), quiet):
        res = run_check(list(paths) or ["."])
    if quiet:
        pass
    elif fmt == "json":
        click.echo(render_json(versioned({"findings": [f.to_json() for f in res.findings], "configs": res.configs,
                                          "launchers": res.launchers, "logs": res.logs})), nl=False)
    elif fmt == "sarif":
        click.echo(render_check_sarif(res, __version__), nl=False)
    elif fmt == "github":
        click.echo(render_github(res), nl=False)
    else:
        click.echo(render_text(res), nl=False)
    sys.exit(res.exit_code(strict))


@main.command()
@click.argument("scripts", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@handled
def jobs(scripts: tuple[str, ...], fmt: str) -> None:
    """What launcher scripts start: each training job with its config, port, GPUs and log (read, never run).

    \b
    Example:
      oomfix jobs train.sh
      oomfix jobs scripts/*.sh --format json
    """
    from oomfix.launcher import read_launchers
    from oomfix.report import render_jobs_text, render_json, versioned

    launchers = read_launchers(list(scripts))
    if fmt == "json":
        click.echo(render_json(versioned({"jobs": [j.to_json() for lau in launchers for j in lau.jobs]})), nl=False)
    else:
        click.echo(render_jobs_text(launchers), nl=False)


@main.command("run", context_settings={"allow_interspersed_args": False})
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--config", "config", type=str, default=None, help="The config CMD trains with (else: read from CMD).")
@click.option("--all-configs", is_flag=True, help="Fix every sibling config too, as `apply --all-configs`.")
@click.option("--retries", type=click.IntRange(min=0), default=3, show_default=True, help="At most this many relaunches.")
@click.option("--log", "log", type=str, default=None,
              help="Base log path: attempt N logs to BASE-attemptN.log (default: logs/run-<time>.log).")
@click.option("--allow-semantic-changes", is_flag=True, help="Allow rungs that change what is trained.")
@click.option("--resume", is_flag=True, help="Relaunches resume from the newest checkpoint-N of the output directory.")
@click.option("--detach", is_flag=True, help="Supervise in the background; print the pid and the log to follow.")
@click.option("--grace", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds between SIGTERM and SIGKILL when the supervisor is stopped.")
@click.option("--once", is_flag=True, help="One attempt, then exit with its verdict code for a scheduler to map "
              "(docs/schedulers.md).")
@click.option("--run-id", "run_id", type=str, default=None, help="The run the attempts belong to across requeues "
              "(default with --once: $OOMFIX_RUN_ID, $SLURM_JOB_ID, $SKYPILOT_TASK_ID, else 'default').")
@click.option("--notify", "notify", type=str, default=None, help="A command run (sh -c) on failure, fix and finish, "
              "with the verdict in OOMFIX_* environment variables.")
@click.option("--notify-url", "notify_url", type=str, default=None, help="A webhook that gets the verdict as "
              "JSON (POST) on failure, fix and finish.")
@handled
def run_cmd(cmd: tuple[str, ...], config: str | None, all_configs: bool, retries: int, log: str | None,
            allow_semantic_changes: bool, resume: bool, detach: bool, grace: float, once: bool, run_id: str | None,
            notify: str | None, notify_url: str | None) -> None:
    """Run a training command; when it dies, apply the next fix and relaunch it, until it trains.

    \b
    The job runs in its own session (a closed terminal cannot kill it), each attempt logs to its own file, and
    every attempt is recorded in .oomfix/runs.jsonl (`oomfix runs`). Exit status: the last attempt's.
    Example:
      oomfix run -- torchrun --nproc_per_node 8 train.py configs/sft.yaml
      oomfix run --all-configs --detach -- llamafactory-cli train configs/sft.yaml
    """
    from oomfix.supervise import RunOptions, detach as start_detached, supervise

    opts = RunOptions(tuple(cmd), config, all_configs, retries, log, allow_semantic_changes, resume, grace,
                      once=once, run_id=run_id, notify=notify, notify_url=notify_url)
    if detach:
        for line in start_detached(opts).describe():
            click.echo(line)
        return
    sys.exit(supervise(opts).exit_code)


@main.command("runs")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@handled
def runs_cmd(fmt: str) -> None:
    """The attempts of `oomfix run` in this directory (.oomfix/runs.jsonl), grouped by run.

    \b
    Example:
      oomfix runs
      oomfix runs --format json | jq '.attempts[] | select(.exit_code != 0)'
    """
    from oomfix import ledger
    from oomfix.report import render_json, versioned

    events = ledger.read_events(".")
    attempts = [a for a in events if isinstance(a, ledger.Attempt)]
    unfinished = ledger.unfinished(events)
    if fmt == "json":
        click.echo(render_json(versioned(ledger.runs_json(attempts, unfinished))), nl=False)
    else:
        click.echo(ledger.render_text(attempts, unfinished), nl=False)


@main.command("verdict")
@click.argument("log")
@click.option("--config", "config", type=str, default=None, help="The config the run used (else: from the log).")
@click.option("--all-configs", is_flag=True, help="Fix every sibling config too, as `apply --all-configs`.")
@click.option("--allow-semantic-changes", is_flag=True, help="Allow rungs that change what is trained.")
@click.option("--write", is_flag=True, help="Apply the fix and record the verdict in the ledger (default: dry run).")
@click.option("--run-id", "run_id", type=str, default=None, help="The run this log's attempt belongs to.")
@click.option("--retries", type=click.IntRange(min=0), default=3, show_default=True,
              help="At most this many relaunches of the run (counted in the ledger).")
@click.option("--exit-code", "exit_code", type=click.IntRange(min=0, max=255), default=None,
              help="The job's own exit status ($?), when known: 0 with no failure in the log is trained.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@handled
def verdict_cmd(log: str, config: str | None, all_configs: bool, allow_semantic_changes: bool, write: bool,
                run_id: str | None, retries: int, exit_code: int | None, fmt: str) -> None:
    """What a failed attempt's LOG means to a scheduler, as an exit code (docs/schedulers.md).

    \b
    Exit status: 0 trained, 138 fixed (retry), 143 stopped from outside (retry), 3 permanent, 4 no rung left,
    2 usage or input error.
    Example:
      oomfix verdict logs/train.log --write --all-configs
    """
    from oomfix.report import render_json, versioned
    from oomfix.supervise import RunOptions
    from oomfix.verdicts import render_text, verdict_of_log

    opts = RunOptions(("true",), config, all_configs, retries, None, allow_semantic_changes, run_id=run_id)
    v = verdict_of_log(log, opts, write, exit_code=exit_code)
    if fmt == "json":
        click.echo(render_json(versioned(v.to_json())), nl=False)
    else:
        click.echo(render_text(v), nl=False)
    sys.exit(v.verdict.exit_code)


@main.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Write the example project here (default: a new temporary directory).")
@handled
def demo(directory: str | None) -> None:
    """A guided run on a bundled example: diagnose two failed jobs, check, fix both siblings, check again.

    \b
    Example:
      oomfix demo                       # in a new temporary directory
      oomfix demo --dir /tmp/oomfix-demo && cd /tmp/oomfix-demo && oomfix undo
    """
    from oomfix.demo import run_demo

    run_demo(click.echo, directory)


def run() -> None:
    main()


if __name__ == "__main__":
    run()
