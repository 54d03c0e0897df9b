"""The SGD loop: validation NDCG, early stopping that restores the best epoch, resuming from a
checkpoint bit for bit, the NaN guard, determinism."""

import logging
import math
import os
import re
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from method_settings import completed, sgd_methods
from semtail import registry, training
from semtail.checkpoint_cadence import check_checkpoint_cadence
from semtail.models.base import TrainingRun, TrainingTerminated
from semtail.models.synthetic import training_data
from semtail.registry import method_module
from semtail.train_job import ending_on_signal, fingerprint, train_and_save
from semtail.training import DeviceRows, TrainingDiverged, validation_ndcg
from synthetic_data import save_training_split

DATA = training_data(150, 30, 6, 40, seed=0)
HYPERPARAMETERS = sgd_methods(batch_size=32, epochs=4)
SGD = HYPERPARAMETERS["ease"]  # the training loop's alone: lr 0.002, wd 1e-4, 4 epochs


def fit(method, seed=0, data=DATA, **run_options):
    """The method's fit, as a job calls it: on hyperparameters its declaration has completed."""
    changed = {**HYPERPARAMETERS[method], **run_options.pop("changes", {})}
    hyperparameters = completed(method, changed, run_options.get("variant"))
    run = TrainingRun("toy", method, seed, **run_options)
    return method_module(method).fit(data, hyperparameters, run)


def same_model(a, b):
    assert torch.equal(a.state["U"], b.state["U"])
    assert (a.item_weights is None) == (b.item_weights is None)
    if a.item_weights is not None:
        assert torch.equal(a.item_weights, b.item_weights)
    assert a.best_epoch == b.best_epoch
    without_time = [{k: v for k, v in entry.items() if k != "seconds"} for entry in a.history]
    assert without_time == [{k: v for k, v in entry.items() if k != "seconds"} for entry in b.history]


def brute_force_ndcg(U: np.ndarray, fold_in: np.ndarray, heldout: np.ndarray, k: int) -> float:
    values = []
    for user in range(len(fold_in)):
        if heldout[user].sum() == 0:
            continue
        scores = fold_in[user] @ U
        candidates = [i for i in range(len(scores)) if fold_in[user, i] == 0]
        ranked = sorted(candidates, key=lambda i: (-scores[i], i))[:k]
        dcg = sum(heldout[user, i] / math.log2(rank + 2) for rank, i in enumerate(ranked))
        ideal = sum(1 / math.log2(rank + 2) for rank in range(int(min(k, heldout[user].sum()))))
        values.append(dcg / ideal)
    return float(np.mean(values))


@pytest.mark.parametrize("k", [5, 100])
def test_validation_ndcg_against_brute_force(k, monkeypatch):
    monkeypatch.setattr(training, "VALIDATION_BATCH_ENTRIES", 7 * 30)  # batches of 7 users
    U = torch.randn(30, 30, generator=torch.Generator().manual_seed(0))
    U.diagonal().zero_()
    rows = [DeviceRows.from_scipy(m, torch.device("cpu")) for m in (DATA.validation_tr, DATA.validation_te)]
    expected = brute_force_ndcg(U.double().numpy(), DATA.validation_tr.toarray(), DATA.validation_te.toarray(), k)
    assert validation_ndcg(U, *rows, k=k) == pytest.approx(expected, rel=1e-6)


def test_permuted_rows_match_scipy():
    rows = DeviceRows.from_scipy(DATA.train, torch.device("cpu"))
    order = torch.randperm(150, generator=torch.Generator().manual_seed(1))
    shuffled = rows.permuted(order)
    for start, stop in [(0, 32), (32, 64), (128, 150)]:
        expected = DATA.train[order.numpy()[start:stop]].toarray()
        np.testing.assert_array_equal(shuffled.rows(start, stop).to_dense().numpy(), expected)


