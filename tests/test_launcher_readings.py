"""Launcher readings of issue 18: bash as bash runs it, and each launcher as its own argument parser reads its
command line. Every script here is constructed (labelled so), written to the behaviour of the producer named in
each test: bash's grammar (parse.y: an IO number touches its operator; test.c), DeepSpeed's runner.py, argparse,
colossalai's CLI, swift's and LLaMA-Factory's launchers."""
import textwrap

from oomfix.launcher import parse_launcher
from test_launcher import jobs, one  # the same two helpers: a script's jobs, and its only job


def test_a_number_before_a_spaced_redirection_is_an_argument(tmp_path):
    # constructed: bash reads `7 > x.log` as the argument 7 and stdout to x.log; only `2>` is a descriptor
    j = one(tmp_path, "torchrun --nproc_per_node 2 train.py --epochs 7 > x.log\n")
    assert j.log == "x.log" and j.tokens[-1] == "7"
    j = one(tmp_path, 'LOG=a.log\ntorchrun --nproc_per_node 2 t.py --epochs 2 > "$LOG" 2>&1 &\n')
    assert j.log == "a.log"
    # near miss: `2>` written together is stderr
    j = one(tmp_path, "torchrun --nproc_per_node 2 t.py 2> err.log\n")
    assert j.log == "err.log" and j.tokens[-1] == "t.py"


def test_branches_on_known_values_are_dead_or_taken(tmp_path):
    # constructed: `if false`, and tests on values the script set, decide which branch runs
    js = jobs(tmp_path, """\
        if false; then
          srun torchrun --nproc_per_node 8 t.py
        fi
        mode=infer
        if [ "$mode" = debug ]; then
          torchrun --nproc_per_node 4 t.py
        elif [[ $mode == inf* ]]; then
          torchrun --nproc_per_node 2 t.py
        else
          torchrun --nproc_per_node 1 t.py
        fi
    """)
    assert [(j.line, j.nproc) for j in js] == [(8, 2)]
    # near miss: a test on an unknown value keeps both branches
    js = jobs(tmp_path, 'if [ "$1" = big ]; then\n torchrun --nproc_per_node 8 t.py\nelse\n torchrun t.py\nfi\n')
    assert len(js) == 2


def test_a_sourced_script_sees_its_arguments(tmp_path):
    # constructed after OpenRLHF's train_nonrl_slurm.sh: `source ./train_x.sh slurm` only reads the command
    (tmp_path / "train_x.sh").write_text(textwrap.dedent("""\
        read -r -d '' training_commands <<EOF
        openrlhf.cli.train_sft --train.micro_batch_size 2
        EOF
        if [[ ${1} != "slurm" ]]; then
            deepspeed --module $training_commands
        fi
    """))
    js = jobs(tmp_path, """\
        #SBATCH -N 1
        source ./train_x.sh slurm
        srun bash -c "torchrun --nproc_per_node 8 --master_port 9901 -m ${training_commands}"
    """, name="slurm.sh")
    assert [(j.line, j.kind) for j in js] == [(3, "torchrun")]
    # near miss: run on its own, the script starts deepspeed
    assert [j.kind for j in parse_launcher(tmp_path / "train_x.sh").jobs] == ["deepspeed"]


def test_a_here_doc_fed_to_sbatch_is_its_batch_script(tmp_path):
    # constructed: `sbatch <<EOF` submits the here-doc as the job script, as `bash <<EOF` runs it
    j = one(tmp_path, """\
        sbatch <<EOF
        #!/bin/bash
        #SBATCH -N 1
        srun python -m torch.distributed.run --nproc_per_node 4 t.py --config c.yaml
        EOF
    """)
    assert (j.kind, j.nproc, j.config, j.protected_by) == ("torchrun", 4, "c.yaml", "sbatch")


