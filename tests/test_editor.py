"""The surgical editor: one value changes, every other byte stays, or the edit is refused."""
import pytest

from oomfix.editor import ValueEdit, edit_text
from oomfix.errors import EditRefused


def ed(text, path, value, name="c.yaml", after=()):
    return edit_text(text, name, [ValueEdit(tuple(path.split(".")), value, after)])


def test_inline_comment_and_spacing_on_the_edited_line_survive():
    t = "a: 1\nper_device_train_batch_size: 2   # was 1\nb: x\n"
    assert ed(t, "per_device_train_batch_size", 1) == "a: 1\nper_device_train_batch_size: 1   # was 1\nb: x\n"


def test_crlf_bom_and_trailing_spaces_survive():
    t = "\ufeffa: 1  \r\nbatch_size: 8\r\nlr: 1.0e-5 \r\n"
    assert ed(t, "batch_size", 4) == "\ufeffa: 1  \r\nbatch_size: 4\r\nlr: 1.0e-5 \r\n"


def test_yaml_11_typing_holds_elsewhere():
    t = 'lr: 1.0e-5\nflag: "no"\nyes_word: \'yes\'\nper_device_train_batch_size: 4\n'
    assert ed(t, "per_device_train_batch_size", 2) == t.replace(": 4", ": 2")


def test_quoted_values_keep_their_quotes():
    t = "deepspeed: 'ds/ds_z2_config.json'\n"
    assert ed(t, "deepspeed", "ds/ds_z3_config.json") == "deepspeed: 'ds/ds_z3_config.json'\n"


def test_boolean_casing_follows_the_file():
    assert ed("gradient_checkpointing: False\n", "gradient_checkpointing", True) == "gradient_checkpointing: True\n"


def test_nested_value():
    t = "tokenizer:\n  path: /x  # p\n  max_seq_len: 4096\nbatch_size: 2\n"
    assert ed(t, "tokenizer.max_seq_len", 2048) == t.replace("4096", "2048")


def test_missing_key_is_added_in_its_section_with_the_neighbours_indentation():
    t = "### train\nper_device_train_batch_size: 1\ngradient_accumulation_steps: 8\n\n### eval\nval_size: 0.1\n"
    out = ed(t, "gradient_checkpointing", True, after=("gradient_accumulation_steps",))
    assert out == ("### train\nper_device_train_batch_size: 1\ngradient_accumulation_steps: 8\n"
                   "gradient_checkpointing: true\n\n### eval\nval_size: 0.1\n")


def test_missing_key_without_final_newline():
    assert ed("a: 1", "b", 2) == "a: 1\nb: 2"


@pytest.mark.parametrize("text,msg", [
    ("base: &b 4\nbatch_size: *b\n", "alias"),
    ("batch_size: &b 4\nother: *b\n", "anchor"),
    ("batch_size: 4\nbatch_size: 8\n", "duplicate key"),
    ("x: !!python/object:os.system {}\nbatch_size: 4\n", "cannot parse"),
    ("{batch_size: 4}\n", "flow mapping"),
    ("d: &d {a: 1}\ne:\n  <<: *d\n", "merge key"),
    ("batch_size: |\n  4\n", "block scalar"),
])
def test_refusals(text, msg):
    path = "e.batch_size" if "<<" in text else "batch_size"
    with pytest.raises(EditRefused, match=msg):
        ed(text, path, 2)


def test_alias_bomb_is_refused_fast():
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 12):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 9)}]")
    text = "\n".join(lines) + "\nbatch_size: 4\n"
    with pytest.raises(EditRefused, match="alias bomb"):
        ed(text, "batch_size", 2)


def test_omegaconf_interpolation_is_left_alone():
    t = "batch_size: 4\nbatch_size_val: ${batch_size}\n"
    assert ed(t, "batch_size", 2) == "batch_size: 2\nbatch_size_val: ${batch_size}\n"


def test_json_keeps_1e9_and_layout():
    t = '{\n  "x": 1e9,\n  "zero_optimization": {\n    "stage": 2\n  }\n}\n'
    assert ed(t, "zero_optimization.stage", 3, name="d.json") == t.replace('"stage": 2', '"stage": 3')


def test_json_key_added_with_sibling_indentation():
    t = '{\n\t"train_batch_size": "auto",\n\t"fp16": {"enabled": true}\n}'
    out = ed(t, "train_micro_batch_size_per_gpu", 2, name="d.json", after=("train_batch_size",))
    assert out == '{\n\t"train_batch_size": "auto",\n\t"train_micro_batch_size_per_gpu": 2,\n\t"fp16": {"enabled": true}\n}'


def test_invalid_json_is_refused():
    for bad in ('{"a": 1', '{"a": }', '{"a": 1,, }', '{"a": 1} x'):
        with pytest.raises(EditRefused):
            ed(bad, "a", 2, name="d.json")


def test_json_with_comments_and_trailing_commas_is_read_as_deepspeed_reads_it():
    # DeepSpeed's own loader (hjson) takes comments and trailing commas; the edit keeps them byte for byte
    text = '{\n  // micro\n  "a": 1, /* x */\n  "b": [1, 2,],\n}\n'
    assert ed(text, "a", 2, name="d.json") == text.replace('"a": 1,', '"a": 2,')


def test_a_key_yaml_11_reads_as_a_boolean_is_refused_not_misedited():
    with pytest.raises(EditRefused, match="would change more than"):
        ed("on: 1\nbatch_size: 4\n", "on", 0)
