"""How much a config's run writes in model files, without running it: per dataset and name in
`methods:`, its runs (one for a seed-independent name), the size of their model files, and what
stays on disk once the run ends (nothing under `model_files: temporary`), from the datasets' sizes
(their stats.json once preprocessed, else the config's `expected:` sizes).

    .venv/bin/python tools/model_file_sizes.py configs/paper.yaml

semtail.job_resources.model_file_estimate does the counting; docs/running.md ("Disk") shows its output
for the paper config.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow_scripts"))

from semtail import job_resources, plan  # noqa: E402


def size(n_bytes: int) -> str:
    """Decimal units: 1.62 GB, 80.4 kB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.{2 if unit == 'GB' else 1}f} {unit}"
    return f"{n_bytes} B"


def table(rows: list[dict]) -> str:
    lines = [
        "| dataset | name | runs | one model file | all written | kept after the run |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['dataset']} | {row['name']} | {row['runs']} | {size(row['bytes_each'])} | {size(row['bytes'])} "
            f"| {size(row['kept_bytes'])} |"
        )
    for dataset in dict.fromkeys(row["dataset"] for row in rows):
        of_dataset = [row for row in rows if row["dataset"] == dataset]
        lines.append(
            f"| {dataset} | all | {sum(r['runs'] for r in of_dataset)} | | {size(sum(r['bytes'] for r in of_dataset))} "
            f"| {size(sum(r['kept_bytes'] for r in of_dataset))} |"
        )
    lines.append(
        f"| all | all | {sum(row['runs'] for row in rows)} | | {size(sum(row['bytes'] for row in rows))} "
        f"| {size(sum(row['kept_bytes'] for row in rows))} |"
    )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path, help="a workflow config, e.g. configs/paper.yaml")
    args = parser.parse_args(argv)
    config = yaml.safe_load(args.config.read_text())
    plan.check_config(config)
    print(table(job_resources.model_file_estimate(config)))


if __name__ == "__main__":
    main()
