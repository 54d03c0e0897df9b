"""semtail.device.claim_gpu: on one machine every job gets GPUs of its own, never a shared one;
under SLURM the allocation decides. No GPU is needed: the GPUs are CUDA_VISIBLE_DEVICES entries or a
fake nvidia-smi, and the jobs are separate processes that hold their claim until told to exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CLAIMER = textwrap.dedent(
    """
    import json, logging, os, sys
    from semtail.device import claim_gpu
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    try:
        claimed = claim_gpu(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None)
        error = None
    except RuntimeError as exc:
        claimed, error = None, str(exc)
    print(json.dumps({
        "claimed": claimed,
        "error": error,
        "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "order": os.environ.get("CUDA_DEVICE_ORDER"),
        "again": claim_gpu(int(sys.argv[1])) if claimed else None,
    }), flush=True)
    sys.stdin.readline()  # hold the claim until the test closes stdin
    """
)


class Job:
    """A process that claims GPUs and holds them until released."""

    def __init__(self, env: dict, count: int = 1, lock_dir: Path | None = None, log: Path | None = None):
        """With `log`, the job's log goes to that file and the claim is read later (`read_claim`)."""
        args = [sys.executable, "-c", CLAIMER, str(count)] + ([str(lock_dir)] if lock_dir else [])
        stderr = subprocess.PIPE if log is None else open(log, "w")  # noqa: SIM115 (the child writes it while it runs)
        self.process = subprocess.Popen(
            args, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True
        )
        if log is None:
            self.read_claim()

    def read_claim(self) -> None:
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"claimer died: {self.process.stderr.read() if self.process.stderr else ''}")
        self.result = json.loads(line)

    def release(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture
def env(tmp_path):
    """A clean environment: no GPUs, no SLURM, locks in a folder of this test's own."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER") and not k.startswith("SLURM_")
    }
    clean["PYTHONPATH"] = str(REPO / "workflow_scripts")
    clean["SEMTAIL_GPU_LOCK_DIR"] = str(tmp_path / "locks")
    clean["SEMTAIL_GPU_WAIT_S"] = "0"  # fail at once when the GPUs are taken; test_blocked_job_waits waits
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    clean["PATH"] = f"{bin_dir}:/usr/bin:/bin"  # no real nvidia-smi
    return clean


def fake_nvidia_smi(env: dict, n_gpus: int) -> None:
    script = Path(env["PATH"].split(":")[0]) / "nvidia-smi"
    script.write_text("#!/bin/sh\n" + "".join(f"echo {i}\n" for i in range(n_gpus)))
    script.chmod(0o755)


def test_concurrent_jobs_get_distinct_gpus_and_see_only_their_own(env):
    env["CUDA_VISIBLE_DEVICES"] = "0,1,2"
    jobs = [Job(env) for _ in range(3)]
    try:
        claimed = [job.result["claimed"] for job in jobs]
        assert sorted(claimed) == ["0", "1", "2"]
        for job in jobs:
            assert job.result["visible"] == job.result["claimed"]
            assert job.result["again"] == job.result["claimed"]  # idempotent within a process
            assert job.result["order"] is None  # ids came from CUDA_VISIBLE_DEVICES, order untouched
        fourth = Job(env)
        assert fourth.result["claimed"] is None
        assert "held by other jobs" in fourth.result["error"]
        assert "--resources gpu=N" in fourth.result["error"]
        fourth.release()
        # A finished job's GPU is free again, and only that one.
        freed = jobs[1].result["claimed"]
        jobs[1].release()
        fifth = Job(env)
        assert fifth.result["claimed"] == freed
        fifth.release()
    finally:
        for job in jobs:
            if job.process.poll() is None:
                job.release()


def test_blocked_job_waits_for_a_gpu_to_come_free(env, tmp_path):
    """Without a gpu limit Snakemake may start more GPU jobs than there are GPUs: the extra job
    waits for a lock, says so in its log, and takes the GPU the moment its holder ends."""
    env["CUDA_VISIBLE_DEVICES"] = "3"
    holder = Job(env)
    assert holder.result["claimed"] == "3"
    log = tmp_path / "waiter.log"
    waiter = Job({**env, "SEMTAIL_GPU_WAIT_S": "120"}, log=log)
    try:
        lock = Path(env["SEMTAIL_GPU_LOCK_DIR"]) / "gpu-3.lock"
        deadline = time.monotonic() + 60
        while "waiting for 1 of the GPUs 3 to come free" not in log.read_text():
            assert waiter.process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert lock.read_text().strip() == str(holder.process.pid)
        holder.release()
        waiter.read_claim()
        assert waiter.result["claimed"] == "3" and waiter.result["error"] is None
        assert lock.read_text().strip() == str(waiter.process.pid)
    finally:
        for job in (holder, waiter):
            if job.process.poll() is None:
                job.release()


def test_waiting_has_a_limit(env):
    env["CUDA_VISIBLE_DEVICES"] = "4"
    holder = Job(env)
    started = time.monotonic()
    blocked = Job({**env, "SEMTAIL_GPU_WAIT_S": "3"})
    try:
        assert blocked.result["claimed"] is None
        assert "waited 3 s (SEMTAIL_GPU_WAIT_S=3)" in blocked.result["error"]
        assert time.monotonic() - started >= 3
    finally:
        blocked.release()
        holder.release()


def test_killed_job_releases_its_gpu(env):
    env["CUDA_VISIBLE_DEVICES"] = "5"
    first = Job(env)
    assert first.result["claimed"] == "5"
    blocked = Job(env)
    assert blocked.result["claimed"] is None
    blocked.release()
    first.process.kill()
    first.process.wait(timeout=30)
    second = Job(env)
    assert second.result["claimed"] == "5"
    second.release()


def test_gpus_from_nvidia_smi_are_pinned_in_pci_order(env):
    fake_nvidia_smi(env, 2)
    first, second = Job(env), Job(env)
    try:
        assert {first.result["claimed"], second.result["claimed"]} == {"0", "1"}
        for job in (first, second):
            assert job.result["visible"] == job.result["claimed"]
            assert job.result["order"] == "PCI_BUS_ID"
    finally:
        first.release()
        second.release()


def test_multi_gpu_claim_takes_that_many_or_none(env):
    env["CUDA_VISIBLE_DEVICES"] = "0,1,2"
    pair = Job(env, count=2)
    assert pair.result["claimed"] == "0,1" and pair.result["visible"] == "0,1"
    other_pair = Job(env, count=2)
    assert other_pair.result["claimed"] is None and "needs 2" in other_pair.result["error"]
    other_pair.release()
    single = Job(env, count=1)
    assert single.result["claimed"] == "2"  # the failed pair claim left GPU 2 unlocked
    single.release()
    pair.release()
    too_many = Job(env, count=4)
    assert "asks for 4 GPUs but only 3" in too_many.result["error"]
    too_many.release()


def test_no_gpu_means_no_claim(env):
    job = Job(env)
    assert job.result == {"claimed": None, "error": None, "visible": None, "order": None, "again": None}
    job.release()


def test_slurm_allocation_is_trusted_per_job(env):
    """Separate SLURM jobs on one node each see their GPU as "0": both may use it. A SLURM job
    without a GPU gets none even where nvidia-smi lists some."""
    fake_nvidia_smi(env, 4)
    job_a = Job({**env, "SLURM_JOB_ID": "101", "CUDA_VISIBLE_DEVICES": "0"})
    job_b = Job({**env, "SLURM_JOB_ID": "102", "CUDA_VISIBLE_DEVICES": "0"})
    no_gpu = Job({**env, "SLURM_JOB_ID": "103"})
    try:
        assert job_a.result["claimed"] == "0" and job_b.result["claimed"] == "0"
        assert no_gpu.result["claimed"] is None and no_gpu.result["visible"] is None
    finally:
        for job in (job_a, job_b, no_gpu):
            job.release()


def test_jobs_inside_one_slurm_allocation_do_not_share(env):
    """A local Snakemake run inside `salloc --gpus=2`: its jobs share SLURM_JOB_ID and must split the GPUs."""
    allocation = {**env, "SLURM_JOB_ID": "200", "CUDA_VISIBLE_DEVICES": "0,1"}
    first, second, third = Job(allocation), Job(allocation), Job(allocation)
    try:
        assert {first.result["claimed"], second.result["claimed"]} == {"0", "1"}
        assert third.result["claimed"] is None
    finally:
        for job in (first, second, third):
            job.release()
    locks = Path(env["SEMTAIL_GPU_LOCK_DIR"]) / "slurm-job-200"
    assert sorted(p.name for p in locks.iterdir()) == ["gpu-0.lock", "gpu-1.lock"]


def test_lock_folder_is_shared_between_users(env, tmp_path):
    env["CUDA_VISIBLE_DEVICES"] = "0"
    Job(env).release()
    locks = Path(env["SEMTAIL_GPU_LOCK_DIR"])
    assert locks.stat().st_mode & 0o7777 == 0o1777
    assert (locks / "gpu-0.lock").stat().st_mode & 0o777 == 0o666


def test_select_device_falls_back_to_cpu_without_cuda(env, monkeypatch):
    """With a GPU "visible" but no CUDA (as in the test cluster's dummy GPUs), auto means the CPU."""
    import semtail.device as device

    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a real GPU is present")
    monkeypatch.setattr(device, "_claimed", None)
    monkeypatch.setattr(device, "_held_locks", [])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("SEMTAIL_GPU_LOCK_DIR", env["SEMTAIL_GPU_LOCK_DIR"])
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    try:
        assert device.select_device("auto", 1).type == "cpu"
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            device.select_device("cuda", 1)
        assert device.select_device("auto", 0).type == "cpu"
    finally:
        for fd in device._held_locks:
            os.close(fd)
