"""benchmarks/wall_time_plan.py: the paper run's wall time from a rehearsal's benchmark records."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from semtail import plan

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import wall_time_plan  # noqa: E402

SGD = {"lr": 0.1, "wd": 0.0, "batch_size": 64, "patience": 2, "drop_last": True}


PREPROCESS = {"threshold": 3.5, "min_uc": 5, "min_sc": 0, "n_heldout": 10, "seed": 98765, "test_prop": 0.2}


def test_plan_scales_epochs_and_seeds_and_takes_the_longest_chain(tmp_path, monkeypatch):
    """ease: 300 s of which 2 epochs of 10 s; the paper's 50 epochs make 300 - 20 + 50 * 10 = 780 s,
    and 3 seeds of (780 + 60) + 3 of rerank's (30 + 90), plus download, preprocessing and tables
    (60 + 120 + 10 + 20): 3,090 s with one worker. Rerank's chain waits for ease's training:
    180 + 780 + 30 + 90 + 30 = 1,110 s, the bound with 8 workers (3,090 / 8 is less)."""
    rehearsal = {
        "experiment": "rehearsal",
        "seeds": [0],
        "methods": ["ease", "rerank"],
        "datasets": {"toy-shape": {"sources": [], "preprocess": PREPROCESS}},
        "hyperparameters": {"ease": {**SGD, "epochs": 2}, "rerank": {"base": "ease", "high": 0.2, "low": 0.1}},
    }
    paper = {
        **rehearsal,
        "seeds": [0, 1, 2],
        "datasets": {"toy": {"sources": [], "preprocess": PREPROCESS}},
        "hyperparameters": {**rehearsal["hyperparameters"], "ease": {**SGD, "epochs": 50}},
    }
    seconds = {
        ("download", None): 60,
        ("preprocess", None): 120,
        ("train", "ease"): 300,
        ("evaluate", "ease"): 60,
        ("train", "rerank"): 30,
        ("evaluate", "rerank"): 90,
        ("aggregate", None): 10,
        ("plot", None): 20,
    }
    for (rule, method), s in seconds.items():
        wildcards = {
            "dataset": "toy-shape",
            "split": plan.split_key(rehearsal, "toy-shape"),
            **({"method": method, "run": "seed0"} if method else {}),
        }
        path = tmp_path / plan.benchmark_pattern(rehearsal, rule).format(**wildcards)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"s": s, "max_rss": 100.0 * s, "rule_name": rule, "wildcards": wildcards, "resources": {"mem_mb": 1}}
        # An evaluation reads its run's model file, and a run on a base (rerank, post) its base's too.
        own = f"{plan.run_dir(rehearsal, 'toy-shape', method, 0)}/model.pt" if method else None
        base = (
            {f"{plan.run_dir(rehearsal, 'toy-shape', 'ease', 0)}/model.pt": 99.0}
            if method in ("rerank", "post")
            else {}
        )
        record["input_size_mb"] = {**base, own: 15.0} if rule == "evaluate" else {}
        path.write_text(json.dumps(record) + "\n")
    monkeypatch.setattr(
        wall_time_plan, "epoch_seconds", lambda root, config, dataset, name: (10.0, 20.0) if name == "ease" else None
    )
    text = wall_time_plan.plan_tables(rehearsal, paper, tmp_path, "a test", [1, 8])
    assert "| toy-shape | ease | 10.0 | 300 | 60 | 30,000 | 6,000 | 15 |" in text
    assert "| toy-shape | rerank | – | 30 | 90 | 3,000 | 9,000 | 15 |" in text
    assert "| toy-shape as toy | 52 min | 18 min |" in text
