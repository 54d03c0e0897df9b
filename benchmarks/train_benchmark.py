"""Time one POSIT training step and one validation pass at the paper's sizes, against a floor.

    .venv/bin/python benchmarks/train_benchmark.py --shape ml-20m --device cpu --repeats 3
    python benchmarks/train_benchmark.py --shape msd --device cuda --repeats 20

The training matrix is synthetic, with the shape of the paper's split (ML-20M: 116,677 training
users × 20,108 items, about 8M positives, batch 1024; MSD: 471,355 × 41,140, about 28M positives,
batch 8192) and a power-law item popularity. The floor is one SGD step with momentum and weight
decay of a dense items × items matrix whose gradient is already there: the memory traffic that any
step on U must pay. The ratio (POSIT step / floor) does not depend on the card much, so it is the
number to watch; the absolute times are recorded in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as workflow_scripts/train.py: no spinning threads

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow_scripts"))

from semtail.models.base import Run, TrainingData  # noqa: E402
from semtail.models.posit import AdversarialObjective  # noqa: E402
from semtail.models.synthetic import fold_in_split, power_law_interactions  # noqa: E402
from semtail.training import Trainer, validation_ndcg  # noqa: E402

SHAPES = {
    # training users, items, positives, validation users, and the paper's POSIT settings
    "ml-20m": dict(users=116_677, items=20_108, positives=8_000_000, validation=10_000,
                   posit=dict(lr=2.0, alr=1.0, wd=8e-6, nstd=1.5, awd=0.0, adversary="2bmlp2",
                              signal="recall_dist", ones_aware=False, batch_size=1024)),
    "msd": dict(users=471_355, items=41_140, positives=28_000_000, validation=50_000,
                posit=dict(lr=40.0, alr=0.1, wd=1e-5, nstd=0.5, awd=1e-5, adversary="2mlp2",
                           signal="recall", ones_aware=True, batch_size=8192)),
}  # fmt: skip


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function, device: torch.device, repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        function()
    synchronize(device)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        synchronize(device)
        seconds.append(time.perf_counter() - started)
    return seconds


def needed_bytes(shape: dict) -> int:
    """The peak of this benchmark: U, its gradient and momentum (3 dense matrices), the batch's
    dense tensors, the sparse data (twice: users × items and items × users) and scoring."""
    dense = 4 * shape["items"] ** 2
    batch = 4 * shape["posit"]["batch_size"] * shape["items"]
    return 3 * dense + 8 * batch + 3 * 12 * shape["positives"] + 2**31


def available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():  # MemAvailable counts the page cache that can be dropped
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def floor_step_seconds(n_items: int, device: torch.device, repeats: int, fused: bool) -> list[float]:
    """One SGD step (momentum 0.9, weight decay) of an n × n matrix with a ready gradient."""
    weights = torch.zeros(n_items, n_items, device=device)
    weights.grad = torch.full_like(weights, 1e-3)
    optimizer = torch.optim.SGD([weights], lr=1e-3, momentum=0.9, weight_decay=1e-5, **({"fused": True} if fused else {"foreach": True}))
    try:
        return timed(optimizer.step, device, repeats)
    finally:
        del optimizer, weights
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="ml-20m")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    shape = SHAPES[args.shape]
    need, have = needed_bytes(shape), available_bytes(device)
    if need > have:
        print(
            f"{args.shape}: needs about {need / 2**30:.1f} GiB on {device}, {have / 2**30:.1f} GiB are available; "
            "not run. (The MSD shape needs a GPU or a large-memory host.)"
        )
        return

    results = {"shape": args.shape, "device": str(device), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "machine": platform.processor() or platform.machine()}  # fmt: skip
    if device.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name(device)
    n_items = shape["items"]
    print(f"{args.shape}: {shape['users']:,} users x {n_items:,} items, about {shape['positives']:,} positives, on {device}")

    for fused in (True, False):
        name = "floor_fused_sgd_s" if fused else "floor_foreach_sgd_s"
        results[name] = statistics.median(floor_step_seconds(n_items, device, args.repeats, fused))
        print(f"  floor, one {'fused' if fused else 'foreach'} SGD step of U: {results[name] * 1e3:9.1f} ms")

    started = time.perf_counter()
    n_users = shape["users"] + shape["validation"]
    per_user = shape["positives"] / shape["users"]
    for _ in range(3):  # duplicates are dropped: draw more until the training part has the positives asked for
        everyone = power_law_interactions(n_users, n_items, per_user, exponent=1.0, seed=0)
        found = everyone[: shape["users"]].nnz
        if found >= 0.98 * shape["positives"]:
            break
        per_user *= shape["positives"] / found
    fold_in, heldout = fold_in_split(everyone[shape["users"] :], seed=1)
    data = TrainingData(train=everyone[: shape["users"]].tocsr(), validation_tr=fold_in, validation_te=heldout)
    results["positives"] = int(data.train.nnz)
    print(f"  synthetic data: {data.train.nnz:,} positives ({time.perf_counter() - started:.0f} s)")

    hyperparameters = {**shape["posit"], "epochs": 50, "patience": 10, "drop_last": True, "lam": 1.0, "k": 100,
                       "signal_momentum": 0.9, "ties": "topk", "adversary_init": "authors"}
    run = Run(args.shape, "posit", 0, device=device)
    trainer = Trainer(data, hyperparameters, run, AdversarialObjective(data, hyperparameters, device))
    batch = hyperparameters["batch_size"]
    shuffled = trainer.train_rows.permuted(torch.randperm(trainer.train_rows.n_rows, generator=trainer.generator).to(device))
    positions = iter(range(0, shuffled.n_rows - batch, batch))
    loss_sums: dict = {}
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)

    def posit_step():
        start = next(positions)
        trainer.step(shuffled.rows(start, start + batch), loss_sums, nonfinite)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    results["posit_step_s"] = statistics.median(timed(posit_step, device, args.repeats, warmup=2))
    results["validation_pass_s"] = statistics.median(
        timed(lambda: validation_ndcg(trainer.U, trainer.validation_fold_in, trainer.validation_heldout), device, max(1, args.repeats // 2))
    )
    if device.type == "cuda":
        results["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    results["peak_host_memory_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    results["ratio_to_fused_floor"] = results["posit_step_s"] / results["floor_fused_sgd_s"]
    results["ratio_to_foreach_floor"] = results["posit_step_s"] / results["floor_foreach_sgd_s"]
    print(f"  one POSIT step (batch {batch}):       {results['posit_step_s'] * 1e3:9.1f} ms")
    print(f"  one validation pass ({shape['validation']:,} users): {results['validation_pass_s'] * 1e3:9.1f} ms")
    print(f"  ratio POSIT step / floor: {results['ratio_to_fused_floor']:.2f} (fused), {results['ratio_to_foreach_floor']:.2f} (foreach)")
    for key in ("peak_gpu_memory_gib", "peak_host_memory_gib"):
        if key in results:
            print(f"  {key.replace('_', ' ')}: {results[key]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
