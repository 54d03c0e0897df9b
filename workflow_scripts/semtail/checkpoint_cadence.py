"""When SGD training writes its checkpoint: the config's `checkpoints:` block, its defaults and its
check. No torch here: the planner reads the cadence too (semtail.job_resources.resources)."""

from __future__ import annotations

# The config's `checkpoints` block, as the defaults that apply where it is left out.
CHECKPOINT_CADENCE = {"every_epochs": 1, "min_seconds": 0.0}


def check_checkpoint_cadence(cadence: dict, where: str = "checkpoints") -> dict:
    """The checkpoint cadence with its defaults filled in; a wrong key or value is an error naming it."""
    unknown = sorted(set(cadence) - set(CHECKPOINT_CADENCE))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown} (known: {sorted(CHECKPOINT_CADENCE)})")
    resolved = {**CHECKPOINT_CADENCE, **cadence}
    every, seconds = resolved["every_epochs"], resolved["min_seconds"]
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"{where}.every_epochs must be an integer of at least 1, got {every!r}")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
        raise ValueError(f"{where}.min_seconds must be a number of at least 0, got {seconds!r}")
    return {"every_epochs": every, "min_seconds": float(seconds)}
