"""A one-node SLURM cluster on loopback, for the tests that submit the workflow through the profile.

`SlurmCluster` installs Debian's SLURM packages when they are missing (we are root in CI), writes a
private configuration into a directory of its own, starts munged, slurmctld and slurmd in the
foreground as child processes, and stops exactly those processes, by PID. Without accounting
(no slurmdbd) `sacct` fails, so the workflow's jobs must be followed with `squeue`; the cluster keeps
finished jobs visible to squeue for `min_job_age` seconds, well above the plugin's status interval.

GPUs are declared with a gres.conf whose File= entries are dummy files, so that GPU requests
(sbatch --gpus=1) are scheduled and CUDA_VISIBLE_DEVICES is set as on a real GPU node.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scontrol", "scancel")
INSTALL_TIMEOUT_S = 600


class SlurmUnavailable(RuntimeError):
    """SLURM cannot be installed here, or this machine cannot host it; the message says why
    (the tests skip with it). A cluster that is installed but fails to start is an error instead."""


class SlurmStartError(RuntimeError):
    """The daemons did not come up; the message holds the tail of their logs."""


def missing_binaries() -> list[str]:
    return [name for name in BINARIES if _which(name) is None]


def _which(name: str) -> str | None:
    # The daemons live in /usr/sbin, which is not on every PATH.
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")


def install() -> None:
    """apt-get install the SLURM and munge packages unless their programs are already present."""
    if not missing_binaries():
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable(f"SLURM is not installed ({', '.join(missing_binaries())} missing) and we are not root")
    if shutil.which("apt-get") is None:
        raise SlurmUnavailable(
            f"SLURM is not installed ({', '.join(missing_binaries())} missing) and there is no apt-get"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES],
    ):
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise SlurmUnavailable(f"`{' '.join(command)}` did not finish within {INSTALL_TIMEOUT_S} s") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            raise SlurmUnavailable(f"`{' '.join(command)}` failed: {' | '.join(tail)}")
    if missing_binaries():
        raise SlurmUnavailable(f"after installing {' '.join(PACKAGES)}, still missing: {', '.join(missing_binaries())}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _total_memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise SlurmUnavailable("cannot read MemTotal from /proc/meminfo")


class SlurmCluster:
    """One node, one partition, `gpus` dummy GPUs. Use as a context manager, or start()/stop()."""

    def __init__(
        self,
        partition: str = "semtail-test",
        cpus: int | None = None,
        gpus: int = 2,
        min_job_age_s: int = 600,
    ):
        self.partition = partition
        self.node = "semtail-node"
        # Twice the real cores: two 2-thread GPU jobs then share the two dummy GPUs at once.
        self.cpus = cpus or 2 * (os.cpu_count() or 1)
        self.gpus = gpus
        self.min_job_age_s = min_job_age_s
        self.memory_mb = _total_memory_mb() - 1024
        self.root: Path | None = None
        self._daemons: dict[str, subprocess.Popen] = {}

    # -- configuration ---------------------------------------------------------------------

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """The environment for SLURM's client commands (and Snakemake) to talk to this cluster."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = f"{self.root / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        return env

    def _write_config(self) -> None:
        munge_dir = self.root / "munge"
        etc = self.root / "etc"
        for folder in (etc, self.root / "state", self.root / "spool", self.root / "log", self.root / "dev"):
            folder.mkdir(parents=True)
        gpu_files = []
        for index in range(self.gpus):
            gpu_files.append(str(self._dummy_gpu_device(index)))
        host = socket.gethostname().split(".")[0]
        gres = f" Gres=gpu:{self.gpus}" if self.gpus else ""
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=semtail",
                    f"SlurmctldHost={host}(127.0.0.1)",
                    f"SlurmctldPort={_free_port()}",
                    f"SlurmdPort={_free_port()}",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={munge_dir / 'socket'}",
                    f"StateSaveLocation={self.root / 'state'}",
                    f"SlurmdSpoolDir={self.root / 'spool'}",
                    f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
                    f"SlurmdPidFile={self.root / 'slurmd.pid'}",
                    f"SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}",
                    f"SlurmdLogFile={self.root / 'log' / 'slurmd.log'}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core_Memory",
                    "GresTypes=gpu",
                    "AccountingStorageType=accounting_storage/none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "JobCompType=jobcomp/none",
                    "MpiDefault=none",
                    "ReturnToService=2",
                    f"MinJobAge={self.min_job_age_s}",
                    # The node's CPUs and memory are taken from this file, not checked against the hardware.
                    "SlurmdParameters=config_overrides",
                    f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} "
                    f"RealMemory={self.memory_mb}{gres} State=UNKNOWN",
                    f"PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )
        gres_lines = ["AutoDetect=off"]
        if self.gpus:
            gres_lines.append(f"NodeName={self.node} Name=gpu File={','.join(gpu_files)}")
        (etc / "gres.conf").write_text("\n".join(gres_lines) + "\n")
        # Inside a job, the executor plugin's job step removes every SLURM_* variable but a few
        # before it calls srun, SLURM_CONF included; srun then looks for /etc/slurm/slurm.conf,
        # which a real cluster has and this one does not write. This srun finds the test's.
        bin_dir = self.root / "bin"
        bin_dir.mkdir()
        srun = bin_dir / "srun"
        srun.write_text(f'#!/bin/sh\nSLURM_CONF="{self.conf}" exec {_which("srun")} "$@"\n')
        srun.chmod(0o755)

    def _dummy_gpu_device(self, index: int) -> Path:
        """A character device standing in for /dev/nvidiaN: slurmd accepts nothing else in File=,
        and only then sets CUDA_VISIBLE_DEVICES for the jobs. It is a second /dev/null."""
        device = self.root / "dev" / f"nvidia{index}"
        null = os.stat("/dev/null")
        try:
            os.mknod(device, stat.S_IFCHR | 0o666, null.st_rdev)
        except OSError as error:
            raise SlurmUnavailable(f"cannot create the dummy GPU device {device}: {error}") from None
        return device

    def _start_munge(self) -> None:
        """munged runs as the munge user, with a key of its own, in a folder only it can write to."""
        munge_dir = self.root / "munge"
        munge_dir.mkdir()
        munge_dir.chmod(0o755)  # clients need to reach the socket
        key = munge_dir / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o600)
        try:
            account = pwd.getpwnam("munge")
        except KeyError:
            raise SlurmUnavailable("the munge package did not create a `munge` user") from None
        for path in (munge_dir, key):
            os.chown(path, account.pw_uid, account.pw_gid)
        self._spawn(
            "munged",
            [
                _which("munged"),
                "--foreground",
                f"--socket={munge_dir / 'socket'}",
                f"--key-file={key}",
                f"--pid-file={munge_dir / 'munged.pid'}",
                f"--log-file={munge_dir / 'munged.log'}",
                f"--seed-file={munge_dir / 'munged.seed'}",
            ],
            user=account.pw_uid,
            group=account.pw_gid,
        )
        self._wait_for(lambda: (munge_dir / "socket").exists(), 20, "munged to open its socket")

    def _spawn(self, name: str, command: list[str], **kwargs) -> None:
        log = open(self.root / "log" / f"{name}.out", "w")  # noqa: SIM115 (the daemon writes it while it runs)
        self._daemons[name] = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True, **kwargs
        )
        log.close()

    def _wait_for(self, condition, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, process in self._daemons.items():
                if process.poll() is not None:
                    raise SlurmStartError(
                        f"{name} exited ({process.returncode}) while waiting for {what}:\n{self.logs()}"
                    )
            if condition():
                return
            time.sleep(0.2)
        raise SlurmStartError(f"timed out after {timeout_s} s waiting for {what}:\n{self.logs()}")

    def logs(self, lines: int = 15) -> str:
        """The tail of each daemon's log, for error messages."""
        parts = []
        for path in sorted((self.root / "log").glob("*")) + sorted((self.root / "munge").glob("*.log")):
            try:
                tail = path.read_text(errors="replace").strip().splitlines()[-lines:]
            except OSError:
                continue
            parts.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    def node_state(self) -> str:
        done = subprocess.run(
            [_which("sinfo"), "--noheader", "--Node", "--format=%T"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=20,
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout_s: float = 60) -> SlurmCluster:
        install()
        # Not under pytest's tmp_path: munged, running as `munge`, must be able to reach its folder.
        self.root = Path(tempfile.mkdtemp(prefix="semtail-slurm-"))
        self.root.chmod(0o755)
        try:
            self._write_config()
            self._start_munge()
            self._spawn("slurmctld", [_which("slurmctld"), "-D", "-f", str(self.conf)])
            self._spawn("slurmd", [_which("slurmd"), "-D", "-N", self.node, "-f", str(self.conf)])
            self._wait_for(lambda: self.node_state() == "idle", timeout_s, f"node {self.node} to be idle")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Cancel what is left, then stop the daemons this object started, by their PIDs."""
        if "slurmctld" in self._daemons and self._daemons["slurmctld"].poll() is None:
            subprocess.run(
                [_which("scancel"), "--full", f"--partition={self.partition}"],
                env=self.env,
                capture_output=True,
                timeout=20,
            )
        for name in ("slurmd", "slurmctld", "munged"):
            process = self._daemons.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)
        if self.root is not None and not os.environ.get("SEMTAIL_KEEP_SLURM_DIR"):
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
