"""Which training jobs a launcher script starts, and how: read with the shell reader (oomfix/shell.py), never run.

A job is a command that ends in torchrun: directly, as `python -m torch.distributed.run|launch`, through
`llamafactory-cli train`, `accelerate launch`, `deepspeed`, or a Python wrapper (a script whose source starts one of
those, a CLI that re-execs itself under torchrun such as `swift sft`). Each job is an oomfix/job.py Job, with what
the pre-relaunch checks and the launcher fixes need; oomfix/pywrapper.py reads the Python wrappers, and
oomfix/jobpaths.py says where a job's files and logs are (both re-exported here, as before).
"""
from __future__ import annotations

import os
import posixpath
import re
import stat
from pathlib import Path
from typing import Any

from oomfix.errors import InputError
from oomfix.job import Hazard, Job, Launcher
from oomfix.jobpaths import (NOT_LOGS, clear_caches, git_root, job_bases, job_path, job_paths, log_matches,
                             run_dirs_for)
from oomfix.pywrapper import WrapperInfo, wrapper_info
from oomfix.shell import Command, Value, walk_script
from oomfix.shparse import ShellBudget

__all__ = [
    "MAX_LAUNCHER_BYTES", "TORCHRUN_KINDS", "Job", "Hazard", "Launcher", "job_from", "parse_launcher", "same_host",
    "one_multinode_job", "concurrent", "looks_like_launcher", "read_launchers",
    # re-exported: importers of oomfix.launcher keep working
    "WrapperInfo", "wrapper_info", "NOT_LOGS", "clear_caches", "git_root", "run_dirs_for", "job_bases", "job_paths",
    "job_path", "log_matches",
]

MAX_LAUNCHER_BYTES = 4 << 20  # the largest real launcher seen is tens of KB

TORCHRUN_KINDS = ("torchrun", "torch.distributed.launch", "llamafactory-cli", "accelerate", "deepspeed",
                  "python-wrapper")
_PROTECTORS = ("setsid", "tmux", "screen", "systemd-run", "srun", "sbatch", "salloc", "dtach", "disown", "bsub",
               "qsub", "flux", "kubectl", "container-detached")
_CONFIG_EXT = (".yaml", ".yml", ".json")
# CLIs that start torchrun themselves (ms-swift re-execs under torchrun when NPROC_PER_NODE is set; axolotl and
# torchtune's `tune run` wrap accelerate / torchrun)
_WRAPPER_CLIS = {"swift": ("sft", "pt", "rlhf", "train"), "axolotl": ("train",), "tune": ("run",)}
_LAUNCHER_VALUE_OPTS = {
    "--nproc_per_node", "--nproc-per-node", "--nnodes", "--node_rank", "--node-rank", "--master_addr",
    "--master-addr", "--master_port", "--master-port", "--rdzv_endpoint", "--rdzv-endpoint", "--rdzv_backend",
    "--rdzv-backend", "--rdzv_id", "--rdzv-id", "--rdzv_conf", "--rdzv-conf", "--max_restarts", "--max-restarts",
    "--monitor_interval", "--monitor-interval", "--log_dir", "--log-dir", "-r", "--redirects", "-t", "--tee",
    "--local_addr", "--local-addr", "--signals-to-handle", "--signals_to_handle", "--role", "--start_method",
    "--start-method", "--num_processes", "--num_machines", "--machine_rank", "--main_process_ip",
    "--main_process_port", "--config_file", "--gpu_ids", "--mixed_precision", "--deepspeed_config_file",
    "--zero_stage", "--num_cpu_threads_per_process", "--dynamo_backend", "--hostfile", "-H", "--include", "-i",
    "--exclude", "-e", "--num_gpus", "--num_nodes", "--master_port", "--launcher", "--launcher_args", "--module",
    "--local-ranks-filter", "--logs-specs", "--ssh_port", "--bind_cores_to_rank", "--bind_core_list",
}


# --- reading one command ----------------------------------------------------------------------------------------

