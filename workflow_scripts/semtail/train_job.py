"""One training job: read the split (and a base run's model file), complete and check the
hyperparameters against the method's declaration, fit, and write the model file."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from semtail import registry
from semtail.checkpoint_cadence import check_checkpoint_cadence
from semtail.device import describe, select_device
from semtail.files import partial_files
from semtail.modelfile import FORMAT_VERSION, base_reference, load_model, model_file, save_model
from semtail.models.base import (
    TrainingData,
    TrainingRun,
    TrainingTerminated,
    forget_termination,
    read_interactions,
    terminate,
)
from semtail.provenance import TRAIN_SCRIPT, code_version, environment
from semtail.script_io import ScriptRun, plain


def fingerprint(
    *, dataset: str, method: str, variant: str, seed: int, hyperparameters: dict, code_version: str, inputs: dict
) -> str:
    """What a checkpoint must match to be resumed: the job's identity, its hyperparameters and
    code, and the size and modification time of every input file."""
    files = {}
    for name, path in sorted(inputs.items()):
        stat = Path(path).stat()
        files[name] = [str(path), stat.st_size, stat.st_mtime_ns]
    identity = {
        "format_version": FORMAT_VERSION,
        "dataset": dataset,
        "method": method,
        "variant": variant,
        "seed": None if seed is None else int(seed),
        "hyperparameters": hyperparameters,
        "code_version": code_version,
        "inputs": files,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def job_arguments(run: ScriptRun, script: str = TRAIN_SCRIPT) -> dict:
    """`train_model`'s keyword arguments (but `log` and `progress`) from the run of a script that
    trains (train.py; tune_candidate.py, `script`, whose code version differs), once torch has
    the job's threads: its params (dataset, method, seed (None: a seed-independent run), hyperparameters, and optionally variant,
    device, checkpoint and code_version), its inputs, its `gpu` resource, and the checkpoint
    cadence of the workflow config's `checkpoints` block."""
    torch.set_num_threads(max(1, int(run.threads)))  # Snakemake's threads; more only contend on small data
    params = run.params
    method = str(params.method)
    device = select_device(str(params.get("device", "auto")), int(run.resources.get("gpu", 1)))
    variant, checkpoint = params.get("variant"), params.get("checkpoint")
    return {
        "dataset": str(params.dataset),
        "method": method,
        "variant": str(variant) if variant else None,
        "seed": None if params.seed is None else int(params.seed),
        "hyperparameters": plain(params.hyperparameters),
        # stats.json is read by the planner for resources; the matrices carry the sizes
        "inputs": {name: str(run.input[name]) for name in run.input.keys() if name != "stats"},  # noqa: SIM118 (a list of files: `in` tests values)
        "device": device,
        "environment": {**environment(), "device": describe(device)},
        "code_version": str(params.get("code_version") or code_version(method, script)),
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "checkpoint_cadence": plain(run.config.get("checkpoints") or {}),
    }


def read_training_data(inputs: dict) -> TrainingData:
    """The split (and, for a method trained on a base run, that run's model) from the train rule's
    input files."""
    train = read_interactions(inputs["train"])
    data = TrainingData(
        train=train,
        validation_tr=read_interactions(inputs["validation_tr"], n_items=train.shape[1]),
        validation_te=read_interactions(inputs["validation_te"], n_items=train.shape[1]),
    )
    if data.validation_tr.shape[0] != data.validation_te.shape[0]:
        raise ValueError(
            f"{inputs['validation_tr']} has {data.validation_tr.shape[0]} users, "
            f"{inputs['validation_te']} has {data.validation_te.shape[0]}"
        )
    if inputs.get("base_model"):
        data.base_model = load_model(inputs["base_model"])
    return data


def train_and_save(*, output: str | Path, log: logging.Logger | None = None, **training) -> dict:
    """Train one (dataset, method, seed) job and write its model file to `output`; returns the
    model dict. `training`: the keyword arguments of `train_model`.

    The checkpoint of an SGD method is removed once the model file is written; a failure leaves
    no model file (and the last checkpoint, for a rerun to resume from)."""
    log = log or logging.getLogger("semtail.train")
    output = Path(output)
    for path in partial_files(output.parent, output.stem):
        log.info("removing %s, left half-written by a killed job", path)
        path.unlink(missing_ok=True)
    model, run = train_model(log=log, **training)
    save_model(output, model)
    run.remove_checkpoint()
    log.info("wrote %s (best epoch %s) after %.1f s", output, model["best_epoch"], model["train_seconds"])
    return model


