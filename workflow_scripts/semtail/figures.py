"""The figures of a dataset's results. Every function that draws returns a matplotlib Figure; `save`
writes it as PNG and PDF. One colour per method throughout (its declaration's, `styles`); where a method has
several seeds, their spread is drawn (bands, error bars or one line per seed)."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.colors import ListedColormap, LogNorm, Normalize  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402
from scipy.sparse.linalg import svds  # noqa: E402

from semtail import registry, run_metrics  # noqa: E402  (not semtail.metrics: no torch for the plot jobs)
from semtail.files import atomic_path  # noqa: E402

# For variants, and for methods whose declared colour an earlier one already has; each far from
# the methods' declared colours.
SPARE_COLOURS = [
    "#7570b3",
    "#e7298a",
    "#66a61e",
    "#e6ab02",
    "#8c564b",
    "#17becf",
    "#000080",
    "#bcbd22",
    "#ff9896",
    "#9467bd",
    "#98df8a",
    "#c49c94",
    "#f7b6d2",
    "#dbdb8d",
    "#9edae5",
    "#000000",
]
N_POPULARITY_GROUPS = 10
MIN_HELDOUT_ITEMS = 30  # a popularity group with fewer held-out items is marked as too few to mean much
LANDSCAPE_SEED = 0
logging.getLogger("matplotlib.category").setLevel(logging.WARNING)  # seaborn's categorical axes, at INFO

# magma, reversed, without its near-white end: rare items stay visible on a white background
POPULARITY_CMAP = ListedColormap(plt.get_cmap("magma_r")(np.linspace(0.3, 1.0, 256)))


@dataclass(frozen=True)
class Style:
    """How a name in `methods:` is drawn."""

    label: str
    colour: str
    marker: str
    marker_size: float
    outlier: bool  # left out of zoomed accuracy panels, where its distant point would squash the others


def styles(names) -> dict[str, Style]:
    """One style per name, in order of first appearance. A method is drawn as its declaration's
    `figures` block says (semtail.registry); a variant gets its name as label, the marker "o" and a
    spare colour. A label or colour an earlier name already has is not repeated: the label gets the
    name in brackets, the colour is replaced by a spare one."""
    declared = registry.methods()
    names = list(dict.fromkeys(names))
    taken_colours = {declared[name].figures["colour"].lower() for name in names if name in declared}
    spare = iter([c for c in SPARE_COLOURS if c not in taken_colours])
    result, labels, colours = {}, set(), set()
    for name in names:
        figure = (
            declared[name].figures
            if name in declared
            else {"label": name, "marker": "o", "marker_size": 8, "outlier": False}
        )
        label = figure["label"] if figure["label"] not in labels else f"{figure['label']} ({name})"
        colour = figure.get("colour", "").lower()
        if not colour or colour in colours:
            colour = next(spare, "#000000")
        labels.add(label)
        colours.add(colour)
        result[name] = Style(label, colour, figure["marker"], figure["marker_size"], figure["outlier"])
    return result


def _style() -> None:
    sns.set_theme(style="whitegrid", context="notebook")


def save(figure: plt.Figure, png: str | Path, pdf: str | Path) -> None:
    for path in (png, pdf):
        with atomic_path(path) as tmp:
            figure.savefig(tmp, dpi=150, bbox_inches="tight")
    plt.close(figure)


@dataclass
class EvaluatedRun:
    """One (method, seed) evaluation: its metric JSON and the paths of its lists and item counts.
    `method` is the run's name in the config's `methods:`, a method or a variant of one; `seed` is
    None for the one run of a seed-independent method."""

    method: str
    seed: int | None
    record: dict
    topk: Path
    item_stats: Path

    def lists(self) -> np.ndarray:
        with np.load(self.topk) as data:
            return data["top_k"]

    def items(self) -> dict[str, np.ndarray]:
        with np.load(self.item_stats) as data:
            return {key: data[key] for key in data.files}


def as_path_list(paths) -> list[Path]:
    """A single path or a list of them (Snakemake passes one input file as a plain string)."""
    return [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]


def load_runs(metric_paths, topk_paths, item_paths) -> list[EvaluatedRun]:
    """Runs from the evaluate rule's outputs, given as three lists in the same run order."""
    metric_paths, topk_paths, item_paths = (
        as_path_list(metric_paths),
        as_path_list(topk_paths),
        as_path_list(item_paths),
    )
    if not len(metric_paths) == len(topk_paths) == len(item_paths):
        raise ValueError(
            f"{len(metric_paths)} metric JSONs, {len(topk_paths)} topk.npz and {len(item_paths)} items.npz: "
            "expected one of each per run"
        )
    runs = []
    for metric_path, topk, item_stats in zip(metric_paths, topk_paths, item_paths):
        if not Path(metric_path).parent == Path(topk).parent == Path(item_stats).parent:
            raise ValueError(f"{metric_path}, {topk} and {item_stats} are not the same run's files")
        record = run_metrics.read_metrics_json(metric_path, (*run_metrics.RECORD_FIELDS, "evaluation"))
        seed = None if record["seed"] is None else int(record["seed"])
        runs.append(EvaluatedRun(record["variant"], seed, record, Path(topk), Path(item_stats)))
    if not runs:
        raise ValueError("no runs to plot")
    return runs


