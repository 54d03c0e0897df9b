"""Paired tests between methods over the test users and seeds (semtail/significance.py) against brute
force, hand-computed values and scipy, and how the tables show them."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from semtail import flags, tables
from semtail import significance as sig


def exact_wilcoxon_p(differences) -> float:
    """Two-sided exact signed-rank p-value by enumerating every sign pattern (no ties, no zeros)."""
    d = np.asarray(differences, dtype=float)
    ranks = stats.rankdata(np.abs(d))
    observed = ranks[d > 0].sum()
    centre = ranks.sum() / 2
    totals = np.array([sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product([0, 1], repeat=len(d))])
    return float(np.mean(np.abs(totals - centre) >= abs(observed - centre) - 1e-12))


def normal_approximation_wilcoxon_p(differences) -> float:
    """Two-sided signed-rank p-value by the normal approximation, as scipy takes it with ties or
    zeros among more than 13 differences (no continuity correction): zeros dropped, |d| ranked
    with ties averaged, T+ the sum of the positive differences' ranks, mean n(n+1)/4, variance
    n(n+1)(2n+1)/24 − Σ(t³ − t)/48 over the tie groups of size t."""
    d = np.asarray(differences, dtype=float)
    d = d[d != 0]
    n = d.size
    values, group, sizes = np.unique(np.abs(d), return_inverse=True, return_counts=True)
    first_rank = np.cumsum(sizes) - sizes + 1
    ranks = (first_rank + (sizes - 1) / 2)[group]
    t_plus = ranks[d > 0].sum()
    variance = n * (n + 1) * (2 * n + 1) / 24 - np.sum(sizes.astype(float) ** 3 - sizes) / 48
    z = (t_plus - n * (n + 1) / 4) / math.sqrt(variance)
    return float(2 * stats.norm.sf(abs(z)))


def test_wilcoxon_matches_the_exact_distribution_and_the_normal_approximation():
    d = np.array([0.8, -0.1, 1.3, 0.45, 2.2, -0.6, 0.9, 1.7, 0.05, -0.3, 1.1, 0.7])  # no ties, no zeros
    assert sig.wilcoxon_p(d) == pytest.approx(exact_wilcoxon_p(d), rel=1e-12)
    assert sig.wilcoxon_p(-d) == pytest.approx(sig.wilcoxon_p(d), rel=1e-12)  # two-sided
    rng = np.random.default_rng(1)
    many = np.round(rng.normal(0.02, 0.1, 200), 2)  # ties and zeros: the normal approximation
    assert (many == 0).any() and np.unique(np.abs(many[many != 0])).size < np.count_nonzero(many)
    assert sig.wilcoxon_p(many) == pytest.approx(normal_approximation_wilcoxon_p(many), rel=1e-9)


def test_paired_t_test_matches_the_formula():
    rng = np.random.default_rng(2)
    reference = rng.random(40)
    values = reference + rng.normal(0.03, 0.1, 40)
    d = values - reference
    t = d.mean() / (d.std(ddof=1) / math.sqrt(d.size))
    assert sig.ttest_p(values, reference) == pytest.approx(2 * stats.t.sf(abs(t), d.size - 1), rel=1e-10)


def test_all_differences_zero_give_p_one_without_error():
    same = np.array([0.3, 0.5, 0.0, 1.0, 0.25])
    assert sig.wilcoxon_p(same - same) == 1.0
    assert sig.ttest_p(same, same) == 1.0
    assert sig.bootstrap_interval(same - same, 500, 0) == (0.0, 0.0)
    assert math.isnan(sig.wilcoxon_p([])) and math.isnan(sig.ttest_p([0.1], [0.2]))
    assert sig.ttest_p([0.5, 0.5, 0.5], [0.25, 0.25, 0.25]) == 0.0  # constant differences: t infinite


def test_holm_by_hand():
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → kept monotone: 0.06
    np.testing.assert_allclose(sig.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(sig.holm([0.5, 0.4]), [0.8, 0.8])
    np.testing.assert_allclose(sig.holm([0.3, math.nan, 0.2]), [0.4, math.nan, 0.4])  # NaN not counted
    np.testing.assert_allclose(sig.holm([0.6, 0.7, 0.9]), [1.0, 1.0, 1.0])  # capped at 1
    assert sig.holm([]).size == 0


def test_bootstrap_interval_is_seeded_and_near_the_normal_one():
    rng = np.random.default_rng(3)
    d = rng.normal(0.01, 0.05, 2000)
    first = sig.bootstrap_interval(d, 4000, seed=7)
    assert first == sig.bootstrap_interval(d, 4000, seed=7)
    assert first != sig.bootstrap_interval(d, 4000, seed=8)
    half_width = 1.96 * d.std(ddof=1) / math.sqrt(d.size)
    assert first[0] == pytest.approx(d.mean() - half_width, abs=0.15 * half_width)
    assert first[1] == pytest.approx(d.mean() + half_width, abs=0.15 * half_width)


def write_run(folder, method, seed, users, values: dict[str, list[float]]):
    """A run's per_user.csv, and where its metrics.json would be (user_values reads none)."""
    run = folder / method / f"seed{seed}"
    run.mkdir(parents=True)
    pd.DataFrame({"user": users, "n_heldout": 1, **values}).to_csv(run / "per_user.csv", index=False)
    return run / "metrics.json", run / "per_user.csv"


