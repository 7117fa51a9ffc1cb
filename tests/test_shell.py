"""The shell reader (oomfix/shparse.py, oomfix/shell.py): what bash would expand and run, unknowns kept as written."""
import pytest

from oomfix.shell import walk_script


def argv(text, path="/repo/scripts/run.sh"):
    """The words of every command the script runs, as shown."""
    return [[a.show() for a in c.argv] for c in walk_script(path, text)]


@pytest.mark.parametrize("text,want", [
    ('A=x; echo "$A" ${A:-d} ${B:-d} ${B-e} ${A:+y}', ["echo", "x", "x", "d", "e", "y"]),
    (': ${P:=29500}; echo $P', ["echo", "29500"]),
    ('F=a/b/c.yaml; echo ${F##*/} ${F%/*} ${F%.yaml} ${F/b/z} ${#F}', ["echo", "c.yaml", "a/b", "a/b/c", "a/z/c.yaml",
                                                                       "10"]),
    ('echo $((2 * 4 + 1)) $(( 7 / 2 ))', ["echo", "9", "3"]),
    ('a=(x "y z"); echo "${a[@]}" ${#a[@]} ${a[1]}', ["echo", "x", "y z", "2", "y", "z"]),
    ("echo 'a $b' \"c\\$d\" $'e\\tf'", ["echo", "a $b", "c$d", "e\tf"]),
    ('echo "$(dirname "$0")" ${BASH_SOURCE[0]%/*} $(basename $0 .sh)', ["echo", "/repo/scripts", "/repo/scripts",
                                                                         "run"]),
    ('X=$1; T=$(date +%s); echo $X ${T} $RANDOM $HOME', ["echo", "$X", "${T}", "$RANDOM", "$HOME"]),
    ('echo <GPU-IP>:1', ["echo", "<GPU-IP>:1"]),  # a template placeholder, not a redirection
])
def test_expansions(text, want):
    assert argv(text)[-1] == want


def test_cd_tracks_the_directory():
    cmds = walk_script("/repo/scripts/run.sh", 'cd "$(dirname "$0")/.."\nx\ncd sub\ny\ncd "$UNKNOWN"\nz\n')
    assert [(c.cwd, c.cwd_rel) for c in cmds] == [("/repo", None), ("/repo/sub", None), (None, None)]


def test_relative_cd_without_a_known_start():
    cmds = walk_script("/repo/run.sh", "cd ../LLaMA-Factory\nx\n")
    assert (cmds[0].cwd, cmds[0].cwd_rel) == (None, "../LLaMA-Factory")


def test_heredoc_bodies_are_not_commands_unless_fed_to_a_shell():
    assert argv("cat > cfg.yaml <<EOF\ntorchrun x\nEOF\nls\n") == [["cat"], ["ls"]]
    assert argv("bash <<'EOF'\ntorchrun $x\nEOF\n")[-1] == ["torchrun", "$x"]


def test_lines_are_the_outer_commands():
    cmds = walk_script("/r/x.sh", 'f() {\n  torchrun a\n}\n\nf\neval "torchrun b"\ntmux new -d "torchrun c"\n')
    got = [(c.line, c.argv[0].show()) for c in cmds if c.argv[0].show() == "torchrun"]
    assert got == [(5, "torchrun"), (6, "torchrun"), (7, "torchrun")]


def test_recursion_and_size_are_bounded():
    walk_script("/r/x.sh", "f() { f; }\nf\n")
    walk_script("/r/x.sh", "a=x\n" + "a=$a$a\n" * 40 + "echo $a\n")


def test_a_seeded_random_is_fixed_as_bash_computes_it(tmp_path):
    """`RANDOM=n` seeds bash's generator: two copies of the script pick the same "random" port (bash >= 5.1)."""
    import shutil
    import subprocess

    from oomfix.shell import bash_random

    seed, got = 1485, []
    for _ in range(3):
        value, seed = bash_random(seed)
        got.append(value)
    if shutil.which("bash"):
        out = subprocess.run(["bash", "-c", "RANDOM=1485; echo $RANDOM $RANDOM $RANDOM"], capture_output=True,
                             text=True).stdout.split()
        assert [int(x) for x in out] == got
    assert got[0] == 21703
