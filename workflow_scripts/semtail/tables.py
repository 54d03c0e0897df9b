"""The per-dataset tables: mean ± standard deviation over seeds of every metric, and our numbers
beside the ones the paper (and Steck 2019, for the closed-form EASE) report."""

from __future__ import annotations

import math
import statistics
from importlib import resources
from pathlib import Path

import pandas as pd
import yaml

from semtail.run_metrics import read_metrics_json
from semtail.significance import CONFIDENCE

PAPER_RESULTS = "paper_results.yaml"

# Markdown groups of summary.md, by the metric name before "@", and how many decimals each shows.
METRIC_GROUPS = {
    "Accuracy": ("ndcg", "recall", "hit_rate"),
    "Coverage (distinct items per block of test users)": ("coverage", "coverage_unmasked"),
    "Item recall": ("item_recall",),
    "Exposure": ("gini", "arp", "tail_share"),
}
DECIMALS = {"coverage": 1, "coverage_unmasked": 1, "arp": 1}
COMPARISON_COLUMNS = [
    "dataset",
    "method",
    "reported_as",
    "metric",
    "our_metric",
    "ours_mean",
    "ours_std",
    "n_seeds",
    "reported",
    "reported_std",
    "difference",
    "difference_in_reported_std",
    "flag",
    "source",
]


def metric_family(key: str) -> str:
    """'coverage_unmasked@100' -> 'coverage_unmasked'; 'item_recall@20_pos' -> 'item_recall'."""
    return key.split("@", 1)[0]


def decimals_of(key: str) -> int:
    """How many decimals the tables show of a metric."""
    return DECIMALS.get(metric_family(key), 4)


def metric_groups(keys) -> list[tuple[str, list[str]]]:
    """The metric keys by METRIC_GROUPS, in its order and theirs, then "Other" for the rest; a
    group without keys is left out."""
    keys = list(keys)
    groups = [(title, [k for k in keys if metric_family(k) in families]) for title, families in METRIC_GROUPS.items()]
    grouped = {k for _, group in groups for k in group}
    groups.append(("Other", [k for k in keys if k not in grouped]))
    return [(title, group) for title, group in groups if group]


def load_runs(paths, dataset: str | None = None) -> pd.DataFrame:
    """One row per metric JSON: dataset, method, seed and one column per metric, in file order.
    `method` is the run's name in the config's `methods:` (the record's `variant`): a method, or a
    named variant of one. A seed-independent run's seed is None: its method's only run."""
    rows, keys, sources = [], None, {}
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        record = read_metrics_json(path)
        if dataset is not None and record["dataset"] != dataset:
            raise ValueError(f"{path}: dataset {record['dataset']!r}, expected {dataset!r}")
        seed = None if record["seed"] is None else int(record["seed"])
        run = (record["variant"], seed)
        if run in sources:
            raise ValueError(f"{path} and {sources[run]} are both {run[0]} {seed_words(seed)}")
        other = next(
            (source for (variant, s), source in sources.items() if variant == run[0] and (s is None) != (seed is None)),
            None,
        )
        if other is not None:
            raise ValueError(f"{path} and {other} are both runs of {run[0]}, but only one of them is seed-independent")
        sources[run] = path
        if keys is None:
            keys, first = list(record["metrics"]), path
        elif set(record["metrics"]) != set(keys):
            difference = sorted(set(record["metrics"]) ^ set(keys))
            raise ValueError(f"{path} and {first} record different metrics: {difference}")
        rows.append({"dataset": record["dataset"], "method": record["variant"], "seed": seed, **record["metrics"]})
    if not rows:
        raise ValueError("no metric JSONs to aggregate")
    frame = pd.DataFrame(rows, columns=["dataset", "method", "seed", *keys])
    frame["seed"] = pd.Series([row["seed"] for row in rows], dtype=object)  # integers and None, never floats
    return frame


def seed_words(seed) -> str:
    return SEED_INDEPENDENT if seed is None else f"seed {seed}"


