"""One candidate of a hyperparameter search: train it on the training users, exactly as a train
job would (semtail.train_job.train_model), and score the validation users' fold-in rows with the
test evaluation's code (semtail.evaluate.evaluate). No model file is written."""

from __future__ import annotations

import logging

import torch

from semtail.evaluate import Split, evaluate_as_configured
from semtail.modelfile import scorer
from semtail.models.base import Run, read_interactions
from semtail.train_job import train_model

FORMAT_VERSION = 1


def validation_split(inputs: dict) -> Split:
    """The training matrix and the validation users' fold-in and held-out rows, as an evaluation
    of the test users reads theirs."""
    return Split(
        train=read_interactions(inputs["train"]),
        fold_in=read_interactions(inputs["validation_tr"]),
        heldout=read_interactions(inputs["validation_te"]),
    )


def train_and_validate(
    *, name: str, candidate: str, settings: dict, evaluation: dict, log: logging.Logger | None = None, **training
) -> tuple[dict, Run]:
    """validation.json's record (the candidate, its full hyperparameters and its validation
    metrics: every metric of docs/metrics.md, on the validation users), and the training's Run,
    whose checkpoint the caller removes once the record is written.

    name: the name in `methods:` (a method or a variant); training: the keyword arguments of
    semtail.train_job.train_model (dataset, method, seed, hyperparameters, inputs, ...)."""
    model, run = train_model(variant=name, log=log or logging.getLogger("semtail.tuning"), **training)
    dataset, method, seed, inputs, device = (training[k] for k in ("dataset", "method", "seed", "inputs", "device"))
    code_version = training["code_version"]
    result = evaluate_as_configured(scorer(model, device), validation_split(inputs), evaluation, device)
    record = {
        "format_version": FORMAT_VERSION,
        "dataset": dataset,
        "method": name,
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
        "code_version": code_version,
        "environment": model["environment"],
    }
    return record, run