def test_early_stopping_restores_a_copy_of_the_best_epoch(monkeypatch):
    scripted = iter([0.10, 0.30, 0.20, 0.15, 0.12, 0.11])
    monkeypatch.setattr(training, "validation_ndcg", lambda *args, **kwargs: next(scripted))
    snapshots = {}
    fitted = fit(
        "posit",
        changes={"epochs": 6, "patience": 2},
        after_epoch=lambda epoch, U: snapshots.__setitem__(epoch, U.clone()),
    )
    assert fitted.best_epoch == 2
    assert [entry["val_ndcg@100"] for entry in fitted.history] == [0.10, 0.30, 0.20, 0.15]  # stopped after 2 worse
    assert torch.equal(fitted.state["U"], snapshots[2])
    assert not torch.equal(snapshots[2], snapshots[4])


def interrupt_after(epoch_to_stop):
    class Interrupted(Exception):
        pass

    def hook(epoch, U):
        if epoch == epoch_to_stop:
            raise Interrupted

    return Interrupted, hook


@pytest.mark.parametrize("method", ["posit", "cvar"])
def test_resume_after_an_interruption_gives_the_uninterrupted_model(method, tmp_path, caplog):
    uninterrupted = fit(method)
    checkpoint = tmp_path / "checkpoint.pt"
    Interrupted, hook = interrupt_after(2)
    with pytest.raises(Interrupted):
        fit(method, checkpoint=checkpoint, fingerprint="job", after_epoch=hook)
    assert checkpoint.exists()
    with caplog.at_level(logging.INFO):
        resumed = fit(method, checkpoint=checkpoint, fingerprint="job")
    assert "resuming from" in caplog.text and "after epoch 2" in caplog.text
    same_model(uninterrupted, resumed)


def checkpointed_epochs(checkpoint):
    """An after_epoch hook that notes, per epoch, the epoch of the checkpoint on disk (None: none yet)."""
    seen = {}

    def look(epoch, U):
        seen[epoch] = torch.load(checkpoint, weights_only=True)["epoch"] if checkpoint.exists() else None

    return seen, look


def test_checkpoints_every_n_epochs_and_never_after_the_last(tmp_path):
    checkpoint = tmp_path / "checkpoint.pt"
    seen, look = checkpointed_epochs(checkpoint)
    fit(
        "ease",
        changes={"epochs": 7, "patience": 7},
        checkpoint=checkpoint,
        fingerprint="job",
        after_epoch=look,
        checkpoint_every_epochs=3,
    )
    assert seen == {1: None, 2: None, 3: 3, 4: 3, 5: 3, 6: 6, 7: 6}


def test_checkpoints_at_most_every_m_seconds(monkeypatch, tmp_path):
    """A scripted clock moves on 25 s at the end of each epoch, so the check after epoch e sees
    25·(e − 1) s. At least 60 s apart, checkpoints follow epochs 4 (75 s) and 7 (150 s); at least 60 s
    and 4 epochs apart, epochs 4 and 8."""
    now = [0.0]
    monkeypatch.setattr(training, "checkpoint_clock", lambda: now[0])
    for every_epochs, expected in [(1, [4, 7]), (4, [4, 8])]:
        now[0] = 0.0
        checkpoint = tmp_path / f"every{every_epochs}.pt"
        seen, look = checkpointed_epochs(checkpoint)

        def tick(epoch, U, look=look):
            now[0] += 25.0
            look(epoch, U)

        fit(
            "ease",
            changes={"epochs": 9, "patience": 9},
            checkpoint=checkpoint,
            fingerprint="job",
            after_epoch=tick,
            checkpoint_every_epochs=every_epochs,
            checkpoint_min_seconds=60,
        )
        assert sorted({e for e in seen.values() if e is not None}) == expected
        assert all(seen[e] == max([c for c in expected if c <= e], default=None) for e in seen)


@pytest.mark.parametrize("method", ["posit", "cvar"])
def test_resume_from_a_checkpoint_epochs_before_the_interruption_gives_the_uninterrupted_model(
    method, tmp_path, caplog
):
    """Every 3 epochs: a job killed after epoch 5 has the checkpoint of epoch 3, and repeats 4 and 5."""
    changes = {"epochs": 6, "patience": 6}
    uninterrupted = fit(method, changes=changes)
    checkpoint = tmp_path / "checkpoint.pt"
    Interrupted, hook = interrupt_after(5)
    with pytest.raises(Interrupted):
        fit(
            method,
            changes=changes,
            checkpoint=checkpoint,
            fingerprint="job",
            after_epoch=hook,
            checkpoint_every_epochs=3,
        )
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 3
    with caplog.at_level(logging.INFO):
        resumed = fit(method, changes=changes, checkpoint=checkpoint, fingerprint="job", checkpoint_every_epochs=3)
    assert "after epoch 3" in caplog.text
    same_model(uninterrupted, resumed)


