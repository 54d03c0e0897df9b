"""The summary and paper-comparison tables, on hand-made metric JSONs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from semtail import tables
from workflow_runs import AGGREGATE_OUTPUTS, output_args

ROOT = Path(__file__).resolve().parents[1]
PAPER_KEYS = (
    [f"coverage_unmasked@{k}" for k in (100, 50, 20)]
    + ["ndcg@100"]
    + [f"{m}@{k}" for m in ("recall", "item_recall") for k in (100, 50, 20)]
)


def write_run(folder: Path, dataset, method, seed, metrics) -> Path:
    path = folder / dataset / method / f"seed{seed}" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"dataset": dataset, "method": method, "variant": method, "seed": seed, "metrics": metrics})
    )
    return path


def metrics_with(**values):
    base = {key: 0.5 for key in PAPER_KEYS + ["coverage@100", "gini@100", "arp@100"]}
    base.update({k.replace("_at_", "@"): v for k, v in values.items()})
    return base


@pytest.fixture
def ml20m_runs(tmp_path):
    """posit with seeds 0, 1, 2 and mostpop with seed 0 only."""
    paths = [
        write_run(tmp_path, "ml-20m", "posit", 0, metrics_with(ndcg_at_100=0.42, coverage_unmasked_at_100=1800.0)),
        write_run(tmp_path, "ml-20m", "posit", 1, metrics_with(ndcg_at_100=0.44, coverage_unmasked_at_100=1790.0)),
        write_run(tmp_path, "ml-20m", "posit", 2, metrics_with(ndcg_at_100=0.43, coverage_unmasked_at_100=1795.0)),
        write_run(tmp_path, "ml-20m", "mostpop", 0, metrics_with(ndcg_at_100=0.19, coverage_unmasked_at_100=100.0)),
    ]
    return paths


def test_summary_means_and_sample_standard_deviations(ml20m_runs):
    summary = tables.summarise(tables.load_runs(ml20m_runs, "ml-20m"))
    assert summary["method"].tolist() == ["posit", "mostpop"]  # order of first appearance
    posit = summary.set_index("method").loc["posit"]
    assert posit["n_seeds"] == 3 and posit["seeds"] == "0 1 2"
    assert posit["ndcg@100_mean"] == pytest.approx(0.43)
    # sample SD of 0.42, 0.44, 0.43: sqrt(((-.01)^2 + .01^2 + 0) / 2) = 0.01
    assert posit["ndcg@100_std"] == pytest.approx(0.01)
    assert posit["coverage_unmasked@100_std"] == pytest.approx(5.0)
    identical = tables.summarise(
        tables.load_runs(
            [
                write_run(ml20m_runs[0].parents[3] / "same", "ml-20m", "mostpop", s, metrics_with(hit_rate_at_100=0.97))
                for s in (0, 1, 2)
            ]
        )
    )
    assert identical["hit_rate@100_std"].item() == 0.0 and identical["hit_rate@100_mean"].item() == pytest.approx(0.97)
    mostpop = summary.set_index("method").loc["mostpop"]
    assert mostpop["n_seeds"] == 1 and math.isnan(mostpop["ndcg@100_std"])

    text = tables.summary_markdown(summary, "ml-20m")
    assert "| posit | 3 |" in text and "0.4300 ± 0.0100" in text and "1795.0 ± 5.0" in text
    assert "| mostpop | 1 |" in text and "0.1900 |" in text


def test_comparison_puts_reported_values_beside_ours(ml20m_runs):
    summary = tables.summarise(tables.load_runs(ml20m_runs, "ml-20m"))
    reported = tables.load_reported()
    comparison, notes = tables.paper_comparison(summary, "ml-20m", reported)
    rows = comparison.set_index(["method", "metric"])
    coverage = rows.loc[("posit", "Coverage@100")]
    assert coverage["our_metric"] == "coverage_unmasked@100"
    assert coverage["reported"] == 1793 and coverage["reported_std"] == 10
    assert coverage["difference"] == pytest.approx(1795 - 1793)
    assert coverage["difference_in_reported_std"] == pytest.approx(0.2)
    ndcg = rows.loc[("mostpop", "NDCG@100")]
    assert ndcg["reported"] == pytest.approx(0.1905) and ndcg["difference"] == pytest.approx(0.19 - 0.1905)
    assert len(comparison) == 2 * 10  # two of our methods, ten reported columns each
    assert any("IPW" in note for note in notes)  # reported, but not run here

    text = tables.comparison_markdown(comparison, "ml-20m", reported, notes)
    assert "coverage_unmasked@k" in text and "github.com/qiulingxu/POSIT" in text
    assert "| posit | Coverage@100 | 1795.0 ± 5.0 (3) | 1793.0 ± 10.0 | +2.0 | +0.2 |" in text


def test_closed_form_ease_is_held_against_steck(tmp_path):
    paths = [
        write_run(tmp_path, "netflix", "ease_closed", s, metrics_with(ndcg_at_100=0.392 + s / 1000)) for s in (0, 1)
    ]
    summary = tables.summarise(tables.load_runs(paths))
    comparison, _ = tables.paper_comparison(summary, "netflix", tables.load_reported())
    row = comparison.set_index("metric").loc["NDCG@100"]
    assert row["reported_as"] == "EASE" and row["reported"] == pytest.approx(0.393)
    assert row["difference"] == pytest.approx(0.3925 - 0.393)
    assert math.isnan(row["difference_in_reported_std"])  # Steck reports no SDs
    assert "arxiv.org/abs/1905.03375" in row["source"]


def test_a_dataset_the_paper_does_not_report_gets_an_empty_table_and_a_statement(tmp_path):
    paths = [write_run(tmp_path, "ml-100k", "posit", 0, metrics_with())]
    summary = tables.summarise(tables.load_runs(paths))
    reported = tables.load_reported()
    comparison, notes = tables.paper_comparison(summary, "ml-100k", reported)
    assert comparison.empty and notes == [] and list(comparison.columns) == tables.COMPARISON_COLUMNS
    text = tables.comparison_markdown(comparison, "ml-100k", reported, notes)
    assert "reports no results for ml-100k" in text and "|" not in text


def test_reported_file_matches_the_papers_table():
    reported = tables.load_reported()
    posit = reported["posit"]
    columns = list(posit["metrics"])
    msd_ipw = dict(zip(columns, posit["datasets"]["msd"]["results"]["IPW"]))
    assert msd_ipw["Coverage@20"] == 1626 and msd_ipw["Item Recall@100"] == pytest.approx(0.2464)
    assert dict(zip(columns, posit["datasets"]["netflix"]["std"]))["Coverage@100"] == 6
    assert posit["metrics"]["Coverage@50"] == "coverage_unmasked@50"


def test_reported_rows_of_causal_and_post_and_their_flags():
    posit = tables.load_reported()["posit"]
    columns = list(posit["metrics"])
    netflix = {row: dict(zip(columns, values)) for row, values in posit["datasets"]["netflix"]["results"].items()}
    assert netflix["Causal"]["Item Recall@50"] > netflix["Causal"]["Item Recall@100"]  # why it is flagged
    assert "Causal" not in posit["datasets"]["msd"]["results"] and posit["methods"]["Post"] == "post"
    ml20m_post = dict(zip(columns, posit["datasets"]["ml-20m"]["results"]["Post"]))
    netflix_post = netflix["Post"]
    copied = [c for c in columns if ml20m_post[c] == netflix_post[c]]
    assert copied == ["NDCG@100", "Recall@100", "Recall@50"]
    flagged = {(flag["row"], m) for flag in posit["datasets"]["ml-20m"]["flags"] for m in flag["metrics"]}
    assert {("Post", c) for c in copied} <= flagged


def test_flagged_reported_values_are_marked_in_the_comparison(tmp_path):
    paths = [write_run(tmp_path, "netflix", name, 0, metrics_with()) for name in ("causal", "post", "ease")]
    summary = tables.summarise(tables.load_runs(paths))
    reported = tables.load_reported()
    comparison, notes = tables.paper_comparison(summary, "netflix", reported)
    rows = comparison.set_index(["method", "metric"])
    assert "above Causal's own Item Recall@100" in rows.loc[("causal", "Item Recall@50"), "flag"]
    assert "ML-20M Post" in rows.loc[("post", "NDCG@100"), "flag"]
    assert rows.loc[("causal", "NDCG@100"), "flag"] == "" and rows.loc[("ease", "Recall@50"), "flag"] == ""
    text = tables.comparison_markdown(comparison, "netflix", reported, notes)
    assert "| causal | Item Recall@50 | 0.5000 (1) | 0.0468 ± 0.0004 [1] |" in text
    assert "| post | NDCG@100 | 0.5000 (1) | 0.3927 ± 0.0009 [2] |" in text
    assert "1. Equal to Netflix Post's Item Recall@50" in text and "2. Equal to ML-20M Post's values" in text
    assert text.count("[1]") == 2 and text.count("[2]") == 3  # one note per reason, numbered in table order


def test_bad_inputs_are_named(tmp_path):
    a = write_run(tmp_path, "ml-20m", "posit", 0, metrics_with())
    with pytest.raises(ValueError, match="both posit seed 0"):
        tables.load_runs([a, a])
    b = write_run(tmp_path / "other", "ml-20m", "ipw", 0, {"ndcg@100": 0.4})
    with pytest.raises(ValueError, match="different metrics"):
        tables.load_runs([a, b])
    with pytest.raises(ValueError, match="expected 'netflix'"):
        tables.load_runs([a], "netflix")
    bad = tmp_path / "bad.json"
    bad.write_text('{"dataset": "ml-20m"}')
    with pytest.raises(ValueError, match="bad.json: no 'variant'"):
        tables.load_runs([bad])
    broken = tmp_path / "paper.yaml"
    broken.write_text("x:\n  metrics: {A: a, B: b}\n  methods: {M: m}\n  datasets: {d: {results: {M: [1]}}}\n")
    with pytest.raises(ValueError, match="must have 2 values"):
        tables.load_reported(broken)
    broken.write_text(
        "x:\n  metrics: {A: a}\n  methods: {M: m}\n"
        "  datasets: {d: {results: {M: [1]}, flags: [{row: M, metrics: [B], reason: r}]}}\n"
    )
    with pytest.raises(ValueError, match=r"x.datasets.d.flags: M \['B'\] are not reported"):
        tables.load_reported(broken)


def test_aggregate_script_end_to_end(tmp_path, ml20m_runs):
    out = tmp_path / "out"
    per_user, topk = [], []
    for path in ml20m_runs:  # mostpop's users score 0.1 below posit's
        ndcg = [0.3, 0.5, 0.7, 0.4] if "posit" in str(path) else [0.2, 0.4, 0.6, 0.3]
        per_user.append(path.with_name("per_user.csv"))
        pd.DataFrame({"user": ["7", "8", "9", "10"], "n_heldout": 3, "ndcg@100": ndcg}).to_csv(
            per_user[-1], index=False
        )
        topk.append(path.with_name("topk.npz"))
        np.savez(topk[-1], top_k=np.arange(8, dtype=np.int32).reshape(4, 2))
    command = [
        sys.executable,
        str(ROOT / "workflow_scripts/aggregate.py"),
        "--input",
        "metrics=" + ",".join(map(str, ml20m_runs)),
        "--input",
        "per_user=" + ",".join(map(str, per_user)),
        "--input",
        "topk=" + ",".join(map(str, topk)),
        "--param",
        "dataset=ml-20m",
        "--param",
        "compare={reference: posit, alpha: 0.05, bootstrap_samples: 100, bootstrap_seed: 0}",
        *output_args(AGGREGATE_OUTPUTS, out),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    summary = pd.read_csv(out / "summary_csv")
    assert summary.loc[summary["method"] == "posit", "ndcg@100_mean"].item() == pytest.approx(0.43)
    comparison = pd.read_csv(out / "comparison_csv")
    assert set(comparison["method"]) == {"posit", "mostpop"}
    assert (out / "comparison_md").read_text().startswith("# ml-20m")
    assert r"\begin{tabular}" in (out / "comparison_tex").read_text()
    significance = pd.read_csv(out / "significance_csv")
    assert significance[["method", "reference", "metric", "n_users"]].values.tolist() == [
        ["mostpop", "posit", "ndcg@100", 4]
    ]
    assert significance["mean_difference"].item() == pytest.approx(-0.1)
    # mostpop's single run against posit's three seeds, each user 0.1 below in every one
    assert significance[["paired_seeds", "seeds_agree", "significant"]].values.tolist() == [[3, True, False]]
    assert significance["p_seeds"].item() == 0.0  # the same difference in every seed: t is infinite
    assert "## Significance against posit" in (out / "summary_md").read_text()


def adversary_model(variant, seed, best_epoch, epochs):
    """A metric JSON's fields that the adversary table reads; epochs: (weight share, weight change) per epoch."""
    history = [
        {"epoch": epoch, "weight_share_least_popular_half": share, "weight_change": change}
        for epoch, (share, change) in enumerate(epochs, start=1)
    ]
    return {"variant": variant, "seed": seed, "model": {"best_epoch": best_epoch, "history": history}}


