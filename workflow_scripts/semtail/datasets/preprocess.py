"""The preprocess stage: the raw files that provenance.json names -> the Liang et al. (2018) split
in data/processed/{dataset}/{p}/ (p: semtail.plan.split_key): five binary CSR matrices, the id
lists of their rows and columns, and stats.json. Every output is written to a temporary file first and renamed at the end, stats.json last,
so a failure leaves none of them behind."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from semtail.datasets import DataError
from semtail.datasets.formats import FORMATS, RATING_SCALES, Anomalies, read_interactions
from semtail.datasets.split import MATRICES, PARTS, Split, SplitParameters, liang_split
from semtail.files import atomic_path, read_json, sha256
from semtail.provenance import environment

log = logging.getLogger(__name__)

ID_LISTS = {"item_ids": None, "train_users": "train", "validation_users": "validation", "test_users": "test"}
OUTPUT_NAMES = (*MATRICES, *ID_LISTS, "stats")


def read_provenance(provenance_file: str | os.PathLike) -> tuple[str, list[Path], dict]:
    """The format and paths of the raw files that provenance.json names (checked to be there, with
    the size and sha256 they had when fetched: a `path:` source is read where it is, and may have
    been changed since), and the provenance record itself."""
    provenance_file = Path(provenance_file)
    provenance = read_json(provenance_file)
    for key in ("format", "files"):
        if key not in provenance:
            raise DataError(f"{provenance_file}: no {key!r} entry; rerun the download stage")
    if provenance["format"] not in FORMATS:
        raise DataError(f"{provenance_file}: unknown format {provenance['format']!r} (known: {', '.join(FORMATS)})")
    files = [provenance_file.parent / name for name in provenance["files"]]
    recorded = provenance.get("file_checksums", {})
    for name, path in zip(provenance["files"], files):
        if not path.is_file():
            raise DataError(f"{provenance_file}: its raw file {path} is missing; rerun the download stage")
        expected_bytes = recorded.get(name, {}).get("bytes")
        if expected_bytes is not None and path.stat().st_size != expected_bytes:
            raise DataError(
                f"{path}: {path.stat().st_size} bytes now, {expected_bytes} when fetched ({provenance_file}); "
                f"it changed since, {rerun_download(provenance_file)}"
            )
        expected_sha256 = recorded.get(name, {}).get("sha256")
        if expected_sha256 is not None:
            actual = sha256(path)
            if actual != expected_sha256:
                raise DataError(
                    f"{path}: its sha256 is {actual} now, {expected_sha256} when fetched ({provenance_file}); "
                    f"it changed since, {rerun_download(provenance_file)}"
                )
    return provenance["format"], files, provenance


def log_split(dataset: str, split: Split, stats: dict) -> None:
    """The filtering steps, the split's sizes and what it dropped, in the log."""
    for step in split.filtering:
        log.info("%s: after %s: %s", dataset, step["step"], {k: v for k, v in step.items() if k != "step"})
    log.info(
        "%s: %d users (%s), %d items, %d interactions after filtering, %d in the split",
        dataset,
        stats["users"],
        stats["users_per_part"],
        stats["items"],
        stats["interactions_after_filtering"],
        stats["interactions"],
    )
    for name, detail in stats["matrices"].items():
        log.info("%s: %s: %s", dataset, name, detail)
    log_dropped_heldout(dataset, split.dropped_unknown_items)


def warn_mismatches(dataset: str, mismatches: list[str]) -> None:
    banner = "!" * 78
    log.warning(
        "\n%s\n%s: THE SPLIT DOES NOT MATCH THE PUBLISHED SIZES\n  %s\n"
        "Results on it are not comparable with the literature. Check the raw data and the preprocess "
        "settings.\n%s",
        banner,
        dataset,
        "\n  ".join(mismatches),
        banner,
    )


def rerun_download(provenance_file: Path) -> str:
    """How to take a raw file's new content: this dataset's download again, not every dataset's."""
    return f"rerun the download stage to use it as it is now (snakemake --forcerun {provenance_file})"


