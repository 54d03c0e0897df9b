"""One candidate of a hyperparameter search: train it on the training users, exactly as a train
job would (semtail.train_job.train_model), and score the validation users' fold-in rows with the
test evaluation's code (semtail.evaluate.evaluate). No model file is written."""

from __future__ import annotations

import logging

from semtail.evaluate import Split, check_ks, evaluate_as_configured, load_split
from semtail.modelfile import scorer
from semtail.models.base import TrainingRun
from semtail.train_job import train_model

FORMAT_VERSION = 1


def validation_split(inputs: dict) -> Split:
    """The training matrix and the validation users' fold-in and held-out rows, read and checked
    as an evaluation of the test users reads theirs."""
    return load_split(inputs["train"], inputs["validation_tr"], inputs["validation_te"])


def train_and_validate(
    *, candidate: str, settings: dict, evaluation: dict, log: logging.Logger | None = None, **training
) -> tuple[dict, TrainingRun]:
    """validation.json's record (the candidate, its full hyperparameters and its validation
    metrics: every metric of docs/metrics.md, on the validation users), and the training's TrainingRun,
    whose checkpoint the caller removes once the record is written.

    training: the keyword arguments of semtail.train_job.train_model (dataset, method, variant,
    seed, hyperparameters, inputs, ...). The record's `method` is the name in `methods:` (the
    variant, else the method). The evaluation's ks are checked against the catalog before training."""
    dataset, method, seed, inputs, device = (training[k] for k in ("dataset", "method", "seed", "inputs", "device"))
    split = validation_split(inputs)
    check_ks(evaluation["ks"], split.n_items, dataset)
    model, run = train_model(log=log or logging.getLogger("semtail.search"), **training)
    result = evaluate_as_configured(scorer(model, device), split, evaluation, device)
    record = {
        "format_version": FORMAT_VERSION,
        "dataset": dataset,
        "method": model["variant"],
        "trains": method,
        "candidate": candidate,
        "settings": settings,
        "hyperparameters": model["hyperparameters"],
        "seed": int(seed),
        "split": "validation",
        "n_validation_users": result.n_test_users,
        "n_excluded_users": result.n_excluded_users,
        "metrics": result.metrics,
        "best_epoch": model["best_epoch"],
        "train_seconds": round(model["train_seconds"], 3),
        "code_version": training["code_version"],
        "environment": model["environment"],
    }
    return record, run