def test_adversary_table_by_hand():
    models = [
        adversary_model("posit", 0, 2, [(0.40, 0.5), (0.45, 0.02), (0.47, 0.04)]),
        adversary_model("posit", 1, 3, [(0.42, 0.6), (0.44, 0.01), (0.49, 0.03)]),
        adversary_model("posit_share", 0, 1, [(0.50, 0.3)]),
    ]
    history = tables.adversary_history(models)
    assert len(history) == 7 and history["best"].sum() == 3
    summary = pd.DataFrame(
        [
            {
                "method": m,
                "n_seeds": n,
                "ndcg@100_mean": ndcg,
                "ndcg@100_std": ndcg_std,
                "coverage@100_mean": cov,
                "coverage@100_std": cov_std,
            }
            for m, n, ndcg, ndcg_std, cov, cov_std in [
                ("posit", 2, 0.43, 0.01, 1795.0, 5.0),
                ("posit_share", 1, 0.41, math.nan, 1700.0, math.nan),
                ("ease", 1, 0.40, math.nan, 900.0, math.nan),
            ]
        ]
    )
    table = tables.adversary_table(summary, history).set_index("method")
    # posit: the share at the best epoch is 0.45 (seed 0) and 0.49 (seed 1); the mean weight change
    # after epoch 1 is (0.02 + 0.04) / 2 = 0.03 and (0.01 + 0.03) / 2 = 0.02. Sample SDs: |a − b| / √2.
    posit = table.loc["posit"]
    assert posit["tail_share_mean"] == pytest.approx(0.47) and posit["tail_share_std"] == pytest.approx(
        0.04 / math.sqrt(2)
    )
    assert posit["weight_change_after_epoch_1_mean"] == pytest.approx(0.025)
    assert posit["weight_change_after_epoch_1_std"] == pytest.approx(0.01 / math.sqrt(2))
    assert (posit["ndcg@100_mean"], posit["coverage@100_std"]) == (0.43, 5.0)
    # one seed, one epoch: a share without SD, and no epoch after the first
    share = table.loc["posit_share"]
    assert share["tail_share_mean"] == 0.5 and math.isnan(share["tail_share_std"])
    assert math.isnan(share["weight_change_after_epoch_1_mean"])
    # no adversary
    assert all(math.isnan(table.loc["ease", key]) for key in ("tail_share_mean", "weight_change_after_epoch_1_mean"))

    text = tables.adversary_markdown(table.reset_index(), "toy")
    assert "| posit | 2 | 0.4300 ± 0.0100 | 1795.0 ± 5.0 | 0.470 ± 0.028 | 2.50e-02 ± 7.1e-03 |" in text
    assert "| posit_share | 1 | 0.4100 | 1700.0 | 0.500 | – |" in text
    assert "| ease | 1 | 0.4000 | 900.0 | – | – |" in text

    broken = adversary_model("posit", 2, 1, [(0.4, 0.1)])
    del broken["model"]["history"][0]["weight_change"]
    with pytest.raises(ValueError, match="posit seed 2: epoch 1 has no 'weight_change'"):
        tables.adversary_history([broken])
    older = adversary_model("posit", 3, 1, [(0.4, 0.1)])
    del older["model"]["history"]
    with pytest.raises(ValueError, match="posit seed 3: its metric JSON has no model history"):
        tables.adversary_history([older])


def test_metric_groups_keep_the_keys_order_and_put_the_rest_under_other():
    keys = ["gini@20", "ndcg@20", "foo@5", "coverage_unmasked@20", "item_recall@20_pos", "recall@20"]
    assert tables.metric_groups(keys) == [
        ("Accuracy", ["ndcg@20", "recall@20"]),
        ("Coverage (distinct items per block of test users)", ["coverage_unmasked@20"]),
        ("Item recall", ["item_recall@20_pos"]),
        ("Exposure", ["gini@20"]),
        ("Other", ["foo@5"]),
    ]
    assert tables.metric_groups(["ndcg@20"]) == [("Accuracy", ["ndcg@20"])]
    assert [tables.decimals_of(k) for k in ("arp@20", "coverage_unmasked@100", "item_recall@20_pos")] == [1, 1, 4]
