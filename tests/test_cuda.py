"""On a CUDA GPU, the same results as on the CPU: training of every SGD method and the closed form,
validation NDCG, and every metric of an evaluation, per user too. Skipped, with the reason, where no GPU is visible
(CI has none); benchmarks/device_check.sh runs these on a GPU machine together with the benchmark.

The CPU run is the reference: same data, same seed, same code, only the device differs. Sums in
another order round differently on a GPU, so U is compared with a tolerance; lists and counts,
computed from scores that are exact on both devices, must be identical."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from method_settings import completed, method_of, sgd_methods
from semtail import evaluate as ev
from semtail.models.base import TrainingRun
from semtail.models.synthetic import training_data
from semtail.registry import method_module
from semtail.training import DeviceRows, validation_ndcg

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible")

ROOT = Path(__file__).resolve().parents[1]
CPU, CUDA = torch.device("cpu"), torch.device("cuda")
DATA = training_data(400, 120, 10, 100, seed=3)
HYPERPARAMETERS = {**sgd_methods(batch_size=64), "ease_closed": completed("ease_closed", {"l2": 30.0})}


def fit_on(device: torch.device, name: str):
    method = method_of(name)
    return method_module(method).fit(DATA, HYPERPARAMETERS[name], TrainingRun("toy", method, 0, device=device))


@pytest.mark.parametrize("name", list(sgd_methods(batch_size=64)))
def test_sgd_training_on_cuda_matches_the_cpu(name):
    on_cpu, on_gpu = fit_on(CPU, name), fit_on(CUDA, name)
    assert on_gpu.state["U"].device == CPU  # model files always hold host tensors
    np.testing.assert_allclose(on_gpu.state["U"].numpy(), on_cpu.state["U"].numpy(), rtol=1e-3, atol=1e-6)
    assert on_gpu.state["U"].diagonal().abs().max() == 0
    assert on_gpu.best_epoch == on_cpu.best_epoch
    for gpu_epoch, cpu_epoch in zip(on_gpu.history, on_cpu.history, strict=True):
        assert gpu_epoch["val_ndcg@100"] == pytest.approx(cpu_epoch["val_ndcg@100"], abs=1e-4)
        assert gpu_epoch["loss"] == pytest.approx(cpu_epoch["loss"], rel=1e-4)
    if on_cpu.item_weights is not None:
        np.testing.assert_allclose(on_gpu.item_weights.numpy(), on_cpu.item_weights.numpy(), rtol=1e-3, atol=1e-5)


def test_closed_form_ease_on_cuda_matches_the_cpu():
    on_cpu, on_gpu = fit_on(CPU, "ease_closed"), fit_on(CUDA, "ease_closed")
    np.testing.assert_allclose(on_gpu.state["B"].numpy(), on_cpu.state["B"].numpy(), rtol=1e-5, atol=1e-7)


def test_validation_ndcg_on_cuda_matches_the_cpu():
    U = torch.randint(0, 5, (DATA.n_items, DATA.n_items)).float()  # small integers: exact sums on both
    on_cpu, on_gpu = (
        validation_ndcg(
            U.to(device),
            DeviceRows.from_scipy(DATA.validation_tr, device),
            DeviceRows.from_scipy(DATA.validation_te, device),
        )
        for device in (CPU, CUDA)
    )
    assert 0 < on_cpu < 1 and on_gpu == pytest.approx(on_cpu, abs=1e-6)


def test_evaluation_on_cuda_matches_the_cpu():
    rng = np.random.default_rng(0)
    n_items = DATA.n_items
    split = ev.Split(DATA.train, DATA.validation_tr, DATA.validation_te)
    weights = torch.from_numpy(rng.integers(0, 4, (n_items, n_items)).astype(np.float32))  # many ties, exact

    def score(fold_in):
        return fold_in @ weights.to(fold_in.device)

    settings = dict(ks=[5, 20, 50], coverage_block_size=50, tail_interaction_share=0.2, batch_size=37)
    on_cpu = ev.evaluate(score, split, device=CPU, **settings)
    on_gpu = ev.evaluate(score, split, device=CUDA, **settings)
    assert on_gpu.metrics.keys() == on_cpu.metrics.keys()
    for key, value in on_cpu.metrics.items():
        assert on_gpu.metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert on_cpu.per_user and on_gpu.per_user.keys() == on_cpu.per_user.keys()
    for key, values in on_cpu.per_user.items():  # NaN (no held-out items) at the same users on both
        np.testing.assert_allclose(on_gpu.per_user[key], values, rtol=1e-6, atol=1e-9, equal_nan=True, err_msg=key)
    for key, lists in on_cpu.lists.items():
        np.testing.assert_array_equal(on_gpu.lists[key], lists)
    for key, counts in on_cpu.item_stats.items():
        np.testing.assert_array_equal(on_gpu.item_stats[key], counts)


def test_a_job_claims_a_gpu_and_runs_on_it(tmp_path):
    """select_device in a fresh process, as a train job calls it: the GPU is locked and used."""
    program = (
        "from semtail.device import select_device, describe; import os; "
        "d = select_device('auto', 1); print(d.type, os.environ['CUDA_VISIBLE_DEVICES'], describe(d))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "workflow_scripts"), "SEMTAIL_GPU_LOCK_DIR": str(tmp_path)}
    env.pop("SLURM_JOB_ID", None)
    done = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    kind, visible, described = done.stdout.split(maxsplit=2)
    assert kind == "cuda" and visible.split(",")[0] != "" and described.startswith("cuda:0 (")
    assert (tmp_path / f"gpu-{visible}.lock").exists()