# The `seeds` of a seed-independent method's one run (semtail.plan.SEED_INDEPENDENT).
SEED_INDEPENDENT = "seed-independent"


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per method, in order of first appearance: n_seeds, the seeds, and for every metric
    its mean and sample standard deviation (ddof 1; empty with a single seed) over seeds. A
    seed-independent method has one run, n_seeds 1 and seeds "seed-independent"."""
    metric_keys = [c for c in runs.columns if c not in ("dataset", "method", "seed")]
    rows = []
    for method in pd.unique(runs["method"]):
        group = runs[runs["method"] == method]
        row = {
            "dataset": group["dataset"].iloc[0],
            "method": method,
            "n_seeds": len(group),
            "seeds": " ".join(str(s) for s in sorted(group["seed"]))
            if group["seed"].notna().all()
            else SEED_INDEPENDENT,
        }
        for key in metric_keys:
            values = [float(v) for v in group[key]]
            # statistics.stdev sums exactly: seeds with identical values give exactly 0
            row[f"{key}_mean"] = statistics.fmean(values)
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def seeds_cell(row, dash: str = "–") -> str:
    """A summary row's number of seeds, or `dash` for a seed-independent method."""
    return dash if row["seeds"] == SEED_INDEPENDENT else str(row["n_seeds"])


def metric_keys_of(summary: pd.DataFrame) -> list[str]:
    return [c[: -len("_mean")] for c in summary.columns if c.endswith("_mean")]


def format_value(value: float, decimals: int) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{decimals}f}"


def mean_std(mean: float, std: float, decimals: int) -> str:
    if std is None or math.isnan(std):
        return format_value(mean, decimals)
    return f"{format_value(mean, decimals)} ± {format_value(std, decimals)}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def summary_markdown(
    summary: pd.DataFrame,
    dataset: str,
    significance: pd.DataFrame | None = None,
    disagreements: pd.DataFrame | None = None,
    unchanged: pd.DataFrame | None = None,
) -> str:
    """summary.md; with `significance` (semtail.significance.compare), a significant difference
    from the reference is marked in the tables, and a section gives every test; with
    `disagreements` and `unchanged` (semtail.flags), a section of flags, and the values whose seeds
    disagree by more than their difference from the reference marked."""
    keys = metric_keys_of(summary)
    seeded = summary[summary["seeds"] != SEED_INDEPENDENT]
    independent = list(summary.loc[summary["seeds"] == SEED_INDEPENDENT, "method"])
    n_seeds = sorted(set(seeded["n_seeds"]))
    marked = set() if significance is None else significant_pairs(significance)
    disagreeing = set() if disagreements is None else set(zip(disagreements["method"], disagreements["metric"]))
    once = (
        f" {', '.join(independent)} give{'s' if len(independent) == 1 else ''} the same result for every seed: "
        "trained and evaluated once, seeds –."
        if independent
        else ""
    )
    parts = [
        f"# {dataset}: mean ± standard deviation over seeds\n",
        f"Seeds per method: {', '.join(map(str, n_seeds)) or '–'}.{once} The standard deviation is the sample one "
        "(n − 1); with a single seed only the value is shown. Metric definitions: docs/metrics.md and "
        "the `definitions` block of every metrics.json. coverage@k masks each user's fold-in items; "
        "coverage_unmasked@k does not, as the paper's authors computed it.\n",
    ]
    if significance is not None and not significance.empty:
        parts.append(f"A value marked{SIGNIFICANT_MARK} {significance_rule(significance)}\n")
    if disagreeing:
        parts.append(
            f"A value marked{DISAGREEMENT_MARK}: its seeds' range (lowest to highest) is wider than its difference "
            f"from {disagreements['reference'].iloc[0]}; see Flags.\n"
        )
    flags = flags_markdown(disagreements, unchanged)
    if flags:
        parts.append(flags)
    for title, group_keys in metric_groups(keys):
        parts.append(_summary_group(summary, title, group_keys, marked, disagreeing))
    if significance is not None:
        parts.append(significance_markdown(significance))
    return "\n".join(parts)


