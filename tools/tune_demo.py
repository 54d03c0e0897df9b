"""Choose the ML-100K demo's hyperparameters on the validation split (never the test split).

    .venv/bin/python tools/tune_demo.py                 # every method, seed 0
    .venv/bin/python tools/tune_demo.py --methods ease posit --seeds 0 1 2
    .venv/bin/python tools/tune_demo.py --methods causal post   # ease as config.yaml sets it

For each candidate it trains in-process (no model files), scores the validation users' fold-in
rows with the restored best epoch, and prints validation NDCG@100 and coverage@100 (distinct items
in the validation users' top-100 lists). The SGD learners are tuned in order: `ease` first, then
IPW, CVaR and POSIT start from ease's learning rate and weight decay (without `ease` among
--methods: config.yaml's ease); Causal's ELU′ needs larger steps, so its learning rate and weight
decay are searched with γ.
Rerank and Post work on the best `ease` model; Rerank's thresholds and Post's γ are chosen for the
largest coverage@100 among candidates within 1% (relative) of ease's NDCG@100, since NDCG alone
would pick "no re-ranking" and γ = 0. The results and choices are recorded in
docs/hyperparameters.md.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow_scripts"))

import yaml  # noqa: E402

from semtail.metrics import ndcg_at_k, rank_top_k  # noqa: E402
from semtail.models.base import Run, TrainingData  # noqa: E402
from semtail.registry import method_module  # noqa: E402
from semtail.train_job import read_training_data  # noqa: E402

K = 100
SGD = {"batch_size": 64, "epochs": 50, "patience": 10, "drop_last": False}


def grid(**axes) -> list[dict]:
    """Every combination; an axis given as a single value is held fixed."""
    names = list(axes)
    values = [axes[n] if isinstance(axes[n], list) else [axes[n]] for n in names]
    return [dict(zip(names, combination)) for combination in itertools.product(*values)]


def validation_scores(data: TrainingData, method: str, state: dict, hyperparameters: dict) -> dict:
    fold_in = torch.from_numpy(data.validation_tr.toarray())
    heldout = torch.from_numpy(data.validation_te.toarray())
    scores = method_module(method).scorer(state, hyperparameters, torch.device("cpu"))(fold_in)
    top = rank_top_k(scores, K, exclude=fold_in)
    ndcg = ndcg_at_k(top, heldout, K)
    return {"ndcg@100": ndcg[~ndcg.isnan()].mean().item(), "coverage@100": int(top.unique().numel())}


def evaluate(data: TrainingData, method: str, hyperparameters: dict, seeds: list[int], base=None) -> dict:
    results = []
    started = time.perf_counter()
    for seed in seeds:
        if base is not None:
            data.base_model = {"dataset": "ml-100k", "method": "ease", "variant": "ease", "seed": seed, "n_items": data.n_items,
                               "state": {"U": base[seed]}}  # fmt: skip
        fitted = method_module(method).fit(data, hyperparameters, Run("ml-100k", method, seed))
        results.append({**validation_scores(data, method, fitted.state, hyperparameters), "best_epoch": fitted.best_epoch,
                        "U": fitted.state.get("U")})  # fmt: skip
    mean = {key: sum(r[key] for r in results) / len(results) for key in ("ndcg@100", "coverage@100")}
    epochs = [r["best_epoch"] for r in results]
    return {**mean, "best_epochs": epochs, "seconds": time.perf_counter() - started, "U": [r["U"] for r in results]}


def report(method: str, hyperparameters: dict, result: dict) -> None:
    shown = {k: v for k, v in hyperparameters.items() if k not in SGD}
    print(
        f"{method:12s} ndcg@100 {result['ndcg@100']:.4f}  coverage@100 {result['coverage@100']:7.1f}  "
        f"best epochs {result['best_epochs']}  {result['seconds']:5.1f} s  {shown}",
        flush=True,
    )


def tune(data: TrainingData, method: str, candidates: list[dict], seeds: list[int], base=None, choose=None):
    scored = []
    for hyperparameters in candidates:
        result = evaluate(data, method, hyperparameters, seeds, base)
        report(method, hyperparameters, result)
        scored.append((hyperparameters, result))
    best = (choose or (lambda items: max(items, key=lambda item: item[1]["ndcg@100"])))(scored)
    print(f"--> {method}: {best[0]}\n", flush=True)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default=str(ROOT / "data/processed/ml-100k"))
    parser.add_argument("--methods", nargs="+", default=["ease_closed", "ease", "ipw", "cvar", "posit", "causal", "rerank", "post"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    data = read_training_data({name: f"{args.split}/{name}.npz" for name in ("train", "validation_tr", "validation_te")})
    print(f"ML-100K split: {data.n_train_users} training users, {data.n_items} items, "
          f"{data.validation_tr.shape[0]} validation users; seeds {args.seeds}\n")  # fmt: skip

    chosen = {}
    if "ease_closed" in args.methods:
        chosen["ease_closed"] = tune(data, "ease_closed", grid(l2=[25.0, 50.0, 100.0, 200.0, 400.0, 800.0]), [0])
    if "ease" in args.methods:
        ease_candidates = grid(lr=[0.0005, 0.001, 0.002, 0.005, 0.01], wd=[1e-3, 0.1, 0.3, 1.0], **SGD)
        ease_best, ease_result = chosen["ease"] = tune(data, "ease", ease_candidates, args.seeds)
        learner = {"lr": ease_best["lr"], "wd": ease_best["wd"], **SGD}
    else:
        learner = yaml.safe_load((ROOT / "config.yaml").read_text())["hyperparameters"]["ease"]
        ease_best, ease_result = tune(data, "ease", [learner], args.seeds)
    floor = 0.99 * ease_result["ndcg@100"]
    base = dict(zip(args.seeds, ease_result["U"]))

    def most_coverage(items):
        eligible = [item for item in items if item[1]["ndcg@100"] >= floor]
        if not eligible:  # none close enough to ease: the least harmful
            return max(items, key=lambda item: item[1]["ndcg@100"])
        return max(eligible, key=lambda item: (item[1]["coverage@100"], item[1]["ndcg@100"]))

    if "ipw" in args.methods:
        candidates = grid(**learner, lam=1.0, alpha=[0.001, 0.002, 0.003, 0.005, 0.01])
        chosen["ipw"] = tune(data, "ipw", candidates, args.seeds)
    if "cvar" in args.methods:
        candidates = grid(**learner, lam=1.0, beta=[0.1, 0.3, 0.5, 0.8], alr=[1e-6, 1e-5, 1e-4])
        chosen["cvar"] = tune(data, "cvar", candidates, args.seeds)
    if "posit" in args.methods:
        candidates = grid(
            **learner, lam=1.0, alr=[0.1, 1.0], nstd=[0.25, 0.5, 1.0, 1.5], awd=0.0,
            adversary=["2mlp2", "2bmlp2", "2mlp50"], signal=["recall_dist", "recall"], ones_aware=False, k=100,
            signal_momentum=0.9, ties="share", adversary_init="authors",
        )  # fmt: skip
        chosen["posit"] = tune(data, "posit", candidates, args.seeds)
    if "causal" in args.methods:
        candidates = grid(**{**learner, "lr": [0.002, 0.005, 0.01, 0.02, 0.05, 0.1], "wd": [0.01, 0.1, 0.3]}, gamma=[0.0, 0.02, 0.05, 0.1])
        chosen["causal"] = tune(data, "causal", candidates, args.seeds)
    if "post" in args.methods:
        candidates = grid(base="ease", gamma=[0.0, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1])
        chosen["post"] = tune(data, "post", candidates, args.seeds, base=base, choose=most_coverage)
    if "rerank" in args.methods:
        thresholds = grid(base="ease", high=[0.2, 0.3, 0.4, 0.5, 0.7], low=[0.05, 0.1, 0.15, 0.2, 0.25, 0.3])
        candidates = [c for c in thresholds if c["high"] > c["low"]]
        chosen["rerank"] = tune(data, "rerank", candidates, args.seeds, base=base, choose=most_coverage)
    print("chosen:")
    for method, (hyperparameters, result) in chosen.items():
        print(f"  {method}: {hyperparameters}  (ndcg@100 {result['ndcg@100']:.4f}, coverage@100 {result['coverage@100']:.1f})")


if __name__ == "__main__":
    main()
