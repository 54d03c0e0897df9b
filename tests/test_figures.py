"""The figures: their data against hand-computed values, and the plot scripts on tiny inputs,
checked to give decodable, non-blank PNGs and real PDFs."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from semtail import evaluate as ev
from semtail import figures, registry

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("coverage_at_k", "item_recall_by_popularity", "accuracy_coverage_tradeoff", "lorenz")


def assert_real_image(png: Path, pdf: Path) -> None:
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
    rgb = image[..., :3]
    not_white = np.any(rgb < 0.95, axis=-1).mean()
    assert rgb.std() > 0.05 and not_white > 0.03, f"{png.name} looks blank"
    assert pdf.read_bytes().startswith(b"%PDF")
    assert pdf.stat().st_size > 2000


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory):
    """Evaluation outputs of three methods, two seeds each, on a random split of 200 test users."""
    folder = tmp_path_factory.mktemp("results")
    rng = np.random.default_rng(0)
    n_items = 40
    item_bias = np.linspace(0.02, 0.4, n_items)
    train = sp.csr_matrix((rng.random((80, n_items)) < item_bias).astype(np.float32))
    interacted = rng.random((200, n_items)) < item_bias
    held = rng.random((200, n_items)) < 0.3
    split = ev.Split(
        train,
        sp.csr_matrix((interacted & ~held).astype(np.float32)),
        sp.csr_matrix((interacted & held).astype(np.float32)),
    )
    popularity = torch.tensor(np.asarray(train.sum(axis=0)).ravel(), dtype=torch.float32)
    paths = {"metrics": [], "topk": [], "item_stats": []}
    for method in ("mostpop", "ease", "posit"):
        for seed in (0, 1):
            weights = torch.tensor(np.random.default_rng(seed).random((n_items, n_items)), dtype=torch.float32)
            if method == "mostpop":
                score = lambda x: popularity.expand(x.shape[0], -1).clone()  # noqa: E731
            elif method == "ease":
                score = lambda x, w=weights: x @ w + 0.02 * popularity  # noqa: E731
            else:
                score = lambda x, w=weights: x @ w  # noqa: E731
            result = ev.evaluate(
                score, split, ks=[10], coverage_block_size=50, tail_interaction_share=0.2, batch_size=64
            )
            record = {
                "dataset": "tiny",
                "method": method,
                "variant": method,
                "seed": seed,
                "metrics": result.metrics,
                "evaluation": {"ks": [10], "coverage_block_size": 50},
            }
            run_dir = folder / method / f"seed{seed}"
            ev.write_outputs(record, result, run_dir / "metrics.json", run_dir / "topk.npz", run_dir / "items.npz")
            paths["metrics"].append(run_dir / "metrics.json")
            paths["topk"].append(run_dir / "topk.npz")
            paths["item_stats"].append(run_dir / "items.npz")
    sp.save_npz(folder / "train.npz", train)
    return folder, paths


def test_every_method_keeps_its_declared_colour_and_unknown_names_get_distinct_ones():
    drawn = figures.styles(["mostpop", "new_a", "posit", "new_b"])
    assert (
        drawn["posit"].colour
        == registry.declaration("posit").figures["colour"]
        == figures.styles(["posit"])["posit"].colour
    )
    assert len({style.colour for style in drawn.values()}) == 4
    declared = [method.figures["colour"] for method in registry.methods().values()]
    assert len(set(declared)) == len(declared)
    assert figures.styles(["new_a"])["new_a"].label == "new_a"


def test_a_copied_declaration_gets_a_label_and_colour_of_its_own(monkeypatch):
    declared = registry.methods()
    copy = dataclasses.replace(declared["ease"], name="ease_copy")
    monkeypatch.setattr(registry, "methods", lambda: {**declared, "ease_copy": copy})
    drawn = figures.styles(["ease", "ease_copy", "mostpop"])
    assert (drawn["ease"].label, drawn["ease_copy"].label) == ("EASE", "EASE (ease_copy)")
    assert drawn["ease"].colour == declared["ease"].figures["colour"] != drawn["ease_copy"].colour
    assert drawn["ease_copy"].marker == drawn["ease"].marker
    assert drawn["mostpop"].outlier and not drawn["ease"].outlier


def test_popularity_groups_hold_equal_interaction_shares_and_never_split_ties():
    # a tied-popularity fixture: six items of popularity 1, two of 2, two of 4, one of 10:
    # interactions 6, 4, 8, 10 of 28; their middles at 3/28, 8/28, 14/28 and 23/28 of them fall in
    # the quarters 1, 2, 3 (14/28 = 0.5 starts the third) and 4
    popularity = np.array([1, 4, 1, 2, 1, 10, 1, 2, 1, 4, 1])
    assert figures.popularity_groups(popularity, 4).tolist() == [1, 3, 1, 2, 1, 4, 1, 2, 1, 3, 1]
    # in thirds, 2's middle (0.857 of a third) and 4's (1.5) share nothing with 10's (2.46)
    assert figures.popularity_groups(popularity, 3).tolist() == [1, 2, 1, 1, 1, 3, 1, 1, 1, 2, 1]
    # weighted by held-out items instead (the figure's groups): 4, 1, 1 and 1 of 7 by value; halves
    held_out = np.array([1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 1])
    assert figures.popularity_groups(popularity, 2, weights=held_out).tolist() == [1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1]
    # a value that holds more than a group's share leaves groups out: numbered on without a gap
    assert figures.popularity_groups(np.array([1, 1, 100]), 10).tolist() == [1, 1, 2]
    assert figures.popularity_groups(np.zeros(4, dtype=int), 10).tolist() == [1, 1, 1, 1]
    # a catalog of 15,000 items, 9,000 of them seen once: that popularity stays one group
    rng = np.random.default_rng(0)
    popularity = np.concatenate([np.ones(9000, dtype=int), rng.zipf(1.6, 6000).clip(2, 5000)])
    groups = figures.popularity_groups(popularity, 10)
    for value in np.unique(popularity):
        assert np.unique(groups[popularity == value]).size == 1, value
    assert np.all(np.diff(groups[np.argsort(popularity, kind="stable")]) >= 0)  # ordered by popularity
    shares = np.bincount(groups, weights=popularity)[1:] / popularity.sum()
    values, counts = np.unique(popularity, return_counts=True)
    largest_value_share = (values * counts).max() / popularity.sum()  # the items at the cap of 5,000
    assert shares.max() <= 0.1 + largest_value_share  # a group overshoots 1/10 by at most one value's interactions
    assert np.all(shares[:-1] < 0.11) and len(shares) >= 6


def test_item_recall_by_group_averages_over_items_held_out():
    items = {
        "train_popularity": np.array([1, 1, 3, 3]),
        "heldout_count": np.array([2, 0, 4, 1]),
        "hits_at_5": np.array([1, 0, 1, 1]),
    }
    frame = figures.item_recall_by_group(items, 5, n_groups=2)
    # held-out items 1 and 2 of 3: popularity 1 (middle 1/6) in the first half, 3 (middle 2/3) in the second;
    # group 1 = items 0, 1: only item 0 is held out (1/2); group 2 = items 2, 3: (1/4 + 1) / 2
    assert frame["item_recall"].tolist() == pytest.approx([0.5, 0.625])
    assert frame["n_items"].tolist() == [2, 2] and frame["n_heldout_items"].tolist() == [1, 2]
    assert frame["n_heldout"].tolist() == [2, 5] and frame["popularity_min"].tolist() == [1, 3]
    assert frame["enough"].tolist() == [False, False]  # under MIN_HELDOUT_ITEMS
    assert figures.popularity_group_label(frame.iloc[1]) == "3\n2 items\n2 held out\ntoo few"
    many = {key: np.tile(value, 10) for key, value in items.items()}  # 20 held-out items a group
    assert figures.item_recall_by_group(many, 5, n_groups=2)["enough"].tolist() == [False, False]
    many = {key: np.tile(value, 30) for key, value in items.items()}  # 30 and 60
    frame = figures.item_recall_by_group(many, 5, n_groups=2)
    assert frame["enough"].tolist() == [True, True] and figures.MIN_HELDOUT_ITEMS == 30
    assert figures.popularity_group_label(frame.iloc[0]) == "1\n60 items\n30 held out"


def test_item_coordinates_are_the_rank_two_svd_of_the_unit_length_item_columns():
    rng = np.random.default_rng(1)
    X = (rng.random((30, 12)) < 0.3).astype(np.float64)
    X[:, 5] = 0  # an item nobody has stays at the origin
    coordinates = figures.item_coordinates(sp.csr_matrix(X))
    norms = np.linalg.norm(X, axis=0)
    unit = X / np.where(norms > 0, norms, 1.0)
    left, values, right = np.linalg.svd(unit, full_matrices=False)
    expected = right[:2].T * values[:2]
    np.testing.assert_allclose(expected, unit.T @ left[:, :2], atol=1e-12)  # projections on the left singular vectors
    for c in range(2):
        sign = np.sign(expected[np.abs(expected[:, c]).argmax(), c])
        np.testing.assert_allclose(coordinates[:, c], sign * expected[:, c], atol=1e-8)
        assert coordinates[np.abs(coordinates[:, c]).argmax(), c] > 0
    np.testing.assert_array_equal(coordinates[5], [0.0, 0.0])
    assert np.all(np.linalg.norm(coordinates, axis=1) <= 1 + 1e-12)
    np.testing.assert_array_equal(coordinates, figures.item_coordinates(sp.csr_matrix(X)))  # deterministic


def test_coverage_frame_starts_at_the_block_mean_of_distinct_first_items(tiny_results):
    _, paths = tiny_results
    runs = figures.load_runs(paths["metrics"], paths["topk"], paths["item_stats"])
    frame = figures.coverage_frame(runs)
    run = runs[0]
    lists = run.lists()
    first = np.mean([len(set(lists[b : b + 50, 0]) - {-1}) for b in range(0, 200, 50)])
    row = frame[(frame["method"] == run.method) & (frame["seed"] == run.seed)]
    assert row["coverage"].iloc[0] == pytest.approx(first)
    assert row["coverage"].iloc[9] == pytest.approx(run.record["metrics"]["coverage@10"])
    assert row["k"].max() == 100


def test_coverage_figure_plots_the_masked_coverage_where_mostpop_exceeds_k(tiny_results):
    _, paths = tiny_results
    runs = figures.load_runs(paths["metrics"], paths["topk"], paths["item_stats"])
    frame = figures.coverage_frame(runs)
    mostpop = [run for run in runs if run.method == "mostpop"][0]
    with np.load(mostpop.topk) as data:
        masked, unmasked = data["top_k"], data["top_k_unmasked"]
    blocks = range(0, 200, 50)
    distinct = {
        name: np.mean([len(set(lists[b : b + 50, :10].ravel()) - {-1}) for b in blocks])
        for name, lists in (("masked", masked), ("unmasked", unmasked))
    }
    assert distinct["unmasked"] == 10 < distinct["masked"]
    row = frame[(frame["method"] == "mostpop") & (frame["seed"] == mostpop.seed) & (frame["k"] == 10)]
    assert row["coverage"].item() == pytest.approx(distinct["masked"])


def test_item_recall_deciles_recombine_into_item_recall_pos_and_say_so(tiny_results):
    _, paths = tiny_results
    runs = figures.load_runs(paths["metrics"], paths["topk"], paths["item_stats"])
    for run in runs:
        items = run.items()
        per_item = [h / n for h, n in zip(items["hits_at_100"], items["heldout_count"]) if n > 0]
        frame = figures.item_recall_by_group(items, 100).dropna()
        recombined = (frame["item_recall"] * frame["n_heldout_items"]).sum() / frame["n_heldout_items"].sum()
        assert frame["n_heldout_items"].sum() == len(per_item)
        assert (
            recombined
            == pytest.approx(np.mean(per_item))
            == pytest.approx(run.record["metrics"]["item_recall@100_pos"])
        )
    figure = figures.item_recall_by_popularity_figure(runs, "tiny")
    axes = figure.axes[0]
    assert "held out at least once" in axes.get_title() and "held out at least once" in axes.get_ylabel()
    figures.plt.close(figure)


def test_runs_must_pair_up(tiny_results):
    _, paths = tiny_results
    with pytest.raises(ValueError, match="not the same run's files"):
        figures.load_runs(paths["metrics"][:2], paths["topk"][1:3], paths["item_stats"][:2])
    with pytest.raises(ValueError, match="expected one of each"):
        figures.load_runs(paths["metrics"], paths["topk"][:1], paths["item_stats"])


def test_a_metric_json_without_a_variant_is_named(tiny_results, tmp_path):
    """A metric JSON of format_version 1, which had no `variant`."""
    _, paths = tiny_results
    files = [Path(shutil.copy(paths[kind][0], tmp_path)) for kind in ("metrics", "topk", "item_stats")]
    record = json.loads(files[0].read_text())
    del record["variant"]
    files[0].write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"metrics\.json: no 'variant' field"):
        figures.load_runs(*([path] for path in files))


def test_plot_script_writes_every_figure(tiny_results, tmp_path):
    _, paths = tiny_results
    command = [sys.executable, str(ROOT / "workflow_scripts/plot.py"), "--param", "dataset=tiny"]
    for name, files in paths.items():
        command += ["--input", f"{name}=" + ",".join(map(str, files))]
    for figure in FIGURES:
        command += [
            "--output",
            f"{figure}={tmp_path / figure}.png",
            "--output",
            f"{figure}_pdf={tmp_path / figure}.pdf",
        ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert completed.returncode == 0, completed.stderr
    for figure in FIGURES:
        assert_real_image(tmp_path / f"{figure}.png", tmp_path / f"{figure}.pdf")


def errorbar_points(axes) -> dict[str, tuple]:
    """Per label: the point an errorbar drew, its x and y error bars' half-lengths, and its marker,
    marker size and colour."""
    points = {}
    for container in axes.containers:
        line, _, (x_bars, y_bars) = container.lines
        (x,), (y,) = line.get_xdata(), line.get_ydata()
        (x_bar,), (y_bar,) = x_bars.get_segments(), y_bars.get_segments()
        spread = ((x_bar[1, 0] - x_bar[0, 0]) / 2, (y_bar[1, 1] - y_bar[0, 1]) / 2)
        points[container.get_label()] = ((x, y), spread, (line.get_marker(), line.get_markersize(), line.get_color()))
    return points


def expected_point(name: str, x_values, y_values) -> tuple:
    """Mean and sample SD (0 for one seed: no error bar) of each coordinate, in the method's style."""
    style = figures.styles([name])[name]
    sd = [float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for v in (x_values, y_values)]
    return (np.mean(x_values), np.mean(y_values)), tuple(sd), (style.marker, style.marker_size, style.colour)