def _methods(runs: list[EvaluatedRun]) -> list[str]:
    return list(dict.fromkeys(run.method for run in runs))


def _runs_note(runs: list[EvaluatedRun]) -> str:
    """_seed_note of the seed-dependent methods' runs, and a word for the seed-independent ones."""
    counts = list(Counter(run.method for run in runs if run.seed is not None).values())
    notes = [_seed_note(counts)] if counts else []
    if any(run.seed is None for run in runs):
        notes.append("one run of a seed-independent method")
    return "; ".join(notes)


def _seed_note(counts) -> str:
    """A title's note of the seeds behind each point: "2 seeds per method", or "2/3 seeds per
    method" where the methods' numbers of seeds differ."""
    counts = sorted({int(n) for n in counts})
    return f"{'/'.join(map(str, counts))} seed{'s' if counts != [1] else ''} per method"


def _mean_sd_points(axes: plt.Axes, summary: pd.DataFrame, x: str, y: str, drawn: dict[str, Style]) -> None:
    """One point per row of a summary frame (`method`, `{x}_mean`, `{x}_std`, `{y}_mean`,
    `{y}_std`): the means, error bars of ±1 SD (none for an SD of NaN: one seed), in the method's style."""
    for row in summary.to_dict("records"):
        style = drawn[row["method"]]
        axes.errorbar(
            row[f"{x}_mean"],
            row[f"{y}_mean"],
            xerr=np.nan_to_num(row[f"{x}_std"]),
            yerr=np.nan_to_num(row[f"{y}_std"]),
            fmt=style.marker,
            markersize=style.marker_size,
            capsize=4,
            color=style.colour,
            label=style.label,
        )


