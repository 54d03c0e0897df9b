"""Each job's measured peak memory and wall time against what it declared: resources.csv.

Every rule writes Snakemake's benchmark file (`benchmark:`, logs/.../benchmarks/), in the extended
JSON-lines format, which records beside the measurement (`s`, `max_rss` in MiB) the job's rule,
wildcards and the resources it ran with (`mem_mb`, `runtime` in minutes): exactly what the job
declared, a retry's larger request and `--set-resources` included. The table has a row per job;
a job whose peak or wall time exceeds its declaration is not `within` and fails the check, named
by rule and wildcards with both values. A declaration more than twice the measurement plus a floor
(OVERSIZED_FLOOR: the interpreter's 2 GiB allowance, the 15 minutes of a job's start-up) is noted
as oversized: such a request waits longest in a cluster's queue, but is no error.

Snakemake samples memory every 0.5 s for a job's first 15 s and every 30 s after that: a peak
between two samples is missed, and a job shorter than the first sample has none (`max_rss_mb` NA,
judged by its wall time alone).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

COLUMNS = ("rule", "job", "declared_mem_mb", "max_rss_mb", "declared_runtime_min", "wall_min", "within", "note")
OVERSIZED_FACTOR = 2.0
OVERSIZED_FLOOR = {"mem_mb": 2048.0, "runtime": 15.0}


class ResourceRecordError(ValueError):
    """A benchmark file that cannot be read as Snakemake's extended record."""


class ResourcesExceeded(ValueError):
    """Jobs whose peak memory or wall time exceeded what they declared."""


@dataclass(frozen=True)
class Row:
    rule: str
    job: str
    declared_mem_mb: float | None
    max_rss_mb: float | None
    declared_runtime_min: float | None
    wall_min: float
    within: bool
    note: str

    def as_csv(self) -> list[str]:
        def number(value, digits):
            return "NA" if value is None else f"{value:.{digits}f}"

        return [
            self.rule,
            self.job,
            number(self.declared_mem_mb, 0),
            number(self.max_rss_mb, 0),
            number(self.declared_runtime_min, 0),
            number(self.wall_min, 2),
            str(self.within).lower(),
            self.note,
        ]


def _number(value) -> float | None:
    if value in (None, "NA", "-", ""):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def read_record(path: str | Path) -> dict:
    """The last record of a benchmark file (one per line; a job benchmarked once has one)."""
    path = Path(path)
    lines = [line for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    if not lines:
        raise ResourceRecordError(f"{path}: no benchmark record (the job that writes it did not finish)")
    try:
        record = json.loads(lines[-1])
    except json.JSONDecodeError as error:
        raise ResourceRecordError(f"{path}: not a JSON-lines benchmark record ({error})") from None
    missing = [key for key in ("s", "max_rss", "rule_name", "wildcards", "resources") if key not in record]
    if missing:
        raise ResourceRecordError(
            f"{path}: the record has no {', '.join(missing)}: it was written without Snakemake's extended "
            "benchmark format (rules/common.smk turns it on; rerun the job)"
        )
    return record


def _mapping(value, path, key) -> dict:
    if isinstance(value, dict):
        return value
    raise ResourceRecordError(f"{path}: {key} is {value!r}, not a mapping")


def job_name(rule: str, wildcards: dict) -> str:
    return rule + "".join(f" {key}={value}" for key, value in wildcards.items())


def row_of(path: str | Path) -> Row:
    record = read_record(path)
    resources = _mapping(record["resources"], path, "resources")
    wildcards = _mapping(record["wildcards"], path, "wildcards")
    rule, job = str(record["rule_name"]), job_name(str(record["rule_name"]), wildcards)
    wall_s = _number(record["s"])
    if wall_s is None:
        raise ResourceRecordError(f"{path}: no wall time (s) in the record")
    declared = {"mem_mb": _number(resources.get("mem_mb")), "runtime": _number(resources.get("runtime"))}
    measured = {"mem_mb": _number(record["max_rss"]), "runtime": wall_s / 60}
    notes, within = [], True
    for key, what, unit in (("mem_mb", "peak memory", "MiB"), ("runtime", "wall time", "min")):
        if declared[key] is None or measured[key] is None:
            if declared[key] is None:
                notes.append(f"no {what} declared")
            elif measured[key] is None:
                notes.append(f"{what} not sampled (the job ended before the first sample)")
            continue
        if measured[key] > declared[key]:
            within = False
            notes.append(f"{what} {measured[key]:.1f} {unit} exceeds the declared {declared[key]:.0f} {unit}")
        elif declared[key] > OVERSIZED_FACTOR * measured[key] + OVERSIZED_FLOOR[key]:
            notes.append(
                f"{what} oversized: declared {declared[key]:.0f} {unit}, {declared[key] / max(measured[key], 1e-9):.1f}x "
                f"the measured {measured[key]:.1f}"
            )
    return Row(
        rule,
        job,
        declared["mem_mb"],
        measured["mem_mb"],
        declared["runtime"],
        measured["runtime"],
        within,
        "; ".join(notes),
    )


def resource_rows(benchmark_files) -> list[Row]:
    return [row_of(path) for path in benchmark_files]


def write_table(rows: list[Row], path: str | Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(row.as_csv() for row in rows)


def check_within(rows: list[Row]) -> None:
    """Raises naming every job whose peak memory or wall time exceeded its declaration."""
    exceeded = [row for row in rows if not row.within]
    if exceeded:
        lines = [f"{len(exceeded)} of {len(rows)} jobs used more than they declared:"]
        lines += [f"  {row.job}: {row.note}" for row in exceeded]
        lines.append(
            "Their requests come from semtail/job_resources.py:resources; a cluster would have killed these jobs."
        )
        raise ResourcesExceeded("\n".join(lines))