def test_colossalai_run_and_a_launcher_run_by_its_path(tmp_path):
    # constructed: `colossalai run` builds a torchrun command (colossalai/cli/launcher); default port 29500
    j = one(tmp_path, "colossalai run --nproc_per_node 8 --master_port 29800 train.py --config c.yaml\n")
    assert (j.kind, j.nproc, j.port, j.config) == ("colossalai", 8, "29800", "c.yaml")
    j = one(tmp_path, """\
        launcher=/opt/conda/lib/python3.10/site-packages/torch/distributed/launch.py
        python $launcher --nproc_per_node 4 --master_port 29555 t.py
    """)
    assert (j.kind, j.nproc, j.port) == ("torch.distributed.launch", 4, "29555")


def test_deepspeed_runner_rewrites_cuda_visible_devices(tmp_path):
    # constructed to deepspeed/launcher/runner.py main(): --num_gpus N picks GPUs 0..N-1 whatever
    # CUDA_VISIBLE_DEVICES says; --include picks its own; without either the variable becomes --include
    assert one(tmp_path, "CUDA_VISIBLE_DEVICES=6,7 deepspeed --num_gpus=1 t.py\n").gpus == ("0",)
    j = one(tmp_path, "CUDA_VISIBLE_DEVICES=6,7 deepspeed --include localhost:2,3 t.py\n")
    assert (j.gpus, j.nproc) == (("2", "3"), 2)
    j = one(tmp_path, "CUDA_VISIBLE_DEVICES=6,7 deepspeed t.py\n")
    assert (j.gpus, j.nproc) == (("6", "7"), 2)
    # near miss: a hostfile job's GPUs are the hostfile's, not rewritten here
    assert one(tmp_path, "CUDA_VISIBLE_DEVICES=6,7 deepspeed --hostfile h t.py\n").gpus == ("6", "7")


def test_an_option_given_twice_keeps_the_last_and_script_options_are_not_the_launchers(tmp_path):
    # constructed: argparse stores the last occurrence
    j = one(tmp_path, "mp=20001\ntorchrun --master_port=10001 --nproc_per_node 2 --master_port=$mp t.py\n")
    assert j.port == "20001"
    # near miss: the training script's own --master_port is not torchrun's
    j = one(tmp_path, "torchrun --master_port 10001 --nproc_per_node 2 t.py --master_port 20002\n")
    assert j.port == "10001"


def test_partly_known_values_are_shown_partly_expanded(tmp_path):
    # constructed: the known directory and suffix stay; the unknown timestamp keeps its written name
    j = one(tmp_path, """\
        start_time=$(date +%s)
        log_file=log/${start_time}.log
        torchrun --nproc_per_node 2 t.py > $log_file 2>&1
    """)
    assert j.log == "log/${start_time}.log"
    # near miss: a wholly unknown value is shown by its name
    j = one(tmp_path, "gpu=$1\nCUDA_VISIBLE_DEVICES=$gpu torchrun t.py\n")
    assert j.cuda_visible_devices == "$gpu"


def test_config_from_a_find_loop_and_hydra_config_name(tmp_path):
    # constructed: a loop over $(find ...) names its config by the loop variable; Hydra reads D/N.yaml
    j = one(tmp_path, 'for cfg in $(find configs -name "*.yaml"); do\n torchrun t.py --config $cfg\ndone\n')
    assert j.config == "$cfg"
    j = one(tmp_path, "torchrun --nproc_per_node 2 t.py --config-path configs --config-name sft\n")
    assert j.config == "configs/sft.yaml"
    # near miss: an unknown --config that is not a loop variable stays unknown
    assert one(tmp_path, "torchrun t.py --config $1\n").config is None


def test_a_docstring_or_comment_is_never_a_command(tmp_path):
    # constructed after verl's scripts/converter_hf_to_mcore.py: its docstring shows a torchrun example
    (tmp_path / "convert.py").write_text(textwrap.dedent('''\
        """Convert a checkpoint.

        Example:
            torchrun --nproc_per_node 8 --master_port 29500 convert.py --hf_model_path x
        """
        import argparse
        # subprocess.run(["torchrun", "--nproc_per_node", "8", "x.py"])
        print("converting")
    '''))
    assert jobs(tmp_path, "python convert.py --hf_model_path /m --output_path /o\n") == ()