def _t(v: Value) -> str | None:
    return v.text


def _opt(args: list[Value], names: tuple[str, ...]) -> tuple[Value | None, int]:
    """The value of an option (`--x v` or `--x=v`) and its index, or (None, -1). Given twice, the last one counts,
    as argparse stores it (`--master_port=10001 ... --master_port=$mp` runs on $mp)."""
    found: tuple[Value | None, int] = (None, -1)
    i = 0
    while i < len(args):
        t = args[i].show()
        for n in names:
            if t == n and i + 1 < len(args):
                found = (args[i + 1], i)
                i += 1
                break
            if t.startswith(n + "="):
                found = (_drop(args[i], len(n) + 1), i)
                break
        i += 1
    return found


def _drop(v: Value, n: int) -> Value:
    from oomfix.shell import _drop_prefix

    return _drop_prefix(v, n)


def _int(v: Value | None) -> int | None:
    if v is None or v.text is None:
        return None
    t = v.text.strip()
    return int(t) if t.isdigit() else None


def _port_of(v: Value | None) -> str:
    if v is None:
        return "default"
    if v.text is not None:
        t = v.text.strip()
        return str(int(t)) if t.isdigit() else ("free" if t == "0" else "unknown")
    return "random" if v.random else "unknown"


def _endpoint_port(v: Value) -> Value:
    """The port of `host:port` (parts kept: `localhost:${PORT}` is the unknown PORT)."""
    parts = list(v.parts)
    for i in range(len(parts) - 1, -1, -1):
        p = parts[i]
        if p.known and ":" in p.text:
            rest = p.text.rsplit(":", 1)[1]
            from oomfix.shell import Part

            return Value(tuple(([Part(rest)] if rest else []) + parts[i + 1:]))
    return Value.unknown(v.show()) if not v.known else Value.lit("")


def _script_args(kind: str, args: list[Value]) -> tuple[Value | None, list[Value]]:
    """After a launcher's own options: the training script and its arguments."""
    i = 0
    while i < len(args):
        t = args[i].text
        if t is None:
            i += 1
            continue
        if t.startswith("-"):
            if t in ("-m", "--module", "--no_python", "--no-python", "--use_env", "--use-env", "--standalone",
                     "--multi_gpu", "--no-python"):
                if t in ("-m", "--module") and i + 1 < len(args):
                    return args[i + 1], args[i + 2:]
                i += 1
                continue
            key = t.split("=", 1)[0]
            i += 1 if "=" in t or key not in _LAUNCHER_VALUE_OPTS else 2
            continue
        return args[i], args[i + 1:]
    return None, []


def _config_of(args: list[Value], loop_vars: tuple[str, ...] = ()) -> str | None:
    """The training config among a script's arguments: `--config X` (and spellings), else the first positional
    argument that is a config file (`.yaml`, `.yml`, `.json`, or an mmcv-style `configs/....py`). Hydra's
    `--config-path D --config-name N` is D/N.yaml; a loop variable (`for cfg in $(find ...)`) is shown by name."""
    v, _ = _opt(args, ("--config", "--config_file", "--config-file", "--cfg", "--config_path", "--config-path",
                       "--config-dir", "--config_dir", "--train_config", "--yaml"))
    if v is not None:
        name, _ = _opt(args, ("--config-name", "--config_name", "-cn"))
        if name is not None and v.any_known and name.any_known:
            n = name.show()
            return posixpath.join(v.show(), n if n.endswith(_CONFIG_EXT) else n + ".yaml")
        if not v.any_known and re.fullmatch(r"\$\{?(\w+)\}?", v.show()) and \
                re.sub(r"[${}]", "", v.show()) in loop_vars:
            return v.show()
        return v.show() if v.any_known else None
    prev = None
    for a in args:
        t = a.show()
        if prev is not None and prev.startswith("-") and "=" not in prev:
            prev = t
            continue
        prev = t
        if t.startswith("-") or "=" in t:
            continue
        if a.any_known and (t.endswith(_CONFIG_EXT) or (t.endswith(".py") and "config" in t.lower())):
            return t  # a `.py` config is mmcv style: it lives under configs/
    return None