def test_compare_averages_over_seeds_pairs_users_and_corrects_over_methods(tmp_path):
    rng = np.random.default_rng(4)
    users = [f"u{i}" for i in range(30)]
    base = rng.random(30)
    base_seeds = [base + rng.normal(0, 0.01, 30), base + rng.normal(0, 0.01, 30)]
    better_seeds = [s + 0.05 + rng.normal(0, 0.02, 30) for s in base_seeds]
    runs = {
        ("ease", 0): base_seeds[0],
        ("ease", 1): base_seeds[1],
        ("posit", 0): better_seeds[0],
        ("posit", 1): better_seeds[1],
        ("same", 0): base_seeds[0],
        ("same", 1): base_seeds[1],
    }
    metric_files, per_user_files = [], []
    for (method, seed), ndcg in runs.items():
        ndcg = ndcg.copy()
        ndcg[3] = math.nan  # user u3 holds nothing out
        files = write_run(tmp_path, method, seed, users, {"ndcg@100": ndcg, "arp@20": 100 * ndcg})
        metric_files.append(files[0])
        per_user_files.append(files[1])
    names = pd.DataFrame(list(runs), columns=["method", "seed"])
    values = sig.user_values(names, metric_files, per_user_files)
    assert {method: sorted(seeds) for method, seeds in values.items()} == {
        "ease": [0, 1],
        "posit": [0, 1],
        "same": [0, 1],
    }
    table = sig.compare(values, dataset="toy", reference="ease", samples=2000, seed=0, alpha=0.05)
    assert list(table.columns) == sig.COLUMNS
    assert table[["method", "metric"]].values.tolist() == [
        ["posit", "ndcg@100"],
        ["same", "ndcg@100"],
        ["posit", "arp@20"],
        ["same", "arp@20"],
    ]
    keep = np.arange(30) != 3
    d = ((better_seeds[0] + better_seeds[1]) / 2 - (base_seeds[0] + base_seeds[1]) / 2)[keep]
    posit = table.iloc[0]
    assert posit["n_users"] == 29 and posit["n_seeds"] == posit["paired_seeds"] == 2
    assert posit["mean_difference"] == pytest.approx(d.mean(), rel=1e-12)
    assert posit["p_wilcoxon"] == pytest.approx(stats.wilcoxon(d).pvalue, rel=1e-12)
    assert posit["ci_low"] < d.mean() < posit["ci_high"]
    same = table.iloc[1]
    assert (same["mean_difference"], same["ci_low"], same["ci_high"], same["p_wilcoxon"], same["p_ttest"]) == (
        0,
        0,
        0,
        1,
        1,
    )
    # Holm over the two methods of this metric: min(1, 2 p) for the smaller, then the max so far
    assert posit["p_holm"] == pytest.approx(min(1.0, 2 * posit["p_wilcoxon"]))
    assert same["p_holm"] == 1.0
    per_seed = [(better_seeds[s] - base_seeds[s])[keep].mean() for s in (0, 1)]
    assert (posit["seed_difference_min"], posit["seed_difference_max"]) == pytest.approx(sorted(per_seed), rel=1e-12)
    assert math.isnan(posit["p_seeds"]) and posit["seeds_agree"]  # 2 seeds: no test over seeds
    assert table["significant"].tolist() == [True, False, True, False]
    with pytest.raises(ValueError, match="compare.reference: 'mostpop' has no runs on toy"):
        sig.compare(values, dataset="toy", reference="mostpop", samples=10, seed=0, alpha=0.05)

    summary = pd.DataFrame(
        [
            {
                "dataset": "toy",
                "method": m,
                "n_seeds": 2,
                "seeds": "0 1",
                "ndcg@100_mean": 0.5,
                "ndcg@100_std": 0.01,
                "coverage@100_mean": 300.0,
                "coverage@100_std": 2.0,
                "arp@20_mean": 50.0,
                "arp@20_std": 1.0,
            }
            for m in ("ease", "posit", "same")
        ]
    )
    markdown = tables.summary_markdown(summary, "toy", table)
    assert "| posit | 2 | 0.5000 ± 0.0100 * |" in markdown and "| same | 2 | 0.5000 ± 0.0100 |" in markdown
    assert (
        "## Significance against ease" in markdown
        and "Significant differences from ease: posit: ndcg@100, arp@20." in markdown
    )
    assert "no per-user values" in markdown  # coverage and the other list-level metrics
    assert "with its 95% two-level bootstrap interval" in markdown and "| difference [95% CI] |" in markdown
    assert "no seed reverses the difference" in markdown and "| p seeds | significant |" in markdown
    latex = tables.summary_latex(summary, "toy", table)
    assert r"$0.5000 \pm 0.0100$$^{*}$" in latex and r"\toprule" in latex and r"ndcg@100" in latex
    assert latex.count(r"\begin{table}") == 3  # accuracy, coverage, exposure


