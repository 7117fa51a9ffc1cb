"""Launcher reading (oomfix/shell.py + oomfix/launcher.py): what the shell would run, each case with a near miss."""
import textwrap

import pytest

from oomfix.launcher import concurrent, log_matches, parse_launcher


def jobs(tmp_path, text, name="l.sh"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return parse_launcher(p).jobs


def one(tmp_path, text):
    js = jobs(tmp_path, text)
    assert len(js) == 1, js
    return js[0]


def test_variables_export_defaults_and_reassignment(tmp_path):
    j = one(tmp_path, """\
        export CUDA_VISIBLE_DEVICES=0,1
        PORT=${PORT:-29600}
        CFG=configs/a.yaml
        CFG=configs/b.yaml
        : ${LOGDIR:=logs}
        torchrun --nproc_per_node 2 --master_port $PORT train.py --config "$CFG" > "$LOGDIR/x.log" 2>&1
    """)
    assert (j.cuda_visible_devices, j.port_json, j.config, j.log, j.nproc) == ("0,1", 29600, "configs/b.yaml",
                                                                               "logs/x.log", 2)


def test_unknowable_values_stay_unknown_and_keep_their_names(tmp_path):
    j = one(tmp_path, """\
        gpu=$1
        TS=$(date +%s)
        CUDA_VISIBLE_DEVICES=$gpu torchrun --nproc_per_node $2 --master_port $((RANDOM % 1000 + 20000)) t.py > log_${TS}.log
    """)
    assert j.cuda_visible_devices == "$gpu" and j.nproc is None and j.port_json == "random"
    assert j.log == "log_${TS}.log"


def test_an_echoed_command_is_not_a_job_and_comments_are_ignored(tmp_path):
    assert jobs(tmp_path, """\
        echo "torchrun --nproc_per_node 8 train.py"
        # torchrun train.py
        printf 'deepspeed x.py\\n'
    """) == ()


def test_if_branches_that_disagree_make_a_value_unknown(tmp_path):
    j = one(tmp_path, """\
        if [ "$1" == big ]; then N=8; else N=4; fi
        M=2
        if [ -z "$X" ]; then M=2; fi
        torchrun --nproc_per_node $N --master_port 1$M t.py
    """)
    assert j.nproc is None and j.port_json == 12


def test_case_on_a_known_value_takes_its_branch(tmp_path):
    j = one(tmp_path, """\
        SIZE=small
        case "$SIZE" in
          small) N=2 ;;
          big) N=8 ;;
        esac
        torchrun --nproc_per_node $N t.py
    """)
    assert j.nproc == 2


def test_cd_to_the_scripts_directory_resolves_paths_against_it(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/c.yaml").write_text("x: 1\n")
    (tmp_path / "scripts").mkdir()
    for cd in ('cd "$(dirname "$0")/../sub"', 'cd "${BASH_SOURCE[0]%/*}/../sub"',
               'ROOT=$(cd "$(dirname "$0")/.." && pwd); cd $ROOT/sub'):
        p = tmp_path / "scripts/l.sh"
        p.write_text(f"{cd}\nllamafactory-cli train c.yaml\n")
        j = parse_launcher(p).jobs[0]
        assert j.cwd == str(tmp_path / "sub"), cd
        from oomfix.launcher import job_path
        assert job_path(j, j.config) == str(tmp_path / "sub/c.yaml")


def test_relative_paths_resolve_from_the_directory_the_script_is_run_from(tmp_path, monkeypatch):
    (tmp_path / "model/training").mkdir(parents=True)
    (tmp_path / "model/training/c.yaml").write_text("x: 1\n")
    p = tmp_path / "model/training/l.sh"
    p.write_text("llamafactory-cli train model/training/c.yaml\n")
    from oomfix.launcher import job_path
    for where in (tmp_path, tmp_path / "model/training"):
        monkeypatch.chdir(where)
        j = parse_launcher(p).jobs[0]
        assert job_path(j, j.config) == str(tmp_path / "model/training/c.yaml")


def test_loops_list_one_job_per_line_and_functions_per_call_site(tmp_path):
    js = jobs(tmp_path, """\
        run() {
            local cfg=$1
            local log=$2
            nohup llamafactory-cli train "$cfg" > "$log" 2>&1
        }
        for m in a b c; do
            run configs/$m.yaml "logs/$m.log"
        done
        run configs/z.yaml logs/z.log
    """)
    assert [(j.line, j.config, j.log, j.nohup) for j in js] == [
        (7, "configs/$m.yaml", "logs/$m.log", True), (9, "configs/z.yaml", "logs/z.log", True)]


def test_commands_in_strings_arrays_and_eval(tmp_path):
    js = jobs(tmp_path, """\
        cmd="torchrun --nproc_per_node 4 --master_port 29511 t.py"
        $cmd > a.log
        args=(deepspeed --num_gpus 2 t.py --deepspeed ds.json)
        "${args[@]}"
        run_cmd="accelerate launch --num_processes 8 --main_process_port 29522 t.py"
        eval $run_cmd
    """)
    assert [(j.kind, j.nproc, j.port_json) for j in js] == [("torchrun", 4, 29511), ("deepspeed", 2, None),
                                                            ("accelerate", 8, 29522)]


@pytest.mark.parametrize("text,kind,protected,line", [
    ("tmux new-session -d -s t 'source venv/bin/activate && torchrun --nproc_per_node=2 t.py'", "torchrun", "tmux", 1),
    ("screen -dmS t bash -c 'torchrun t.py'", "torchrun", "screen", 1),
    ('srun --nodes 2 --ntasks-per-node=1 bash -c "\\n  cd /x; torchrun --nproc_per_node 8 t.py"', "torchrun", "srun", 1),
    ("srun \"$@\" sh -xeuc '\n torchrun \\\n --nnodes $SLURM_NNODES main.py'", "torchrun", "srun", 1),
    ("sbatch --wrap 'torchrun t.py'", "torchrun", "sbatch", 1),
    ("setsid nohup env FOO=1 timeout 10h python -m torch.distributed.launch t.py > a.log 2>&1 < /dev/null &",
     "torch.distributed.launch", "setsid", 1),
    ("bash <<EOF\ntorchrun t.py\nEOF", "torchrun", None, 1),
    ("docker run --rm -it --gpus all --ipc=host -v $PWD:/w -w /w -e NCCL_DEBUG=INFO --shm-size 16g \\\n"
     "  nvcr.io/nvidia/pytorch:24.05-py3 torchrun --nproc_per_node 8 t.py", "torchrun", None, 1),
    ("docker run -d --name train img bash -c 'torchrun t.py'", "torchrun", "container-detached", 1),
    ("podman exec -it -u 0 c deepspeed --num_gpus 2 t.py", "deepspeed", None, 1),
    ("apptainer exec --nv -B /data:/data img.sif torchrun t.py", "torchrun", None, 1),
])
def test_the_real_command_inside_wrappers(tmp_path, text, kind, protected, line):
    j = one(tmp_path, text + "\n")
    assert (j.kind, j.protected_by, j.line) == (kind, protected, line)


def test_ssh_jobs_run_remotely_and_are_not_concurrent_with_local_ones(tmp_path):
    js = jobs(tmp_path, """\
        ssh node1 "cd /app; nohup torchrun --nnodes=2 --node_rank=1 --master_addr=10.0.0.1 --master_port=\\${P} t.py > /app/r1.log 2>&1 &" &
        ssh node0 "torchrun --nnodes=2 --node_rank=0 --master_addr=10.0.0.1 --master_port=\\${P} t.py 2>&1 | tee /app/r0.log"
    """)
    assert [(j.line, j.remote, j.background, j.nohup, j.log, j.port_json) for j in js] == [
        (1, "node1", True, True, "/app/r1.log", None), (2, "node0", False, False, "/app/r0.log", None)]
    assert not concurrent(js[0], js[1])


def test_node_ranks_of_one_multinode_job_share_a_port(tmp_path):
    js = jobs(tmp_path, """\
        torchrun --nnodes=2 --node_rank=0 --master_addr=10.0.0.1 --master_port=29500 t.py &
        torchrun --nnodes=2 --node_rank=1 --master_addr=10.0.0.1 --master_port=29500 t.py &
        torchrun --master_port=29500 t.py &
    """)
    assert not concurrent(js[0], js[1]) and concurrent(js[0], js[2])


def test_ports_free_random_default_and_llamafactory(tmp_path):
    js = jobs(tmp_path, """\
        torchrun --standalone t.py
        torchrun --rdzv_endpoint=localhost:$(shuf -i 20000-30000 -n 1) t.py
        torchrun t.py
        CUDA_VISIBLE_DEVICES=0,1 llamafactory-cli train a.yaml
        MASTER_PORT=29123 CUDA_VISIBLE_DEVICES=0,1 llamafactory-cli train a.yaml
        MASTER_PORT=29123 torchrun t.py
    """)
    assert [j.port_json for j in js] == ["free", "random", None, "free", 29123, None]  # torchrun ignores MASTER_PORT


def test_python_wrapper_builds_torchrun_from_the_environment(tmp_path):
    (tmp_path / "wrap.py").write_text(textwrap.dedent("""\
        import os, subprocess, sys
        n = len(os.environ["CUDA_VISIBLE_DEVICES"].split(","))
        cmd = ["torchrun", "--nproc_per_node", str(n), "--master_port", os.environ.get("MASTER_PORT", "29500"),
               "train.py", sys.argv[2]]
        subprocess.run(cmd, check=True)
    """))
    (tmp_path / "plain.py").write_text("print('hello')\n")
    js = jobs(tmp_path, """\
        CUDA_VISIBLE_DEVICES=0,1,2 python wrap.py --config a.yaml &
        MASTER_PORT=29555 CUDA_VISIBLE_DEVICES=3 python wrap.py --config b.yaml &
        python plain.py --config c.yaml
    """)
    assert [(j.kind, j.nproc, j.port_json, j.config) for j in js] == [
        ("python-wrapper", 3, 29500, "a.yaml"), ("python-wrapper", 1, 29555, "b.yaml")]


def test_kill_by_name_hazards(tmp_path):
    p = tmp_path / "l.sh"
    p.write_text("pkill -f torchrun\nlsof -ti:29500 | xargs kill -9\nps -ef | grep train | awk '{print \"kill -9 \"$2}'"
                 " | sh\nkill 1234\ntorchrun t.py\n")
    assert [k.line for k in parse_launcher(p).kills] == [1, 2, 3]


def test_log_paths_with_unknown_parts_match_as_patterns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    j = one(tmp_path, 'LOG_DIR=logs\nTS=$(date +%s)\ntorchrun t.py > "$LOG_DIR/train_gpu0123_${TS}.log" 2>&1 &\n')
    (tmp_path / "logs").mkdir()
    assert log_matches(j, str(tmp_path / "logs/train_gpu0123_1700000000.log"))
    assert not log_matches(j, str(tmp_path / "logs/train_gpu4567_1700000000.log"))
    assert not log_matches(j, str(tmp_path / "other/train_gpu0123_1.log"))


def test_dev_null_is_never_a_log_match(tmp_path):
    j = one(tmp_path, "torchrun t.py > /dev/null 2>&1 &\n")
    assert j.log == "/dev/null" and not log_matches(j, "/dev/null")


def test_garbage_never_raises(tmp_path):
    for text in ('if then fi "unterminated', "$(( 1 / 0 ))", "f() { f; }; f", "a=(${", "cat <<EOF\nno end",
                 "for ((i=0;i<3;i++)); do torchrun t.py; done", "\x00\xff", "${x//[/}"):
        parse_launcher(tmp_path / "g.sh", text)


def test_arbitrary_text_never_raises(tmp_path):
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    alphabet = st.sampled_from(list("$(){}[]'\"`\\|&;<>#=-_ \n\tabcxyz019*?!%/:.@") +
                               ["torchrun ", "nohup ", "$(", "${", "<<EOF\n", "\nEOF\n", "eval ", "for i in ", "do ",
                                "done", "if ", "then ", "fi", "case ", "esac", "f() {", "}", "ssh h ", "tmux new '"])

    @hypothesis.settings(max_examples=150, deadline=None)
    @hypothesis.given(st.lists(alphabet, max_size=60).map("".join))
    def prop(text):
        parse_launcher(tmp_path / "h.sh", text)

    prop()


def test_wrapper_ports_computed_free_or_random(tmp_path):
    (tmp_path / "free.py").write_text(textwrap.dedent("""\
        import socket, subprocess, sys
        def _find_free_port():
            s = socket.socket(); s.bind(("", 0)); return s.getsockname()[1]
        subprocess.run(["torchrun", "--nproc_per_node", "2", "--master_port", str(_find_free_port()), "m.py"])
    """))
    (tmp_path / "rand.py").write_text(textwrap.dedent("""\
        import random, subprocess
        subprocess.run(["torchrun", "--master_port", str(random.randint(20000, 30000)), "m.py"])
    """))
    js = jobs(tmp_path, "python free.py\npython rand.py\n")
    assert [j.port_json for j in js] == ["free", "random"]


def test_a_commands_own_prefix_shows_what_was_written(tmp_path):
    j = one(tmp_path, 'CUDA_VISIBLE_DEVICES="$1" torchrun --rdzv_backend=c10d --rdzv_endpoint=localhost t.py\n')
    assert j.cuda_visible_devices == "$1" and j.port_json == 29400  # c10d's default endpoint port


def test_concurrency_follows_background_lists_and_waits(tmp_path):
    import itertools

    js = jobs(tmp_path, """\
        (
          torchrun a.py
          torchrun b.py
        ) &
        torchrun c.py &
        torchrun d.py
        wait
        torchrun e.py &
    """)
    pairs = {(a.line, b.line) for a, b in itertools.combinations(js, 2) if concurrent(a, b)}
    assert pairs == {(2, 5), (2, 6), (3, 5), (3, 6), (5, 6)}  # a then b inside one `( ) &`; e after the wait


def test_a_command_read_from_a_heredoc(tmp_path):
    j = one(tmp_path, """\
        read -r -d '' training_commands <<EOF
        openrlhf.cli.train_sft \\
           --max_len 2048
        EOF
        deepspeed --num_gpus 4 --module $training_commands
    """)
    assert (j.kind, j.nproc, j.line) == ("deepspeed", 4, 5)


def test_accelerate_reads_its_config_file(tmp_path):
    (tmp_path / "acc.yaml").write_text("num_processes: 4\nnum_machines: 2\ngpu_ids: 0,1\nmain_process_port: 29700\n")
    js = jobs(tmp_path, "accelerate launch --config_file acc.yaml t.py &\n"
                        "accelerate launch --config_file missing.yaml t.py &\n"
                        "accelerate launch --config_file acc.yaml --main_process_port 1 t.py\n")
    assert [(j.port_json, j.nproc, j.cuda_visible_devices, j.gpus_known) for j in js] == [
        (29700, 2, "0,1", True), (None, None, None, False), (1, 2, "0,1", True)]


def test_jobs_in_different_branches_of_one_if_never_overlap(tmp_path):
    js = jobs(tmp_path, """\
        if [ "$MODE" = a ]; then
            torchrun --master_port 29500 a.py &
        elif [ "$MODE" = b ]; then
            torchrun --master_port 29500 b.py &
        else
            torchrun --master_port 29500 c.py &
            torchrun --master_port 29500 d.py &
        fi
    """)
    assert [(a.line, b.line) for i, a in enumerate(js) for b in js[i + 1:] if concurrent(a, b)] == [(6, 7)]


def test_a_named_unknown_value_keeps_what_is_known_inside_it(tmp_path):
    j = one(tmp_path, """\
        HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)
        RDZV="${HEAD}:29292"
        args=("--rdzv-endpoint=${RDZV}" "--nproc-per-node=8" "--rdzv-backend=c10d")
        exec torchrun "${args[@]}" train.py > "$LOGS/run.log"
    """)
    assert (j.port_json, j.nproc, j.rendezvous, j.log) == (29292, 8, "${RDZV}", "$LOGS/run.log")


def test_a_script_run_by_the_launcher_is_followed_once_per_call_never_into_itself(tmp_path):
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts/one.sh").write_text('cd "$(dirname "$0")/.."\n'
                                             "CUDA_VISIBLE_DEVICES=$1 torchrun --master_port $2 t.py > logs/$2.log\n")
    js = jobs(tmp_path, "nohup bash scripts/one.sh 0,1 29500 &\nnohup bash scripts/one.sh 2,3 29501 &\nbash l.sh\n")
    assert [(j.line, j.cuda_visible_devices, j.port_json, j.log, j.nohup, j.cwd) for j in js] == [
        (1, "0,1", 29500, "logs/29500.log", True, str(tmp_path)), (2, "2,3", 29501, "logs/29501.log", True, str(tmp_path))]


def test_a_container_command_is_unwrapped_only_for_run_and_exec(tmp_path):
    assert jobs(tmp_path, "docker build -t torchrun .\ndocker run img python eval.py\ndocker pull torchrun\n") == ()
    j = one(tmp_path, "docker run --rm -eMASTER_ADDR=10.0.0.1 -v/d:/d img torchrun --nproc_per_node=4 t.py\n")
    assert (j.kind, j.nproc) == ("torchrun", 4)