def _summary_group(
    summary: pd.DataFrame, title: str, keys: list[str], marked=frozenset(), disagreeing=frozenset()
) -> str:
    rows = []
    for _, row in summary.iterrows():
        cells = [str(row["method"]), seeds_cell(row)]
        for key in keys:
            decimals = decimals_of(key)
            mark = SIGNIFICANT_MARK if (row["method"], key) in marked else ""
            mark += DISAGREEMENT_MARK if (row["method"], key) in disagreeing else ""
            cells.append(mean_std(row[f"{key}_mean"], row[f"{key}_std"], decimals) + mark)
        rows.append(cells)
    return f"## {title}\n\n" + markdown_table(["method", "seeds", *keys], rows)


DISAGREEMENT_MARK = " †"


def flags_markdown(disagreements: pd.DataFrame | None, unchanged: pd.DataFrame | None) -> str:
    """The Flags section of summary.md: on-base methods that changed nothing, then methods whose
    seeds disagree by more than their difference from the reference; empty when there is none."""
    items = []
    for _, row in (unchanged if unchanged is not None else pd.DataFrame()).iterrows():
        pairs = int(row["seed_pairs"])
        items.append(
            f"- **{row['method']} changed nothing**: its top-k test lists equal those of its base {row['base']} "
            f"for every test user, in {'each of the ' + str(pairs) + ' seeds' if pairs > 1 else 'its run'}; "
            "at these settings it is its base (e.g. score thresholds outside the range of this dataset's scores)."
        )
    if disagreements is not None:
        for method, group in disagreements.groupby("method", sort=False):
            values = ", ".join(
                f"{row['metric']} {format_value(row['seed_min'], decimals_of(row['metric']))}–"
                f"{format_value(row['seed_max'], decimals_of(row['metric']))} "
                f"(difference {row['difference']:+.{decimals_of(row['metric'])}f})"
                for _, row in group.iterrows()
            )
            reference = group["reference"].iloc[0]
            items.append(f"- **{method}: seeds disagree** by more than its difference from {reference}: {values}.")
    if not items:
        return ""
    return "## Flags\n\n" + "\n".join(items) + "\n"


# ---- significance against a reference method (semtail.significance) ----

SIGNIFICANT_MARK = " *"
CONFIDENCE_PERCENT = f"{100 * CONFIDENCE:g}%"  # of the bootstrap interval: "95%"
LIST_LEVEL_NOTE = (
    "Coverage, coverage_unmasked, item recall, Gini and the long-tail share describe the set of "
    "lists given to all test users, not one user: they have no per-user values and no test here; "
    "their spread over seeds (±) is all the tables give."
)


def significant_pairs(significance: pd.DataFrame) -> set[tuple[str, str]]:
    """The (method, metric) pairs whose difference from the reference is significant."""
    if significance.empty:
        return set()
    marked = significance[significance["significant"].astype(bool)]
    return set(zip(marked["method"], marked["metric"]))


def significance_rule(significance: pd.DataFrame) -> str:
    first = significance.iloc[0]
    return (
        f"differs from {first['reference']} at Holm-corrected p < {first['alpha']:g} (two-sided paired "
        "Wilcoxon signed-rank test over the test users, each user's value averaged over seeds; Holm's "
        "correction over the methods compared for each metric), and no seed reverses the difference "
        "(each seed's mean difference has the overall difference's sign)."
    )


