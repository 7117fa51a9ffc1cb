"""The real-log dev corpus (../shared/corpus/logs), scored through the JSON interface."""
import json
import subprocess


from conftest import SHARED, oomfix_cmd, shared_or_skip

CORPUS = SHARED / "corpus" / "logs"
MEMORY = {"cuda_oom", "host_oom"}


def test_corpus_accuracy_and_no_harmful_answer():
    shared_or_skip(CORPUS / "labels.json")
    labels = json.loads((CORPUS / "labels.json").read_text())
    ok, harmful, misses = 0, [], []
    for case in labels:
        p = subprocess.run(oomfix_cmd() + ["diagnose", "--format", "json", str(CORPUS / case["file"])],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, (case["file"], p.stderr)
        got = json.loads(p.stdout)["class"]
        if got in case["accept"]:
            ok += 1
        else:
            misses.append((case["file"], got))
        if got in MEMORY and not MEMORY & set(case["accept"]):
            harmful.append(case["file"])
    assert not harmful, f"memory class for a non-memory failure: {harmful}"
    assert ok / len(labels) >= 0.90, f"accuracy {ok}/{len(labels)}; misses {misses}"