@contextmanager
def ending_on_signal(log: logging.Logger, exit_at_once: bool = True) -> Iterator[None]:
    """A training script's body, ended by SIGTERM (a cluster's time limit, or `kill`) as by an
    error: TrainingTerminated is raised where the job is, the files it was writing are removed,
    the log's last line says where it stopped and how to resume, and the process exits with
    128 + the signal's number, as one killed by it would. It exits at once, the logs flushed,
    without the interpreter's teardown (seconds with torch loaded on a busy machine): the grace
    before SIGKILL is short, and Snakemake, stopped by the same signal, waits for its jobs before
    it releases its lock. `exit_at_once` False raises SystemExit instead (tests)."""

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    except TrainingTerminated as stop:
        log.error("%s", stop)
        if exit_at_once:
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(128 + stop.signal_number)
        raise SystemExit(128 + stop.signal_number) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        forget_termination()


def train_model(
    *,
    dataset: str,
    method: str,
    seed: int | None,
    hyperparameters: dict,
    inputs: dict,
    device: torch.device,
    environment: dict,
    code_version: str,
    variant: str | None = None,
    checkpoint: str | Path | None = None,
    log: logging.Logger | None = None,
    progress: bool = False,
    after_epoch: Callable[[int, torch.Tensor], None] | None = None,
    checkpoint_cadence: dict | None = None,
) -> tuple[dict, TrainingRun]:
    """Train one (dataset, method, seed) job in memory: the model file's dict, not yet written,
    and the TrainingRun (whose `remove_checkpoint` the caller calls once the result is safely written).

    `environment` is recorded in the model file: software versions and, under "device", the
    device in words (semtail.provenance.environment() and semtail.device.describe()).

    `variant` is the run's name in the config's `methods:` when it is a variant of `method`.
    `seed` is None for the one run of a seed-independent method (semtail.plan.seed_independent).

    `hyperparameters` may leave out what the method declares a default for; the model file records
    them all. A missing, unknown or wrongly typed one is an error naming it.

    The checkpoint of an SGD method is written on `checkpoint_cadence` (the config's `checkpoints`
    block)."""
    log = log or logging.getLogger("semtail.train")
    cadence = check_checkpoint_cadence(checkpoint_cadence or {})
    declared = registry.declaration(method)
    job = job_identity(declared, dataset, variant or method, seed, hyperparameters, code_version)
    data = read_training_data(inputs)
    run = TrainingRun(
        **{key: job[key] for key in ("dataset", "method", "variant", "seed")},
        device=device,
        checkpoint=None if checkpoint is None else Path(checkpoint),
        fingerprint=fingerprint(**job, inputs=inputs),
        log=log,
        progress=progress,
        after_epoch=after_epoch,
        checkpoint_every_epochs=cadence["every_epochs"],
        checkpoint_min_seconds=cadence["min_seconds"],
    )
    log.info(
        "training %s on %d users x %d items (%d interactions), %d validation users, on %s",
        run.describe(),
        data.n_train_users,
        data.n_items,
        data.train.nnz,
        data.validation_tr.shape[0],
        environment.get("device", device),
    )
    started = time.perf_counter()
    fitted = declared.module().fit(data, job["hyperparameters"], run)
    model = model_file(
        **job,
        data=data,
        fitted=fitted,
        environment=environment,
        train_seconds=time.perf_counter() - started,
        base=base_reference(inputs["base_model"], data.base_model) if data.base_model is not None else None,
    )
    return model, run


def job_identity(
    declared: registry.Method, dataset: str, variant: str, seed: int | None, hyperparameters: dict, code_version: str
) -> dict:
    """What a job is, as its checkpoint's fingerprint and its model file record it: dataset,
    method, variant, seed, its hyperparameters completed and checked, and code_version."""
    completed = declared.complete(hyperparameters, f"hyperparameters.{variant}")
    if seed is None and declared.seed_dependent:
        raise ValueError(f"{dataset}/{variant}: {declared.name} depends on the seed; its training needs one")
    return {
        "dataset": dataset,
        "method": declared.name,
        "variant": variant,
        "seed": None if seed is None else int(seed),
        "hyperparameters": completed,
        "code_version": code_version,
    }
