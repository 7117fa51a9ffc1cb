"""Settled lines (issue 16): run parameters, FOLLOW-trigger phases and clean finishes are handed on only as the first and
the last line of each pattern set in a stretch, their middle copies dropped (and, with Hyperscan, muted in the scan).

Every log here is constructed, in tmp_path, from real producer wordings (HF Trainer's "***** Running training *****"
block and LLaMA-Factory's start lines as in shared/corpus/genuine_lf/clean_job_a.log, torchrun's cascade and summary
table as in fixtures/constructed/lf_cuda_oom_rank2.log and shared/corpus/genuine_lf/sigkill_worker_rank1_job_b.log,
torch's ProcessGroupNCCL exit warning as in tests/benchmarks/line_kinds.py): thousands of copies of a settled line
around what must still be read (the last value, the first command, a relaunch, a failure's phase, a padded table
row, a coloured failure past the 4 MB head). Each test runs with both engines: Hyperscan and the pure-Python one.
Three of them found reader bugs when written (a Hyperscan block across the head boundary lost the head's last run
parameter; muting kept one hit per block and lost a trigger above a failure; a flush re-handed FOLLOW lines).
"""
import pytest

import oomfix
from oomfix import reader
from oomfix.patterns import HEAD_BYTES




def _write(tmp_path, *parts, name="train.log"):
    p = tmp_path / name
    p.write_bytes(b"".join(x.encode() if isinstance(x, str) else x for x in parts))
    return p


def _scan(path):
    with open(path, "rb") as f:
        return list(reader.scan(f, str(path)))


def _line_of(path, needle: str, nth: int = -1) -> int:
    lines = [i for i, t in enumerate(path.read_bytes().split(b"\n"), 1) if needle.encode() in t]
    return lines[nth]


# --- producer wordings --------------------------------------------------------------------------------------------

LAUNCH = "+ llamafactory-cli train configs/qwen3_14b_a.yaml\n"
LF_START = "[INFO|2026-11-27 10:00:00] llamafactory.cli:143 >> Initializing 8 distributed tasks at: 127.0.0.1:29500\n"


def lf_rank(i: int) -> str:
    return (f"[INFO|2026-11-27 10:{i // 60 % 60:02d}:{i % 60:02d}] llamafactory.hparams.parser:406 >> Process rank: "
            f"{i % 8}, world size: 8, device: cuda:{i % 8}, distributed training: True, compute dtype: torch.bfloat16\n")


def hf_block(micro: int, accum: int, steps: str = "1,000", t: int = 0) -> str:
    ts = f"2026-11-27 10:{t // 60 % 60:02d}:{t % 60:02d},000"
    return (f"[INFO|trainer.py:2409] {ts} >> ***** Running training *****\n"
            f"[INFO|trainer.py:2410] {ts} >>   Num examples = 1,000\n"
            f"[INFO|trainer.py:2412] {ts} >>   Instantaneous batch size per device = {micro}\n"
            f"[INFO|trainer.py:2416] {ts} >>   Gradient Accumulation steps = {accum}\n"
            f"[INFO|trainer.py:2417] {ts} >>   Total optimization steps = {steps}\n")


def loss(i: int) -> str:
    return f"{{'loss': 1.{i % 97:02d}, 'grad_norm': 0.{i % 89:02d}, 'learning_rate': 1e-05, 'epoch': 0.{i % 9}}}\n"


BAR = "  5%|##        | 3/51 [00:03<01:40,  2.10s/it]"

