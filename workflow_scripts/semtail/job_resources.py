"""What each job asks the scheduler for, kept out of the Snakefiles so it can be tested without
Snakemake: its threads, host memory (mem_mb) and runtime from the dataset's size (resources, one
function per stage), its GPUs, and what a run writes in model files.

Sizes: n items, nnz interactions, b users per batch. One dense item x item float32 matrix is
D = 4 n^2 bytes: 6.8 GB for MSD's 41,140 items, 1.6 GB for ML-20M's 20,108. SGD training on
the CPU holds U and its momentum (the best epoch's U is kept in a file beside the checkpoint),
and of U's gradient a block of rows of at most 128 MiB (semtail.training.GRADIENT_BLOCK_BYTES):
2 D + 128 MiB; on a GPU the gradient is in the GPU's memory and the host holds the best copy
and, while a checkpoint is written, one more: 3 D + 128 MiB.
A batch's dense predictions and gradient are b x n float32 each.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from semtail import registry
from semtail.checkpoint_cadence import CHECKPOINT_CADENCE
from semtail.plan import (
    ConfigError,
    dataset_config,
    method_of,
    model_files_are_temporary,
    resolve_hyperparameters,
    run_seeds,
    split_files,
    weighted_runs,
)

# What the resource model assumes of the hardware. Conservative on purpose: a job that asks for too
# little is killed, one that asks for a little too much only waits a little longer in the queue.
GPU_BYTES_PER_S = 300e9  # effective memory bandwidth of an older datacenter GPU on sparse x dense products
# The same on a CPU: half of the 21–26 GB/s that SGD epochs at ML-20M's shape reached on 2 idle
# cores (94–116 s an epoch; 2026-12-07 rehearsal, docs/running.md), for slower or busier machines.
CPU_BYTES_PER_S = 12e9
DISK_BYTES_PER_S = 200e6  # writing checkpoints and model files to a shared file system
CPU_FLOPS_FLOAT64 = 20e9  # dense float64 solves (closed-form EASE) on the CPU
EVALUATION_ENTRY_BYTES = 16  # per (user, item) entry of an evaluation batch: fold-in, held-out, scores, masked scores
SORT_RATE = 1e8  # comparisons per second of a sort of score rows on the CPU (about 50 times more on a GPU)
SYNTHETIC_SECONDS_PER_POSITIVE = 1.2e-5  # ML-20M's 10M: 35 s on the idle 2-core machine, 1,177 s under a load of 20-30
SYNTHETIC_BYTES_PER_POSITIVE = 100  # generating a synthetic source: a 694 MiB peak for ML-20M's 10M positives
RUNTIME_SAFETY = 2.0  # estimates are multiplied by this before the job's own start-up minutes
MIB = 2**20
INTERPRETER_BYTES = 2.0 * 2**30  # the interpreter, torch, numpy and scipy
LARGE_CATALOG = 10_000  # items from which a job gets more CPU threads (ML-20M: 20,108; ML-100K: 1,682)
# Items below which a job gets one thread: on such data each operation is too small to gain from a
# second (a demo training job takes as long on one as on two), so two jobs share two cores instead.
SMALL_CATALOG = 5_000


def threads_for(n_items: int, large: int) -> int:
    """A job's CPU threads from the catalog size: 1 below SMALL_CATALOG, `large` from LARGE_CATALOG, else 2."""
    if n_items < SMALL_CATALOG:
        return 1
    return large if n_items >= LARGE_CATALOG else 2


