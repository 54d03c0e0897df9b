"""Choosing the device once per job: CUDA when present (or asked for), else the CPU.

On one machine with several GPUs, Snakemake's `--resources gpu=N` bounds how many GPU jobs run
at once but does not say which GPU each should use. `claim_gpu` gives each job GPUs of its own
by holding an exclusive lock on each GPU's lock file for the life of the process, and restricts
CUDA_VISIBLE_DEVICES to them before CUDA is initialised. A job that finds every GPU taken (no
`gpu` limit was set, or `--resources` on the command line replaced the profile's) waits for one
to come free, saying so in its log, for at most SEMTAIL_GPU_WAIT_S seconds (default: no limit).

Under SLURM the allocation decides: the job uses the CUDA_VISIBLE_DEVICES that SLURM set, and no
GPU at all when SLURM set none. Its locks live in a folder of that SLURM job's own, so jobs of one
allocation (a local Snakemake run inside `salloc`) still never share a GPU, while separate SLURM
jobs, whose GPU ids are all relative to their own allocation, never see each other's locks.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_DIR_VARIABLE = "SEMTAIL_GPU_LOCK_DIR"
WAIT_VARIABLE = "SEMTAIL_GPU_WAIT_S"
POLL_S = 2.0
WAITING_REPORT_S = 600.0

_claimed: list[str] | None = None  # the GPUs this process holds
_held_locks: list[int] = []  # their lock files' descriptors; open for as long as the process lives


def under_slurm() -> bool:
    return "SLURM_JOB_ID" in os.environ


def visible_gpu_ids() -> list[str]:
    """GPU ids this process may use, read without initialising CUDA: CUDA_VISIBLE_DEVICES when
    it is set, else none under SLURM (the allocation has no GPU), else those nvidia-smi lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = []
        for gpu in (v.strip() for v in visible.split(",")):
            if not gpu or gpu == "-1":
                break  # CUDA stops reading the list at the first invalid entry
            ids.append(gpu)
        return ids
    if under_slurm():
        return []
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip().isdigit()]


def default_lock_dir() -> Path:
    """Shared by every job on this machine; one folder per SLURM job under SLURM."""
    base = Path(os.environ.get(LOCK_DIR_VARIABLE) or Path(tempfile.gettempdir()) / "semtail-gpu-locks")
    return base / f"slurm-job-{os.environ['SLURM_JOB_ID']}" if under_slurm() else base


def _make_shared_dir(path: Path) -> None:
    """Create the lock folder writable by every user, with the sticky bit, as /tmp is."""
    for folder in reversed([path, *path.parents]):
        if folder.is_dir():
            continue
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        folder.chmod(0o1777)


def _try_lock(lock_dir: Path, gpu: str) -> int | None:
    """Lock `gpu`'s file without waiting; its descriptor, or None when another process holds it."""
    path = lock_dir / f"gpu-{re.sub(r'[^A-Za-z0-9_.-]', '_', gpu)}.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        fd = os.open(path, os.O_RDONLY)  # another user's lock file: flock works on a read-only file
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fchmod(fd, 0o666)
    except OSError:
        pass  # the PID is a courtesy for whoever looks; the lock is what matters
    return fd


def _lock_free_gpus(lock_dir: Path, ids: list[str], count: int) -> tuple[list[str], list[int]] | None:
    """Lock `count` of the GPUs `ids`, first free first; None (holding nothing) when fewer are free."""
    claimed, fds = [], []
    for gpu in ids:
        fd = _try_lock(lock_dir, gpu)
        if fd is None:
            continue
        claimed.append(gpu)
        fds.append(fd)
        if len(claimed) == count:
            return claimed, fds
    for fd in fds:
        os.close(fd)  # all or nothing: two jobs each holding part of what they need would wait forever
    return None


def _wait_limit() -> float:
    value = os.environ.get(WAIT_VARIABLE, "inf")
    try:
        seconds = float(value)
    except ValueError:
        raise RuntimeError(f"{WAIT_VARIABLE}={value!r} is not a number of seconds") from None
    if not seconds >= 0:
        raise RuntimeError(f"{WAIT_VARIABLE}={value!r} must be 0 or more seconds")
    return seconds


def claim_gpu(count: int = 1, lock_dir: str | os.PathLike | None = None) -> str | None:
    """Lock `count` free GPUs for this process and make them the only visible ones.

    Returns their ids, comma-separated, or None when no GPU is visible. While fewer than `count`
    are free it waits, up to SEMTAIL_GPU_WAIT_S seconds, then raises. Calling it again in the same
    process returns the same GPUs.
    """
    global _claimed
    if _claimed is not None:
        return ",".join(_claimed)
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise RuntimeError("claim_gpu must run before CUDA is initialised, or CUDA_VISIBLE_DEVICES has no effect")
    from_nvidia_smi = "CUDA_VISIBLE_DEVICES" not in os.environ
    ids = visible_gpu_ids()
    if not ids:
        return None
    if count > len(ids):
        raise RuntimeError(
            f"the job asks for {count} GPUs but only {len(ids)} are visible ({', '.join(ids)}); "
            "lower compute.gpus_per_job"
        )
    lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    _make_shared_dir(lock_dir)
    wait_s = _wait_limit()
    started = time.monotonic()
    next_report = started
    while (locked := _lock_free_gpus(lock_dir, ids, count)) is None:
        waited = time.monotonic() - started
        if waited >= wait_s:
            raise RuntimeError(
                f"the visible GPUs ({', '.join(ids)}) are held by other jobs (lock files in {lock_dir}) and "
                f"this job needs {count}; waited {waited:.0f} s ({WAIT_VARIABLE}={wait_s:g}). Run Snakemake "
                "with --resources gpu=N, N at most the number of GPUs (profiles/default sets it)"
            )
        if time.monotonic() >= next_report:
            log.warning("waiting for %d of the GPUs %s to come free (lock files in %s)", count, ",".join(ids), lock_dir)
            next_report += WAITING_REPORT_S
        time.sleep(min(POLL_S, wait_s - waited))
    claimed, fds = locked
    _held_locks.extend(fds)
    _claimed = claimed
    if from_nvidia_smi:
        os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # nvidia-smi's indices are in PCI bus order
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(claimed)
    log.info("claimed GPU %s (locks in %s)", ",".join(claimed), lock_dir)
    return ",".join(claimed)


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
    claimed = claim_gpu(int(gpus))
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
