"""oomfix/report.py: the text a person reads first."""
from oomfix.diagnose import diagnose_logs
from oomfix.report import headline

# constructed from the torchrun lines of ../shared/corpus/genuine_lf/sigkill_worker_rank1_job_b.log (torch 2.13's
# elastic agent and ChildFailedError summary for a worker killed with kill -9)
BARE_SIGKILL = (
    'W1203 10:28:45.774000 31703 torch/distributed/elastic/multiprocessing/api.py:1028] Sending'
    ' process 31721 closing signal SIGTERM\n'
    'E1203 10:28:45.993000 31703 torch/distributed/elastic/multiprocessing/api.py:1002] failed '
    '(exitcode: -9) local_rank: 1 (pid: 31722) of binary: /home/ft/venv/bin/python3\n'
    'Traceback (most recent call last):\n'
    '  File "/home/ft/venv/bin/torchrun", line 8, in <module>\n'
    '    sys.exit(main())\n'
    '             ^^^^^^\n'
    '  File "/home/ft/venv/lib/python3.11/site-packages/torch/distributed/elastic/multiprocessi'
    'ng/errors/__init__.py", line 367, in wrapper\n'
    '    return f(*args, **kwargs)\n'
    '           ^^^^^^^^^^^^^^^^^^\n'
    '  File "/home/ft/venv/lib/python3.11/site-packages/torch/distributed/run.py", line 1028, in main\n'
    '    run(args)\n'
    '  File "/home/ft/venv/lib/python3.11/site-packages/torch/distributed/run.py", line 1019, in run\n'
    '    elastic_launch(\n'
    '  File "/home/ft/venv/lib/python3.11/site-packages/torch/distributed/launcher/api.py", lin'
    'e 194, in __call__\n'
    '    return launch_agent(\n'
    '           ^^^^^^^^^^^^^\n'
    '  File "/home/ft/venv/lib/python3.11/site-packages/torch/distributed/launcher/api.py", lin'
    'e 383, in launch_agent\n'
    '    raise ChildFailedError(\n'
    'torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n'
    '============================================================\n'
    '/home/ft/venv/lib/python3.11/site-packages/llamafactory/launcher.py FAILED\n'
    '------------------------------------------------------------\n'
    'Failures:\n'
    '[1]:\n'
    '  time      : 2026-12-03_10:28:45\n'
    '  host      : localhost\n'
    '  rank      : 0 (local_rank: 0)\n'
    '  exitcode  : -15 (pid: 31721)  (SIGTERM)\n'
    '  error_file: <N/A>\n'
    '  traceback : Signal 15 (SIGTERM) received by PID 31721\n'
    '------------------------------------------------------------\n'
    'Root Cause (first observed failure):\n'
    '[0]:\n'
    '  time      : 2026-12-03_10:28:45\n'
    '  host      : localhost\n'
    '  rank      : 1 (local_rank: 1)\n'
    '  exitcode  : -9 (pid: 31722)  (SIGKILL)\n'
    '  error_file: <N/A>\n'
    '  traceback : Signal 9 (SIGKILL) received by PID 31722\n'
    '============================================================\n'
)


def test_bare_sigkill_headline_says_where_before_the_unknown_sender(tmp_path):
    # QA pass: "...the log does not say who sent it (the kernel OOM killer is ... the others) on rank 1 (localhost)"
    # put the rank after the list of possible senders, as if it qualified them
    log = tmp_path / "k.log"
    log.write_text(BARE_SIGKILL)
    d = diagnose_logs([str(log)])
    assert d.cls == "host_oom" and d.confidence == "low"
    h = headline(d)
    assert h.startswith("Root cause: a process was killed with SIGKILL on rank 1 (localhost); the log does not say "
                        "who sent it"), h
    assert h.endswith("rank 0 was stopped by torchrun as a consequence (SIGTERM)"), h


def test_a_long_exception_message_is_cut_visibly(tmp_path):
    # constructed: torch's store-based barrier timeout (torch/distributed/distributed_c10d.py), message > 120 chars
    log = tmp_path / "x.log"
    log.write_text("Traceback (most recent call last):\n  File \"train.py\", line 3, in <module>\n"
                   "    dist.barrier()\nRuntimeError: Timed out initializing process group in store based barrier on "
                   "rank: 0, for key: store_based_barrier_key:1 (world_size=8, worker_count=4, timeout=0:30:00)\n")
    h = headline(diagnose_logs([str(log)]))
    assert "RuntimeError: Timed out initializing process group" in h and "(world_size=8..." in h, h