# fixtures/constructed/lf_cuda_oom_rank2.log (the OOM of rank 2, then torchrun's cascade and summary table)
OOM_CASCADE = (
    "[rank2]: Traceback (most recent call last):\n"
    '[rank2]:   File "/usr/lib/python3.11/site-packages/torch/utils/checkpoint.py", line 496, in checkpoint\n'
    "[rank2]:     ret = function(*args)\n"
    "[rank2]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 3.20 GiB. GPU 2 has a total capacity of "
    "79.25 GiB of which 1.06 GiB is free.\n"
    "W1127 10:03:11.000100 4100 torch/distributed/elastic/multiprocessing/api.py:1028] Sending process 4101 closing "
    "signal SIGTERM\n"
    "E1127 10:03:12.500000 4100 torch/distributed/elastic/multiprocessing/api.py:1002] failed (exitcode: 1) "
    "local_rank: 2 (pid: 4103) of binary: /usr/bin/python3\n"
    "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n"
    "============================================================\n"
    "/opt/LLaMA-Factory/src/llamafactory/launcher.py FAILED\n"
    "------------------------------------------------------------\n"
    "Failures:\n[1]:\n  time      : 2026-11-27_10:03:12\n  host      : gpu-node-01\n  rank      : 0 (local_rank: 0)\n"
    "  exitcode  : -15 (pid: 4101)  (SIGTERM)\n  error_file: <N/A>\n  traceback : Signal 15 (SIGTERM) received by PID 4101\n"
    "------------------------------------------------------------\n"
    "Root Cause (first observed failure):\n[0]:\n  time      : 2026-11-27_10:03:12\n  host      : gpu-node-01\n"
    "  rank      : 2 (local_rank: 2)\n  exitcode  : 1 (pid: 4103)\n  error_file: <N/A>\n"
    "  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html\n"
    "============================================================\n")

# shared/corpus/genuine_lf/sigkill_worker_rank1_job_b.log: rank 1 SIGKILLed, rank 0 SIGTERMed by the agent
SIGKILL_CASCADE = (
    "W1203 10:28:45.774000 31703 torch/distributed/elastic/multiprocessing/api.py:1028] Sending process 31721 closing "
    "signal SIGTERM\n"
    "E1203 10:28:45.993000 31703 torch/distributed/elastic/multiprocessing/api.py:1002] failed (exitcode: -9) "
    "local_rank: 1 (pid: 31722) of binary: /home/ft/venv/bin/python3\n"
    "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n"
    "============================================================\n"
    "/home/ft/venv/lib/python3.11/site-packages/llamafactory/launcher.py FAILED\n"
    "------------------------------------------------------------\n"
    "Failures:\n[1]:\n  time      : 2026-12-03_10:28:45\n  host      : localhost\n  rank      : 0 (local_rank: 0)\n"
    "  exitcode  : -15 (pid: 31721)  (SIGTERM)\n  error_file: <N/A>\n  traceback : Signal 15 (SIGTERM) received by PID 31721\n"
    "------------------------------------------------------------\n"
    "Root Cause (first observed failure):\n[0]:\n  time      : 2026-12-03_10:28:45\n  host      : localhost\n"
    "  rank      : 1 (local_rank: 1)\n  exitcode  : -9 (pid: 31722)  (SIGKILL)\n  error_file: <N/A>\n"
    "  traceback : Signal 9 (SIGKILL) received by PID 31722\n"
    "============================================================\n")

# transformers trainer.py at the end of train() (shared/corpus/genuine_lf/clean_job_a.log)
FINISH = ("[INFO|trainer.py:1823] 2026-12-03 10:24:21,761 >> \n\n"
          "Training completed. Do not forget to share your model on huggingface.co/models =)\n\n\n")


def c10d_not_destroyed(i: int) -> str:
    """tests/benchmarks/line_kinds.py: printed by every rank at a normal exit that skipped destroy_process_group."""
    g = f"1127 {10 + i // 3600 % 12:02d}:{i // 60 % 60:02d}:{i % 60:02d}.{i * 7919 % 10**9:09d}"
    return (f"[rank{i % 8}]:[W{g} ProcessGroupNCCL.cpp:1250] Warning: WARNING: process group has NOT been destroyed "
            f"before we destruct ProcessGroupNCCL. On normal program exit, the application should call "
            f"destroy_process_group to ensure that any pending NCCL operations have finished in this process. In rare "
            f"cases this process can exit before this point and block the progress of another member of the process "
            f"group. This constraint has always been present,  but this warning has only been added since PyTorch 2.4 "
            f"(function operator())\n")


# --- 1. run parameters repeated: the last values, the first command ------------------------------------------------