def count_outside_scale(frame, raw_format: str, anomalies: Anomalies) -> None:
    """Ratings outside the format's scale (RATING_SCALES), counted with the lowest and highest seen."""
    scale = RATING_SCALES.get(raw_format)
    if scale is None or "rating" not in frame:
        return
    low, high = scale
    rating = frame["rating"].to_numpy()
    outside = rating < low
    if high is not None:
        outside |= rating > high
    count = int(np.count_nonzero(outside))
    if count:
        odd = rating[outside]
        anomalies.add(
            "ratings_outside_scale",
            count,
            None,
            "kept (the threshold still applies)",
            scale=[low, high],
            lowest=float(odd.min()),
            highest=float(odd.max()),
        )


ANOMALY_LABELS = {
    "blank_lines": "blank line(s)",
    "non_finite_ratings": "non-finite rating(s) (NaN or infinite)",
    "repeated_pairs": "line(s) repeating an earlier line's (user, item) pair",
}
REPEATED_PAIRS_ACTION = (
    "merged before the split: a pair counts once, as a positive when any of its lines is one "
    "(the highest rating decides), at its first such line"
)


def count_repeated_pairs(split: Split, anomalies: Anomalies) -> None:
    if split.repeated_pairs:
        user, item = split.first_repeated_pair
        anomalies.add("repeated_pairs", split.repeated_pairs, f"user {user!r}, item {item!r}", REPEATED_PAIRS_ACTION)


def log_dropped_heldout(dataset: str, dropped: Mapping[str, int]) -> None:
    """Validation and test interactions on items that no training user has (step 4 of the split)."""
    if any(dropped.values()):
        log.warning(
            "%s: %s interactions dropped: their items are in no training user's interactions, so the split "
            "has no column for them (Liang et al.); see stats.json, dropped_validation_test_interactions_on_items_not_in_train",
            dataset,
            " and ".join(f"{count:,} {part}" for part, count in dropped.items()),
        )


def log_anomalies(dataset: str, raw_format: str, anomalies: dict) -> None:
    for kind, entry in anomalies.items():
        where = f" (first: {entry['first']})" if entry.get("first") else ""
        if kind == "ratings_outside_scale":
            low, high = entry["scale"]
            scale = f"{low:g} to {high:g}" if high is not None else f"at least {low:g}"
            what = f"ratings outside the {raw_format} scale ({scale}; seen {entry['lowest']:g} to {entry['highest']:g})"
        else:
            what = ANOMALY_LABELS.get(kind, kind.replace("_", " "))
        log.warning(
            "%s: %d %s, %s%s; see stats.json, data_warnings", dataset, entry["count"], what, entry["action"], where
        )


def split_statistics(split: Split) -> dict:
    """Users, items and interactions overall and per part, plus how filtering got there."""
    nnz = {name: int(split.matrices[name].nnz) for name in MATRICES}
    users = {name: len(split.users[name]) for name in PARTS}
    n_users, n_items, n_interactions = sum(users.values()), len(split.item_ids), sum(nnz.values())
    density = n_interactions / (n_users * n_items) if n_users and n_items else 0.0
    matrices = {}
    for name in MATRICES:
        matrix = split.matrices[name]
        rows_with_items = int(np.count_nonzero(np.diff(matrix.indptr)))
        matrices[name] = {"rows": matrix.shape[0], "interactions": nnz[name], "rows_with_interactions": rows_with_items}
    return {
        "users": n_users,
        "items": n_items,
        "interactions": n_interactions,
        "interactions_after_filtering": split.filtering[-1]["interactions"],
        "density": density,
        "sparsity": 1.0 - density,
        "users_per_part": users,
        "matrices": matrices,
        "filtering": split.filtering,
        "dropped_validation_test_interactions_on_items_not_in_train": split.dropped_unknown_items,
    }


# Each published size and the stats.json entry it is compared with. The published interactions are
# counted after filtering, before the split drops validation and test interactions on items that no
# training user has (Liang et al.'s notebook prints them "after filtering").
COMPARED_WITH = {"users": "users", "items": "items", "interactions": "interactions_after_filtering"}


