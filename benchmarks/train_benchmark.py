"""Time one POSIT training step and one validation pass at the paper's sizes, side by side with a
straightforward implementation of the same step, and against the floor of any step on U.

    .venv/bin/python benchmarks/train_benchmark.py --shape ml-20m --device cpu --repeats 3
    python benchmarks/train_benchmark.py --shape msd --device cuda --repeats 20

The training matrix is synthetic, with the shape of the paper's split (ML-20M: 116,677 training
users × 20,108 items, about 8M positives, batch 1024; MSD: 471,355 × 41,140, about 28M positives,
batch 8192) and a power-law item popularity. In each of `--rounds` rounds, one after the other:

- the floors: one SGD step with momentum and weight decay of a dense items × items matrix whose
  gradient is already there (PyTorch's fused kernel, and its multi-tensor `foreach` one), the
  memory traffic that any step on U must pay;
- the current code: `Trainer.step` (exactly what training runs) and `validation_ndcg`;
- the previous code, as it was before the CPU's product kernel and the ranking's fast path
  (2026-12-02): the same step with X_b·U by `torch.sparse.mm`, and a validation pass that also
  sends every row through the tie rule and masks by float copies (`previous_validation_ndcg`);
- the reference: the same POSIT step written the straightforward way, a dense batch, X_b·U by a
  dense product, autograd through U (its diagonal masked) and `torch.optim.SGD` with its default
  kernel; its validation pass scores dense fold-in rows by a dense product and ranks by `topk`.

Each part builds its own U and frees it before the next, so the machine's drift hits all alike and
the peak memory of each is its own. The figures are medians over all rounds; the ratios the current
code's step to the fused floor and to the reference. It also times X_b·U by each product kernel of
`semtail.models.itemitem` on one batch, and checks that they agree bit for bit, for choosing the
kernel of a device (PRODUCT_KERNELS). The absolute times are recorded in benchmarks/README.md.

`--training-peak` instead measures the peak memory of a whole training: `Trainer.fit()` over
`--epochs` epochs, each cut to `--steps-per-epoch` batches (an epoch's memory does not depend on its
length), with the best epoch's copy and the model it returns, and with a checkpoint as a train job
has, in a temporary folder under `--checkpoint-dir` (on the CPU it also holds the best epoch's U:
give a disk, not a memory file system such as a tmpfs /tmp). `--items` and `--batch-size` give
shapes between the paper's, for fitting the peak against the sizes of U and of a batch, and
`--max-resident-gib` stops the run before it takes more of a shared machine than that.

    .venv/bin/python benchmarks/train_benchmark.py --shape msd --device cpu --training-peak --max-resident-gib 21
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as workflow_scripts/train.py: no spinning threads

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow_scripts"))

from semtail import metrics  # noqa: E402
from semtail.metrics import ndcg_at_k  # noqa: E402
from semtail.models.base import TrainingData, TrainingRun  # noqa: E402
from semtail.models.itemitem import PRODUCT_KERNELS, predict  # noqa: E402
from semtail.models.posit import AdversarialObjective, normalise  # noqa: E402
from semtail.models.synthetic import fold_in_split, power_law_interactions  # noqa: E402
from semtail.training import (  # noqa: E402
    GRADIENT_BLOCK_BYTES,
    MOMENTUM,
    VALIDATION_BATCH_ENTRIES,
    DeviceRows,
    Trainer,
    validation_ndcg,
)

SHAPES = {
    # training users, items, positives, validation users, and the paper's POSIT settings
    "ml-20m": dict(
        users=116_677,
        items=20_108,
        positives=8_000_000,
        validation=10_000,
        posit=dict(
            lr=2.0,
            alr=1.0,
            wd=8e-6,
            nstd=1.5,
            awd=0.0,
            adversary="2bmlp2",
            signal="recall_dist",
            ones_aware=False,
            batch_size=1024,
        ),
    ),
    "msd": dict(
        users=471_355,
        items=41_140,
        positives=28_000_000,
        validation=50_000,
        posit=dict(
            lr=40.0,
            alr=0.1,
            wd=1e-5,
            nstd=0.5,
            awd=1e-5,
            adversary="2mlp2",
            signal="recall",
            ones_aware=True,
            batch_size=8192,
        ),
    ),
}
GIB = 2**30
# (part, what) of a timing -> its name in the results (those of earlier runs kept)
SAMPLE_NAMES = {
    "floor_fused_sgd_step": "floor_fused_sgd_s",
    "floor_foreach_sgd_step": "floor_foreach_sgd_s",
    "current_step": "posit_step_s",
    "current_validation": "validation_pass_s",
    "current_product_rows": "product_rows_s",
    "current_product_sparse_mm": "product_sparse_mm_s",
    "previous_step": "previous_posit_step_s",
    "previous_validation": "previous_validation_pass_s",
    "reference_step": "reference_posit_step_s",
    "reference_validation": "reference_validation_pass_s",
}


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


def needed_bytes(shape: dict, reference: bool) -> int:
    """The peak of this benchmark: U, its gradient and momentum (3 dense matrices; the reference
    adds the diagonal's mask, U masked and that product's gradient), the batch's dense tensors, the
    sparse data (twice: users × items and items × users) and scoring."""
    dense = 4 * shape["items"] ** 2
    batch = 4 * shape["posit"]["batch_size"] * shape["items"]
    return (6 if reference else 3) * dense + 8 * batch + 3 * 12 * shape["positives"] + 2**31


def training_needed_bytes(shape: dict, device: torch.device) -> int:
    """The peak of a whole training, with a margin over what was measured on the CPU
    (benchmarks/README.md: 2 D + G + 3.7 B + 1.4 to 2.5 GiB): U, its momentum and a block of the
    gradient (the best epoch's U is in its file; on a GPU the whole gradient), 5 of the batch's
    dense tensors, the sparse data (three times) and 1.5 GiB for the process and its scoring."""
    dense = 4 * shape["items"] ** 2
    batch = 4 * shape["posit"]["batch_size"] * shape["items"]
    gradient = min(dense, GRADIENT_BLOCK_BYTES) if device.type == "cpu" else dense
    return 2 * dense + gradient + 5 * batch + 3 * 12 * shape["positives"] + 3 * 2**29


def resident_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def stop_above(limit_bytes: int) -> None:
    """Exit at once (status 3) when the process's resident memory passes `limit_bytes`, polled
    every 20 ms: a measurement must not take a shared machine's last memory."""

    def watch() -> None:
        while True:
            resident = resident_bytes()
            if resident > limit_bytes:
                print(
                    f"stopped: {resident / GIB:.2f} GiB resident, above --max-resident-gib {limit_bytes / GIB:g}",
                    flush=True,
                )
                os._exit(3)
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()


def training_peak(
    data, hyperparameters, device, epochs: int, steps_per_epoch: int, memory: PeakMemory, checkpoint_dir: Path | None
) -> dict:
    """`Trainer.fit()` as a train job runs it, with a checkpoint in a temporary folder, each epoch
    cut to its first `steps_per_epoch` batches."""
    memory.reset()
    settings = {**hyperparameters, "epochs": epochs, "patience": epochs}
    with tempfile.TemporaryDirectory(prefix="train-benchmark-", dir=checkpoint_dir) as folder:
        started = time.perf_counter()
        run = TrainingRun(
            "benchmark", "posit", 0, device=device, checkpoint=Path(folder) / "checkpoint.pt", fingerprint="benchmark"
        )
        trainer = Trainer(data, settings, run, AdversarialObjective(data, settings, device))
        trainer.batches_per_epoch = min(steps_per_epoch, trainer.batches_per_epoch)
        block_rows = trainer.gradient.shape[0]
        fitted = trainer.fit()
        result = {
            "training_seconds": time.perf_counter() - started,
            "best_epoch": fitted.best_epoch,
            "gradient_block_rows": block_rows,
            **memory.read(),
        }
    del trainer, fitted
    return result


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


class PeakMemory:
    """The peak memory of one part of the run: GPU memory allocated by torch, and the host's
    resident set, whose high-water mark Linux resets on writing 5 to /proc/self/clear_refs
    (elsewhere, the whole process's peak so far)."""

    def __init__(self, device: torch.device):
        self.device = device

    def reset(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass

    def read(self) -> dict[str, float]:
        peak = {"peak_host_memory_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
        status = Path("/proc/self/status")
        if status.exists():
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak["peak_host_memory_gib"] = int(line.split()[1]) / 2**20
        if self.device.type == "cuda":
            peak["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(self.device) / GIB
        return peak


def floor_step_seconds(n_items: int, device: torch.device, repeats: int, fused: bool) -> list[float]:
    """One SGD step (momentum 0.9, weight decay) of an n × n matrix with a ready gradient."""
    weights = torch.zeros(n_items, n_items, device=device)
    weights.grad = torch.full_like(weights, 1e-3)
    optimizer = torch.optim.SGD(
        [weights], lr=1e-3, momentum=0.9, weight_decay=1e-5, **({"fused": True} if fused else {"foreach": True})
    )
    try:
        return timed(optimizer.step, device, repeats)
    finally:
        del optimizer, weights
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


class ReferencePosit:
    """POSIT's step as a plain implementation writes it: the batch as a dense tensor, x̂ = X_b·U by
    a dense product with U's diagonal masked, the losses as formulas, one backward through all of
    it, and `torch.optim.SGD` with its default kernel for both players. The adversary and the
    accumulators are the project's (they are item-sized, not U-sized); the recall signal takes the
    k slots of `topk`, as the authors' code does."""

    def __init__(self, data: TrainingData, hyperparameters: dict, device: torch.device):
        h = hyperparameters
        self.h = h
        n_items = data.n_items
        self.objective = AdversarialObjective(data, h, device).to(device)
        self.objective.initialize(torch.Generator().manual_seed(0))
        self.U = torch.zeros(n_items, n_items, device=device, requires_grad=True)
        self.off_diagonal = 1 - torch.eye(n_items, device=device)
        self.optimizer = torch.optim.SGD(
            [
                {"params": [self.U], "lr": h["lr"], "momentum": MOMENTUM, "weight_decay": h["wd"]},
                {"params": list(self.objective.adversary.parameters()), "lr": h["alr"], "weight_decay": h["awd"]},
            ],
            lr=h["lr"],
        )

    def step(self, rows: torch.Tensor) -> None:
        h, objective = self.h, self.objective
        interactions = rows.to_dense()
        predictions = interactions @ (self.U * self.off_diagonal)
        per_item = 1000 * ((predictions - interactions) ** 2).mean(dim=0)
        learner = h["lam"] * (objective.learner_weights * per_item).mean()
        weights = normalise(objective.adversary(objective.columns))
        objective.learner_weights = weights.detach()
        with torch.no_grad():
            k = min(h["k"], predictions.shape[1])
            slots = predictions.topk(k, dim=1).indices
            hits = interactions.gather(1, slots)
            if h["signal"] == "recall_dist":
                hits = hits / interactions.sum(dim=1, keepdim=True).clamp(min=1, max=k)
            recalled = torch.zeros(predictions.shape[1], device=predictions.device).index_add_(
                0, slots.flatten(), hits.flatten()
            )
            counts = interactions.sum(dim=0) if h["ones_aware"] else torch.full_like(recalled, len(interactions))
            objective.S.mul_(h["signal_momentum"]).sub_(recalled)
            objective.C.mul_(h["signal_momentum"]).add_(counts)
            advantage = objective.S / objective.C
            advantage = advantage / advantage.abs().mean()
        adversary_loss = -(weights * advantage).mean()
        self.optimizer.zero_grad()
        (learner + adversary_loss).backward()
        self.optimizer.step()

    @torch.no_grad()
    def validation_ndcg(self, fold_in: DeviceRows, heldout: DeviceRows, k: int = 100) -> float:
        rows_per_batch = max(1, VALIDATION_BATCH_ENTRIES // fold_in.n_cols)
        total, counted = 0.0, 0
        discounts = 1 / torch.log2(torch.arange(2, k + 2, dtype=torch.float32, device=self.U.device))
        for start in range(0, fold_in.n_rows, rows_per_batch):
            stop = min(start + rows_per_batch, fold_in.n_rows)
            seen, relevant = fold_in.rows(start, stop).to_dense(), heldout.rows(start, stop).to_dense()
            scores = (seen @ self.U).masked_fill(seen > 0, -math.inf)
            hits = relevant.gather(1, scores.topk(k, dim=1).indices)
            ideal = torch.cumsum(discounts, 0)[relevant.sum(dim=1).clamp(min=1, max=k).long() - 1]
            ndcg = (hits * discounts).sum(dim=1) / ideal
            has_heldout = relevant.sum(dim=1) > 0
            total += ndcg[has_heldout].double().sum().item()
            counted += int(has_heldout.sum())
        return total / counted


def previous_validation_ndcg(matrix: torch.Tensor, fold_in: DeviceRows, heldout: DeviceRows, k: int = 100) -> float:
    """`validation_ndcg` as it was before 2026-12-02's changes, for comparison: X·U by
    torch.sparse.mm, every row through the tie rule (cumulative sums over the tied items) rather
    than only the rows tied across the cut, and the fold-in and held-out masks as float copies."""
    rows_per_batch = max(1, VALIDATION_BATCH_ENTRIES // fold_in.n_cols)
    total = torch.zeros((), dtype=torch.float64, device=matrix.device)
    counted = torch.zeros((), dtype=torch.long, device=matrix.device)
    for start in range(0, fold_in.n_rows, rows_per_batch):
        stop = min(start + rows_per_batch, fold_in.n_rows)
        rows = fold_in.rows(start, stop)
        excluded = rows.to_dense().bool()
        scores = predict(rows, matrix, "sparse_mm").masked_fill(excluded, -math.inf)
        if torch.isnan(scores).any():
            raise ValueError("cannot rank NaN scores")
        indices = metrics._tied_at_the_cut(scores, excluded, scores.topk(k, dim=1).values[:, -1:], k)
        indices = indices.gather(1, scores.gather(1, indices).sort(dim=1, descending=True, stable=True).indices)
        top = indices.gather(1, excluded.gather(1, indices).byte().sort(dim=1, stable=True).indices)
        per_user = ndcg_at_k(top, heldout.rows(start, stop).to_dense(), k)
        valid = ~per_user.isnan()
        total += per_user[valid].double().sum()
        counted += valid.sum()
    return (total / counted).item()


def synthetic_data(shape: dict) -> TrainingData:
    n_users = shape["users"] + shape["validation"]
    per_user = shape["positives"] / shape["users"]
    for _ in range(3):  # duplicates are dropped: draw more until the training part has the positives asked for
        everyone = power_law_interactions(n_users, shape["items"], per_user, exponent=1.0, seed=0)
        found = everyone[: shape["users"]].nnz
        if found >= 0.98 * shape["positives"]:
            break
        per_user *= shape["positives"] / found
    fold_in, heldout = fold_in_split(everyone[shape["users"] :], seed=1)
    return TrainingData(train=everyone[: shape["users"]].tocsr(), validation_tr=fold_in, validation_te=heldout)


def batches(rows: DeviceRows, batch: int, generator: torch.Generator, device: torch.device):
    """Consecutive batches of one shuffled copy of the training rows, as training takes them."""
    shuffled = rows.permuted(torch.randperm(rows.n_rows, generator=generator).to(device))
    for start in range(0, shuffled.n_rows - batch + 1, batch):
        yield shuffled.rows(start, start + batch)


def time_current(
    data, hyperparameters, device, repeats, validation_repeats, memory: PeakMemory, validation_pass=validation_ndcg
) -> dict:
    """`Trainer.step` and a validation pass; with the current pass, also X_b·U by each kernel."""
    memory.reset()
    trainer = Trainer(
        data,
        hyperparameters,
        TrainingRun("benchmark", "posit", 0, device=device),
        AdversarialObjective(data, hyperparameters, device),
    )
    batch = batches(trainer.train_rows, hyperparameters["batch_size"], trainer.generator, device)
    loss_sums: dict = {}
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    steps = timed(lambda: trainer.step(next(batch), loss_sums, nonfinite), device, repeats, warmup=2)
    rows = trainer.validation_fold_in, trainer.validation_heldout
    validation = timed(lambda: validation_pass(trainer.U, *rows), device, validation_repeats)
    result = {"step": steps, "validation": validation}
    if validation_pass is validation_ndcg:
        products = next(batch)
        for kernel in ("rows", "sparse_mm"):
            result[f"product_{kernel}"] = timed(
                lambda kernel=kernel: predict(products, trainer.U, kernel), device, repeats
            )
        result["products_identical"] = torch.equal(
            predict(products, trainer.U, "rows"), predict(products, trainer.U, "sparse_mm")
        )
    else:
        result["validation_agrees"] = validation_ndcg(trainer.U, *rows) == validation_pass(trainer.U, *rows)
    result.update(memory.read())
    return result


def time_previous(data, hyperparameters, device, repeats, validation_repeats, memory: PeakMemory) -> dict:
    """The step with X_b·U by torch.sparse.mm, and `previous_validation_ndcg`."""
    kernel = PRODUCT_KERNELS.get(device.type)
    PRODUCT_KERNELS[device.type] = "sparse_mm"
    try:
        return time_current(
            data, hyperparameters, device, repeats, validation_repeats, memory, validation_pass=previous_validation_ndcg
        )
    finally:
        PRODUCT_KERNELS[device.type] = kernel


def time_reference(data, hyperparameters, device, repeats, validation_repeats, memory: PeakMemory) -> dict:
    memory.reset()
    reference = ReferencePosit(data, hyperparameters, device)
    train_rows = DeviceRows.from_scipy(data.train, device)
    fold_in, heldout = (
        DeviceRows.from_scipy(data.validation_tr, device),
        DeviceRows.from_scipy(data.validation_te, device),
    )
    batch = batches(train_rows, hyperparameters["batch_size"], torch.Generator().manual_seed(0), device)
    steps = timed(lambda: reference.step(next(batch)), device, repeats, warmup=1)
    validation = timed(lambda: reference.validation_ndcg(fold_in, heldout), device, validation_repeats, warmup=0)
    result = {"step": steps, "validation": validation, **memory.read()}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="ml-20m")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per part and round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of floors, current code and reference")
    parser.add_argument(
        "--reference-repeats", type=int, default=None, help="timed reference steps (default: --repeats)"
    )
    parser.add_argument("--no-reference", action="store_true", help="leave the reference implementation out")
    parser.add_argument("--no-previous", action="store_true", help="leave the previous code out")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--training-peak", action="store_true", help="measure the peak memory of a whole training instead"
    )
    parser.add_argument("--epochs", type=int, default=2, help="with --training-peak: epochs")
    parser.add_argument("--steps-per-epoch", type=int, default=2, help="with --training-peak: batches per epoch")
    parser.add_argument("--items", type=int, help="with --training-peak: items instead of the shape's")
    parser.add_argument("--batch-size", type=int, help="with --training-peak: users per batch instead of the shape's")
    parser.add_argument("--max-resident-gib", type=float, help="exit as soon as the process holds more than this")
    parser.add_argument(
        "--checkpoint-dir",
        type=Path,
        help="with --training-peak: where the checkpoint's temporary folder goes (default: the system's temporary folder)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.max_resident_gib:
        stop_above(int(args.max_resident_gib * GIB))
    device = torch.device(args.device)
    shape = SHAPES[args.shape]
    if args.training_peak:
        shape = {
            **shape,
            "items": args.items or shape["items"],
            "posit": {**shape["posit"], "batch_size": args.batch_size or shape["posit"]["batch_size"]},
        }
    need = training_needed_bytes(shape, device) if args.training_peak else needed_bytes(shape, not args.no_reference)
    have = available_bytes(device)
    if need > have:
        print(
            f"{args.shape}: needs about {need / GIB:.1f} GiB on {device}, {have / GIB:.1f} GiB are available; "
            "not run. (The MSD shape needs a GPU or a large-memory host"
            + (
                "; --items and --batch-size measure smaller shapes.)"
                if args.training_peak
                else "; --no-reference needs less.)"
            )
        )
        return

    results = {
        "shape": args.shape,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "product_kernel": PRODUCT_KERNELS.get(device.type, "sparse_mm"),
    }
    if device.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name(device)
    n_items = shape["items"]
    print(
        f"{args.shape}: {shape['users']:,} users x {n_items:,} items, about {shape['positives']:,} positives, on {device}"
    )
    started = time.perf_counter()
    data = synthetic_data(shape)
    results["positives"] = int(data.train.nnz)
    print(f"  synthetic data: {data.train.nnz:,} positives ({time.perf_counter() - started:.0f} s)")

    hyperparameters = {
        **shape["posit"],
        "epochs": 50,
        "patience": 10,
        "drop_last": True,
        "lam": 1.0,
        "k": 100,
        "signal_momentum": 0.9,
        "ties": "topk",
        "adversary_init": "authors",
    }
    memory = PeakMemory(device)
    if args.training_peak:
        measured = training_peak(
            data, hyperparameters, device, args.epochs, args.steps_per_epoch, memory, args.checkpoint_dir
        )
        results.update(measured, batch_size=hyperparameters["batch_size"], items=n_items)
        dense, batch = 4 * n_items**2 / GIB, 4 * hyperparameters["batch_size"] * n_items / GIB
        results.update(dense_gib=dense, batch_dense_gib=batch, estimated_gib=need / GIB)
        peak = results.get("peak_gpu_memory_gib", results["peak_host_memory_gib"])
        print(
            f"  training, {args.epochs} epochs of {args.steps_per_epoch} batches of {hyperparameters['batch_size']}: "
            f"{measured['training_seconds']:.0f} s; gradient blocks of {measured['gradient_block_rows']} rows"
        )
        print(f"  U: D = {dense:.3f} GiB, one dense batch tensor B = {batch:.3f} GiB")
        print(
            f"  peak memory {peak:.2f} GiB = 2 D + {peak - 2 * dense:.2f} GiB (estimated beforehand: {need / GIB:.2f} GiB)"
        )
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
        return
    validation_repeats = max(1, args.repeats // 2)
    samples: dict[str, list] = {}
    peaks: dict[str, dict] = {}
    for round_ in range(1, args.rounds + 1):
        parts = {
            "floor_fused_sgd": lambda: {"step": floor_step_seconds(n_items, device, args.repeats, fused=True)},
            "floor_foreach_sgd": lambda: {"step": floor_step_seconds(n_items, device, args.repeats, fused=False)},
            "current": lambda: time_current(data, hyperparameters, device, args.repeats, validation_repeats, memory),
        }
        if not args.no_previous:
            parts["previous"] = lambda: time_previous(
                data, hyperparameters, device, args.repeats, validation_repeats, memory
            )
        if not args.no_reference:
            parts["reference"] = lambda: time_reference(
                data, hyperparameters, device, args.reference_repeats or args.repeats, 1, memory
            )
        for name, part in parts.items():
            measured = part()
            gc.collect()
            for key, value in measured.items():
                if isinstance(value, list):
                    samples.setdefault(f"{name}_{key}", []).extend(value)
                elif key.startswith("peak_"):
                    peaks.setdefault(name, {})[key] = max(value, peaks.get(name, {}).get(key, 0.0))
                else:
                    results[f"{name}_{key}"] = value
            times = ", ".join(
                f"{key} {statistics.median(v) * 1e3:.1f} ms" for key, v in measured.items() if isinstance(v, list)
            )
            print(f"  round {round_}, {name}: {times}")

    for key, values in samples.items():
        results[SAMPLE_NAMES[key]] = statistics.median(values)
    for name, peak in peaks.items():  # the current code's peaks keep the names of earlier runs
        results.update({(key if name == "current" else f"{name}_{key}"): value for key, value in peak.items()})
    results["products_identical"] = results.pop("current_products_identical")
    if "previous_validation_agrees" in results:
        results["previous_validation_agrees"] = bool(results["previous_validation_agrees"])
    step, floor = results["posit_step_s"], results["floor_fused_sgd_s"]
    results["ratio_to_fused_floor"] = step / floor
    results["ratio_to_foreach_floor"] = step / results["floor_foreach_sgd_s"]
    batch = hyperparameters["batch_size"]
    print(f"medians over {args.rounds} rounds:")
    print(
        f"  floor, one SGD step of U:            {floor * 1e3:9.1f} ms fused, {results['floor_foreach_sgd_s'] * 1e3:.1f} ms foreach"
    )
    print(f"  one POSIT step (batch {batch}), current: {step * 1e3:9.1f} ms")
    print(
        f"  ratio POSIT step / floor: {results['ratio_to_fused_floor']:.2f} (fused), {results['ratio_to_foreach_floor']:.2f} (foreach)"
    )
    print(
        f"  one validation pass ({shape['validation']:,} users), current: {results['validation_pass_s'] * 1e3:9.1f} ms"
    )
    print(
        f"  X_b·U on one batch: {results['product_rows_s'] * 1e3:.1f} ms by rows (embedding_bag), "
        f"{results['product_sparse_mm_s'] * 1e3:.1f} ms by sparse_mm; bit-identical: {results['products_identical']}; "
        f"this device's kernel: {results['product_kernel']}"
    )
    others = [
        name for name, left_out in (("previous", args.no_previous), ("reference", args.no_reference)) if not left_out
    ]
    for other in others:
        results[f"step_ratio_to_{other}"] = step / results[f"{other}_posit_step_s"]
        results[f"validation_ratio_to_{other}"] = results["validation_pass_s"] / results[f"{other}_validation_pass_s"]
        agrees = f"; same NDCG: {results['previous_validation_agrees']}" if other == "previous" else ""
        print(
            f"  {other} POSIT step: {results[f'{other}_posit_step_s'] * 1e3:.1f} ms, "
            f"current / {other} {results[f'step_ratio_to_{other}']:.3f}; "
            f"{other} validation pass: {results[f'{other}_validation_pass_s'] * 1e3:.1f} ms, "
            f"current / {other} {results[f'validation_ratio_to_{other}']:.3f}{agrees}"
        )
    for key in sorted(k for k in results if "peak_" in k):
        print(f"  {key.replace('_', ' ')}: {results[key]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
