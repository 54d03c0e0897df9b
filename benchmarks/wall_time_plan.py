"""The paper run's wall-time plan from a rehearsal's measurements (configs/rehearsal.yaml): per
dataset and method the seconds per epoch and per evaluation, peak memory and the model file's
size, from the jobs' benchmark files and model files; then the paper config's expected wall time
with one worker (the machine the rehearsal ran on) and with N workers (N GPUs of a cluster).

    python benchmarks/wall_time_plan.py --config configs/rehearsal.yaml --label "2-core CPU" \
        [--paper configs/paper.yaml] [--workers 1 8 32] > plan.md

A training job of the paper runs its config's epochs (an upper bound: early stopping may end it
sooner): its rehearsal's time outside the epochs (start-up, loading, writing), plus the mean epoch
of the rehearsal (training and validation) times the paper's epochs. Every (method, seed) run of
the paper is one training and one evaluation; with N workers a dataset takes at least its longest
chain (download, preprocessing, the longest training, with its base's for rerank and post, an
evaluation, the tables),
else its total over N. A rehearsal dataset plans the paper's of its name without `-shape`, or the
one `--as NAME=PAPER_NAME` gives it.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import yaml

from semtail import plan, registry
from semtail.files import read_json
from semtail.modelfile import load_model
from semtail.resource_check import read_record

ROOT = Path(__file__).resolve().parents[1]


def measured(config: dict, root: Path) -> dict:
    """{(rule, dataset, name or None): {"s", "max_rss", "input_mb"}} of every benchmark file that exists."""
    jobs = {}
    for path in plan.benchmark_files(config):
        if not (root / path).is_file():
            continue
        record = read_record(root / path)
        wildcards = record["wildcards"]
        rss = record["max_rss"] if isinstance(record["max_rss"], (int, float)) else None
        input_mb = record.get("input_size_mb") or {}
        jobs[(record["rule_name"], wildcards["dataset"], wildcards.get("method"))] = {
            "s": float(record["s"]),
            "max_rss": rss,
            "input_mb": input_mb if isinstance(input_mb, dict) else {},
        }
    return jobs


def epoch_seconds(root: Path, config: dict, dataset: str, name: str) -> tuple[float, float] | None:
    """The mean epoch (s) and the epochs' total of a run, from its metrics.json (the model's history,
    metric format 4) or else its model file; None without epochs."""
    run = root / plan.run_dir(config, dataset, name, config["seeds"][0])
    recorded = read_json(run / "metrics.json").get("model", {}) if (run / "metrics.json").is_file() else {}
    if "history" in recorded:
        history = recorded["history"]
    elif (run / "model.pt").is_file():
        history = load_model(run / "model.pt", mmap=True).get("history") or []
    else:
        return None
    seconds = [entry["seconds"] for entry in history if isinstance(entry, dict) and "seconds" in entry]
    return (statistics.fmean(seconds), sum(seconds)) if seconds else None


def mib(value) -> str:
    return "–" if value is None else f"{value:,.0f}"


def plan_tables(
    config: dict, paper: dict, root: Path, label: str, workers: list[int], names: dict | None = None
) -> str:
    jobs = measured(config, root)
    lines = [f"Measured on {label}, experiment `{config.get('experiment', '')}`, {len(jobs)} jobs.", ""]
    lines += [
        "| dataset | method | s / epoch | train s (rehearsal) | evaluation s | train peak MiB | evaluation peak MiB | model file MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    totals = {}
    for dataset in config["datasets"]:
        paper_dataset = (names or {}).get(dataset, dataset.removesuffix("-shape"))
        paper_config = paper if paper_dataset in paper["datasets"] else config
        run_seconds, chains, trains = 0.0, {}, {}
        for name in config["methods"]:
            train = jobs.get(("train", dataset, name))
            evaluation = jobs.get(("evaluate", dataset, name))
            if train is None or evaluation is None:
                continue
            epochs = epoch_seconds(root, config, dataset, name)
            if epochs is None:
                paper_train = train["s"]
            else:
                target = plan.resolve_hyperparameters(
                    paper_config, paper_dataset if paper_config is paper else dataset, name
                )
                paper_train = train["s"] - epochs[1] + epochs[0] * int(target["epochs"])
            own_model = f"{plan.run_dir(config, dataset, name, config['seeds'][0])}/model.pt"  # not its base's
            model_mb = next((mb for file, mb in evaluation["input_mb"].items() if file.endswith(own_model)), None)
            lines.append(
                f"| {dataset} | {name} | {'–' if epochs is None else f'{epochs[0]:,.1f}'} | {train['s']:,.0f} | "
                f"{evaluation['s']:,.0f} | {mib(train['max_rss'])} | {mib(evaluation['max_rss'])} | {mib(model_mb)} |"
            )
            runs = len(plan.run_seeds(paper_config, paper_dataset if paper_config is paper else dataset, name))
            run_seconds += runs * (paper_train + evaluation["s"])
            trains[name] = paper_train
            chains[name] = paper_train + evaluation["s"]
        fixed = sum(jobs.get((rule, dataset, None), {}).get("s", 0.0) for rule in ("download", "preprocess"))
        tables = sum(
            jobs.get((rule, dataset, None), {}).get("s", 0.0)
            for rule in ("aggregate", "plot", "plot_weight_landscape", "plot_adversary")
        )
        # an on-base method's training waits for its base's
        for name in chains:
            hyperparameters = plan.resolve_hyperparameters(config, dataset, name)
            if registry.declaration(plan.method_of(config, name)).training == "on_base":
                chains[name] += trains.get(hyperparameters["base"], 0.0)
        chain = fixed + max(chains.values(), default=0.0) + tables
        totals[dataset] = (fixed + run_seconds + tables, chain)
    lines += [
        "",
        "| paper run, expected wall time | " + " | ".join(f"{n} worker{'s' if n > 1 else ''}" for n in workers) + " |",
    ]
    lines.append("|---|" + "---|" * len(workers))
    for dataset, (total, chain) in totals.items():
        planned = names.get(dataset, dataset.removesuffix("-shape")) if names else dataset.removesuffix("-shape")
        lines.append(f"| {dataset} as {planned} | " + " | ".join(hours(max(chain, total / n)) for n in workers) + " |")
    everything = sum(total for total, _ in totals.values())
    longest = max((chain for _, chain in totals.values()), default=0.0)
    lines.append("| all | " + " | ".join(hours(max(longest, everything / n)) for n in workers) + " |")
    return "\n".join(lines) + "\n"


def hours(seconds: float) -> str:
    return f"{seconds / 3600:,.1f} h" if seconds >= 3600 else f"{seconds / 60:,.0f} min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/rehearsal.yaml", help="the rehearsal's config")
    parser.add_argument("--paper", default="configs/paper.yaml", help="the run to plan")
    parser.add_argument("--root", default=".", help="the folder the rehearsal ran in")
    parser.add_argument("--label", required=True, help="the machine the rehearsal ran on, for the table")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--as", dest="names", nargs="*", default=[], metavar="NAME=PAPER_NAME")
    args = parser.parse_args()
    names = dict(pair.split("=", 1) for pair in args.names)
    config = yaml.safe_load(Path(args.config).read_text())
    paper = yaml.safe_load(Path(args.paper).read_text())
    print(plan_tables(config, paper, Path(args.root), args.label, args.workers, names), end="")


if __name__ == "__main__":
    main()