def _legend_outside(axes: plt.Axes, title: str | None = "method") -> None:
    axes.legend(title=title, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


# ---- 1. coverage@k against k ----


def coverage_frame(runs: list[EvaluatedRun]) -> pd.DataFrame:
    """Coverage@k for k = 1..list length of every run, from its masked top-k lists."""
    frames = []
    for run in runs:
        block_size = int(run.record["evaluation"]["coverage_block_size"])
        curve = run_metrics.coverage_curve(run.lists(), block_size)
        frames.append(
            pd.DataFrame({"method": run.method, "seed": run.seed, "k": np.arange(1, curve.size + 1), "coverage": curve})
        )
    return pd.concat(frames, ignore_index=True)


def coverage_at_k_figure(runs: list[EvaluatedRun], dataset: str) -> plt.Figure:
    _style()
    frame = coverage_frame(runs)
    block_size = int(runs[0].record["evaluation"]["coverage_block_size"])
    drawn = styles(_methods(runs))
    frame["label"] = frame["method"].map(lambda name: drawn[name].label)
    colours = {style.label: style.colour for style in drawn.values()}
    figure, axes = plt.subplots(figsize=(7.5, 4.8))
    sns.lineplot(data=frame, x="k", y="coverage", hue="label", palette=colours, errorbar="sd", ax=axes, linewidth=1.8)
    axes.set_xlabel("k (length of the recommendation list)")
    axes.set_ylabel(f"Coverage@k (distinct items per {block_size} test users)")
    axes.set_xlim(1, frame["k"].max())
    axes.set_ylim(bottom=0)
    axes.set_title(
        f"{dataset}: catalog coverage against list length\nfold-in items masked; band: ±1 SD over seeds ({_runs_note(runs)})"
    )
    _legend_outside(axes)
    return figure


# ---- 2. item recall by popularity ----


def popularity_groups(
    popularity: np.ndarray, n_groups: int = N_POPULARITY_GROUPS, weights: np.ndarray | None = None
) -> np.ndarray:
    """Per item, its group 1..g (g ≤ n_groups) by training popularity, each group about an equal
    share of the items' `weights` (default: their popularity, so a share of the training
    interactions), and items of equal popularity always in one group.

    The distinct popularity values in ascending order each hold the weights of their items; a value
    goes to the group in which the middle of its weight falls (group j covers the shares
    (j − 1)/n_groups to j/n_groups of the total). Groups left empty, because one value holds more
    than a group's share, are skipped, so the groups are numbered 1..g without gaps. With no weight
    at all, every item is in group 1."""
    weights = popularity if weights is None else weights
    values, inverse = np.unique(popularity, return_inverse=True)
    mass = np.bincount(inverse.ravel(), weights=np.asarray(weights, dtype=np.float64), minlength=values.size)
    total = mass.sum()
    if total <= 0:
        return np.ones(popularity.size, dtype=np.int64)
    middle = (np.cumsum(mass) - mass / 2) / total
    group_of_value = np.minimum((middle * n_groups).astype(np.int64), n_groups - 1)
    _, group_of_value = np.unique(group_of_value, return_inverse=True)  # renumbered without gaps
    return group_of_value[inverse.ravel()] + 1


def item_recall_by_group(items: dict[str, np.ndarray], k: int, n_groups: int = N_POPULARITY_GROUPS) -> pd.DataFrame:
    """Per popularity group: its training-popularity range, its items, its items held out at least
    once (`n_heldout_items`) and their held-out interactions, and Item Recall@k averaged over its
    held-out items (NaN for a group without any). The groups (popularity_groups) each hold about an
    equal share of the items held out at least once, the items that the means are over, so that
    no group's mean rests on a handful of them while another's rests on thousands. `enough`:
    whether the group has at least MIN_HELDOUT_ITEMS held-out items, below which its mean is mostly
    noise (a tie of many items, or a small test split)."""
    popularity = items["train_popularity"]
    held = items["heldout_count"] > 0
    groups = popularity_groups(popularity, n_groups, weights=held)
    per_item = np.zeros(groups.size)
    per_item[held] = items[f"hits_at_{k}"][held] / items["heldout_count"][held]
    rows = []
    for group in range(1, int(groups.max()) + 1):
        members = groups == group
        held_members = members & held
        rows.append(
            {
                "group": group,
                "popularity_min": int(popularity[members].min()),
                "popularity_max": int(popularity[members].max()),
                "n_items": int(members.sum()),
                "n_heldout_items": int(held_members.sum()),
                "n_heldout": int(items["heldout_count"][members].sum()),
                "item_recall": per_item[held_members].mean() if held_members.any() else np.nan,
                "enough": bool(held_members.sum() >= MIN_HELDOUT_ITEMS),
            }
        )
    return pd.DataFrame(rows)


def popularity_group_label(row) -> str:
    """An x tick label: the group's popularity range, its items, its held-out items, and a mark when
    they are too few."""
    low, high = row["popularity_min"], row["popularity_max"]
    label = f"{low:,}" if low == high else f"{low:,}–{high:,}"
    label += f"\n{row['n_items']:,} items\n{row['n_heldout_items']:,} held out"
    return label + ("" if row["enough"] else "\ntoo few")


def item_recall_by_popularity_figure(runs: list[EvaluatedRun], dataset: str, k: int = 100) -> plt.Figure:
    """Item Recall@k per popularity group, one bar per method (mean over seeds, ±1 SD); a group with
    too few held-out items is drawn hatched and faded."""
    _style()
    drawn = styles(_methods(runs))
    frame = pd.concat(
        [item_recall_by_group(run.items(), k).assign(method=run.method, seed=run.seed) for run in runs],
        ignore_index=True,
    )
    groups = item_recall_by_group(runs[0].items(), k)  # the same test split for every run
    summary = frame.groupby(["method", "group"], sort=False)["item_recall"].agg(["mean", "std"])
    methods = _methods(runs)
    width = 0.8 / len(methods)
    figure, axes = plt.subplots(figsize=(max(9.0, 1.0 * len(groups) + 2), 5.2))
    for index, method in enumerate(methods):
        x = np.arange(len(groups)) - 0.4 + width * (index + 0.5)
        rows = summary.loc[method].reindex(groups["group"])
        bars = axes.bar(
            x,
            rows["mean"],
            width,
            yerr=rows["std"].fillna(0),
            color=drawn[method].colour,
            label=drawn[method].label,
            capsize=2,
            error_kw={"linewidth": 1},
        )
        for bar, enough in zip(bars, groups["enough"]):
            if not enough:
                bar.set_alpha(0.35)
                bar.set_hatch("//")
    axes.set_xticks(range(len(groups)), [popularity_group_label(row) for _, row in groups.iterrows()], fontsize=8)
    axes.set_xlabel(
        f"training popularity of the item (users with it), in groups of about 1/{N_POPULARITY_GROUPS} of the items held "
        "out at least once each, equal popularity never split;\nunder each group: its items, and those held out at least "
        f'once; hatched, "too few": under {MIN_HELDOUT_ITEMS} held out'
    )
    axes.set_ylabel(f"Item Recall@{k}, mean over\nthe group's items held out at least once")
    axes.set_ylim(bottom=0)
    axes.set_title(
        f"{dataset}: Item Recall@{k} by item popularity, over the items held out at least once\n"
        f"(never held out, an item would count 0); error bars: ±1 SD over seeds ({_runs_note(runs)})"
    )
    _legend_outside(axes)
    return figure


# ---- 3. accuracy against coverage ----


def tradeoff_frame(
    runs: list[EvaluatedRun], accuracy: str = "ndcg@100", coverage: str = "coverage@100"
) -> pd.DataFrame:
    frame = pd.DataFrame(
        [
            {"method": r.method, "accuracy": r.record["metrics"][accuracy], "coverage": r.record["metrics"][coverage]}
            for r in runs
        ]
    )
    summary = frame.groupby("method", sort=False).agg(["mean", "std", "count"])
    summary.columns = [f"{a}_{b}" for a, b in summary.columns]
    return summary.reset_index()


def tradeoff_figure(runs: list[EvaluatedRun], dataset: str) -> plt.Figure:
    """NDCG@100 against Coverage@100 per method; with an outlier (MostPop: its declaration says
    so) and at least two other methods, a second panel zooms in on the others, which the outlier's
    distant point would squash together."""
    _style()
    summary = tradeoff_frame(runs)
    drawn = styles(summary["method"])
    block_size = int(runs[0].record["evaluation"]["coverage_block_size"])
    others = summary[[not drawn[name].outlier for name in summary["method"]]]
    panels = [summary] + ([others] if len(others) >= 2 and len(others) < len(summary) else [])
    figure, axes_list = plt.subplots(1, len(panels), figsize=(6.2 * len(panels) + 1.8, 4.8), squeeze=False)
    for axes, panel in zip(axes_list[0], panels):
        _mean_sd_points(axes, panel, "coverage", "accuracy", drawn)
        axes.set_xlabel(f"Coverage@100 (distinct items per {block_size} test users, fold-in masked)")
        axes.set_ylabel("NDCG@100")
        axes.margins(0.15)
    axes_list[0][0].set_title("all methods")
    if len(panels) > 1:
        left_out = ", ".join(style.label for style in drawn.values() if style.outlier)
        axes_list[0][1].set_title(f"without {left_out} (zoomed)")
    figure.suptitle(f"{dataset}: accuracy against coverage; mean over seeds, error bars ±1 SD ({_runs_note(runs)})")
    handles, labels = axes_list[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, title="method", loc="upper left", bbox_to_anchor=(1.0, 0.9), frameon=False)
    figure.tight_layout()
    return figure


# ---- 4. POSIT's weight landscape ----


def item_coordinates(train: sp.spmatrix, seed: int = LANDSCAPE_SEED) -> np.ndarray:
    """(items × 2): a rank-2 truncated SVD of the item columns of the training matrix X.

    Each column is first scaled to unit length, so that an item's place reflects which users it
    shares, not how many it has (on raw columns every tail item sits at the origin); items without
    interactions stay at the origin. With the scaled matrix ≈ U S Vᵀ, the coordinates are the unit
    columns' projections on the top two left singular vectors (which live in user space), U_cᵀ x_j =
    s_c V_jc: the rows of V·S, so they lie in the unit disk. The sign of each component is fixed so
    that its largest-magnitude coordinate is positive."""
    matrix = sp.csr_matrix(train, dtype=np.float64)
    if min(matrix.shape) < 3:
        raise ValueError(f"the weight landscape needs at least 3 users and 3 items, got {matrix.shape}")
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=0)).ravel())
    matrix = matrix @ sp.diags(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0))
    start = np.random.default_rng(seed).standard_normal(min(matrix.shape))
    _, values, right = svds(matrix, k=2, v0=start, random_state=seed)
    order = np.argsort(values)[::-1]
    coordinates = right[order].T * values[order]
    largest = coordinates[np.abs(coordinates).argmax(axis=0), [0, 1]]
    return coordinates * np.sign(largest)