def expected_mismatches(stats: dict, expected: Mapping[str, float] | None) -> list[str]:
    """The published sizes that the split misses, each with the published value and the tolerance.
    Users and items must match exactly; interactions within `interactions_relative_tolerance`."""
    expected = expected or {}
    mismatches = []
    for key, measured_as in COMPARED_WITH.items():
        if key not in expected:
            continue
        measured, published = int(stats[measured_as]), int(expected[key])
        tolerance = float(expected.get("interactions_relative_tolerance", 0)) if key == "interactions" else 0.0
        if abs(measured - published) > tolerance * published:
            allowed = f"relative tolerance {tolerance:g} (±{tolerance * published:,.0f})" if tolerance else "exact"
            mismatches.append(f"{measured_as.replace('_', ' ')}: {measured:,}, published {published:,}, {allowed}")
    return mismatches


def write_outputs(split: Split, stats: dict, outputs: Mapping[str, str | os.PathLike]) -> None:
    """All outputs via temporary files, renamed only once every one is written; stats.json last."""
    with ExitStack() as stack:
        # Contexts exit in reverse: entering stats first renames it last.
        tmp = {name: stack.enter_context(atomic_path(outputs[name])) for name in reversed(OUTPUT_NAMES)}
        for name in MATRICES:
            sp.save_npz(tmp[name], split.matrices[name], compressed=False)
        for name, part in ID_LISTS.items():
            ids = split.item_ids if part is None else split.users[part]
            tmp[name].write_text("".join(f"{value}\n" for value in ids.tolist()))
        tmp["stats"].write_text(json.dumps(stats, indent=2, allow_nan=False) + "\n")


def preprocess(
    provenance_file: str | os.PathLike,
    outputs: Mapping[str, str | os.PathLike],
    dataset: str,
    parameters: dict,
    expected: Mapping[str, int] | None = None,
    code_version: str | None = None,
) -> dict:
    """Reads the raw data, splits it, writes every output and returns the content of stats.json."""
    missing = [name for name in OUTPUT_NAMES if name not in outputs]
    if missing:
        raise DataError(f"preprocess outputs {missing} are not given (needs {list(OUTPUT_NAMES)})")
    for name in OUTPUT_NAMES:
        Path(outputs[name]).unlink(missing_ok=True)  # a failed run must not leave an older result behind
    split_parameters = SplitParameters.from_config(dict(parameters), f"datasets.{dataset}.preprocess")
    raw_format, files, provenance = read_provenance(provenance_file)
    if raw_format == "delimited" and not isinstance(provenance.get("source"), dict):
        raise DataError(
            f"{provenance_file}: the delimited format needs the source entry recorded; rerun the download stage"
        )
    log.info("%s: reading %s (%s)", dataset, [str(f) for f in files], raw_format)
    anomalies = Anomalies()
    # Held in a list so that liang_split gets the only reference and can free the frame early.
    frames = [read_interactions(raw_format, files, provenance.get("source"), anomalies)]
    count_outside_scale(frames[0], raw_format, anomalies)
    split = liang_split(frames.pop(), split_parameters, dataset)
    count_repeated_pairs(split, anomalies)
    stats = {"dataset": dataset, **split_statistics(split), "data_warnings": anomalies.as_dict()}
    log_anomalies(dataset, raw_format, stats["data_warnings"])
    log_split(dataset, split, stats)
    mismatches = expected_mismatches(stats, expected)
    if mismatches:
        warn_mismatches(dataset, mismatches)
    stats.update(
        expected=dict(expected or {}),
        expected_compared_with={key: COMPARED_WITH[key] for key in COMPARED_WITH if key in (expected or {})},
        expected_mismatches=mismatches,
        preprocess=dict(parameters),
        raw={
            "format": raw_format,
            "files": provenance["files"],
            "file_checksums": provenance.get("file_checksums", {}),
            "source": provenance.get("source"),
        },
        code_version=code_version,
        environment=environment(),
    )
    write_outputs(split, stats, outputs)
    log.info("%s: wrote %s", dataset, ", ".join(str(outputs[name]) for name in OUTPUT_NAMES))
    return stats