def _resolve_file(p: str, cmd: Command, script_dir: str) -> str | None:
    if os.path.isabs(p):
        return p if os.path.isfile(p) else None
    bases = []
    if cmd.cwd:
        bases.append(cmd.cwd)
    elif cmd.cwd_rel is not None:
        bases.extend(os.path.join(b, cmd.cwd_rel) for b in run_dirs_for(script_dir))
    bases.append(script_dir)
    for b in bases:
        c = os.path.normpath(os.path.join(b, p))
        if os.path.isfile(c):
            return c
    return None


# --- a command to a job -------------------------------------------------------------------------------------------

def job_from(cmd: Command, script_dir: str) -> dict[str, Any] | None:
    """Recognise a training job in one command the shell reader found; None if it is something else."""
    argv = list(cmd.argv)
    if not argv or argv[0].text is None:
        return None
    prog = os.path.basename(argv[0].text)
    args = argv[1:]
    texts = [a.text for a in args]
    env = dict(cmd.env)
    kind = None
    wrapper: WrapperInfo | None = None
    cli_args = args
    if prog == "torchrun":
        kind = "torchrun"
    elif prog == "llamafactory-cli" or (prog.startswith("python") and texts[:2] == ["-m", "llamafactory.cli"]):
        kind = "llamafactory-cli"
        cli_args = args[2:] if prog.startswith("python") else args
        if cli_args and cli_args[0].text not in ("train", "sft"):
            return None
    elif prog == "accelerate" and texts[:1] == ["launch"]:
        kind, cli_args = "accelerate", args[1:]
    elif prog == "deepspeed":
        kind = "deepspeed"
    elif prog == "colossalai" and texts[:1] == ["run"]:
        kind, cli_args = "colossalai", args[1:]  # colossalai/cli/launcher: a torchrun command per host
    elif prog in _WRAPPER_CLIS and texts[:1] and texts[0] in _WRAPPER_CLIS[prog]:
        kind, cli_args = "python-wrapper", args[1:]
    elif re.fullmatch(r"python[\d.]*", prog):
        j = 0
        while j < len(args) and (texts[j] or "").startswith("-") and texts[j] != "-m":
            j += 1
        if texts[j:j + 2] in (["-m", "torch.distributed.run"], ["-m", "torch.distributed.launch"]):
            kind = "torchrun" if texts[j + 1] == "torch.distributed.run" else "torch.distributed.launch"
            cli_args = args[j + 2:]
        elif j < len(args) and re.search(r"(^|/)torch/distributed/(run|launch)\.py$", texts[j] or ""):
            # the launcher run by its path (`python $launcher ...`, $launcher = .../torch/distributed/launch.py)
            kind = "torchrun" if (texts[j] or "").endswith("run.py") else "torch.distributed.launch"
            cli_args = args[j + 1:]
        elif j < len(args) and (texts[j] or "").endswith(".py"):
            script = _resolve_file(texts[j] or "", cmd, script_dir)
            cli_args = args[j + 1:]
            if script is not None:
                wrapper = wrapper_info(script, env)
                if wrapper is not None:
                    kind = "python-wrapper"
            elif _launcher_like(cli_args):
                kind = "python-wrapper"  # not in this tree, but its own options say it launches a distributed job
    if kind is None:
        return None
    out: dict[str, Any] = {"kind": kind, "tokens": tuple(a.show() for a in argv),
                           "env": {k: v.show() for k, v in env.items()}}
    visible = env.get("CUDA_VISIBLE_DEVICES")
    n_visible = len([x for x in visible.text.split(",") if x.strip()]) if visible is not None and visible.text else None
    if visible is not None:
        out["cuda_visible_devices"] = visible.show()
    port = "default"
    nproc: int | None = None
    nnodes: int | None = None
    own = cli_args[:_script_index(cli_args)] if kind != "python-wrapper" else cli_args  # the launcher's options,
    # not the training script's (which may have a --master_port of its own)
    if kind in ("torchrun", "torch.distributed.launch", "colossalai"):
        cli_args, rest_args = own, cli_args
        v, _ = _opt(cli_args, ("--master_port", "--master-port"))
        port = _port_of(v) if v is not None else _port_of(env.get("PET_MASTER_PORT"))
        ep, _ = _opt(cli_args, ("--rdzv_endpoint", "--rdzv-endpoint"))
        if ep is not None and v is None:
            port = _port_of(_endpoint_port(ep)) if ep.show() else "unknown"
            backend, _ = _opt(cli_args, ("--rdzv_backend", "--rdzv-backend"))
            if ep.known and ":" not in (ep.text or "") and backend is not None and backend.text == "c10d":
                port = "29400"  # torchrun's default port for a c10d endpoint without one (dynamic_rendezvous)
            out["rendezvous"] = ep.show()
        if any(a.text == "--standalone" for a in cli_args[:_script_index(cli_args)]):
            port = "free"
        np_, _ = _opt(cli_args, ("--nproc_per_node", "--nproc-per-node"))
        if np_ is not None:
            nproc = _int(np_)
            if nproc is None and np_.text in ("gpu", "auto") and n_visible:
                nproc = n_visible
        nn, _ = _opt(cli_args, ("--nnodes",))
        if nn is not None and nn.text:
            nnodes = _int(Value.lit(nn.text.split(":")[-1]))
        rank, _ = _opt(cli_args, ("--node_rank", "--node-rank"))
        if rank is not None:
            out["node_rank"] = rank.show()
        addr, _ = _opt(cli_args, ("--master_addr", "--master-addr"))
        if addr is not None and "rendezvous" not in out:
            out["rendezvous"] = f"{addr.show()}:{port}"
        sig, _ = _opt(cli_args, ("--signals-to-handle", "--signals_to_handle"))
        if sig is not None:
            out["signals_to_handle"] = sig.show()
        if kind == "colossalai":
            nn, _ = _opt(cli_args, ("--num_nodes",))
            nnodes = _int(nn) if nn is not None else nnodes
        script, rest = _script_args(kind, rest_args)
        out["config"] = _config_of(rest, cmd.loop_vars)
    elif kind == "llamafactory-cli":
        cfg = cli_args[1] if len(cli_args) > 1 else None
        # `llamafactory-cli train --stage sft --model_name_or_path ...`: the options are the config, no file
        out["config"] = cfg.show() if cfg is not None and cfg.any_known and not cfg.show().startswith("-") else None
        nproc = _int(env.get("NPROC_PER_NODE")) or n_visible
        force = env.get("FORCE_TORCHRUN")
        distributed = (nproc or 0) > 1 or (force is not None and force.text not in (None, "", "0", "false"))
        mp = env.get("MASTER_PORT")
        # llamafactory-cli runs torchrun for more than one device and then picks a free port unless MASTER_PORT
        # is set (src/llamafactory/cli.py)
        port = _port_of(mp) if mp is not None else ("free" if distributed or nproc is None else "none")
        nnodes = _int(env.get("NNODES"))
        if (nnodes or 1) > 1:  # llamafactory-cli's multi-node run: torchrun with these variables
            out["node_rank"] = env["NODE_RANK"].show() if env.get("NODE_RANK") is not None else None
            addr = env.get("MASTER_ADDR")
            out["rendezvous"] = f"{addr.show() if addr is not None else '?'}:{port}"
    elif kind == "accelerate":
        # command-line options win over the accelerate config file (--config_file, else the user's default config,
        # which is not in the tree: then its defaults are assumed, as the RID siblings show they collide)
        cli_args, rest_args = own, cli_args
        acc = _accelerate_config(_opt(cli_args, ("--config_file",))[0], cmd, script_dir)
        v, _ = _opt(cli_args, ("--main_process_port",))
        port = _port_of(v) if v is not None else (acc.get("port") or "default")
        np_, _ = _opt(cli_args, ("--num_processes",))
        nm, _ = _opt(cli_args, ("--num_machines",))
        nnodes = _int(nm) if nm is not None else acc.get("nnodes")
        total = _int(np_) if np_ is not None else acc.get("nproc")
        if total is not None:
            nproc = total // (nnodes or 1)
        if total == 1 and (nnodes or 1) == 1 and acc.get("read") and not acc.get("distributed") and not any(
                a.text in ("--multi_gpu", "--use_deepspeed", "--use_fsdp", "--use_megatron_lm") for a in cli_args):
            # accelerate/commands/launch.py launch_command: a config that says one process and no distributed type
            # runs simple_launcher, a plain python without torchrun or a master port (without a config file the
            # user's default config decides, which the tree does not show)
            port = "none"
        ids, _ = _opt(cli_args, ("--gpu_ids",))
        if visible is None:
            if ids is not None:
                out["cuda_visible_devices"] = ids.show()
            elif acc.get("gpus"):
                out["cuda_visible_devices"] = acc["gpus"]
        if acc.get("unknown"):
            out["gpus_known"] = False
        script, rest = _script_args(kind, rest_args)
        out["config"] = _config_of(rest, cmd.loop_vars)
    elif kind == "deepspeed":
        cli_args, rest_args = own, cli_args
        v, _ = _opt(cli_args, ("--master_port",))
        port = _port_of(v) if v is not None else "default"
        ng, _ = _opt(cli_args, ("--num_gpus", "--num_accelerators"))
        nproc = _int(ng)
        inc, _ = _opt(cli_args, ("--include", "-i"))
        exc, _ = _opt(cli_args, ("--exclude", "-e"))
        nn, _ = _opt(cli_args, ("--num_nodes",))
        nnodes = _int(nn)
        hostfile, _ = _opt(cli_args, ("--hostfile", "-H"))
        # deepspeed/launcher/runner.py main(): on one node (no hostfile) CUDA_VISIBLE_DEVICES becomes
        # --include=localhost:<it> only when none of --include/--exclude/--num_gpus/--num_nodes>1 is given; it is
        # then deleted, and the workers get the GPUs those options pick from the physical ones (--num_gpus N:
        # GPUs 0..N-1; `CUDA_VISIBLE_DEVICES=6,7 deepspeed --num_gpus=1` runs on GPU 0)
        if hostfile is None:
            if inc is not None:
                if inc.text and "@" not in inc.text:
                    devs = inc.text.split(":", 1)[1] if ":" in inc.text else ""
                    out["cuda_visible_devices"] = devs or None
                    if devs:
                        nproc = len([d for d in devs.split(",") if d.strip()])
                else:
                    out["cuda_visible_devices"], out["gpus_known"] = inc.show(), False
            elif nproc is not None:
                out["cuda_visible_devices"] = ",".join(str(k) for k in range(nproc))
            elif exc is not None or (nnodes or 1) > 1:
                out.pop("cuda_visible_devices", None)
                out["gpus_known"] = False
            elif visible is not None and n_visible:
                nproc = n_visible
        script, rest = _script_args(kind, rest_args)
        out["config"] = _config_of(rest, cmd.loop_vars)
    else:  # python-wrapper
        out["wrapper"] = wrapper.path if wrapper else None
        v, _ = _opt(cli_args, ("--master_port", "--master-port", "--port", "--main_process_port"))
        mp = env.get("MASTER_PORT")
        if v is not None:
            port = _port_of(v)
        elif wrapper is not None and wrapper.reads_master_port and mp is not None:
            port = _port_of(mp)
        elif wrapper is not None:
            port = wrapper.port
            if port == "default" and env.get("PET_MASTER_PORT") is not None:
                port = _port_of(env["PET_MASTER_PORT"])  # the torchrun it starts inherits the environment
        elif prog in _WRAPPER_CLIS and mp is not None:
            port = _port_of(mp)
        if prog == "swift" and env.get("NPROC_PER_NODE") is None and env.get("NNODES") is None:
            # swift/cli/main.py use_torchrun(): without NPROC_PER_NODE or NNODES it runs one plain python
            # process, no torchrun and no master port
            port, nproc_one = "none", True
        else:
            nproc_one = False
        np_, _ = _opt(cli_args, ("--nproc_per_node", "--nproc-per-node", "--gpus", "--num_gpus", "--gpu_per_node",
                                 "--gpus_per_node", "--ngpus"))
        nproc = _int(np_) if np_ is not None else None
        if nproc is None and wrapper is not None:
            nproc = wrapper.nproc if wrapper.nproc is not None else (n_visible if wrapper.nproc_from_visible else None)
        if nproc is None and prog in _WRAPPER_CLIS:
            nproc = 1 if nproc_one else _int(env.get("NPROC_PER_NODE"))
        nnodes = _int(_opt(cli_args, ("--num_nodes", "--nnodes"))[0])
        out["config"] = _config_of(cli_args, cmd.loop_vars)
        if (wrapper is not None and wrapper.submits) or (wrapper is None and _opt(cli_args, ("--partition",
                                                                                              "--qos"))[0]):
            out["protected_by"] = "sbatch"  # a submitit / Slurm wrapper: the job runs under the scheduler
    out["reads_master_port"] = kind == "llamafactory-cli" or prog in _WRAPPER_CLIS or \
        (wrapper is not None and wrapper.reads_master_port)
    out["port"] = port
    out["master_port"] = int(port) if port.isdigit() else None
    out["master_port_explicit"] = port.isdigit()
    out["picks_free_port"] = port == "free"
    out["nproc"] = nproc
    out["nnodes"] = nnodes
    return out