def test_two_level_bootstrap_where_the_answer_is_known():
    # Two seeds whose every user differs by 0 and 1: a resampling's mean is the mean of two seeds
    # drawn with replacement, 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4; its 2.5% and 97.5%
    # percentiles are 0 and 1. Resampling the users alone (of the seed-averaged 0.5) gives [0.5, 0.5].
    d = np.vstack([np.zeros(40), np.ones(40)])
    assert sig.bootstrap_interval(d, 4000, seed=0) == (0.0, 1.0)
    assert sig.bootstrap_interval(d.mean(axis=0), 4000, seed=0) == (0.5, 0.5)
    # Additive seeds and users, d_su = a_s + b_u: a resampling's mean is mean(a*) + mean(b*), drawn
    # independently, whose variance is var(a)/S + var(b)/U (population variances).
    rng = np.random.default_rng(5)
    a, b = rng.normal(0, 0.02, 200), rng.normal(0.01, 0.1, 300)
    low, high = sig.bootstrap_interval(a[:, None] + b[None, :], 4000, seed=1)
    centre = a.mean() + b.mean()
    half_width = 1.96 * math.sqrt(a.var() / a.size + b.var() / b.size)
    assert low == pytest.approx(centre - half_width, abs=0.1 * half_width)
    assert high == pytest.approx(centre + half_width, abs=0.1 * half_width)
    # One seed pair: the bootstrap of the users, draw for draw.
    assert sig.bootstrap_interval(b[None, :], 500, seed=2) == sig.bootstrap_interval(b, 500, seed=2)


def seeded_runs(tmp_path, per_seed_means: dict[str, list[float]], n_users: int = 30):
    """Runs whose per-user values are a per-seed mean plus a user offset that is the same for every
    run and sums to zero over the users: each seed's mean over the users is the given one."""
    offsets = np.linspace(-0.1, 0.1, n_users)
    users = [f"u{i}" for i in range(n_users)]
    names, metric_files, per_user_files = [], [], []
    for method, means in per_seed_means.items():
        seeds = [7] if len(means) == 1 else range(len(means))
        for seed, mean in zip(seeds, means):
            files = write_run(tmp_path, method, seed, users, {"ndcg@100": mean + offsets})
            names.append((method, seed))
            metric_files.append(files[0])
            per_user_files.append(files[1])
    return sig.user_values(pd.DataFrame(names, columns=["method", "seed"]), metric_files, per_user_files)