def _batches(rows: int, batch: int) -> int:
    return max(1, -(-rows // max(1, batch)))


def minutes(seconds: float, startup: float = 10) -> float:
    """A job's runtime: its start-up minutes and RUNTIME_SAFETY times the estimate."""
    return startup + RUNTIME_SAFETY * seconds / 60


@dataclass(frozen=True)
class Job:
    """One job to size: its dataset's sizes (dataset_size), and what it trains or scores."""

    config: dict
    dataset: str
    method: str | None  # a name in `methods:` (train, and evaluate where given)
    hyperparameters: dict | None  # what a train job trains with; None: the config's
    on_gpu: bool
    items: int
    interactions: int
    users: int
    heldout: int  # validation users, and as many test users

    @property
    def train_users(self) -> int:
        return max(1, self.users - 2 * self.heldout)

    @property
    def per_user(self) -> float:
        return self.interactions / self.users

    @property
    def dense(self) -> float:
        return 4.0 * self.items * self.items

    @property
    def sparse(self) -> float:
        return 12.0 * self.interactions  # CSR: float32 value + int64 column per entry

    @property
    def bandwidth(self) -> float:
        return GPU_BYTES_PER_S if self.on_gpu else CPU_BYTES_PER_S


class Request(NamedTuple):
    threads: int
    memory: float  # bytes
    runtime: float  # minutes


def download(job: Job) -> Request:
    # A synthetic source's positives, as the int64 arrays that generating and ordering them hold.
    generated = max(
        (
            int(source["synthetic"]["interactions"])
            for source in dataset_config(job.config, job.dataset)["sources"]
            if "synthetic" in source
        ),
        default=0,
    )
    runtime = minutes(SYNTHETIC_SECONDS_PER_POSITIVE * generated) if generated else 240
    return Request(1, 1.0 * 2**30 + SYNTHETIC_BYTES_PER_POSITIVE * generated, runtime)


def preprocess(job: Job) -> Request:
    # The raw ratings, about twice the filtered ones, as pandas frames and the copies that
    # filtering, grouping and splitting make: about 100 bytes a raw row at the peak.
    raw_rows = 2 * job.interactions
    memory = INTERPRETER_BYTES + 100.0 * raw_rows
    return Request(threads_for(job.items, large=4), memory, minutes(raw_rows / 1e6 * 1.0))


def sgd_loop(job: Job, hyperparameters: dict) -> tuple[float, float]:
    """The SGD loop's own bytes and seconds (semtail.training), for an `sgd` method."""
    n, dense = job.items, job.dense
    batch = int(hyperparameters["batch_size"])
    epochs = int(hyperparameters["epochs"])
    batch_dense = 4.0 * batch * n
    memory = (3 if job.on_gpu else 2) * dense + min(dense, 2.0**27) + 4 * batch_dense + 3 * job.sparse
    # Per step: X_b U and X_b^T G read a row of U (or G) per entry of the batch; the
    # optimiser reads and writes U, its gradient and momentum.
    step_bytes = 2 * batch * job.per_user * n * 4 + 6 * dense
    validation_bytes = _batches(job.heldout, batch) * (batch * job.per_user * n * 4 + 3 * batch_dense)
    epoch_s = (_batches(job.train_users, batch) * step_bytes + validation_bytes) / job.bandwidth
    # The checkpoint (U and its momentum) at most every `checkpoints.every_epochs` epochs
    # (fewer under min_seconds); the best epoch's U when the best epoch is left behind, at
    # most every other checkpoint (on the CPU at most every epoch).
    every = int((job.config.get("checkpoints") or {}).get("every_epochs", CHECKPOINT_CADENCE["every_epochs"]))
    epoch_s += (2 / every + (0.5 / every if job.on_gpu else 1)) * dense / DISK_BYTES_PER_S
    return memory, epochs * epoch_s + dense / DISK_BYTES_PER_S


def train(job: Job) -> Request:
    """A train job (and a search candidate's), by the method's declaration and the loop's own."""
    if job.hyperparameters is None:
        hyperparameters = resolve_hyperparameters(job.config, job.dataset, job.method)
    else:
        hyperparameters = job.hyperparameters
    declared = registry.declaration(method_of(job.config, job.method))
    memory, seconds = INTERPRETER_BYTES, 0.0
    if declared.training == "sgd":
        loop_memory, seconds = sgd_loop(job, hyperparameters)
        memory += loop_memory
    # What the method declares on top: item x item matrices, copies of X, bytes per training
    # user; passes of a matrix through the disk or of X through memory, and n^3 float64 flops
    # (a solve, about 50 times faster on a GPU).
    held = declared.resources["memory"]
    memory += held.get("dense", 0) * job.dense + held.get("sparse", 0) * job.sparse
    memory += held.get("bytes_per_training_user", 0) * job.train_users
    work = declared.resources["runtime"]
    seconds += work.get("cubic_flops", 0) * job.items**3 / (CPU_FLOPS_FLOAT64 * (50 if job.on_gpu else 1))
    seconds += work.get("dense_file_passes", 0) * job.dense / DISK_BYTES_PER_S
    seconds += work.get("sparse_passes", 0) * job.sparse / job.bandwidth
    return Request(threads_for(job.items, large=8), memory, minutes(seconds))


def evaluate(job: Job) -> Request:
    # What the method's scoring holds (its declaration's `evaluation` terms; by default an
    # item x item matrix read from the model file, and a second while it loads): its matrices,
    # and bytes per (user, item) entry of a batch of test users on top of the evaluation's own
    # dense rows, scores, masked scores and lists (EVALUATION_ENTRY_BYTES). Rerank's two sorts
    # of a batch add 32 bytes an entry (benchmarks/evaluate_memory.py).
    n = job.items
    batch = int(job.config["evaluation"].get("batch_size", 1024))
    batch_dense = 4.0 * batch * n
    scoring = registry.declaration(method_of(job.config, job.method)).resources["evaluation"] if job.method else {}
    entry_bytes = EVALUATION_ENTRY_BYTES + scoring.get("batch_entry_bytes", 0)
    memory = INTERPRETER_BYTES + scoring.get("dense", 2) * job.dense + entry_bytes * batch * n + 2 * job.sparse
    score_bytes = 2 * _batches(job.heldout, batch) * (batch * job.per_user * n * 4 + 3 * batch_dense)
    sort_rate = SORT_RATE * (50 if job.on_gpu else 1)
    sorts = scoring.get("batch_sorts", 0) * job.heldout * n * math.log2(max(2, n)) / sort_rate
    runtime = minutes(score_bytes / job.bandwidth + sorts + job.dense / DISK_BYTES_PER_S)
    return Request(threads_for(n, large=8), memory, runtime)


def adversary(job: Job) -> Request:
    runs = len(weighted_runs(job.config)) * len(job.config["seeds"])
    # Metric JSONs: per-epoch numbers of each POSIT run, no item x item matrix.
    memory = INTERPRETER_BYTES + 8.0 * job.items * runs
    return Request(1, memory, minutes(0))


def weight_landscape(job: Job) -> Request:
    seeds = len(job.config["seeds"])
    # Each POSIT run's item weights (from its items.npz), the SVD of X's columns.
    memory = INTERPRETER_BYTES + 8.0 * job.items * seeds + 4 * job.sparse
    return Request(threads_for(job.items, large=4), memory, minutes(100 * job.sparse / CPU_BYTES_PER_S))


def report(job: Job) -> Request:
    """The aggregate and plot jobs: every run's lists and item counts of the dataset."""
    runs = len(job.config["methods"]) * len(job.config["seeds"])
    topk = runs * job.heldout * 100 * 8 * 2  # masked and unmasked top-100 of every run
    memory = 1.0 * 2**30 + 2 * topk + 4 * job.items * runs * 8
    return Request(1, memory, minutes(topk / DISK_BYTES_PER_S))


STAGES = {
    "download": download,
    "preprocess": preprocess,
    "train": train,
    "evaluate": evaluate,
    "weight_landscape": weight_landscape,
    "adversary": adversary,
    "report": report,
}


def resources(
    config: dict,
    stage: str,
    dataset: str,
    attempt: int = 1,
    method: str | None = None,
    stats_file: str | os.PathLike | None = None,
    hyperparameters: dict | None = None,
    on_gpu: bool | None = None,
) -> dict:
    """threads, mem_mb (host memory, MiB) and runtime (minutes) of one job, from the dataset's size.

    stage: one of STAGES: download, preprocess, train (with `method`, a name in `methods:`),
    evaluate, weight_landscape, adversary or report (aggregate and plot). A retry (attempt 2, 3,
    ...) asks for that many times the memory and time.
    hyperparameters: what a training job trains with (a search's choice, or a candidate's); by
    default the method's as the config resolves them.
    on_gpu: whether the job will run on a GPU (runs_on_gpu); by default, whether the config gives it one.
    """
    size = dataset_size(config, dataset, stats_file)
    heldout = int(dataset_config(config, dataset).get("preprocess", {}).get("n_heldout", 0))
    if stage == "train" and method is None:
        raise ValueError("resources for the train stage need the method")
    if on_gpu is None:
        on_gpu = job_gpus(config, stage, method) > 0
    if stage not in STAGES:
        raise ValueError(f"no resource model for stage {stage!r}")
    job = Job(
        config,
        dataset,
        method,
        hyperparameters,
        on_gpu,
        size["items"],
        size["interactions"],
        max(1, size["users"]),
        heldout,
    )
    threads, memory, runtime = STAGES[stage](job)
    attempt = max(1, int(attempt))
    return {
        "threads": threads,
        "mem_mb": int(-(-memory * attempt // MIB)),
        "runtime": int(-(-runtime * attempt // 1)),
    }


def gpus_per_job(config: dict) -> int:
    return 0 if config["compute"]["device"] == "cpu" else int(config["compute"]["gpus_per_job"])


def training_gpus(config: dict, name: str) -> int:
    """The `gpu` resource of a method's train job: none where its declaration says it needs none
    (training that only counts or copies; the scoring of every method still uses the GPU)."""
    return gpus_per_job(config) if registry.declaration(method_of(config, name)).gpu else 0


def dataset_size(config: dict, dataset: str, stats_file: str | os.PathLike | None = None) -> dict:
    """Users, items and interactions of a dataset after preprocessing: measured (its stats.json)
    once preprocessing ran, else the config's `expected` sizes, else a demo-sized guess.

    stats_file: where the job's stats.json is (rules pass the one among their inputs); by default
    the config's split's (split_files) under the working directory.
    """
    stats_file = Path(stats_file if stats_file is not None else split_files(config, dataset, ("stats",))["stats"])
    if stats_file.is_file():
        try:
            stats = json.loads(stats_file.read_text())
            return {k: int(stats[k]) for k in ("users", "items", "interactions")}
        except (ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"{stats_file}: needs integer users, items and interactions ({error})") from None
    expected = dataset_config(config, dataset).get("expected", {})
    users = int(expected.get("users", 10_000))
    items = int(expected.get("items", 5_000))
    interactions = int(expected.get("interactions", users * 100))
    return {"users": users, "items": items, "interactions": interactions}


def model_file_bytes(config: dict, dataset: str, name: str, stats_file: str | os.PathLike | None = None) -> int:
    """About how many bytes one model file of a name holds on a dataset (dataset_size): the float32
    tensors of its declared state, but the base matrix that a method on a base refers to instead of
    storing, and its item weights. The history and the rest add a few kilobytes, left out."""
    n = dataset_size(config, dataset, stats_file)["items"]
    declared = registry.declaration(method_of(config, name))
    stored = [
        shape for key, shape in declared.state.items() if not (declared.training == "on_base" and key == registry.BASE)
    ]
    return 4 * (sum(n ** len(shape) for shape in stored) + (n if declared.item_weights else 0))


def model_file_estimate(config: dict) -> list[dict]:
    """What a run of the config writes in model files, from the datasets' sizes: per (dataset, name)
    its number of runs, the bytes of one model file, of all of them, and of those kept once the run
    ends (none under `model_files: temporary`)."""
    rows = []
    kept = not model_files_are_temporary(config)
    for dataset in config["datasets"]:
        for name in config["methods"]:
            runs, each = len(run_seeds(config, dataset, name)), model_file_bytes(config, dataset, name)
            rows.append(
                {
                    "dataset": dataset,
                    "name": name,
                    "runs": runs,
                    "bytes_each": each,
                    "bytes": runs * each,
                    "kept_bytes": runs * each if kept else 0,
                }
            )
    return rows


def job_gpus(config: dict, stage: str, method: str | None = None) -> int:
    """The `gpu` resource a stage's jobs get from the config: training's and evaluation's, else 0."""
    if stage == "train":
        return training_gpus(config, method)
    return gpus_per_job(config) if stage == "evaluate" else 0


def runs_on_gpu(gpus: int, cluster: bool, gpu_limit: int | None, visible_gpus: int) -> bool:
    """Whether a job will use a GPU (semtail/device.py:select_device), for the runtime it declares:
    only with a `gpu` resource above 0 (after --set-resources), on a cluster node that was given it,
    or on this machine when the run's `gpu` limit (profiles/default counts the GPUs) is above 0,
    or without a limit, when a GPU is visible."""
    if gpus <= 0:
        return False
    if cluster:
        return True
    return gpu_limit > 0 if gpu_limit is not None else visible_gpus > 0