def assert_points(axes, expected: dict[str, tuple]) -> None:
    drawn = errorbar_points(axes)
    assert drawn.keys() == expected.keys()
    for label, (centre, spread, look) in expected.items():
        assert drawn[label][0] == pytest.approx(centre) and drawn[label][1] == pytest.approx(spread), label
        assert drawn[label][2] == look, label


def test_tradeoff_and_adversary_figures_draw_mean_and_sd_in_each_method_s_style(tiny_results, tmp_path):
    """Both figures' accuracy-coverage panels: a point at the means over seeds, error bars of one
    sample SD, the method's declared marker and size (POSIT's star is larger) and colour."""
    _, paths = tiny_results
    runs = figures.load_runs(paths["metrics"], paths["topk"], paths["item_stats"])
    label = {"mostpop": "MostPop", "ease": "EASE", "posit": "POSIT"}
    expected = {
        label[name]: expected_point(
            name,
            [r.record["metrics"]["coverage@100"] for r in runs if r.method == name],
            [r.record["metrics"]["ndcg@100"] for r in runs if r.method == name],
        )
        for name in label
    }
    assert expected["POSIT"][2][1] == 11 and expected["EASE"][2][1] == 8
    figure = figures.tradeoff_figure(runs, "tiny")
    assert_points(figure.axes[0], expected)
    assert_points(figure.axes[1], {key: value for key, value in expected.items() if key != "MostPop"})  # zoomed
    assert "(2 seeds per method)" in figure._suptitle.get_text()
    figures.save(figure, tmp_path / "tradeoff.png", tmp_path / "tradeoff.pdf")
    assert_real_image(tmp_path / "tradeoff.png", tmp_path / "tradeoff.pdf")

    seeds = {
        "mostpop": [(0.05, 30.0)],
        "ease": [(0.30, 40.0), (0.32, 44.0), (0.28, 42.0)],
        "posit": [(0.27, 55.0), (0.25, 61.0)],
    }
    table = pd.DataFrame(
        [
            {
                "method": name,
                "n_seeds": len(values),
                "ndcg@100_mean": np.mean([v[0] for v in values]),
                "ndcg@100_std": np.std([v[0] for v in values], ddof=1) if len(values) > 1 else np.nan,
                "coverage@100_mean": np.mean([v[1] for v in values]),
                "coverage@100_std": np.std([v[1] for v in values], ddof=1) if len(values) > 1 else np.nan,
            }
            for name, values in seeds.items()
        ]
    )
    history = pd.DataFrame(
        [
            {
                "method": "posit",
                "seed": seed,
                "epoch": epoch,
                "tail_share": 0.5 + 0.02 * epoch * (1 - 2 * seed),
                "weight_change": 10.0**-epoch,
            }
            for seed in (0, 1)
            for epoch in range(1, 6)
        ]
    )
    figure = figures.adversary_figure(table, history, "tiny")
    assert_points(
        figure.axes[0],
        {
            label[name]: expected_point(name, [v[1] for v in values], [v[0] for v in values])
            for name, values in seeds.items()
        },
    )
    assert "(1/2/3 seeds per method)" in figure._suptitle.get_text()
    figures.save(figure, tmp_path / "adversary.png", tmp_path / "adversary.pdf")
    assert_real_image(tmp_path / "adversary.png", tmp_path / "adversary.pdf")


