"""Notifications (oomfix/notify.py): a command with the verdict in its environment, and a JSON POST to a webhook,
tested against a local HTTP server on 127.0.0.1 only."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from oomfix import notify
from oomfix.ledger import Attempt

OOMFIX = [sys.executable, "-m", "oomfix"]


@pytest.fixture
def webhook():
    got: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            n = int(self.headers["Content-Length"])
            got.append({"type": self.headers["Content-Type"], "body": json.loads(self.rfile.read(n))})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", got
    server.shutdown()
    server.server_close()


def _rec(**kw):
    base = dict(attempt=2, command="torchrun t.py", started="s", ended="e", exit_code=1, log="logs/a.log",
                cls="cuda_oom", rule="cuda-oom-split-micro-batch", files=("c.yaml",), run="R1", verdict="fixed",
                host="node1")
    return Attempt(**{**base, **kw})


def test_command_gets_the_verdict_in_its_environment_not_in_its_text(tmp_path):
    out = tmp_path / "env.txt"
    rec = _rec(log="logs/$(touch pwned).log")
    problems = notify.send("fix", notify.payload("fix", rec, None), f"env | grep ^OOMFIX_ > {out}", None)
    assert problems == []
    env = dict(line.split("=", 1) for line in out.read_text().splitlines())
    assert env["OOMFIX_EVENT"] == "fix" and env["OOMFIX_VERDICT"] == "fixed" and env["OOMFIX_EXIT_CODE"] == "138"
    assert env["OOMFIX_CLASS"] == "cuda_oom" and env["OOMFIX_ATTEMPT"] == "2" and env["OOMFIX_RUN_ID"] == "R1"
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_post_json_to_a_local_webhook(webhook):
    url, got = webhook
    assert notify.send("failure", notify.payload("failure", _rec(verdict="permanent", rule=None), "boom"),
                       None, url) == []
    (msg,) = got
    assert msg["type"] == "application/json"
    assert msg["body"]["event"] == "failure" and msg["body"]["verdict"] == "permanent"
    assert msg["body"]["exit_code"] == 3 and msg["body"]["reason"] == "boom"


def test_failures_to_notify_are_reported_not_raised(tmp_path):
    p = notify.payload("finish", _rec(verdict="trained"), None)
    assert notify.send("finish", p, "exit 7", None) == ["--notify command exited 7"]
    closed = notify.send("finish", p, None, "http://127.0.0.1:9/nothing-listens")
    assert len(closed) == 1 and closed[0].startswith("--notify-url failed")
    assert notify.check_url("file:///etc/passwd") is not None


def test_run_notifies_on_finish(tmp_path, webhook):
    url, got = webhook
    env = dict(os.environ, PYTHONPATH=os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([*OOMFIX, "run", "--once", "--run-id", "N1", "--notify", "echo $OOMFIX_EVENT > ev.txt",
                        "--notify-url", url, "--", sys.executable, "-c", "print('trained')"], cwd=tmp_path,
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "ev.txt").read_text().strip() == "finish"
    (msg,) = got
    assert msg["body"]["event"] == "finish" and msg["body"]["verdict"] == "trained" and msg["body"]["run"] == "N1"


def test_a_bad_notify_url_is_a_usage_error(tmp_path):
    r = subprocess.run([*OOMFIX, "run", "--notify-url", "ftp://x", "--", "true"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "--notify-url must be an http" in r.stderr and "Traceback" not in r.stderr