def _accelerate_config(ref: Value | None, cmd: Command, script_dir: str) -> dict[str, Any]:
    """What an accelerate config file says about processes, GPUs and port (`num_processes`, `gpu_ids`,
    `main_process_port`, `num_machines`); {"unknown": True} when the named file cannot be read."""
    if ref is None:
        return {}
    path = _resolve_file(ref.text, cmd, script_dir) if ref.text else None
    if path is None:
        return {"unknown": True, "port": "unknown"}
    try:
        import yaml

        if os.path.getsize(path) > 1 << 20:
            return {"unknown": True, "port": "unknown"}
        text = Path(path).read_text(encoding="utf-8", errors="replace")
        # accelerate writes its config with yaml.safe_dump of a plain dict: never an alias. One here may be an
        # alias bomb (a few lines that expand to billions of nodes): not read
        if any(isinstance(ev, yaml.AliasEvent) for ev in yaml.parse(text, Loader=yaml.SafeLoader)):
            return {"unknown": True, "port": "unknown"}
        data = yaml.safe_load(text)
    except Exception:  # noqa: BLE001 - an unreadable accelerate config tells nothing
        return {"unknown": True, "port": "unknown"}
    if not isinstance(data, dict):
        return {}
    out: dict[str, Any] = {"read": True}
    if isinstance(data.get("num_processes"), int):
        out["nproc"] = data["num_processes"]
    if str(data.get("distributed_type", "NO")).upper() not in ("NO", "NONE"):
        out["distributed"] = True
    if isinstance(data.get("num_machines"), int):
        out["nnodes"] = data["num_machines"]
    if isinstance(data.get("main_process_port"), int):
        out["port"] = str(data["main_process_port"])
    ids = data.get("gpu_ids")
    if ids not in (None, "all", "") and str(ids).replace(",", "").strip().isdigit():
        out["gpus"] = str(ids)
    return out