def test_a_wrong_checkpoint_cadence_names_the_key():
    with pytest.raises(ValueError, match=r"checkpoints.every_epochs must be an integer of at least 1, got 0"):
        check_checkpoint_cadence({"every_epochs": 0})
    with pytest.raises(ValueError, match=r"checkpoints.min_seconds must be a number of at least 0, got -1"):
        check_checkpoint_cadence({"min_seconds": -1})
    with pytest.raises(ValueError, match=r"checkpoints: unknown keys \['every_epoch'\]"):
        check_checkpoint_cadence({"every_epoch": 2})
    assert check_checkpoint_cadence({"min_seconds": 5}) == {"every_epochs": 1, "min_seconds": 5.0}


def scripted_validation(monkeypatch, values):
    scripted = iter(values)
    monkeypatch.setattr(training, "validation_ndcg", lambda *args, **kwargs: next(scripted))


def test_the_best_epoch_is_written_beside_the_checkpoint_only_when_it_changes(monkeypatch, tmp_path):
    """Epoch:       1    2    3    4    5    6    7
    validation:  0.1  0.3  0.2  0.15 0.4  0.35 0.2   (best: 1, 2, 2, 2, 5, 5, 5)
    The checkpoint never holds a copy of U beside U; the best epoch's U is written once, after the
    first epoch that moves past it, and removed when a later epoch becomes the best. No checkpoint
    follows the last epoch: the model file does."""
    scripted_validation(monkeypatch, [0.1, 0.3, 0.2, 0.15, 0.4, 0.35, 0.2])
    checkpoint = tmp_path / "checkpoint.pt"
    seen = {}

    def look(epoch, U):
        files = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("checkpoint.pt.best-epoch*")}
        saved = torch.load(checkpoint, weights_only=True)
        assert "best_U" not in saved
        seen[epoch] = (files, saved["best_U_file"], U.clone(), saved["epoch"])

    fitted = fit(
        "ease", changes={"epochs": 7, "patience": 7}, checkpoint=checkpoint, fingerprint="job", after_epoch=look
    )
    assert [seen[e][3] for e in range(1, 8)] == [1, 2, 3, 4, 5, 6, 6]
    assert [set(seen[e][0]) for e in range(1, 7)] == [
        set(),
        set(),
        {"checkpoint.pt.best-epoch2"},
        {"checkpoint.pt.best-epoch2"},
        set(),
        {"checkpoint.pt.best-epoch5"},
    ]
    assert [seen[e][1] for e in range(1, 7)] == [
        None,
        None,
        "checkpoint.pt.best-epoch2",
        "checkpoint.pt.best-epoch2",
        None,
        "checkpoint.pt.best-epoch5",
    ]
    assert seen[3][0] == seen[4][0]  # not rewritten in epoch 4
    best = torch.load(tmp_path / "checkpoint.pt.best-epoch5", weights_only=True)
    assert best["epoch"] == 5 and torch.equal(best["U"], seen[5][2])
    assert fitted.best_epoch == 5 and torch.equal(fitted.state["U"], seen[5][2])