def test_the_last_of_20000_hf_blocks_gives_the_run_parameters_and_the_first_command_is_kept(tmp_path, engine):
    blocks = "".join(hf_block(2, 8, t=i) + loss(i) for i in range(20000))
    path = _write(tmp_path, LAUNCH, LF_START, blocks,
                  "+ torchrun --nproc_per_node 8 src/train.py configs/other.yaml\n",  # a later command: not the run's
                  hf_block(1, 16, "2,000"), BAR, OOM_CASCADE)
    size = path.stat().st_size
    assert HEAD_BYTES + (1 << 20) < size <= 12 << 20  # the last blocks and the failure lie past the head
    d = oomfix.diagnose(str(path))
    assert d.cls == "cuda_oom" and d.root_cause.rank == 2
    assert (d.run.per_device_train_batch_size, d.run.gradient_accumulation_steps, d.run.total_steps) == (1, 16, 2000)
    assert d.run.launch_command == "llamafactory-cli train configs/qwen3_14b_a.yaml"
    assert d.run.config == "configs/qwen3_14b_a.yaml" and d.run.master_port == 29500
    assert d.root_cause.phase == "training step 3/51"


# --- 2. a relaunch appended to the same log: the last attempt's outcome ---------------------------------------------

def _attempt(ranks: int = 5000) -> str:
    return LF_START + "".join(lf_rank(i) for i in range(ranks)) + hf_block(1, 16, "160") + BAR + "\n"


@pytest.mark.parametrize("ranks", [50, 5000])  # within one Hyperscan block, and across blocks (1 MB)
def test_a_failed_attempt_then_a_clean_relaunch_is_a_clean_run(tmp_path, engine, ranks):
    first = _write(tmp_path, LAUNCH, _attempt(ranks), SIGKILL_CASCADE, name="attempt1.log")
    assert oomfix.diagnose(str(first)).cls == "host_oom"  # the first attempt alone failed
    path = _write(tmp_path, LAUNCH, _attempt(ranks), SIGKILL_CASCADE, LAUNCH, _attempt(ranks), FINISH)
    d = oomfix.diagnose(str(path))
    assert (d.cls, d.finished, d.confidence) == ("none", True, "high")


@pytest.mark.parametrize("ranks", [50, 5000])
def test_a_clean_attempt_then_a_failed_relaunch_is_the_failure(tmp_path, engine, ranks):
    path = _write(tmp_path, LAUNCH, _attempt(ranks), FINISH, LAUNCH, _attempt(ranks), SIGKILL_CASCADE)
    d = oomfix.diagnose(str(path))
    assert (d.cls, d.root_cause.signal, d.root_cause.rank, d.root_cause.pid) == ("host_oom", "SIGKILL", 1, 31722)
    assert d.root_cause.line == _line_of(path, "failed (exitcode: -9)")
    assert not d.finished


# --- 3. a bound on work -------------------------------------------------------------------------------------------

def _ranks_log(tmp_path, n=100000):
    lines = "".join(f"10:{i // 60 % 60:02d}:{i % 60:02d} >> Process rank: {i % 8}, world size: 8, device: "
                    f"cuda:{i % 8}\n" for i in range(n))
    return _write(tmp_path, lines)


def test_100000_run_parameter_lines_of_one_template_give_a_few_candidates(tmp_path, engine):
    path = _ranks_log(tmp_path)
    assert 5 << 20 < path.stat().st_size < 6 << 20
    cands = _scan(path)
    assert 1 <= len(cands) <= 40
    assert [c.line_no for c in _scan(path)] == [c.line_no for c in cands]  # deterministic
    assert cands[0].line_no == 1  # the first is handed on
    assert all(b"world size: 8" in c.raw for c in cands)


def _last_line_in_head(path) -> int:
    data = path.read_bytes()
    return data.count(b"\n", 0, data.rfind(b"\n", 0, HEAD_BYTES) + 1) + 1


def test_the_last_run_parameter_line_of_the_head_is_handed_on(tmp_path, engine):
    # run parameters count in the head only (patterns.HEAD_BYTES); the last one there is the run's last value
    path = _ranks_log(tmp_path)
    cands = _scan(path)
    assert cands[-1].line_no == _last_line_in_head(path)