def significance_markdown(significance: pd.DataFrame) -> str:
    if significance.empty:
        return "## Significance\n\nNo method besides the reference: nothing to compare.\n\n" + LIST_LEVEL_NOTE + "\n"
    first = significance.iloc[0]
    reference = first["reference"]
    rows = []
    for _, row in significance.iterrows():
        decimals = decimals_of(row["metric"])
        rows.append(
            [
                str(row["method"]),
                str(row["metric"]),
                str(row["n_users"]),
                str(row["paired_seeds"]),
                f"{row['mean_difference']:+.{decimals}f} [{row['ci_low']:+.{decimals}f}, {row['ci_high']:+.{decimals}f}]",
                format_p(row["p_wilcoxon"]),
                format_p(row["p_ttest"]),
                format_p(row["p_holm"]),
                f"{row['seed_difference_min']:+.{decimals}f} to {row['seed_difference_max']:+.{decimals}f}",
                format_p(row["p_seeds"]),
                "yes" if row["significant"] else "no",
            ]
        )
    significant = significance[significance["significant"].astype(bool)]
    if significant.empty:
        verdict = f"No difference from {reference} is significant."
    else:
        listed = "; ".join(
            f"{method}: {', '.join(group['metric'])}" for method, group in significant.groupby("method", sort=False)
        )
        verdict = f"Significant differences from {reference}: {listed}."
    reversed_ = significance[
        (significance["p_holm"] < significance["alpha"]) & ~significance["seeds_agree"].astype(bool)
    ]
    if not reversed_.empty:
        listed = "; ".join(
            f"{method}: {', '.join(group['metric'])}" for method, group in reversed_.groupby("method", sort=False)
        )
        verdict += f" Significant over the users but reversed by a seed, so not marked: {listed}."
    return (
        f"## Significance against {reference}\n\n"
        f"Per user-level metric and method: the mean over the test users of (method − {reference}), "
        f"each user's value averaged over the seeds, with its {CONFIDENCE_PERCENT} two-level bootstrap interval "
        f"({int(first['n_bootstrap'])} resamplings of the seeds and, independently, of the users, seed "
        f"{int(first['bootstrap_seed'])}); two-sided p-values of the paired Wilcoxon signed-rank test and the "
        "paired t-test over the users; the Wilcoxon p-value after Holm's correction over the methods compared "
        f"for that metric. Over seeds (runs paired by seed; a single run with every seed of the other): the "
        "range of the per-seed mean differences, and with 3 pairs or more the p-value of the paired t-test of "
        f"the per-seed means. Significant: Holm p below {first['alpha']:g} and no seed's difference of the "
        "opposite sign. Users without held-out items are left out (n users). When every difference is zero, "
        "the p-values are 1. Tests and literature: docs/metrics.md.\n\n"
        f"{verdict}\n\n{LIST_LEVEL_NOTE}\n\n"
        + markdown_table(
            [
                "method",
                "metric",
                "n users",
                "seed pairs",
                f"difference [{CONFIDENCE_PERCENT} CI]",
                "p Wilcoxon",
                "p t-test",
                "p Holm",
                "per-seed differences",
                "p seeds",
                "significant",
            ],
            rows,
        )
    )


def format_p(p: float) -> str:
    if p is None or math.isnan(p):
        return "–"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


# ---- LaTeX, for a paper (pandas' to_latex: booktabs rules; needs jinja2) ----

LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(char, char) for char in str(text))


def latex_mean_std(mean: float, std: float, decimals: int) -> str:
    if mean is None or math.isnan(mean):
        return "--"
    if std is None or math.isnan(std):
        return f"${mean:.{decimals}f}$"
    return f"${mean:.{decimals}f} \\pm {std:.{decimals}f}$"


def summary_latex(
    summary: pd.DataFrame,
    dataset: str,
    significance: pd.DataFrame | None = None,
    disagreements: pd.DataFrame | None = None,
) -> str:
    """summary.tex: one booktabs table per metric group of summary.md, mean ± SD over seeds, a
    significant difference from the reference marked $^{*}$, seeds that disagree by more than the
    difference from the reference $^{\\dagger}$."""
    keys = metric_keys_of(summary)
    marked = set() if significance is None else significant_pairs(significance)
    disagreeing = set() if disagreements is None else set(zip(disagreements["method"], disagreements["metric"]))
    note = ""
    if significance is not None and not significance.empty:
        note = f" $^{{*}}$: {latex_escape(significance_rule(significance))}"
    if disagreeing:
        note += (
            " $^{\\dagger}$: the seeds' range is wider than the difference from "
            f"{latex_escape(disagreements['reference'].iloc[0])}."
        )
    parts = [f"% {dataset}: written by the aggregate rule (semtail/tables.py); needs \\usepackage{{booktabs}}.\n"]
    for title, group_keys in metric_groups(keys):
        table = pd.DataFrame(
            {
                "method": [latex_escape(m) for m in summary["method"]],
                "seeds": [seeds_cell(row, "--") for _, row in summary.iterrows()],
                **{
                    latex_escape(key): [
                        latex_mean_std(row[f"{key}_mean"], row[f"{key}_std"], decimals_of(key))
                        + ("$^{*}$" if (row["method"], key) in marked else "")
                        + ("$^{\\dagger}$" if (row["method"], key) in disagreeing else "")
                        for _, row in summary.iterrows()
                    ]
                    for key in group_keys
                },
            }
        )
        caption = f"{latex_escape(dataset)}, {latex_escape(title.lower())}: mean $\\pm$ sample SD over seeds.{note}"
        label = f"tab:{dataset}-{metric_family(group_keys[0])}"
        parts.append(
            table.to_latex(
                index=False,
                escape=False,
                column_format="l" + "r" * (len(table.columns) - 1),
                caption=caption,
                label=label,
                position="t",
            )
        )
    return "\n".join(parts)


