"""The editor over every real config in ../shared/corpus/configs: one value changes, nothing else does."""
import difflib


from conftest import SHARED, shared_or_skip
from oomfix.dialects import get_path
from oomfix.editor import ValueEdit, edit_text, parse_config_text

CORPUS = SHARED / "corpus" / "configs"
FILES = sorted(p for p in CORPUS.rglob("*") if p.suffix in (".yaml", ".yml", ".json")) if CORPUS.exists() else []
BATCH_KEYS = ("per_device_train_batch_size", "micro_batch_size", "batch_size", "train_micro_batch_size_per_gpu",
              "train_batch_size")


def _target(data):
    for k in BATCH_KEYS:
        v = data.get(k) if isinstance(data, dict) else None
        if isinstance(v, int) and not isinstance(v, bool):
            return (k,), (v // 2 if v > 1 else 2)
    stage = get_path(data, ("zero_optimization", "stage"))
    if isinstance(stage, int) and not isinstance(stage, bool):
        return ("zero_optimization", "stage"), (3 if stage != 3 else 2)
    return None


def test_every_corpus_config_edits_surgically():
    shared_or_skip(CORPUS)
    edited = skipped = 0
    failures = []
    for path in FILES:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
        name = path.name
        data = parse_config_text(text.lstrip("\ufeff"), name)
        target = _target(data)
        if target is None:
            skipped += 1
            continue
        key, new = target
        try:
            out = edit_text(text, name, [ValueEdit(key, new)])
        except Exception as e:  # noqa: BLE001 - report every file, not just the first
            failures.append(f"{path.relative_to(CORPUS)}: {e}")
            continue
        before_lines = text.splitlines(keepends=True)
        after_lines = out.splitlines(keepends=True)
        changed = [(a, b) for a, b in zip(before_lines, after_lines) if a != b]
        if len(before_lines) != len(after_lines) or len(changed) != 1:
            diff = "".join(difflib.unified_diff(before_lines, after_lines))
            failures.append(f"{path.relative_to(CORPUS)}: {len(changed)} lines changed\n{diff}")
            continue
        after = parse_config_text(out.lstrip("\ufeff"), name)
        assert get_path(after, key) == new
        edited += 1
    print(f"edited {edited} corpus configs surgically, {skipped} have no batch key or ZeRO stage")
    assert not failures, "\n".join(failures[:10])
    assert edited >= 300
