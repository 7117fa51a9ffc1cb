"""Resume only from a whole checkpoint (oomfix/checkpoints.py). The checkpoint directories are CONSTRUCTED in the
layouts transformers' Trainer, safetensors and DeepSpeed write."""
from __future__ import annotations

import json
import struct
from pathlib import Path

from oomfix.checkpoints import newest_complete, problem


def safetensors_bytes(n_floats: int = 4) -> bytes:
    # safetensors' layout: 8-byte little-endian header length, the JSON header, then the tensor data
    header = json.dumps({"w": {"dtype": "F32", "shape": [n_floats], "data_offsets": [0, 4 * n_floats]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * (4 * n_floats)


def hf_checkpoint(d: Path, step: int, shards: int = 0) -> Path:
    d.mkdir(parents=True)
    (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if shards:
        names = [f"model-{i:05d}-of-{shards:05d}.safetensors" for i in range(1, shards + 1)]
        for n in names:
            (d / n).write_bytes(safetensors_bytes())
        (d / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": 16 * shards}, "weight_map": {f"l{i}": n for i, n in enumerate(names)}}))
    else:
        (d / "model.safetensors").write_bytes(safetensors_bytes())
    return d


def test_newest_complete_skips_half_written_ones_and_says_why(tmp_path):
    hf_checkpoint(tmp_path / "checkpoint-100", 100, shards=2)
    hf_checkpoint(tmp_path / "checkpoint-200", 200, shards=2)
    # checkpoint-300: killed while writing its second shard
    c300 = hf_checkpoint(tmp_path / "checkpoint-300", 300, shards=2)
    shard = c300 / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-5])
    # checkpoint-400: killed before the Trainer wrote trainer_state.json
    c400 = tmp_path / "checkpoint-400"
    c400.mkdir()
    (c400 / "model.safetensors").write_bytes(safetensors_bytes())
    path, skipped = newest_complete(str(tmp_path))
    assert path == str(tmp_path / "checkpoint-200")
    assert [Path(s.path).name for s in skipped] == ["checkpoint-400", "checkpoint-300"]
    assert "trainer_state.json" in skipped[0].why
    assert "model-00002-of-00002.safetensors is 81 bytes, its header says 86" in skipped[1].why


def test_index_naming_a_missing_shard(tmp_path):
    c = hf_checkpoint(tmp_path / "checkpoint-1", 1, shards=2)
    (c / "model-00001-of-00002.safetensors").unlink()
    assert "names model-00001-of-00002.safetensors, which is missing" in problem(str(c))


def test_cut_trainer_state_and_header(tmp_path):
    c = hf_checkpoint(tmp_path / "checkpoint-1", 1)
    (c / "trainer_state.json").write_text('{"global_st')
    assert "trainer_state.json is cut short" in problem(str(c))
    c2 = hf_checkpoint(tmp_path / "checkpoint-2", 2)
    (c2 / "model.safetensors").write_bytes(safetensors_bytes()[:20])
    assert "cut short inside its header" in problem(str(c2))


def test_deepspeed_latest_must_point_at_a_whole_tag(tmp_path):
    c = hf_checkpoint(tmp_path / "checkpoint-10", 10)
    (c / "latest").write_text("global_step10")
    assert "names 'global_step10', which is not a directory" in problem(str(c))
    tag = c / "global_step10"
    tag.mkdir()
    (tag / "mp_rank_00_model_states.pt").write_bytes(b"x" * 10)
    assert "no *_optim_states.pt" in problem(str(c))
    (tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"")
    assert "is empty" in problem(str(c))
    (tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"x")
    assert problem(str(c)) is None


def test_no_checkpoint_at_all(tmp_path):
    assert newest_complete(str(tmp_path / "missing")) == (None, ())
    (tmp_path / "checkpoint-5").mkdir()
    path, skipped = newest_complete(str(tmp_path))
    assert path is None and len(skipped) == 1