def _script_index(args: list[Value]) -> int:
    script, rest = _script_args("torchrun", args)
    return len(args) - len(rest) - (1 if script is not None else 0)


def _launcher_like(args: list[Value]) -> bool:
    names = {a.show().split("=", 1)[0] for a in args}
    return bool(names & {"--nproc_per_node", "--gpu_per_node", "--gpus_per_node", "--num_gpus", "--master_port"}) \
        or ({"--port", "--num_nodes"} <= names)


def _log_of(cmd: Command) -> Value | None:
    """stdout's file (else stderr's), or the file of a `| tee` after it; `2>&1` follows stdout."""
    out = err = None
    for fd, op, target in cmd.redirs:
        if op in ("<", "<<<", "<&", "<>"):
            continue
        if op in (">&",) and target.text is not None and target.text.isdigit():
            if fd == "2" and target.text == "1":
                err = out
            continue
        if fd in ("1", "&"):
            out = target
            if fd == "&":
                err = target
        elif fd == "2":
            err = target
    if out is None and cmd.pipeline and cmd.index + 1 < len(cmd.pipeline):
        nxt = cmd.pipeline[cmd.index + 1]
        if nxt and nxt[0].text in ("tee",):
            files = [a for a in nxt[1:] if not a.show().startswith("-")]
            if files:
                return files[0]
    return out or err


