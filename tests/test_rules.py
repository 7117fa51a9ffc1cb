"""The rules: schema validation, and every rule's own examples run as tests."""
import textwrap
from pathlib import Path

import pytest

from oomfix.apply import config_facts, file_edits, rung_values
from oomfix.configs import launchers_in, load_config
from oomfix.errors import RuleError
from oomfix.model import CLASSES
from oomfix.rules import builtin_rules_dir, load_rules, parse_rule_file

RULES = load_rules()
EXAMPLES = [(r, ex) for r in RULES.all_rungs() for ex in r.examples]
_CONFIG_NAME = {"llamafactory": "sft.yaml", "hf": "sft.yaml", "axolotl": "sft.yml", "torchtune": "sft.yaml"}


def test_every_class_has_a_rule_file():
    assert set(RULES.classes) == set(CLASSES)


def test_every_rung_has_an_example():
    missing = [r.id for r in RULES.all_rungs() if not r.examples]
    assert not missing


@pytest.mark.parametrize("rung,example", EXAMPLES, ids=[f"{r.id}:{ex.get('name', i)}" for i, (r, ex) in
                                                      enumerate(EXAMPLES)])
def test_rule_example(rung, example, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = _CONFIG_NAME[example.get("dialect", "llamafactory")]
    Path(name).write_text(textwrap.dedent(example["config"]))
    for rel, content in (example.get("files") or {}).items():
        Path(rel).parent.mkdir(parents=True, exist_ok=True)
        Path(rel).write_text(content)
    if example.get("launcher"):
        Path("launch.sh").write_text(textwrap.dedent(example["launcher"]).replace("sft.yaml", name))
    cfg = load_config(name)
    assert cfg.dialect.name == example.get("dialect", "llamafactory")
    diag = {"class": rung.cls, "phase": "", "memory": {}, **(example.get("diagnosis") or {})}
    launchers = launchers_in(["."])
    facts = config_facts(diag, cfg, launchers)
    values = rung_values(rung, cfg, facts, rung.cls)
    expect = example.get("expect")
    if expect is None:
        assert values is None or not rung.edit, "the rung should not apply here"
        if values is not None:
            assert file_edits(rung, cfg, values, launchers, 4, [], rung.cls)[0] == []
        return
    assert values is not None, "the rung should apply here"
    edits, _ = file_edits(rung, cfg, values, launchers, 4, [], rung.cls)
    by_path = {e.path: e.after for e in edits}
    assert by_path.get(name, cfg.text) == textwrap.dedent(expect)
    if any("launcher_env" in e for e in rung.edit):
        assert "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True" in by_path["launch.sh"]


def _rule(text):
    return parse_rule_file(textwrap.dedent(text), "user/x.yaml")


def test_schema_rejects_unknown_top_level_key_naming_file_and_key():
    with pytest.raises(RuleError, match=r"user/x.yaml: unknown key 'ladders'"):
        _rule("""
            class: cuda_oom
            title: t
            meaning: m
            ladders: []
        """)


def test_schema_rejects_unknown_rung_key_and_unknown_canonical_name():
    with pytest.raises(RuleError, match="unknown key 'whenever'"):
        _rule("""
            class: cuda_oom
            title: t
            meaning: m
            ladder:
              - {id: a, why: w, whenever: {}}
        """)
    with pytest.raises(RuleError, match="unknown canonical key 'batch'"):
        _rule("""
            class: cuda_oom
            title: t
            meaning: m
            ladder:
              - {id: a, why: w, edit: [{divide: {key: batch, by: 2}}]}
        """)


def test_schema_rejects_unknown_class():
    with pytest.raises(RuleError, match="unknown class 'oom'"):
        _rule("class: oom\ntitle: t\nmeaning: m\n")


def test_user_rules_dir_adds_rungs_first(tmp_path):
    (tmp_path / "mine.yaml").write_text(textwrap.dedent("""
        class: cuda_oom
        title: mine
        meaning: mine
        ladder:
          - id: my-eval
            when: {config.eval_batch: {gte: 2}}
            edit: [{divide: {key: eval_batch, by: 2}}]
            why: mine
    """))
    rules = load_rules(str(tmp_path))
    assert rules.classes["cuda_oom"].ladder[0].id == "my-eval"


def test_user_rule_that_raises_memory_is_refused(tmp_path, monkeypatch):
    from oomfix.rules import parse_rule_file as parse

    fc = parse(textwrap.dedent("""
        class: cuda_oom
        title: bad
        meaning: bad
        ladder:
          - id: bad-raise
            edit: [{multiply: {key: micro_batch, by: 2}}, {divide: {key: grad_accum, by: 2}}]
            keeps: global_batch
            why: the user's story, as a rule
    """), "bad.yaml")
    monkeypatch.chdir(tmp_path)
    Path("sft.yaml").write_text("stage: sft\nper_device_train_batch_size: 1\ngradient_accumulation_steps: 16\n")
    cfg = load_config("sft.yaml")
    with pytest.raises(RuleError, match="would raise micro_batch from 1 to 2"):
        rung_values(fc.ladder[0], cfg, config_facts({"class": "cuda_oom"}, cfg, []), "cuda_oom")


def test_rules_ship_with_the_package():
    assert (builtin_rules_dir() / "cuda_oom.yaml").is_file()