def test_p_seeds_is_the_paired_t_test_of_the_per_seed_means_and_a_reversal_is_not_significant(tmp_path):
    reference = [0.39, 0.40, 0.42, 0.41]
    steady = [0.41, 0.425, 0.445, 0.43]  # above the reference in every seed
    reversing = [0.40, 0.43, 0.41, 0.45]  # differences 0.01, 0.03, −0.01, 0.04: seed 2 reverses
    values = seeded_runs(tmp_path, {"ease": reference, "steady": steady, "reversing": reversing, "single": [0.43]})
    table = sig.compare(values, dataset="toy", reference="ease", samples=500, seed=0, alpha=0.05).set_index("method")
    assert table.loc["steady", "p_seeds"] == pytest.approx(stats.ttest_rel(steady, reference).pvalue, rel=1e-9)
    assert table.loc["reversing", "p_seeds"] == pytest.approx(stats.ttest_rel(reversing, reference).pvalue, rel=1e-9)
    # A single (seed-independent) run is paired with every seed of the reference.
    assert table.loc["single", "paired_seeds"] == 4 and table.loc["single", "n_seeds"] == 1
    assert table.loc["single", "p_seeds"] == pytest.approx(stats.ttest_rel([0.43] * 4, reference).pvalue, rel=1e-9)
    assert table.loc["single", "mean_difference"] == pytest.approx(0.43 - np.mean(reference), abs=1e-12)
    assert table.loc["reversing", "seed_difference_min"] == pytest.approx(-0.01, abs=1e-12)
    assert table.loc["reversing", "seed_difference_max"] == pytest.approx(0.04, abs=1e-12)
    # Every user's seed-averaged difference is the same positive number: the users' test holds for all.
    assert (table["p_holm"] < 0.05).all()
    assert table["seeds_agree"].to_dict() == {"steady": True, "reversing": False, "single": True}
    assert table["significant"].to_dict() == {"steady": True, "reversing": False, "single": True}
    markdown = tables.significance_markdown(table.reset_index())
    assert "Significant over the users but reversed by a seed, so not marked: reversing: ndcg@100." in markdown
    assert "| reversing | ndcg@100 | 30 | 4 | +0.0175 [" in markdown and "| −" not in markdown


def test_two_seeds_that_disagree_are_not_significant_and_the_summary_flags_them(tmp_path):
    # The POSIT: one seed above EASE, one below, every user in the same direction per seed.
    values = seeded_runs(tmp_path, {"ease": [0.4300, 0.4310], "posit": [0.4416, 0.4190]})
    row = sig.compare(values, dataset="toy", reference="ease", samples=500, seed=0, alpha=0.05).iloc[0]
    assert math.isnan(row["p_seeds"]) and not row["seeds_agree"] and not row["significant"]
    assert row["ci_low"] < 0 < row["ci_high"]  # the seeds resampled: the interval spans both
    runs = pd.DataFrame(
        {
            "dataset": "toy",
            "method": ["ease", "ease", "posit", "posit", "steady", "steady"],
            "seed": [0, 1] * 3,
            "ndcg@100": [0.4300, 0.4310, 0.4416, 0.4190, 0.4500, 0.4510],
            "coverage@100": [900.0, 910.0, 1866.0, 1349.0, 950, 950],
        }
    )
    disagreements = flags.seed_disagreements(runs, "ease")
    # posit: ranges 0.0226 > |0.4303 − 0.4305| and 517 > |1607.5 − 905|; steady: 0.001 < 0.02, 0 < 45
    assert disagreements[["method", "metric"]].values.tolist() == [["posit", "ndcg@100"]]
    assert disagreements.iloc[0][["seed_min", "seed_max", "difference"]].tolist() == pytest.approx(
        [0.4190, 0.4416, -0.0002]
    )
    summary = tables.summarise(runs)
    markdown = tables.summary_markdown(summary, "toy", disagreements=disagreements)
    assert (
        "- **posit: seeds disagree** by more than its difference from ease: ndcg@100 0.4190–0.4416 (difference -0.0002)."
        in markdown
    )
    assert "| posit | 2 | 0.4303 ± 0.0160 † |" in markdown and "| posit | 2 | 1607.5 ± 365.6 |" in markdown
    assert "| steady | 2 | 0.4505 ± 0.0007 |" in markdown
    assert r"0.4303 \pm 0.0160$$^{\dagger}$" in tables.summary_latex(summary, "toy", disagreements=disagreements)


def test_seeds_that_cannot_be_paired_are_refused():
    assert sig.seed_pairs([2, 0, 1], [0, 1, 2], "posit", "ease") == [(0, 0), (1, 1), (2, 2)]
    assert sig.seed_pairs([5], [0, 1], "mostpop", "ease") == [(5, 0), (5, 1)]
    assert sig.seed_pairs([0, 1], [5], "posit", "ease_closed") == [(0, 5), (1, 5)]
    with pytest.raises(
        ValueError, match=r"posit \(seeds \[0, 1\]\) and ease \(seeds \[0, 2\]\) cannot be paired by seed"
    ):
        sig.seed_pairs([0, 1], [0, 2], "posit", "ease")