_KILL_NAME = re.compile(r"^(pkill|killall)$")


def _kill_hazard(cmd: Command) -> bool:
    """`pkill -f NAME`, `killall NAME`, `ps | grep | awk kill | sh`, `lsof -ti:PORT | xargs kill -9`, `fuser -k`:
    kills every matching process on the host, including other users' and other jobs' training."""
    if not cmd.argv or cmd.argv[0].text is None:
        return False
    prog = os.path.basename(cmd.argv[0].text)
    args = [a.show() for a in cmd.argv[1:]]
    if _KILL_NAME.match(prog):
        return True
    if prog == "fuser" and any(a.startswith("-") and "k" in a for a in args):
        return True
    if prog in ("kill",) and any("$(" in a or "`" in a or "pgrep" in a or "pidof" in a for a in args):
        return True
    if prog == "xargs" and args[:1] == ["kill"] or prog == "xargs" and "kill" in args:
        return True
    if prog in ("sh", "bash") and cmd.index > 0 and cmd.pipeline:
        before = " ".join(a.show() for argv in cmd.pipeline[:cmd.index] for a in argv)
        return "kill" in before
    return False


def parse_launcher(path: str | os.PathLike[str], text: str | None = None) -> Launcher:
    p = Path(path)
    if text is None:
        try:
            st = os.stat(p)
            if not stat.S_ISREG(st.st_mode):
                # a FIFO or a device (a /dev/zero symlink named x.sh) would block or never end: never opened
                raise InputError(f"{p}: not a regular file; not reading it")
            if st.st_size > MAX_LAUNCHER_BYTES:
                raise InputError(f"{p}: {st.st_size} bytes is too large for a launcher script "
                                 f"(at most {MAX_LAUNCHER_BYTES})")
            # bytes, not text mode: CRLF must survive an edit; undecodable bytes survive as surrogates
            with open(p, "rb") as f:
                text = f.read(MAX_LAUNCHER_BYTES + 1).decode("utf-8", errors="surrogateescape")
        except OSError as e:
            raise InputError(f"{p}: cannot read: {e.strerror}") from None
    src = text.replace("\r\n", "\n")
    clear_caches()  # file-system answers are cached for one reading of a tree, not across runs in one process
    try:
        cmds = walk_script(str(p), src)
    except RecursionError:
        cmds = []
    except ShellBudget as e:
        raise InputError(f"{p}: not read: {e}") from None
    script_dir = str(p.resolve().parent)
    lines = text.splitlines()
    sbatch = bool(re.search(r"^#SBATCH\s", src, re.M))
    found: list[tuple[Command, dict[str, Any]]] = []
    kills: list[Hazard] = []
    seen: set[tuple[int, str]] = set()
    waits: list[int] = []
    disowns: list[int] = []
    for c in cmds:
        name = os.path.basename(c.argv[0].text or "") if c.argv else ""
        if name == "wait" and not c.remote:
            waits.append(c.seq)
            continue
        if name == "disown":
            disowns.append(c.seq)
            continue
        if _kill_hazard(c):
            kills.append(Hazard(c.line, " ".join(a.show() for a in c.argv)))
            continue
        if name in ("echo", "printf", "cat", "eval"):
            continue
        info = job_from(c, script_dir)
        if info is None:
            continue
        key = (c.line, info["kind"])
        if key in seen:
            continue  # the same job line reached again (a second path through the script)
        seen.add(key)
        found.append((c, info))
    jobs: list[Job] = []
    group = 0
    for order, (c, info) in enumerate(found):
        via = c.via
        protected = info.pop("protected_by", None)
        for w in via:
            base = w.split()[0]
            if base in _PROTECTORS:
                protected = protected or base
                break
        if protected is None and sbatch and not c.remote:
            protected = "sbatch"
        if protected is None and c.background and any(d > c.seq for d in disowns):
            protected = "disown"
        if order and any(found[order - 1][0].seq < w < c.seq for w in waits):
            group += 1
        log = _log_of(c)
        first = max(1, c.line)
        body = " ".join(lines[first - 1:max(first, c.end_line)]).strip() if lines else ""
        jobs.append(Job(file=str(p), line=c.line, end_line=max(c.end_line, c.line), text=body,
                        background=c.background, nohup="nohup" in via, protected_by=protected,
                        log=log.show() if log is not None else None,
                        log_pattern=log.pattern() if log is not None and log.any_known else None,
                        log_parts=tuple((x.text, x.known) for x in log._flat()) if log is not None else (),
                        group=group, order=order, remote=c.remote, cwd=c.cwd, cwd_rel=c.cwd_rel,
                        waited=any(w > c.seq for w in waits), loop_vars=c.loop_vars, loop_runs=c.loop_runs,
                        async_path=c.async_path, own_line=c.own_line if c.own_line != c.line else None,
                        branches=c.branches,
                        **info))
    return Launcher(str(p), text, tuple(jobs), tuple(kills), sbatch)