def load_item_weights(item_stats_paths) -> np.ndarray:
    """(seeds × items): the final normalised item weights w̄ of each POSIT run, from its items.npz."""
    weights = []
    item_stats_paths = as_path_list(item_stats_paths)
    for path in item_stats_paths:
        with np.load(path) as item_stats:
            if "item_weights" not in item_stats:
                raise ValueError(
                    f"{path}: no item_weights (not a POSIT run's evaluation, or one older than metric format 4)"
                )
            weights.append(np.asarray(item_stats["item_weights"], dtype=np.float64).ravel())
    if not weights:
        raise ValueError("no POSIT runs given for the weight landscape")
    if len({w.size for w in weights}) != 1:
        raise ValueError(f"{list(item_stats_paths)}: item_weights of different lengths")
    return np.stack(weights)


def weight_landscape_figure(train: sp.spmatrix, weights: np.ndarray, dataset: str) -> plt.Figure:
    """Items placed by `item_coordinates`, coloured by training popularity (left) and by POSIT's
    final weight averaged over the seeds' models (right)."""
    _style()
    weights = np.atleast_2d(weights)
    if weights.shape[1] != train.shape[1]:
        raise ValueError(f"item_weights have {weights.shape[1]} items, the training matrix {train.shape[1]}")
    coordinates = item_coordinates(train)
    popularity = np.asarray(train.sum(axis=0)).ravel()
    mean_weight = weights.mean(axis=0)
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5.6), sharex=True, sharey=True, layout="constrained")
    order = np.argsort(popularity, kind="stable")  # popular items drawn last, on top
    points = left.scatter(
        coordinates[order, 0],
        coordinates[order, 1],
        c=np.maximum(popularity[order], 1),
        s=6,
        cmap=POPULARITY_CMAP,
        norm=LogNorm(vmin=1, vmax=max(popularity.max(), 2)),
        rasterized=True,
        linewidths=0,
    )
    figure.colorbar(points, ax=left, label="training popularity (users with the item, log scale)")
    low, high = np.percentile(mean_weight, [1, 99])
    order = np.argsort(mean_weight, kind="stable")  # high weights drawn on top
    points = right.scatter(
        coordinates[order, 0],
        coordinates[order, 1],
        c=mean_weight[order],
        s=6,
        cmap="viridis",
        norm=Normalize(vmin=low, vmax=high if high > low else low + 1e-9),
        rasterized=True,
        linewidths=0,
    )
    n_seeds = weights.shape[0]
    figure.colorbar(
        points,
        ax=right,
        extend="both",
        label=f"POSIT final item weight w̄, mean over {n_seeds} seed{'s' if n_seeds > 1 else ''}",
    )
    for axes in (left, right):
        axes.set_xlabel("SVD component 1")
    left.set_ylabel("SVD component 2")
    left.set_title("coloured by training popularity")
    right.set_title("coloured by POSIT's learned weight")
    figure.suptitle(
        f"{dataset}: {train.shape[1]} items placed by a rank-2 truncated SVD of their unit-length training columns\n"
        "right: colours clipped to the weights' 1st–99th percentile"
    )
    return figure