def test_weight_landscape_figure(tiny_results, tmp_path):
    folder, _ = tiny_results
    train = sp.load_npz(folder / "train.npz")
    weights = np.random.default_rng(0).gamma(2.0, 0.5, size=(2, train.shape[1]))
    figure = figures.weight_landscape_figure(train, weights, "tiny")
    figures.save(figure, tmp_path / "w.png", tmp_path / "w.pdf")
    assert_real_image(tmp_path / "w.png", tmp_path / "w.pdf")
    with pytest.raises(ValueError, match="item_weights have 3 items"):
        figures.weight_landscape_figure(train, np.ones((1, 3)), "tiny")


def test_weight_landscape_script_on_evaluations(tiny_results, tmp_path):
    """The figure reads POSIT's item weights from each run's items.npz (no model file, no torch)."""
    folder, _ = tiny_results
    n_items = sp.load_npz(folder / "train.npz").shape[1]
    expected, evaluations = [], []
    for seed in (0, 1):
        path = tmp_path / f"items{seed}.npz"
        weights = np.linspace(0.5, 1.5, n_items) + seed / 10
        np.savez_compressed(path, item_weights=weights, ks=np.array([5]))
        expected.append(weights)
        evaluations.append(path)
    np.testing.assert_array_equal(figures.load_item_weights(evaluations), np.stack(expected))
    no_weights = tmp_path / "ease.npz"
    np.savez_compressed(no_weights, ks=np.array([5]))
    with pytest.raises(ValueError, match=r"ease\.npz: no item_weights"):
        figures.load_item_weights([evaluations[0], no_weights])
    command = [
        sys.executable,
        str(ROOT / "workflow_scripts/plot_weight_landscape.py"),
        "--param",
        "dataset=tiny",
        "--input",
        f"train={folder / 'train.npz'}",
        "--input",
        "item_stats=" + ",".join(map(str, evaluations)),
        "--output",
        f"weight_landscape={tmp_path / 'w.png'}",
        "--output",
        f"weight_landscape_pdf={tmp_path / 'w.pdf'}",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert completed.returncode == 0, completed.stderr
    assert_real_image(tmp_path / "w.png", tmp_path / "w.pdf")


def test_the_plot_and_table_jobs_do_not_import_torch():
    """Importing torch takes a second or more of each job that does it; the figures and tables of
    evaluation results need none of it."""
    code = "import sys, semtail.figures, semtail.tables, semtail.run_metrics, semtail.significance, semtail.script_io; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')[:3])"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "workflow_scripts")},
    )
    assert done.stdout.strip() == "[]"