def same_host(a: Job, b: Job) -> bool:
    return (a.remote or "") == (b.remote or "")


def one_multinode_job(a: Job, b: Job) -> bool:
    """Two node ranks of one multi-node job: same rendezvous endpoint, different node ranks (their shared port is
    how they find each other, not a collision)."""
    if (a.nnodes or 1) < 2 or (b.nnodes or 1) < 2:
        return False
    return a.rendezvous is not None and a.rendezvous == b.rendezvous and a.node_rank != b.node_rank


def concurrent(a: Job, b: Job) -> bool:
    """Two jobs of one launcher that run at the same time on one host: the earlier one runs inside an `&`-started
    list that the later one is not part of (`a &; b` overlap, `(a; b) &` run one after the other, `(a; b) & c`
    overlaps c with both), and no `wait` came between."""
    first, second = (a, b) if a.order < b.order else (b, a)
    common = 0
    while common < min(len(first.async_path), len(second.async_path)) and \
            first.async_path[common] == second.async_path[common]:
        common += 1
    started_apart = len(first.async_path) > common
    exclusive = any(fa == fb and ka != kb for fa, ka in first.branches for fb, kb in second.branches)
    return started_apart and not exclusive and first.group == second.group and same_host(a, b) and \
        not one_multinode_job(a, b)


def looks_like_launcher(path: Path) -> bool:
    return path.suffix == ".sh"


def read_launchers(paths: list[str]) -> list[Launcher]:
    """`oomfix jobs`: each named script, read; a missing or unreadable one is a one-line error."""
    out = []
    for p in paths:
        if not os.path.exists(p):
            raise InputError(f"{p}: no such file")
        if os.path.isdir(p):
            raise InputError(f"{p}: is a directory; name the launcher scripts")
        out.append(parse_launcher(p))  # a FIFO, a device, an oversized or over-budget script: a one-line error
    return out
