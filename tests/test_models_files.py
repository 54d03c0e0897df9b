"""Model files: every method writes one that loads with weights_only=True; load_model's errors;
scorer() for each method against an independent computation."""

import errno
import io
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from method_settings import settings
from semtail import files, registry
from semtail.modelfile import FORMAT_VERSION, ModelFileError, load_model, save_model, scorer
from semtail.models import rerank
from semtail.models.base import read_interactions
from semtail.train_job import train_and_save

METHODS = registry.names()

HYPERPARAMETERS = {name: values for name, values in settings(batch_size=32, epochs=3).items() if name in METHODS}


def test_every_method_is_trained_here():
    assert set(METHODS) <= set(settings(batch_size=32))


@pytest.fixture(scope="module")
def model_files(split_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    inputs = {name: str(split_files / f"{name}.npz") for name in ("train", "validation_tr", "validation_te")}
    paths = {}
    for method in sorted(METHODS, key=lambda name: registry.declaration(name).training == "on_base"):
        paths[method] = out / f"{method}.pt"
        extra = {"base_model": str(paths["ease"])} if registry.declaration(method).training == "on_base" else {}
        train_and_save(
            dataset="toy",
            method=method,
            seed=0,
            hyperparameters=HYPERPARAMETERS[method],
            inputs={**inputs, **extra},
            output=paths[method],
            device=torch.device("cpu"),
            environment={"torch": torch.__version__, "device": "cpu"},
            code_version="test",
            checkpoint=out / f"{method}.checkpoint.pt",
        )
    return paths


@pytest.mark.parametrize("method", METHODS)
def test_model_file_contract(model_files, split_files, method):
    raw = torch.load(model_files[method], weights_only=True)  # plain torch, no semtail code
    model = load_model(model_files[method])
    assert raw.keys() == model.keys()
    assert model["format_version"] == FORMAT_VERSION
    assert (model["dataset"], model["method"], model["seed"]) == ("toy", method, 0)
    assert model["hyperparameters"] == HYPERPARAMETERS[method]
    assert (model["n_items"], model["n_train_users"]) == (30, 150)
    assert model["environment"]["device"] == "cpu" and "torch" in model["environment"]
    assert model["code_version"] == "test" and model["train_seconds"] >= 0
    for tensor in model["state"].values():
        assert tensor.dtype == torch.float32 and tensor.device.type == "cpu"
    declared = registry.declaration(method)
    assert model["state"].keys() == declared.state.keys()
    if declared.training == "sgd":
        assert torch.all(model["state"]["U"].diagonal() == 0)
        assert len(model["history"]) == 3 and 1 <= model["best_epoch"] <= 3
        assert {"epoch", "loss", "val_ndcg@100", "lr", "seconds"} <= model["history"][0].keys()
        assert not list(model_files[method].parent.glob(f"{method}.checkpoint.pt*"))  # best-epoch files too
    else:
        assert model["history"] == [] and model["best_epoch"] is None
    if declared.item_weights:
        assert model["item_weights"].shape == (30,)
        assert model["item_weights"].mean().item() == pytest.approx(1.0, rel=1e-5)
        assert "adversary_loss" in model["history"][0] and "weight_std" in model["history"][0]
    else:
        assert model["item_weights"] is None


@pytest.mark.parametrize("method", METHODS)
def test_scorer_against_an_independent_computation(model_files, split_files, method):
    model = load_model(model_files[method])
    fold_in = read_interactions(split_files / "validation_tr.npz").toarray()
    scores = scorer(model, "cpu")(torch.from_numpy(fold_in))
    assert scores.shape == fold_in.shape and scores.dtype == torch.float32
    popularity = np.asarray(read_interactions(split_files / "train.npz").sum(axis=0)).ravel()
    if method == "mostpop":
        np.testing.assert_array_equal(scores.numpy(), np.tile(popularity, (len(fold_in), 1)))
    elif method == "rerank":
        base = fold_in.astype(np.float64) @ load_model(model_files["ease"])["state"]["U"].double().numpy()
        expected = rerank.ranking_key(torch.from_numpy(base).float(), torch.from_numpy(popularity).float(), 0.3, 0.05)
        assert torch.equal(scores, expected)
    elif method == "post":
        base = fold_in.astype(np.float64) @ load_model(model_files["ease"])["state"]["U"].double().numpy()
        expected = base - 0.05 * np.log(1 + popularity)
        np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-5, atol=1e-6)
    else:
        matrix = model["state"][registry.declaration(method).item_item].double().numpy()
        np.testing.assert_allclose(scores.numpy(), fold_in.astype(np.float64) @ matrix, rtol=1e-5, atol=1e-6)


def test_rerank_wraps_the_base_model_of_the_same_seed(model_files):
    base = load_model(model_files["ease"])
    wrapped = load_model(model_files["rerank"])
    assert torch.equal(wrapped["state"]["base"], base["state"]["U"])


