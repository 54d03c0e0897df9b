"""Peak memory and time of one evaluation job's work per method: the method's own scorer (its
ranking included: rerank's two sorts) on a model of random values, through semtail.evaluate, on a
synthetic split. Each method runs in a process of its own, so each peak RSS is that method's alone.
What it measures fits the evaluation term of semtail/job_resources.py:resources (docs/running.md).

    python benchmarks/evaluate_memory.py --users 10000 --items 20108 --batch-size 4096 \
        --methods ease rerank post mostpop
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from semtail import evaluate as ev
from semtail import plan, registry

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from evaluate_metrics import PAPER, PAPER_EVALUATION, synthetic_split  # noqa: E402


def state_of(method: str, n_items: int) -> dict:
    """Random values in the shapes the method's declaration gives its model file's tensors."""
    generator = torch.Generator().manual_seed(0)
    shapes = registry.declaration(method).state
    return {  # scaled in place: no second copy of a matrix enters the peak
        name: torch.rand(tuple(n_items for _ in dims), generator=generator).mul_(
            1000.0 if name == "popularity" else 0.01
        )
        for name, dims in shapes.items()
    }


def measure(method: str, users: int, items: int, density: float, batch_size: int) -> dict:
    split = synthetic_split(users, items, density, seed=0)
    state = state_of(method, items)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    hyperparameters = plan.resolve_hyperparameters(PAPER, "ml-20m", method)  # the paper's, defaults included
    score = registry.method_module(method).scorer(state, hyperparameters, torch.device("cpu"))
    started = time.perf_counter()
    ev.evaluate_as_configured(score, split, {**PAPER_EVALUATION, "batch_size": batch_size}, torch.device("cpu"))
    return {
        "method": method,
        "users": users,
        "items": items,
        "batch_size": batch_size,
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb_before_scoring": before,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "dense_mb": 4 * items * items // 2**20,
        "batch_entries_mb": 4 * batch_size * items // 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10000)
    parser.add_argument("--items", type=int, default=20108)
    parser.add_argument("--density", type=float, default=0.0036)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--methods", nargs="+", default=["ease", "rerank", "post", "mostpop"])
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.methods[0], args.users, args.items, args.density, args.batch_size)))
        return
    for method in args.methods:
        command = [
            sys.executable,
            __file__,
            "--one",
            "--methods",
            method,
            "--users",
            str(args.users),
            "--items",
            str(args.items),
            "--density",
            str(args.density),
            "--batch-size",
            str(args.batch_size),
        ]
        print(subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
