"""The data layer: fetching raw datasets (sources), parsing them (formats), and the
Liang et al. (2018) split (split, preprocess)."""

from __future__ import annotations


class DataError(Exception):
    """Bad input data or a failed fetch. The message names the file, source or setting at fault."""
