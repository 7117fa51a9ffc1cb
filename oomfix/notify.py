"""Notifications from `oomfix run`: on a failure, on a fix (a relaunch is coming), and on the finish.

- `--notify CMD`: CMD is run through `sh -c` with the verdict in its environment (OOMFIX_EVENT, OOMFIX_VERDICT,
  OOMFIX_EXIT_CODE, OOMFIX_CLASS, OOMFIX_RULE, OOMFIX_ATTEMPT, OOMFIX_RUN_ID, OOMFIX_LOG, OOMFIX_HOST, OOMFIX_REASON):
  nothing of the verdict is pasted into the command text, so a log cannot inject shell.
- `--notify-url URL`: the same fields POSTed as a JSON object (Content-Type: application/json), http or https only.
A notification never stops or delays the run for long: each has a timeout, and a failure to notify is one line on
the supervisor's output.
"""
from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from oomfix.ledger import Attempt, hostname
from oomfix.verdicts import BY_NAME

TIMEOUT_SECONDS = 10.0
EVENTS = ("failure", "fix", "finish")


def payload(event: str, rec: Attempt, reason: str | None) -> dict[str, Any]:
    """The notification's fields: the event, the attempt's verdict and exit codes, what was fixed, and why."""
    v = BY_NAME.get(rec.verdict or "")
    return {"event": event, "verdict": rec.verdict, "exit_code": v.exit_code if v else rec.exit_code,
            "job_exit_code": rec.exit_code, "class": rec.cls, "rule": rec.rule, "files": list(rec.files),
            "attempt": rec.attempt, "run": rec.run, "log": rec.log, "host": rec.host or hostname(),
            "reason": reason, "command": rec.command}


def environment(p: dict[str, Any]) -> dict[str, str]:
    """The payload as the OOMFIX_* environment variables a --notify command gets."""
    keys = {"event": "OOMFIX_EVENT", "verdict": "OOMFIX_VERDICT", "exit_code": "OOMFIX_EXIT_CODE",
            "class": "OOMFIX_CLASS", "rule": "OOMFIX_RULE", "attempt": "OOMFIX_ATTEMPT", "run": "OOMFIX_RUN_ID",
            "log": "OOMFIX_LOG", "host": "OOMFIX_HOST", "reason": "OOMFIX_REASON"}
    return {env: "" if p.get(k) is None else str(p[k]) for k, env in keys.items()}


def run_command(cmd: str, p: dict[str, Any]) -> str | None:
    """Run the --notify command (`sh -c`) with the payload in its environment; why it failed, or None."""
    try:
        r = subprocess.run(["/bin/sh", "-c", cmd], env={**os.environ, **environment(p)}, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        return f"--notify command still running after {TIMEOUT_SECONDS:g} s; left behind"
    except OSError as e:
        return f"--notify command could not start: {e.strerror}"
    return None if r.returncode == 0 else f"--notify command exited {r.returncode}"


def check_url(url: str) -> str | None:
    """Why a --notify-url is unusable, or None."""
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("http", "https") or not u.netloc:
        return f"--notify-url must be an http:// or https:// URL, not {url!r}"
    return None


def post(url: str, p: dict[str, Any]) -> str | None:
    """POST the payload as JSON to the --notify-url; why it failed, or None."""
    bad = check_url(url)
    if bad:
        return bad
    req = urllib.request.Request(url, data=json.dumps(p).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": "oomfix"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_SECONDS) as resp:
            resp.read(1 << 16)
    except urllib.error.HTTPError as e:
        return f"--notify-url answered HTTP {e.code}"
    except (urllib.error.URLError, OSError, ValueError) as e:
        return f"--notify-url failed: {getattr(e, 'reason', e)}"
    return None


def send(event: str, p: dict[str, Any], cmd: str | None, url: str | None) -> list[str]:
    """Notify; the problems, one line each (empty: all delivered)."""
    out = []
    if cmd:
        why = run_command(cmd, p)
        if why:
            out.append(why)
    if url:
        why = post(url, p)
        if why:
            out.append(why)
    return out