def test_swift_without_nproc_per_node_is_one_process_without_a_master_port(tmp_path):
    # constructed to swift/cli/main.py use_torchrun(): torchrun only with NPROC_PER_NODE or NNODES set
    j = one(tmp_path, "swift sft --model Qwen/Qwen2.5-7B --train_type lora\n")
    assert (j.nproc, j.port, j.port_json) == (1, "none", None)
    j = one(tmp_path, "NPROC_PER_NODE=4 swift sft --model Qwen/Qwen2.5-7B\n")
    assert (j.nproc, j.port) == (4, "default")


def test_llamafactory_wrapper_picks_a_free_port_and_follows_its_environment_dict(tmp_path):
    # constructed like the genuine origin project's wrapper.py (issue 21 item 7a): LLaMA-Factory's launcher
    # (src/llamafactory/launcher.py) uses MASTER_PORT, else a free port it finds
    (tmp_path / "wrapper.py").write_text(textwrap.dedent('''\
        import os, subprocess, sys
        env = dict(os.environ)
        env["FORCE_TORCHRUN"] = "1"
        env["NPROC_PER_NODE"] = env.get("NPROC_PER_NODE", "2")
        sys.exit(subprocess.call(["llamafactory-cli", "train", sys.argv[2]], env=env))
    '''))
    j = one(tmp_path, "nohup python wrapper.py --config a.yaml > a.log 2>&1 &\n")
    assert (j.nproc, j.port) == (2, "free")
    j = one(tmp_path, "NPROC_PER_NODE=4 python wrapper.py --config a.yaml\n")
    assert j.nproc == 4
    # near miss: a wrapper that pins MASTER_PORT in that dict binds it
    (tmp_path / "w2.py").write_text('import os, subprocess\nenv = os.environ.copy()\nenv["MASTER_PORT"] = "29611"\n'
                                    'subprocess.call(["llamafactory-cli", "train", "a.yaml"], env=env)\n')
    assert one(tmp_path, "python w2.py --config a.yaml\n").port == "29611"


def test_gpu_count_from_a_split_of_a_visible_devices_variable(tmp_path):
    # constructed: gpus = os.environ.get(...); nproc = len(gpus.split(","))
    (tmp_path / "w.py").write_text(textwrap.dedent('''\
        import os, subprocess
        gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "0,1")
        nproc = len(gpus.split(","))
        subprocess.run(["torchrun", "--nproc_per_node", str(nproc), "train.py"])
    '''))
    assert one(tmp_path, "CUDA_VISIBLE_DEVICES=0,1,2 python w.py --config a.yaml\n").nproc == 3
    assert one(tmp_path, "python w.py --config a.yaml\n").nproc == 2


def test_llamafactory_cli_with_inline_options_has_no_config_file(tmp_path):
    # constructed after ScaleBench's finetune scripts: `llamafactory-cli train --stage sft ...` (hparams parser
    # reads the command line when no YAML/JSON file is given)
    j = one(tmp_path, "CUDA_VISIBLE_DEVICES=3 llamafactory-cli train \\\n --stage sft \\\n --model_name_or_path m\n")
    assert (j.config, j.nproc, j.port) == (None, 1, "none")
    assert one(tmp_path, "llamafactory-cli train c.yaml lr=1e-5\n").config == "c.yaml"