def comparison_latex(comparison: pd.DataFrame, dataset: str) -> str:
    """paper_comparison.tex: our mean ± SD beside the reported value, per reported (method, metric)."""
    header = f"% {dataset}: written by the aggregate rule (semtail/tables.py); needs \\usepackage{{booktabs}}.\n"
    if comparison.empty:
        return header + f"% The reported results include nothing for {dataset}: no table.\n"
    rows = []
    for _, row in comparison.iterrows():
        decimals = decimals_of(row["our_metric"])
        reported = latex_mean_std(row["reported"], row["reported_std"], decimals)
        rows.append(
            {
                "method": latex_escape(row["method"]),
                "metric": latex_escape(row["metric"]),
                "ours": latex_mean_std(row["ours_mean"], row["ours_std"], decimals) + f" ({row['n_seeds']})",
                "reported": reported,
                "difference": f"${row['difference']:+.{decimals}f}$",
            }
        )
    caption = (
        f"{latex_escape(dataset)}: ours (mean $\\pm$ sample SD over seeds, their number in parentheses) "
        "beside the reported results; difference: ours $-$ reported."
    )
    table = pd.DataFrame(rows)
    return header + table.to_latex(
        index=False,
        escape=False,
        column_format="llrrr",
        caption=caption,
        label=f"tab:{dataset}-paper-comparison",
        position="t",
    )


def load_reported(path: str | Path | None = None) -> dict:
    """The reported results (semtail/resources/paper_results.yaml), checked for shape."""
    if path is None:
        text = resources.files("semtail").joinpath("resources", PAPER_RESULTS).read_text()
        path = PAPER_RESULTS
    else:
        text = Path(path).read_text()
    reported = yaml.safe_load(text)
    for name, source in reported.items():
        n_metrics = len(source["metrics"])
        for dataset, block in source["datasets"].items():
            lengths = [len(v) for v in block["results"].values()] + ([len(block["std"])] if "std" in block else [])
            if any(length != n_metrics for length in lengths):
                raise ValueError(f"{path}: {name}.datasets.{dataset} rows must have {n_metrics} values")
            unknown = set(block["results"]) - set(source["methods"])
            if unknown:
                raise ValueError(f"{path}: {name}.datasets.{dataset}: rows {sorted(unknown)} are not in {name}.methods")
            for flag in block.get("flags", []):
                if flag["row"] not in block["results"] or not set(flag["metrics"]) <= set(source["metrics"]):
                    raise ValueError(
                        f"{path}: {name}.datasets.{dataset}.flags: {flag['row']} {flag['metrics']} are not reported"
                    )
    return reported


