"""The event layer: the one place where prefixes, wrapping, interleaving and padding are undone."""
import pytest

from oomfix.events import parse_records, records, strip_prefixes
from oomfix.reader import Candidate, scan

ESC = "\x1b"


@pytest.mark.parametrize("line,rank,host,level", [
    ("[rank3]: RuntimeError: x", 3, None, None),
    ("18:11:06.680 [rank4]:[E205 18:11:06.375750231 ProcessGroupNCCL.cpp:1870] RuntimeError: x", 4, None, "E"),
    ("(WorkerDict pid=48213, ip=10.1.2.3) [rank0]: RuntimeError: x", 0, None, None),
    ("(raylet) RuntimeError: x", None, None, None),
    ("(VllmWorker pid=2) (EngineCore_DP0 pid=3) (RayWorkerWrapper pid=4) RuntimeError: x", None, None, None),
    ("[1,3]<stderr>:RuntimeError: x", 3, None, None),
    ("stderr: [rank1]: RuntimeError: x", 1, None, None),
    ("> **[rank2]: RuntimeError: x", 2, None, None),
    ("2024-05-01 18:11:06,680 [rank5]: RuntimeError: x", 5, None, None),
    ("[2024-05-01T18:11:06.680Z] 7: RuntimeError: x", 7, None, None),
    ("[E ProcessGroupNCCL.cpp:475] RuntimeError: x", None, None, "E"),
    ("E1127 19:02:18.114000 11226 torch/distributed/elastic/multiprocessing/api.py:1002] RuntimeError: x", None,
     None, "E"),
    ("gpu-node-1: [rank6]: RuntimeError: x", 6, "gpu-node-1", None),
    ("RuntimeError: x [repeated 7x across cluster]", None, None, None),
])
def test_every_prefix_is_stripped_in_one_place(line, rank, host, level):
    pre = strip_prefixes(line)
    assert pre.body == "RuntimeError: x"
    assert (pre.rank, pre.host, pre.level) == (rank, host, level)


def test_glog_month_is_not_padded_by_c10_and_times_compare():
    assert strip_prefixes("[rank6]:[E429 13:55:49.384372190 ProcessGroupNCCL.cpp:1743] x").time == "0429 13:55:49.384372190"


def _cands(tmp_path, text):
    p = tmp_path / "x.log"
    p.write_bytes(text.encode())
    with open(p, "rb") as f:
        return list(scan(f, str(p)))


def test_a_hard_wrapped_message_is_rejoined(tmp_path):
    msg = ("[rank1]:[E1127 13:30:00.000001 ProcessGroupNCCL.cpp:632] [Rank 1] Watchdog caught collective operation "
           "timeout: WorkNCCL(SeqNum=9001, OpType=ALLREDUCE, NumelIn=1, NumelOut=1, Timeout(ms)=1800000) ran for "
           "1800012 milliseconds before timing out.")
    wrapped = "\n".join(msg[i:i + 100] for i in range(0, len(msg), 100)) + "\n"
    evs = [e for c in _cands(tmp_path, wrapped) for e in parse_records(c, "x.log")]
    assert {e.pattern for e in evs} == {"nccl_watchdog_timeout"}
    assert all(e.rank == 1 for e in evs)


def test_lines_of_one_template_with_equal_length_are_not_joined(tmp_path):
    text = "".join(f"W1127 10:00:0{i}.000000 1 api.py:1028] Sending process 4{i}01 closing signal SIGTERM padded\n"
                   for i in range(5)) + "Killed\n"
    evs = [e for c in _cands(tmp_path, text) for e in parse_records(c, "x.log")]
    assert [e.pattern for e in evs].count("closing_signal") == 5
    assert evs[-1].text == "Killed"


def test_two_ranks_on_one_line_are_two_records():
    assert records("[rank0]: Traceback (most recent call last):[rank1]: Traceback (most recent call last):") == [
        "[rank0]: Traceback (most recent call last):", "[rank1]: Traceback (most recent call last):"]


def test_a_prefix_stays_with_its_record_in_a_long_line():
    line = "[rank2]: torch.OutOfMemoryError: CUDA out of memory. " + "x" * 500
    assert records(line) == [line]


def test_progress_padding_inside_a_message_is_squeezed(tmp_path):
    text = "  26%|██▌       | 19/74 [00:07<00:21,  2.59it/s]ERROR: Unexpected segment          ation fault encountered in worker.\n"
    evs = [e for c in _cands(tmp_path, text) for e in parse_records(c, "x.log")]
    assert [e.pattern for e in evs] == ["dataloader_segfault"]


def test_candidate_after_stops_at_the_valid_bytes():
    c = Candidate(1, 0, b"abc", b"abc\ndef\nSTALE", 0, b"", 8)
    assert c.after() == b"\ndef\n"


def test_rich_box_edges_are_stripped_like_prefixes():
    """rich (Panel, rich.traceback) draws box edges around a line; the text inside reads like plain output."""
    from oomfix.events import strip_prefixes

    assert strip_prefixes("│ torch.OutOfMemoryError: CUDA out of memory.            │").body == \
        "torch.OutOfMemoryError: CUDA out of memory."
    assert strip_prefixes("╭──────── Traceback (most recent call last) ────────╮").body == \
        "Traceback (most recent call last)"
    assert strip_prefixes("| a | b |").body == "| a | b |"  # a markdown/ASCII table is not a rich box
