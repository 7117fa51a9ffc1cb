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
from oomfix.errors import EXIT_ERROR, EXIT_INTERRUPTED, OomfixError, exit_code_for

F = TypeVar("F", bound=Callable[..., Any])


def _fail(msg: str, code: int) -> None:
    click.echo(f"oomfix: error: {msg}", err=True)
    sys.exit(code)


def _interrupted() -> None:
    """Ctrl-C: one line and 130. Exit at once: a second interrupt still pending (a SIGINT that landed inside
    Hyperscan's C scan is re-raised on the way out) must not turn the exit into a death by SIGINT. Writes are already
    whole or rolled back (journal.py) by the time we get here."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    click.echo("oomfix: interrupted", err=True)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(EXIT_INTERRUPTED)


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
    oomfix check                     pre-relaunch gate for CI / pre-commit
    oomfix run -- CMD [ARG...]       run a job; on a failure, fix and relaunch it until it trains
    oomfix demo                      a guided run on a bundled example
    """


@main.command()
@click.argument("logs", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--config", "config", type=str, default=None, help="The config the run used (shown with the run).")
@click.option("--rules", "rules_dir", type=click.Path(), default=None, help="A directory of extra rules.")
@handled
def diagnose(logs: tuple[str, ...], fmt: str, config: str | None, rules_dir: str | None) -> None:
    """Say what killed a run. LOGS: log files of one job (one per node), '-' for stdin, .gz accepted.

    \b
    Example:
      oomfix diagnose train.log
      oomfix diagnose --format json node0.log node1.log.gz
    """
    from oomfix.diagnose import diagnose_logs
    from oomfix.report import Style, render_diagnosis_text, render_json

    d = diagnose_logs(list(logs), config=config, rules_dir=rules_dir)
    if fmt == "json":
        click.echo(render_json(d.to_json()), nl=False)
    else:
        click.echo(render_diagnosis_text(d, Style()), nl=False)


@main.command()
@click.argument("log", required=False)
@click.option("--config", "config", type=str, default=None, help="The config the run used (else: from the log).")
@click.option("--all-configs", is_flag=True, help="Also fix every sibling config (same model/stage, or same launcher).")
@click.option("--write", is_flag=True, help="Write the edits (default: dry run, a diff).")
@click.option("--allow-semantic-changes", is_flag=True, help="Allow rungs that change what is trained (sequence "
              "length, precision).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--rules", "rules_dir", type=click.Path(), default=None, help="A directory of extra rules.")
@handled
def apply(log: str | None, config: str | None, all_configs: bool, write: bool, allow_semantic_changes: bool,
          fmt: str, rules_dir: str | None) -> None:
    """Turn a diagnosis into the next fix, for the config and (with --all-configs) its siblings.

    \b
    Example:
      oomfix apply train.log --all-configs          # dry run: the diff
      oomfix apply train.log --all-configs --write  # write it (atomic, journalled)
    """
    from oomfix.apply import plan_apply, write_plan
    from oomfix.report import Style, plan_json, render_json, render_plan_text

    plan = plan_apply(log, config, all_configs, allow_semantic_changes, rules_dir)
    tx = write_plan(plan, explicit=[config] if config else []) if write else None
    if write and plan.status == "edits" and tx is None:
        plan = plan_apply(log, config, all_configs, allow_semantic_changes, rules_dir)  # another oomfix got there first
    if fmt == "json":
        click.echo(render_json(plan_json(plan, tx is not None, tx)), nl=False)
    else:
        click.echo(render_plan_text(plan, tx is not None, Style()), nl=False)
    sys.exit(plan.exit_code)


@main.command()
@handled
def undo() -> None:
    """Restore the files of the last apply --write, byte for byte."""
    from oomfix.journal import Journal

    journal = Journal(".")
    with journal.lock():
        tx, restored = journal.undo()
    if restored:
        click.echo(f"undid {tx}: restored " + ", ".join(restored))
    else:
        click.echo(f"undid {tx}: nothing had been written")


@main.command()
@click.argument("name")
@click.option("--rules", "rules_dir", type=click.Path(), default=None, help="A directory of extra rules.")
@handled
def explain(name: str, rules_dir: str | None) -> None:
    """What a failure class means and its remediation ladder, or what one rule does (NAME: class or rule id)."""
    from oomfix.rules import load_rules
    from oomfix.report import render_explain

    click.echo(render_explain(load_rules(rules_dir), name), nl=False)


@main.command("rules")
@click.option("--rules", "rules_dir", type=click.Path(), default=None, help="A directory of extra rules.")
@handled
def rules_cmd(rules_dir: str | None) -> None:
    """List the failure classes and the rules of their ladders."""
    from oomfix.rules import load_rules
    from oomfix.report import render_rules

    click.echo(render_rules(load_rules(rules_dir)), nl=False)


@main.command()
@click.argument("paths", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["text", "json", "github"]), default="text", show_default=True)
@click.option("--strict", is_flag=True, help="Warnings fail the check too.")
@handled
def check(paths: tuple[str, ...], fmt: str, strict: bool) -> None:
    """Pre-relaunch gate: sibling drift, unsafe launchers, port/GPU clashes, unfixed or wrongly fixed failures.

    \b
    Exit status: 0 clean, 1 findings, 2 could not run.
    Example:
      oomfix check                      # the current directory
      oomfix check configs/ launch.sh --format github
    """
    from oomfix.check import render_github, render_text, run_check
    from oomfix.report import render_json

    res = run_check(list(paths) or ["."])
    if fmt == "json":
        click.echo(render_json({"findings": [f.to_json() for f in res.findings], "configs": res.configs,
                                "launchers": res.launchers, "logs": res.logs}), nl=False)
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
    from oomfix.report import render_jobs_text, render_json

    launchers = read_launchers(list(scripts))
    if fmt == "json":
        click.echo(render_json({"jobs": [j.to_json() for lau in launchers for j in lau.jobs]}), nl=False)
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
@handled
def run_cmd(cmd: tuple[str, ...], config: str | None, all_configs: bool, retries: int, log: str | None,
            allow_semantic_changes: bool, resume: bool, detach: bool, grace: float) -> None:
    """Run a training command; when it dies, apply the next fix and relaunch it, until it trains.

    \b
    The job runs in its own session (a closed terminal cannot kill it), each attempt logs to its own file, and
    every attempt is recorded in .oomfix/runs.jsonl (`oomfix runs`). Exit status: the last attempt's.
    Example:
      oomfix run -- torchrun --nproc_per_node 8 train.py configs/sft.yaml
      oomfix run --all-configs --detach -- llamafactory-cli train configs/sft.yaml
    """
    from oomfix.supervise import RunOptions, detach as start_detached, supervise

    opts = RunOptions(tuple(cmd), config, all_configs, retries, log, allow_semantic_changes, resume, grace)
    if detach:
        for line in start_detached(opts).describe():
            click.echo(line)
        return
    sys.exit(supervise(opts).exit_code)


@main.command("runs")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@handled
def runs_cmd(fmt: str) -> None:
    """The attempts of `oomfix run` in this directory (.oomfix/runs.jsonl), grouped by run."""
    from oomfix import ledger
    from oomfix.report import render_json

    attempts = ledger.read(".")
    if fmt == "json":
        click.echo(render_json({"attempts": [a.to_json() for a in attempts]}), nl=False)
    else:
        click.echo(ledger.render_text(attempts), nl=False)


@main.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Write the example project here (default: a new temporary directory).")
@handled
def demo(directory: str | None) -> None:
    """A guided run on a bundled example: diagnose two failed jobs, check, fix both siblings, check again."""
    from oomfix.demo import run_demo

    run_demo(click.echo, directory)


def run() -> None:
    main()


if __name__ == "__main__":
    run()