def test_load_model_errors_name_the_file(tmp_path, model_files):
    with pytest.raises(ModelFileError, match="missing.pt: model file not found"):
        load_model(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(ModelFileError, match="corrupt.pt: not a readable model file"):
        load_model(corrupt)
    model = load_model(model_files["ease"])
    old = tmp_path / "old.pt"
    torch.save({**model, "format_version": 0}, old)
    with pytest.raises(ModelFileError, match="old.pt: format_version is 0"):
        load_model(old)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({**model, "history": [Fraction(1, 3)]}, unsafe)  # a class that weights_only refuses
    with pytest.raises(ModelFileError, match="unsafe.pt"):
        load_model(unsafe)
    bad_shape = tmp_path / "shape.pt"
    torch.save({**model, "state": {"U": torch.zeros(3, 3)}}, bad_shape)
    with pytest.raises(ModelFileError, match=r"shape.pt: state\['U'\] has shape"):
        load_model(bad_shape)


class FullDisk(io.RawIOBase):
    """A file that takes `room` bytes, then fails as a full disk does (ENOSPC)."""

    def __init__(self, path, room: int):
        self.handle, self.room = open(path, "wb"), room  # noqa: SIM115 (closed by close())

    def writable(self):
        return True

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.handle.write(data)

    def close(self):
        self.handle.close()
        super().close()


def test_a_full_disk_while_saving_a_model_names_the_path(tmp_path, model_files, monkeypatch):
    """torch.save turns the ENOSPC into "[enforce fail at inline_container.cc:...] unexpected pos";
    the file system then has (nearly) no room left, which the check reads from disk_usage."""
    model = load_model(model_files["ease"])
    real_save = torch.save

    def save_onto_a_full_disk(obj, path):
        with FullDisk(path, room=300) as handle:
            real_save(obj, handle)

    monkeypatch.setattr(torch, "save", save_onto_a_full_disk)
    monkeypatch.setattr(files.shutil, "disk_usage", lambda folder: SimpleNamespace(free=4096))
    target = tmp_path / "ease" / "model.pt"
    with pytest.raises(OSError) as caught:
        save_model(target, model)
    assert str(caught.value) == f"no space left on device writing {target}"
    assert "inline_container" in str(caught.value.__cause__)
    assert list(target.parent.iterdir()) == []  # the half-written file is removed
    monkeypatch.setattr(files.shutil, "disk_usage", lambda folder: SimpleNamespace(free=9 * 10**8))
    with pytest.raises(RuntimeError, match="inline_container"):  # room left: torch's own error, unchanged
        save_model(target, model)
    assert list(target.parent.iterdir()) == []


def test_item_weights_are_there_exactly_for_methods_that_declare_them(tmp_path, model_files):
    ease, posit = load_model(model_files["ease"]), load_model(model_files["posit"])
    torch.save({**ease, "item_weights": torch.ones(30)}, tmp_path / "ease.pt")
    with pytest.raises(ModelFileError, match="ease.pt: ease learns no item weights"):
        load_model(tmp_path / "ease.pt")
    torch.save({**posit, "item_weights": None}, tmp_path / "posit.pt")
    with pytest.raises(ModelFileError, match="posit.pt: posit learns item weights"):
        load_model(tmp_path / "posit.pt")
    torch.save({**ease, "method": "slim"}, tmp_path / "slim.pt")
    with pytest.raises(ModelFileError, match="slim.pt: 'slim' is not a method"):
        load_model(tmp_path / "slim.pt")


def test_declared_defaults_are_recorded_and_wrong_values_named(split_files, tmp_path):
    inputs = {name: str(split_files / f"{name}.npz") for name in ("train", "validation_tr", "validation_te")}
    job = dict(
        dataset="toy",
        method="ipw",
        seed=0,
        inputs=inputs,
        device=torch.device("cpu"),
        environment={"device": "cpu"},
        code_version="test",
        variant="ipw_default",
    )
    without_lam = {k: v for k, v in HYPERPARAMETERS["ipw"].items() if k != "lam"}
    model = train_and_save(hyperparameters=without_lam, output=tmp_path / "ipw.pt", **job)
    assert model["hyperparameters"] == {**without_lam, "lam": 1.0} == load_model(tmp_path / "ipw.pt")["hyperparameters"]
    with pytest.raises(ValueError, match="hyperparameters.ipw_default.alpha: -1 must be at least 0"):
        train_and_save(hyperparameters={**without_lam, "alpha": -1}, output=tmp_path / "bad.pt", **job)
    with pytest.raises(ValueError, match=r"hyperparameters.ipw_default: missing \['alpha'\]"):
        train_and_save(
            hyperparameters={k: v for k, v in without_lam.items() if k != "alpha"}, output=tmp_path / "bad.pt", **job
        )
    assert not (tmp_path / "bad.pt").exists()


def test_read_interactions_rejects_non_binary_and_wrong_width(tmp_path):
    path = tmp_path / "counts.npz"
    sp.save_npz(path, sp.csr_matrix(np.array([[0, 2.0]], dtype=np.float32)))
    with pytest.raises(ValueError, match="counts.npz: expected a binary"):
        read_interactions(path)
    sp.save_npz(path, sp.csr_matrix(np.array([[0, 1.0]], dtype=np.float32)))
    with pytest.raises(ValueError, match="counts.npz: has 2 item columns"):
        read_interactions(path, n_items=3)