# ---- 5. Lorenz curves of exposure ----


def lorenz_figure(runs: list[EvaluatedRun], dataset: str, k: int = 100, max_points: int = 1000) -> plt.Figure:
    _style()
    drawn = styles(_methods(runs))
    figure, axes = plt.subplots(figsize=(6.8, 5.6))
    axes.plot([0, 1], [0, 1], linestyle="--", color="black", linewidth=1, label="equal exposure (Gini 0)")
    for method in _methods(runs):
        method_runs = [r for r in runs if r.method == method]
        ginis = [r.record["metrics"][f"gini@{k}"] for r in method_runs]
        spread = f" ± {np.std(ginis, ddof=1):.3f}" if len(ginis) > 1 else ""
        label = f"{drawn[method].label} (Gini {np.mean(ginis):.3f}{spread})"
        for index, run in enumerate(method_runs):
            item_share, exposure_share = run_metrics.lorenz_curve(run.items()[f"exposure_at_{k}"])
            keep = np.unique(np.linspace(0, item_share.size - 1, min(max_points, item_share.size)).round().astype(int))
            axes.plot(
                item_share[keep],
                exposure_share[keep],
                color=drawn[method].colour,
                linewidth=1.4,
                alpha=0.85,
                label=label if index == 0 else None,
            )
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.xaxis.set_major_formatter(PercentFormatter(1.0))
    axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    axes.set_xlabel("share of catalog items, least recommended first")
    axes.set_ylabel(f"share of all top-{k} recommendations")
    axes.set_title(f"{dataset}: Lorenz curves of top-{k} exposure\none line per seed; Gini: mean ± SD over seeds")
    _legend_outside(axes, title=None)
    return figure


