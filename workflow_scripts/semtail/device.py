"""Choosing the device once per job: CUDA when present (or asked for), else the CPU.

On one machine with several GPUs, Snakemake's `--resources gpu=N` bounds how many GPU jobs run
at once but does not say which GPU each should use. `claim_gpu` gives each job a GPU of its own
by holding an exclusive lock on that GPU's lock file for the life of the process, and restricts
CUDA_VISIBLE_DEVICES to it before CUDA is initialised. Under SLURM the allocation already sets
CUDA_VISIBLE_DEVICES, and it is used as it is.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

_held_lock = None  # the open lock file; kept referenced so the lock lasts as long as the process


def visible_gpu_ids() -> list[str]:
    """GPU ids this process may use, read without initialising CUDA."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in (v.strip() for v in visible.split(",")) if g and g != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip().isdigit()] if out.returncode == 0 else []


def claim_gpu(lock_dir: str | os.PathLike | None = None) -> str | None:
    """Lock a free GPU for this process and make it the only visible one. Returns its id, or None
    when no GPU is visible. Raises when every visible GPU is held by another job."""
    global _held_lock
    ids = visible_gpu_ids()
    if not ids:
        return None
    if "SLURM_JOB_ID" in os.environ or len(ids) == 1 and lock_dir is None:
        return ids[0] if len(ids) == 1 else ",".join(ids)
    lock_dir = Path(lock_dir or os.environ.get("SEMTAIL_GPU_LOCK_DIR", "/tmp/semtail-gpu-locks"))
    lock_dir.mkdir(parents=True, exist_ok=True)
    for gpu in ids:
        handle = open(lock_dir / f"gpu{gpu}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        handle.write(str(os.getpid()))
        handle.flush()
        _held_lock = handle
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        return gpu
    raise RuntimeError(
        f"all visible GPUs ({', '.join(ids)}) are held by other jobs (locks in {lock_dir}); "
        "run Snakemake with --resources gpu=N, N at most the number of GPUs"
    )


def select_device(requested: str = "auto", gpus: int = 1):
    """The torch device for this job.

    requested: 'auto' (CUDA if a GPU is visible, else CPU), 'cuda' (fail without one) or 'cpu'.
    gpus: the job's Snakemake `gpu` resource; 0 means the CPU whatever `requested` says.
    """
    if requested not in ("auto", "cuda", "cpu"):
        raise ValueError(f"device must be auto, cuda or cpu, got {requested!r}")
    if requested == "cpu" or int(gpus) == 0:
        if requested == "cuda":
            raise RuntimeError("device 'cuda' was asked for, but the job's gpu resource is 0")
        return _torch().device("cpu")
    claimed = claim_gpu()
    torch = _torch()
    if claimed is not None and torch.cuda.is_available():
        device = torch.device("cuda", 0)
        log.info("using GPU %s (%s)", claimed, torch.cuda.get_device_name(device))
        return device
    if requested == "cuda":
        raise RuntimeError("device 'cuda' was asked for, but no CUDA GPU is available")
    log.info("no CUDA GPU available: using the CPU")
    return torch.device("cpu")


def describe(device) -> str:
    """'cpu' or 'cuda:0 (NVIDIA H200)', for model files and metric JSONs."""
    torch = _torch()
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def _torch():
    import torch

    return torch