def paper_comparison(summary: pd.DataFrame, dataset: str, reported: dict) -> tuple[pd.DataFrame, list[str]]:
    """Long table: per reported (method, metric) of this dataset, our mean ± std beside the reported
    value and std, with the difference (ours − reported) also in units of the reported std, and
    `flag`: why the reported value is doubtful, where paper_results.yaml says (else empty). Also
    returns notes on reported rows that have no counterpart among our runs."""
    rows, notes = [], []
    ours = summary.set_index("method")
    our_keys = set(metric_keys_of(summary))
    for name, source in reported.items():
        block = source["datasets"].get(dataset)
        if block is None:
            continue
        stds = block.get("std")
        flags = {
            (flag["row"], metric): " ".join(flag["reason"].split())
            for flag in block.get("flags", [])
            for metric in flag["metrics"]
        }
        for reported_method, values in block["results"].items():
            method = source["methods"][reported_method]
            if method not in ours.index:
                notes.append(f"{reported_method} ({name}): we did not run {method!r} on {dataset}.")
                continue
            for position, (reported_metric, our_metric) in enumerate(source["metrics"].items()):
                if our_metric not in our_keys:
                    notes.append(f"{reported_metric} ({name}): our runs do not record {our_metric}.")
                    continue
                mean, std = ours.loc[method, f"{our_metric}_mean"], ours.loc[method, f"{our_metric}_std"]
                value = float(values[position])
                reported_std = float(stds[position]) if stds else math.nan
                difference = float(mean) - value
                rows.append(
                    {
                        "dataset": dataset,
                        "method": method,
                        "reported_as": reported_method,
                        "metric": reported_metric,
                        "our_metric": our_metric,
                        "ours_mean": float(mean),
                        "ours_std": float(std),
                        "n_seeds": int(ours.loc[method, "n_seeds"]),
                        "reported": value,
                        "reported_std": reported_std,
                        "difference": difference,
                        "difference_in_reported_std": difference / reported_std if stds else math.nan,
                        "flag": flags.get((reported_method, reported_metric), ""),
                        "source": source["source"]["url"],
                    }
                )
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS), list(dict.fromkeys(notes))


def comparison_markdown(comparison: pd.DataFrame, dataset: str, reported: dict, notes: list[str]) -> str:
    title = f"# {dataset}: our results beside the reported ones\n"
    datasets = sorted({d for source in reported.values() for d in source["datasets"]})
    if comparison.empty and not notes:
        return (
            f"{title}\nThe paper reports no results for {dataset} (it reports {', '.join(datasets)}), "
            "so there is nothing to compare; this table is intentionally empty. Our own numbers are in "
            "summary.md.\n"
        )
    parts = [
        title,
        "Ours: mean ± sample standard deviation over seeds (n). Difference: ours − reported; "
        "in reported SDs: that difference over the reported standard deviation. Coverage@k is "
        "compared as our **coverage_unmasked@k** (fold-in items not masked), which is how the "
        "authors computed it; our masked coverage@k is in summary.md.\n",
    ]
    rows, flags = [], {}
    for _, row in comparison.iterrows():
        decimals = decimals_of(row["our_metric"])
        reported_text = format_value(row["reported"], decimals)
        if not math.isnan(row["reported_std"]):
            reported_text += f" ± {format_value(row['reported_std'], decimals)}"
        if isinstance(row["flag"], str) and row["flag"]:
            number = flags.setdefault(row["flag"], len(flags) + 1)
            reported_text += f" [{number}]"
        rows.append(
            [
                row["method"],
                row["metric"],
                f"{mean_std(row['ours_mean'], row['ours_std'], decimals)} ({row['n_seeds']})",
                reported_text,
                f"{row['difference']:+.{decimals}f}",
                "–" if math.isnan(row["difference_in_reported_std"]) else f"{row['difference_in_reported_std']:+.1f}",
            ]
        )
    if rows:
        parts.append(
            markdown_table(["method", "metric", "ours (n)", "reported", "difference", "in reported SDs"], rows)
        )
    if flags:
        parts.append(
            "Doubtful reported values, marked [n] above (transcribed as published):\n\n"
            + "\n".join(f"{number}. {flag}" for flag, number in flags.items())
            + "\n"
        )
    if notes:
        parts.append("Not compared:\n\n" + "\n".join(f"- {note}" for note in notes) + "\n")
    sources = [
        f"- {source['source']['title']}, {source['source']['where']}: {source['source']['url']}"
        for source in reported.values()
        if dataset in source["datasets"]
    ]
    parts.append("Sources:\n\n" + "\n".join(sources) + "\n")
    return "\n".join(parts)