def test_resume_restores_the_best_epoch_from_its_own_file(monkeypatch, tmp_path, caplog):
    values = [0.1, 0.3, 0.2, 0.15, 0.12, 0.11]  # the best epoch, 2, lies before the interruption
    changes = {"epochs": 6, "patience": 6}
    scripted_validation(monkeypatch, values)
    uninterrupted = fit("posit", changes=changes)
    checkpoint = tmp_path / "checkpoint.pt"
    Interrupted, hook = interrupt_after(4)
    scripted_validation(monkeypatch, values)
    with pytest.raises(Interrupted):
        fit("posit", changes=changes, checkpoint=checkpoint, fingerprint="job", after_epoch=hook)
    assert (tmp_path / "checkpoint.pt.best-epoch2").exists()
    scripted_validation(monkeypatch, values[4:])
    with caplog.at_level(logging.INFO):
        resumed = fit("posit", changes=changes, checkpoint=checkpoint, fingerprint="job")
    assert "after epoch 4 (best 0.30000 at epoch 2)" in caplog.text
    same_model(uninterrupted, resumed)
    assert resumed.best_epoch == 2

    # Without its best epoch's file a checkpoint cannot give the right model: start over.
    for path in tmp_path.glob("checkpoint.pt*"):
        path.unlink()
    Interrupted, hook = interrupt_after(4)
    scripted_validation(monkeypatch, values)
    with pytest.raises(Interrupted):
        fit("posit", changes=changes, checkpoint=checkpoint, fingerprint="job", after_epoch=hook)
    (tmp_path / "checkpoint.pt.best-epoch2").unlink()
    scripted_validation(monkeypatch, values)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        restarted = fit("posit", changes=changes, checkpoint=checkpoint, fingerprint="job")
    assert "cannot be read" in caplog.text and "starting over" in caplog.text
    same_model(uninterrupted, restarted)


def test_a_checkpoint_of_other_settings_is_not_resumed(tmp_path, caplog):
    checkpoint = tmp_path / "checkpoint.pt"
    Interrupted, hook = interrupt_after(1)
    with pytest.raises(Interrupted):
        fit("ease", checkpoint=checkpoint, fingerprint="lr 0.002", after_epoch=hook)
    with caplog.at_level(logging.INFO):
        restarted = fit("ease", checkpoint=checkpoint, fingerprint="lr 0.001", changes={"lr": 0.001})
    assert "not resuming" in caplog.text and "starting over" in caplog.text
    same_model(restarted, fit("ease", changes={"lr": 0.001}))


def test_fingerprint_covers_settings_code_seed_and_inputs(tmp_path):
    data_file = tmp_path / "train.npz"
    data_file.write_bytes(b"1")
    job = dict(
        dataset="toy",
        method="ease",
        variant="ease",
        seed=0,
        hyperparameters={"lr": 1.0},
        code_version="abc",
        inputs={"train": str(data_file)},
    )
    reference = fingerprint(**job)
    assert fingerprint(**job) == reference
    for change in ({"seed": 1}, {"hyperparameters": {"lr": 2.0}}, {"code_version": "abd"}, {"variant": "ease_2"}):
        assert fingerprint(**{**job, **change}) != reference
    data_file.write_bytes(b"12")
    assert fingerprint(**job) != reference


def test_nan_guard_stops_without_a_model_file(tmp_path):
    for name in ("train", "validation_tr", "validation_te"):
        sp.save_npz(tmp_path / f"{name}.npz", getattr(DATA, name))
    output = tmp_path / "model.pt"
    with pytest.raises(TrainingDiverged) as caught:
        train_and_save(
            dataset="toy",
            method="ease",
            seed=3,
            hyperparameters={**SGD, "lr": 1e8},
            inputs={name: str(tmp_path / f"{name}.npz") for name in ("train", "validation_tr", "validation_te")},
            output=output,
            device=torch.device("cpu"),
            environment={"torch": torch.__version__, "device": "cpu"},
            code_version="test",
            checkpoint=tmp_path / "checkpoint.pt",
        )
    message = str(caught.value)
    assert "toy/ease seed 3" in message and "epoch 1" in message and "lr 1e+08" in message
    assert not output.exists()
    assert not list(tmp_path.glob("*.partial*"))


def test_divergence_at_a_huge_weight_decay_names_lr_and_wd():
    """lr·wd = 0.002 · 1e6 = 2000, past heavy-ball SGD's bound 2·(1 + 0.9) = 3.8 for the decay alone."""
    with pytest.raises(TrainingDiverged) as caught:
        fit("ease", changes={"wd": 1e6})
    message = str(caught.value)
    assert re.search(r"\(lr 0\.002, annealed to [0-9.e+-]+ in this epoch; wd 1e\+06\)", message), message
    assert "Lower lr or wd" in message and "exceeds 3.8 (here lr·wd = 2000)" in message


@pytest.mark.parametrize("method", ["posit", "cvar"])
def test_same_seed_same_model_other_seed_other_model(method):
    first, second = fit(method, seed=5), fit(method, seed=5)
    same_model(first, second)
    assert not torch.equal(first.state["U"], fit(method, seed=6).state["U"])