def test_a_relaunchs_world_size_straddling_the_head_boundary_is_the_runs(tmp_path, engine):
    """Job 1 (16 ranks) finishes; job 2 (8 ranks) starts right at the 4 MB boundary, its rank lines on both sides of
    it, then runs out of memory: the run used 8 ranks (the last world size the head shows)."""
    job1 = (LAUNCH + LF_START.replace("8 distributed", "16 distributed")
            + "".join(lf_rank(i).replace("world size: 8", "world size: 16") for i in range(16))
            + hf_block(1, 16, "160") + "".join(loss(i) for i in range(100)) + FINISH)
    ranks = "".join(lf_rank(i) for i in range(8))
    job2 = LAUNCH + LF_START.replace("29500", "29501")
    filler = loss(7)
    fill = filler * ((HEAD_BYTES - len(ranks) // 2 - len(job1) - len(job2)) // len(filler))
    path = _write(tmp_path, job1, fill, job2, ranks, hf_block(1, 16, "160"),
                  "".join(loss(i) for i in range(20000)), BAR, OOM_CASCADE)
    data = path.read_bytes()
    assert data.index(b"Process rank: 0, world size: 8") < HEAD_BYTES < data.index(b"Process rank: 7, world size: 8")
    d = oomfix.diagnose(str(path))
    assert d.cls == "cuda_oom" and d.run.world_size == 8


# --- 4. table_field: torchrun's padded fields only ----------------------------------------------------------------

PADDED = (b"time      :", b"host      :", b"rank      :", b"exitcode  :", b"error_file:", b"traceback :")
HEADER = "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n"


@pytest.mark.parametrize("header", [True, False], ids=["whole_summary", "summary_without_its_exception_line"])
def test_only_torchruns_padded_fields_are_table_rows(tmp_path, engine, header):
    lookalikes = "".join(lf_rank(i) + f"[INFO] ssh config: host: node{i % 4}\nhost: x\n" for i in range(8))
    cascade = SIGKILL_CASCADE if header else SIGKILL_CASCADE.replace(HEADER, "")
    path = _write(tmp_path, LAUNCH, LF_START, lookalikes, cascade, lookalikes)
    cands = _scan(path)
    rows = [c for c in cands if c.pats is not None and any(p.name == "table_field" for p in c.pats)]
    assert all(any(f in c.raw for f in PADDED) for c in rows), [c.raw for c in rows]
    # (below the exception line they are among the 600 lines it hands on, unchecked: pats None; the diagnosis says
    # whether they were read as rows)
    assert not any(c.raw.startswith(b"host: x") and c.pats is not None for c in cands)
    if not header:
        assert len(rows) >= 12  # the rows are found through their own markers (no FOLLOW trigger above them)
    d = oomfix.diagnose(str(path))
    assert (d.cls, d.root_cause.rank, d.root_cause.local_rank, d.root_cause.host) == ("host_oom", 1, 1, "localhost")
    assert [(c.rank, c.signal) for c in d.cascade] == [(0, "SIGTERM")]


# --- 5. past the head: colour codes find a failure; "exit" on every line changes nothing ---------------------------

ESC = "\x1b"
COLOURED = {
    "cuda_error": f"{ESC}[31m[rank3]: RuntimeError: CUDA error: an illegal memory access was encountered{ESC}[0m\n",
    "host_oom": f"{ESC}[1;31mE1203 10:28:45.993000 31703 torch/distributed/elastic/multiprocessing/api.py:1002] failed "
                f"(exitcode: -9) local_rank: 1 (pid: 31722) of binary: /home/ft/venv/bin/python3{ESC}[0m\n",
}


@pytest.mark.parametrize("cls", sorted(COLOURED))
def test_a_coloured_failure_past_the_head_is_found(tmp_path, engine, cls):
    filler = "".join(loss(i) for i in range(1000))
    path = _write(tmp_path, LAUNCH, filler * (HEAD_BYTES // len(filler) + 20), COLOURED[cls],
                  filler * 3)  # the log goes on after it a little
    d = oomfix.diagnose(str(path))
    assert d.cls == cls
    assert d.root_cause.line == _line_of(path, ESC + "[")


@pytest.mark.parametrize("end,cls", [(OOM_CASCADE, "cuda_oom"), (FINISH, "none")], ids=["oom", "finish"])
def test_exit_on_every_line_past_the_head_does_not_change_the_class(tmp_path, engine, end, cls):
    exits = "".join(c10d_not_destroyed(i) for i in range(HEAD_BYTES // 400 + 3000))  # about 5.5 MB
    plain = oomfix.diagnose(str(_write(tmp_path, LAUNCH, hf_block(1, 16), BAR, end, name="plain.log")))
    path = _write(tmp_path, LAUNCH, hf_block(1, 16), exits, BAR, end, exits[:200_000])
    assert path.stat().st_size > HEAD_BYTES + (1 << 20)
    d = oomfix.diagnose(str(path))
    assert d.cls == plain.cls == cls
    assert (d.root_cause.rank, d.root_cause.exitcode, d.root_cause.signal) == \
        (plain.root_cause.rank, plain.root_cause.exitcode, plain.root_cause.signal)


# --- 6. the phase of a failure after many HF blocks ---------------------------------------------------------------

@pytest.mark.parametrize("n", [3, 3000])
def test_the_phase_after_many_hf_blocks_is_training_at_the_bars_step(tmp_path, engine, n):
    blocks = "".join(hf_block(1, 16, t=i) + loss(i) + f"  {i % 100}%|#    | {i % 51}/51 [00:01<01:40,  2.10s/it]\n"
                     for i in range(n))
    path = _write(tmp_path, LAUNCH, LF_START, blocks, hf_block(1, 16), BAR, OOM_CASCADE)
    d = oomfix.diagnose(str(path))
    assert d.cls == "cuda_oom" and d.root_cause.phase == "training step 3/51"


LOAD = "Loading checkpoint shards: 100%|##########| 8/8 [00:12<00:00,  1.52s/it]\n"
RESTART = ("I1127 10:03:13.000000 4100 torch/distributed/elastic/agent/server/api.py:720] [default] Worker group "
           "FAILED. 1/1 attempts left; will restart worker group\n")


def test_the_phase_holds_when_the_job_restarts_in_the_same_block(tmp_path, engine):
    """A two-stage script under torchrun --max-restarts 1: stage 1 trains (over 1 MB of loss lines) and finishes,
    stage 2 loads its model, trains and runs out of memory at step 3; the agent restarts the script, which loads and
    starts training again within the same MB. The failure happened in training, not in model loading."""
    stage1 = LOAD + hf_block(2, 8, "500") + "".join(loss(i) for i in range(15000)) + FINISH
    path = _write(tmp_path, LAUNCH, LF_START, stage1, LOAD, hf_block(1, 16, "51"), BAR, OOM_CASCADE, RESTART,
                  LOAD, hf_block(2, 8, "500"), "  0%|          | 0/500 [00:00<?, ?it/s]\n")
    assert (1 << 20) < path.stat().st_size < HEAD_BYTES
    d = oomfix.diagnose(str(path))
    assert d.cls == "cuda_oom" and d.root_cause.rank == 2
    assert d.root_cause.phase == "training step 3/51"


def test_each_line_is_handed_on_once_in_order_at_its_line_number(tmp_path, engine):
    """Two HF blocks 20 lines apart (a second trainer.train(), a restarted script), then the failure: the second
    trigger is held back as the stretch's last copy; its micro-batch line, never seen as a candidate before (the first
    block's was one of the trigger's FOLLOW lines), is a new pattern set and flushes the held trigger first."""
    gap = "".join(loss(i) for i in range(20))
    path = _write(tmp_path, LAUNCH, hf_block(2, 8), gap, hf_block(1, 16), BAR, OOM_CASCADE)
    data = path.read_bytes()
    cands = _scan(path)
    offsets = [c.offset for c in cands]
    assert offsets == sorted(set(offsets))
    assert [c.line_no for c in cands] == [data.count(b"\n", 0, c.offset) + 1 for c in cands]
    d = oomfix.diagnose(str(path))
    assert (d.cls, d.root_cause.line) == ("cuda_oom", _line_of(path, "OutOfMemoryError"))