def test_accelerate_with_one_process_and_no_distributed_type_has_no_master_port(tmp_path):
    # constructed to accelerate/commands/launch.py launch_command: distributed_type NO and one process run
    # simple_launcher (a plain python, no torchrun)
    (tmp_path / "one.yaml").write_text("distributed_type: 'NO'\nnum_processes: 1\nnum_machines: 1\n")
    (tmp_path / "multi.yaml").write_text("distributed_type: MULTI_GPU\nnum_processes: 1\nnum_machines: 1\n")
    assert one(tmp_path, "accelerate launch --config_file one.yaml t.py\n").port == "none"
    # near misses: a MULTI_GPU config, or no config file (the user's default config decides)
    assert one(tmp_path, "accelerate launch --config_file multi.yaml t.py\n").port == "default"
    assert one(tmp_path, "accelerate launch --num_processes 1 t.py\n").port == "default"


def test_gpu_count_computed_from_the_visible_devices_in_the_script(tmp_path):
    # constructed: the common `NUM_GPUS=$(echo $CUDA_VISIBLE_DEVICES | awk -F, '{print NF}')` (and tr | wc -l)
    j = one(tmp_path, """\
        export CUDA_VISIBLE_DEVICES=0,1,2
        NUM_GPUS=$(echo $CUDA_VISIBLE_DEVICES | awk -F',' '{print NF}')
        torchrun --nproc_per_node $NUM_GPUS t.py
    """)
    assert j.nproc == 3
    j = one(tmp_path, 'export CUDA_VISIBLE_DEVICES=4,5\nN=$(echo "$CUDA_VISIBLE_DEVICES" | tr \',\' \'\\n\' | wc -l)\n'
                      'torchrun --nproc_per_node=$N t.py\n')
    assert j.nproc == 2
    # near miss: from the environment the count is unknown
    assert one(tmp_path, "N=$(echo $CUDA_VISIBLE_DEVICES | awk -F, '{print NF}')\ntorchrun --nproc_per_node $N t.py\n"
               ).nproc is None


def test_read_into_an_array_from_a_here_string(tmp_path):
    # constructed: bash's `IFS=, read -ra A <<< "$X"` splits X on commas into the array A
    j = one(tmp_path, """\
        export CUDA_VISIBLE_DEVICES=0,1,2,3
        IFS=',' read -ra GPUS <<< "$CUDA_VISIBLE_DEVICES"
        torchrun --nproc_per_node ${#GPUS[@]} --master_port 2950${GPUS[1]} t.py
    """)
    assert (j.nproc, j.port) == (4, "29501")
    # near miss: from the environment, unknown
    assert one(tmp_path, 'IFS=, read -ra G <<< "$CUDA_VISIBLE_DEVICES"\ntorchrun --nproc_per_node ${#G[@]} t.py\n'
               ).nproc is None


def test_sbatch_of_a_batch_script_in_the_tree_runs_it_under_the_scheduler(tmp_path):
    # constructed: `sbatch -p gpu --gres=gpu:4 train.slurm c.yaml` submits train.slurm with its arguments
    (tmp_path / "train.slurm").write_text("#!/bin/bash\n#SBATCH -N 1\ntorchrun --nproc_per_node 4 t.py --config $1\n")
    j = one(tmp_path, "sbatch -p gpu --gres=gpu:4 train.slurm c.yaml\n")
    assert (j.kind, j.nproc, j.config, j.protected_by) == ("torchrun", 4, "c.yaml", "sbatch")
    # near miss: a batch script that is not in the tree is not guessed at
    assert jobs(tmp_path, "sbatch -p gpu other.slurm\n") == ()


def test_a_program_found_by_which_or_command_v_is_that_program(tmp_path):
    # constructed: `$(which torchrun)` prints torchrun's path; what runs is torchrun
    j = one(tmp_path, "TORCHRUN=$(which torchrun)\nnohup ${TORCHRUN} --nproc_per_node 4 t.py > a.log 2>&1 &\n")
    assert j.kind == "torchrun" and j.nproc == 4 and j.log == "a.log"
    assert one(tmp_path, "$(command -v deepspeed) --num_gpus 2 t.py\n").kind == "deepspeed"
    # near miss: an unknown program's output is not a command name
    assert not jobs(tmp_path, "$(cat launcher.txt) --nproc_per_node 4 t.py\n")