def test_learning_rate_follows_a_cosine_over_the_epochs():
    history = fit("ease", changes={"epochs": 4, "patience": 4, "lr": 0.002}).history
    expected = [0.001 * (1 + math.cos(math.pi * epoch / 4)) for epoch in range(4)]
    assert [entry["lr"] for entry in history] == pytest.approx(expected)


def test_hyperparameter_errors_name_the_key():
    ease = registry.declaration("ease")
    with pytest.raises(ValueError, match=r"hyperparameters.ease: \['lam'\] are not hyperparameters of ease"):
        ease.complete({**SGD, "lam": 1.0}, "hyperparameters.ease")
    with pytest.raises(ValueError, match=r"hyperparameters.ease: missing \['lr'\]"):
        ease.complete({k: v for k, v in SGD.items() if k != "lr"}, "hyperparameters.ease")
    for changes, message in [
        ({"batch_size": 0}, "hyperparameters.ease.batch_size: 0 must be at least 1"),
        ({"batch_size": 32.7}, "hyperparameters.ease.batch_size: 32.7 is not an integer"),
        ({"lr": 0}, "hyperparameters.ease.lr: 0 must be greater than 0"),
        ({"drop_last": "no"}, "hyperparameters.ease.drop_last: 'no' is not a boolean"),
    ]:
        with pytest.raises(registry.HyperparameterError, match=message):
            fit("ease", changes=changes)
    # Only the data tell this one: the training loop's own check, naming the variant where it is one.
    for variant in (None, "ease_big"):
        with pytest.raises(
            ValueError,
            match=rf"toy/{variant or 'ease'} seed 0: hyperparameters.{variant or 'ease'}.drop_last "
            "is true and the 150 training users are fewer than batch_size 200",
        ):
            fit("ease", changes={"drop_last": True, "batch_size": 200}, variant=variant)