def test_per_user_files_must_hold_the_same_users(tmp_path):
    a = write_run(tmp_path, "ease", 0, ["1", "2"], {"ndcg@100": [0.1, 0.2]})
    b = write_run(tmp_path, "posit", 0, ["1", "3"], {"ndcg@100": [0.1, 0.2]})
    names = pd.DataFrame({"method": ["ease", "posit"], "seed": [0, 0]})
    with pytest.raises(ValueError, match="hold different test users"):
        sig.user_values(names, [a[0], b[0]], [a[1], b[1]])
    with pytest.raises(ValueError, match="is not beside"):
        sig.user_values(names[:1], [a[0]], [b[1]])
    with pytest.raises(ValueError, match="2 runs, 1 metric files and 1 per-user files"):
        sig.user_values(names, [a[0]], [a[1]])


def test_latex_escapes_names():
    assert tables.latex_escape("ease_closed 50% & #1") == r"ease\_closed 50\% \& \#1"
    comparison = pd.DataFrame(
        [
            {
                "dataset": "ml-20m",
                "method": "ease_closed",
                "reported_as": "EASE",
                "metric": "NDCG@100",
                "our_metric": "ndcg@100",
                "ours_mean": 0.42,
                "ours_std": 0.001,
                "n_seeds": 3,
                "reported": 0.41,
                "reported_std": math.nan,
                "difference": 0.01,
                "difference_in_reported_std": math.nan,
                "source": "x",
            }
        ]
    )
    latex = tables.comparison_latex(comparison, "ml-20m")
    assert r"ease\_closed & NDCG@100 & $0.4200 \pm 0.0010$ (3) & $0.4100$ & $+0.0100$ \\" in latex


@pytest.mark.parametrize(
    "cut, message",
    [
        (lambda text: text[:-3], "its last line has no line break, so it is cut short"),  # inside the last value
        (lambda text: text[: text.index("\n3,") + 4], "its last line has no line break"),  # inside a row's cells
        (
            lambda text: text[: text.index("\n3,") + 1] + "3,1\n" + text.split("\n", 3)[3],
            "line 3 has 2 of the header's 3 cells",
        ),
        (lambda text: "", "empty"),
    ],
)
@pytest.mark.parametrize("damaged", [0, 1, 2])
def test_a_truncated_per_user_file_is_named(tmp_path, cut, message, damaged):
    """Whichever of three runs' files is cut short, the error names it, not the intact ones."""
    files = [
        write_run(tmp_path, method, 0, ["1", "3", "5"], {"ndcg@100": [0.1, 0.25, 0.5]}) for method in ("a", "b", "c")
    ]
    per_user = files[damaged][1]
    per_user.write_text(cut(per_user.read_text()))
    names = pd.DataFrame({"method": ["a", "b", "c"], "seed": [0, 0, 0]})
    with pytest.raises(ValueError) as caught:
        sig.user_values(names, [f[0] for f in files], [f[1] for f in files])
    text = str(caught.value)
    assert text.startswith(f"{per_user}: ") and message in text, text
    assert "delete it and the metrics.json beside it" in text
    assert all(str(f[1]) not in text for f in files if f[1] != per_user)


def test_a_seed_independent_run_among_seeded_ones_is_keyed_by_none(tmp_path):
    """tables.load_runs gives a seed-independent run the seed None (its seed column holds integers
    and None): user_values keys that run by None and the others by their seed."""
    users = ["a", "b"]
    files = [write_run(tmp_path, "mostpop", "-independent", users, {"ndcg@100": [0.1, 0.2]})]
    files += [write_run(tmp_path, "ease", seed, users, {"ndcg@100": [0.3 + seed, 0.4]}) for seed in (0, 1)]
    runs = pd.DataFrame({"method": ["mostpop", "ease", "ease"], "seed": pd.Series([None, 0, 1], dtype=object)})
    values = sig.user_values(runs, [f[0] for f in files], [f[1] for f in files])
    assert list(values["mostpop"]) == [None] and list(values["ease"]) == [0, 1]
    assert values["ease"][1].loc["a", "ndcg@100"] == 1.3
    assert sig.seed_pairs(values["mostpop"], values["ease"], "mostpop", "ease") == [(None, 0), (None, 1)]
