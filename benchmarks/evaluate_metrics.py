"""Time of the evaluation's own work (ranking, masking, metrics, coverage) on a synthetic split.

The scores are a fixed random matrix per batch, so the model's cost is left out and what is timed is
what semtail.evaluate adds on top of scoring. Paper-sized runs: ML-20M has 10,000 test users and
20,108 items, Netflix 40,000 and 17,769, MSD 50,000 and 41,140.

    python benchmarks/evaluate_metrics.py --users 10000 --items 20108 --device cuda
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
import yaml

from semtail import evaluate as ev

PAPER = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "paper.yaml").read_text())
PAPER_EVALUATION = PAPER["evaluation"]  # each benchmark sets its own batch size


def synthetic_split(n_users: int, n_items: int, density: float, seed: int) -> ev.Split:
    rng = np.random.default_rng(seed)

    def random_rows(rows: int) -> sp.csr_matrix:
        matrix = sp.random(rows, n_items, density=density, format="csr", random_state=rng, dtype=np.float32)
        matrix.data[:] = 1.0
        return matrix

    both = random_rows(n_users)
    held = both.copy()
    held.data = (rng.random(held.nnz) < 0.2).astype(np.float32)
    held.eliminate_zeros()
    fold_in = both - held
    fold_in.eliminate_zeros()
    return ev.Split(random_rows(2 * n_users), sp.csr_matrix(fold_in), sp.csr_matrix(held))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=20108)
    parser.add_argument("--density", type=float, default=0.005)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    split = synthetic_split(args.users, args.items, args.density, seed=0)
    generator = torch.Generator(device=device).manual_seed(0)

    def score(fold_in: torch.Tensor) -> torch.Tensor:
        return torch.rand(fold_in.shape, generator=generator, device=device)

    started = time.perf_counter()
    ev.evaluate_as_configured(score, split, {**PAPER_EVALUATION, "batch_size": args.batch_size}, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "users": args.users,
                "items": args.items,
                "batch_size": args.batch_size,
                "device": str(device),
                "seconds": round(seconds, 2),
                "users_per_second": round(args.users / seconds),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                "peak_gpu_mb": torch.cuda.max_memory_allocated() // 2**20 if device.type == "cuda" else None,
            }
        )
    )


if __name__ == "__main__":
    main()