# ---- POSIT's adversary: what its weights did, beside the runs' accuracy and coverage ----

ADVERSARY_METRICS = ("ndcg@100", "coverage@100")


def adversary_history(records: list[dict]) -> pd.DataFrame:
    """One row per trained epoch of each POSIT run (its metric JSON's record, whose `model` holds
    the model file's history): variant, seed, epoch, whether it is the stored best epoch, the share
    of the weights on the least popular half of the items, and weight_change (mean |Δw̄| over items
    in that epoch)."""
    rows = []
    for record in records:
        model = record["model"]
        if "history" not in model:
            raise ValueError(
                f"{record['variant']} seed {record['seed']}: its metric JSON has no model history (format 4)"
            )
        for entry in model["history"]:
            for key in ("weight_share_least_popular_half", "weight_change"):
                if key not in entry:
                    raise ValueError(
                        f"{record['variant']} seed {record['seed']}: epoch {entry.get('epoch')} has no {key!r}"
                    )
            rows.append(
                {
                    "method": record["variant"],
                    "seed": int(record["seed"]),
                    "epoch": int(entry["epoch"]),
                    "best": int(entry["epoch"]) == model["best_epoch"],
                    "tail_share": float(entry["weight_share_least_popular_half"]),
                    "weight_change": float(entry["weight_change"]),
                }
            )
    if not rows:
        raise ValueError("no POSIT model files, or no trained epochs in them")
    return pd.DataFrame(rows)


def adversary_table(summary: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """Per method: NDCG@100 and Coverage@100 (mean, SD over seeds); for POSIT runs, the weights' share
    on the least popular half at the best epoch, and the mean weight_change of the epochs after the
    first (how much the adversary still moves once its first minibatch has set it), each as mean and
    SD over seeds."""
    rows = []
    for _, run in summary.iterrows():
        row = {"method": run["method"], "n_seeds": int(run["n_seeds"])}
        for key in ADVERSARY_METRICS:
            row[f"{key}_mean"], row[f"{key}_std"] = run[f"{key}_mean"], run[f"{key}_std"]
        epochs = history[history["method"] == run["method"]]
        per_seed = {
            "tail_share": epochs[epochs["best"]].groupby("seed")["tail_share"].mean(),
            "weight_change_after_epoch_1": epochs[epochs["epoch"] > 1].groupby("seed")["weight_change"].mean(),
        }
        for key, values in per_seed.items():
            values = [float(v) for v in values]
            row[f"{key}_mean"] = statistics.fmean(values) if values else math.nan
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def adversary_markdown(table: pd.DataFrame, dataset: str) -> str:
    header = ["method", "seeds", "NDCG@100", "Coverage@100", "weight share, tail half", "weight change after epoch 1"]
    rows = [
        [
            str(row["method"]),
            str(row["n_seeds"]),
            *(mean_std(row[f"{key}_mean"], row[f"{key}_std"], decimals_of(key)) for key in ADVERSARY_METRICS),
            mean_std(row["tail_share_mean"], row["tail_share_std"], 3),
            format_scientific(row["weight_change_after_epoch_1_mean"], row["weight_change_after_epoch_1_std"]),
        ]
        for _, row in table.iterrows()
    ]
    return (
        f"# {dataset}: POSIT's adversary beside accuracy and coverage\n\n"
        "Mean ± sample SD over seeds. Coverage@100: distinct items in the top-100 lists of each block "
        "of test users, fold-in items masked. Weight share, tail half: the share of the item weights "
        "w̄ (mean 1) on the least popular half of the items, at the restored best epoch (0.5 is "
        "uniform). Weight change after epoch 1: mean over items of |w̄ at an epoch's end − w̄ at the "
        "previous epoch's end|, averaged over the epochs after the first; near 0 means the weights "
        "were fixed by the first epoch. – where a method has no adversary.\n\n" + markdown_table(header, rows)
    )


def format_scientific(mean: float, std: float) -> str:
    if mean is None or math.isnan(mean):
        return "–"
    return f"{mean:.2e}" + ("" if std is None or math.isnan(std) else f" ± {std:.1e}")
