"""The results oomfix produces: frozen dataclasses with a stable JSON form."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

CLASSES = (
    "sighup", "sigterm", "cuda_oom", "host_oom", "nccl_timeout", "nccl_error", "port_in_use",
    "shm_bus_error", "segfault", "cuda_error", "nan_loss", "python_exception", "unknown", "none",
)
MEMORY_CLASSES = frozenset({"cuda_oom", "host_oom"})
CONFIDENCES = ("high", "medium", "low")


@dataclass(frozen=True)
class Evidence:
    file: str
    line: int
    text: str


@dataclass(frozen=True)
class RootCause:
    rank: int | None = None
    local_rank: int | None = None
    host: str | None = None
    exitcode: int | None = None
    signal: str | None = None
    exception: str | None = None
    message: str | None = None
    file: str | None = None
    line: int | None = None
    phase: str | None = None
    pid: int | None = None
    raised_at: str | None = None  # "path:line in func" of the innermost frame, for exceptions


@dataclass(frozen=True)
class CascadeEntry:
    rank: int | None
    signal: str | None
    exitcode: int | None
    pid: int | None = None


@dataclass(frozen=True)
class RunParams:
    """What the run really used, as the log shows it (None where the log does not say)."""

    config: str | None = None
    master_port: int | None = None
    world_size: int | None = None
    per_device_train_batch_size: int | None = None
    gradient_accumulation_steps: int | None = None
    global_batch_size: int | None = None
    launch_command: str | None = None
    total_steps: int | None = None

    def canonical_values(self) -> dict[str, int]:
        """The batch settings the run used, in the rules' canonical names (only those the log shows)."""
        out = {}
        if self.per_device_train_batch_size is not None:
            out["micro_batch"] = self.per_device_train_batch_size
        if self.gradient_accumulation_steps is not None:
            out["grad_accum"] = self.gradient_accumulation_steps
        return out


@dataclass(frozen=True)
class MemoryInfo:
    """The numbers of a CUDA OOM message, in GiB."""

    gpu: int | None = None
    requested_gib: float | None = None
    total_gib: float | None = None
    free_gib: float | None = None
    allocated_gib: float | None = None
    reserved_unallocated_gib: float | None = None
    this_process_gib: float | None = None
    other_processes: tuple[tuple[int, float], ...] = ()
    foreign_process: bool | None = None
    fragmentation: bool | None = None


@dataclass(frozen=True)
class Diagnosis:
    cls: str
    confidence: str
    reason: str | None
    root_cause: RootCause
    cascade: tuple[CascadeEntry, ...] = ()
    evidence: tuple[Evidence, ...] = ()
    run: RunParams = field(default_factory=RunParams)
    memory: MemoryInfo | None = None
    advice: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    # class `none` only: the log shows a clean finish (HF's 'train_runtime', "Training completed", ...; patterns.py's
    # FINISHED role), not just the absence of a failure (an empty or cut log). Not in the JSON: the class, confidence
    # ("high" only with a finish) and reason already say it there
    finished: bool = False

    @property
    def is_memory(self) -> bool:
        return self.cls in MEMORY_CLASSES

    def to_json(self) -> dict[str, Any]:
        memory = None
        if self.memory is not None:
            memory = asdict(self.memory)
            memory["other_processes"] = [{"pid": p, "gib": g} for p, g in self.memory.other_processes]
        return {
            "class": self.cls,
            "confidence": self.confidence,
            "reason": self.reason,
            "root_cause": asdict(self.root_cause),
            "cascade": [asdict(c) for c in self.cascade],
            "evidence": [asdict(e) for e in self.evidence],
            "run": asdict(self.run),
            "memory": memory,
            "advice": list(self.advice),
            "files": list(self.files),
            "warnings": list(self.warnings),
        }