# ---- 6. POSIT's adversary: accuracy and coverage beside what its weights did ----


def adversary_figure(table: pd.DataFrame, history: pd.DataFrame, dataset: str) -> plt.Figure:
    """Three panels: NDCG@100 against Coverage@100 (mean, ±1 SD over seeds) for every method; for
    each POSIT run, one line per seed: the weights' share on the least popular half of the items
    after each epoch, and how much the weights moved in each epoch (log scale; a change of exactly
    0 is left out). Seeds are drawn apart rather than averaged: an adversary can settle on the head
    with one seed and on the tail with another."""
    _style()
    drawn = styles(table["method"])
    figure, (tradeoff, share, change) = plt.subplots(1, 3, figsize=(17, 4.8))
    _mean_sd_points(tradeoff, table, "coverage@100", "ndcg@100", drawn)
    tradeoff.set_xlabel("Coverage@100 (fold-in masked)")
    tradeoff.set_ylabel("NDCG@100")
    tradeoff.set_title("accuracy and coverage")
    tradeoff.margins(0.15)
    for (method, _), run in history.groupby(["method", "seed"], sort=False):
        share.plot(run["epoch"], run["tail_share"], color=drawn[method].colour, linewidth=1.1, alpha=0.8)
        change.plot(
            run["epoch"],
            run["weight_change"].where(run["weight_change"] > 0),
            color=drawn[method].colour,
            linewidth=1.1,
            alpha=0.8,
        )
    share.axhline(0.5, color="#949494", linewidth=0.8, linestyle="--")
    share.set_xlabel("epoch")
    share.set_ylabel("share of the weights on the least popular half")
    share.set_title("where the adversary puts its weight")
    change.set_yscale("log")
    change.set_xlabel("epoch")
    change.set_ylabel("mean |change of w̄| in the epoch")
    change.set_title("how much the weights still move")
    figure.suptitle(f"{dataset}: POSIT's adversary ({_seed_note(table['n_seeds'])})")
    handles, labels = tradeoff.get_legend_handles_labels()
    figure.legend(handles, labels, title="method", loc="upper left", bbox_to_anchor=(1.0, 0.9), frameon=False)
    figure.tight_layout()
    return figure