class BatchRecorder(training.Objective):
    """EASE's loss, recording each minibatch's training rows."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def batch_losses(self, predictions, interactions, rows=None):
        self.batches.append(interactions.clone())
        return {"loss": (predictions - interactions).square().mean()}


@pytest.mark.parametrize("drop_last, sizes", [(False, [32, 32, 32, 32, 22]), (True, [32, 32, 32, 32])])
def test_drop_last_leaves_out_the_last_partial_batch(drop_last, sizes):
    """150 training users in batches of 32: 4 full batches and one of 22, or with drop_last (the
    authors' loader, ⌊150/32⌋ batches) the 4 full ones, 128 distinct users, a new draw each epoch."""
    recorder = BatchRecorder()
    hyperparameters = {**SGD, "drop_last": drop_last, "epochs": 2, "patience": 2}
    training.train(DATA, hyperparameters, TrainingRun("toy", "ease", 0), recorder)
    assert [len(batch) for batch in recorder.batches] == sizes * 2
    users = Counter(map(tuple, DATA.train.toarray().tolist()))
    epochs = [torch.cat(recorder.batches[: len(sizes)]), torch.cat(recorder.batches[len(sizes) :])]
    for served in epochs:
        served_users = Counter(map(tuple, served.tolist()))
        assert served_users == users if not drop_last else not served_users - users  # no user twice
    assert not torch.equal(*epochs)


def numpy_sgd_steps(X: np.ndarray, batches, item_weights, lr, wd, lam=1.0, momentum=0.9):
    """U after SGD steps on λ·mean_i(w_i·ℓ_i), ℓ_i = 1000·mean_u∈b (x_u·U − x_u)_i², in float64 from
    the issue's formulas: the gradient's diagonal is dropped, weight decay is added to it, and the
    momentum buffer starts at the first gradient (PyTorch's SGD)."""
    n_items = X.shape[1]
    U = np.zeros((n_items, n_items))
    buffer = None
    for (start, stop), w in zip(batches, item_weights):
        Xb = X[start:stop]
        residual = Xb @ U - Xb
        gradient = Xb.T @ (2 * 1000 * lam * residual * w[None, :] / (len(Xb) * n_items))
        np.fill_diagonal(gradient, 0.0)
        gradient += wd * U
        buffer = gradient if buffer is None else momentum * buffer + gradient
        U = U - lr * buffer
    return U


@pytest.mark.parametrize("method", ["ease", "ipw", "posit"])
def test_training_steps_match_sgd_on_the_loss_written_out(method, monkeypatch):
    module = method_module(method)
    monkeypatch.setattr(
        module,
        "train",
        lambda data, hyperparameters, run, objective: training.Trainer(data, hyperparameters, run, objective),
    )
    hyperparameters = completed(method, {**HYPERPARAMETERS[method], "lr": 0.5, "wd": 0.01})
    trainer = module.fit(DATA, hyperparameters, TrainingRun("toy", method, 0))
    X = DATA.train.toarray().astype(np.float64)
    batches = [(0, 32), (32, 64), (64, 96)]
    weights = []
    for start, stop in batches:
        if method == "ipw":
            unnormalised = np.exp(-hyperparameters["alpha"] * X.sum(axis=0))
            weights.append(unnormalised / unnormalised.mean())
        elif method == "posit":
            weights.append(trainer.objective.learner_weights.double().numpy().copy())  # the previous step's w̄
        else:
            weights.append(np.ones(X.shape[1]))
        trainer.step(trainer.train_rows.rows(start, stop), {}, torch.zeros((), dtype=torch.bool))
    expected = numpy_sgd_steps(X, batches, weights, lr=0.5, wd=0.01, lam=hyperparameters.get("lam", 1.0))
    assert np.abs(expected).max() > 1e-3  # the steps moved U
    np.testing.assert_allclose(trainer.U.double().numpy(), expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
    if method == "posit":
        assert not np.allclose(weights[2], 1.0)  # w̄ of step 2 (used by step 3) comes from the updated adversary


def train_until_terminated(folder, checkpoint, output):
    """train_and_save of a toy job with a checkpoint after every epoch, under ending_on_signal."""
    inputs = save_training_split(folder, DATA)
    log = logging.getLogger("test.sigterm")
    with ending_on_signal(log, exit_at_once=False):
        train_and_save(
            dataset="toy",
            method="ease",
            seed=3,
            hyperparameters={**SGD, "epochs": 6, "patience": 6},
            inputs=inputs,
            output=output,
            device=torch.device("cpu"),
            environment={"torch": torch.__version__, "device": "cpu"},
            code_version="test",
            checkpoint=checkpoint,
            checkpoint_cadence={"every_epochs": 1, "min_seconds": 0},
            log=log,
        )


def test_sigterm_while_a_checkpoint_is_written_removes_it_and_says_where_the_job_stopped(tmp_path, monkeypatch, caplog):
    """A real SIGTERM, sent to this process in the middle of the second checkpoint's write (its
    content written, not yet renamed into place): the half-written file is removed, the first
    checkpoint stays for the rerun, and the log names the epoch and how to resume. A job killed
    outright earlier left half-written files of its own: they are removed when the job starts."""
    checkpoint, output = tmp_path / "checkpoint.pt", tmp_path / "model.pt"
    left_by_a_killed_job = [
        tmp_path / ".checkpoint.k1lled_0.partial.pt",
        tmp_path / ".checkpoint.pt.k1lled_1.partial.best-epoch3",
        tmp_path / ".model.k1lled_2.partial.pt",
    ]
    for path in left_by_a_killed_job:
        path.write_bytes(b"half")
    unrelated = tmp_path / ".other.k1lled_3.partial.pt"
    unrelated.write_bytes(b"not this job's")
    saving = torch.save
    checkpoint_writes = []

    def save_then_terminate(payload, path):
        saving(payload, path)
        if "checkpoint_version" in payload:
            checkpoint_writes.append(Path(path).name)
            if len(checkpoint_writes) == 2:
                os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(torch, "save", save_then_terminate)
    with caplog.at_level(logging.INFO), pytest.raises(SystemExit) as ended:
        train_until_terminated(tmp_path, checkpoint, output)
    assert ended.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is taken down again
    assert len(checkpoint_writes) == 2 and checkpoint_writes[1].startswith(".checkpoint.")  # it was mid-write
    assert caplog.records[-1].getMessage() == (
        "toy/ease seed 3: terminated by signal at epoch 3; rerun with --rerun-incomplete to resume "
        "from the checkpoint after epoch 1"
    )
    for path in left_by_a_killed_job:
        assert f"removing {path}, left half-written by a killed job" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [unrelated.name]
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1
    assert not output.exists()


def test_sigterm_as_a_checkpoint_is_put_in_place_names_that_checkpoint(tmp_path, monkeypatch, caplog):
    """SIGTERM just after the second checkpoint is renamed into place: the signal waits until the
    job has recorded it, so the epoch the log names for resuming is the one the file holds."""
    checkpoint, output = tmp_path / "checkpoint.pt", tmp_path / "model.pt"
    replacing = os.replace
    renamed = []

    def replace_then_terminate(source, target):
        replacing(source, target)
        if Path(target) == checkpoint:
            renamed.append(target)
            if len(renamed) == 2:
                os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(os, "replace", replace_then_terminate)
    with caplog.at_level(logging.INFO), pytest.raises(SystemExit):
        train_until_terminated(tmp_path, checkpoint, output)
    assert caplog.records[-1].getMessage() == (
        "toy/ease seed 3: terminated by signal at epoch 3; rerun with --rerun-incomplete to resume "
        "from the checkpoint after epoch 2"
    )
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 2


def test_sigterm_inside_mkstemp_leaves_no_half_written_file(tmp_path, monkeypatch, caplog):
    """SIGTERM handled inside mkstemp, after it made the second checkpoint's temporary file and
    before it returned its name (CI met it once): the job removes the file on its way out."""
    checkpoint, output = tmp_path / "checkpoint.pt", tmp_path / "model.pt"
    making = tempfile.mkstemp
    made = []

    def mkstemp_then_terminate(*args, **kwargs):
        fd, name = making(*args, **kwargs)
        made.append(name)
        if ".checkpoint." in name and len([m for m in made if ".checkpoint." in m]) == 2:
            os.close(fd)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises here
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp_then_terminate)
    with caplog.at_level(logging.INFO), pytest.raises(SystemExit):
        train_until_terminated(tmp_path, checkpoint, output)
    assert Path(made[-1]).name.startswith(".checkpoint.") and not Path(made[-1]).exists()
    assert f"removing {made[-1]}, left half-written by this job" in caplog.text
    assert not [p.name for p in tmp_path.iterdir() if "partial" in p.name]
    assert caplog.records[-1].getMessage() == (
        "toy/ease seed 3: terminated by signal at epoch 2; rerun with --rerun-incomplete to resume "
        "from the checkpoint after epoch 1"
    )


class SignalledWhenCollected:
    """An object whose finalizer sends this process SIGTERM and goes on running Python code, where
    the signal's handler then runs and raises: Python drops what a finalizer raises."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pass


def test_sigterm_whose_exception_a_finalizer_swallows_still_ends_the_job(tmp_path, monkeypatch, caplog):
    """SIGTERM handled while Python runs a finalizer (tqdm's progress bar has one, run once an
    epoch): Python drops the handler's TrainingTerminated. The job ends all the same, at the next
    step, and says where. Without that it trained on, to its last epoch (CI found it so, once)."""
    checkpoint, output = tmp_path / "checkpoint.pt", tmp_path / "model.pt"
    swallowed = []
    monkeypatch.setattr("sys.unraisablehook", lambda unraisable: swallowed.append(unraisable.exc_type))
    measuring = training.validation_ndcg
    validations = []

    def validation_collecting_a_finalizer(*args):
        validations.append(1)
        if len(validations) == 2:
            SignalledWhenCollected()  # collected at once, inside this call
        return measuring(*args)

    monkeypatch.setattr(training, "validation_ndcg", validation_collecting_a_finalizer)
    with caplog.at_level(logging.INFO), pytest.raises(SystemExit) as ended:
        train_until_terminated(tmp_path, checkpoint, output)
    assert swallowed == [TrainingTerminated]
    assert ended.value.code == 128 + signal.SIGTERM
    assert caplog.records[-1].getMessage() == (
        "toy/ease seed 3: terminated by signal at epoch 3; rerun with --rerun-incomplete to resume "
        "from the checkpoint after epoch 2"
    )
    assert len(validations) == 2 and not output.exists()
