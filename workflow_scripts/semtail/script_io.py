"""What the workflow scripts share: their inputs from Snakemake, or from the command line when a
script is run by hand for debugging, and logging to the rule's log file."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

import yaml


class Files(list):
    """A list of paths that is also reachable by name, like Snakemake's `input` and `output`."""

    def __init__(self, named: dict[str, object] | None = None, positional=()):
        named = dict(named or {})
        super().__init__(list(positional) + [v for v in named.values()])
        self._named = named

    def __getattr__(self, name):
        try:
            return self.__dict__["_named"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, key):
        if isinstance(key, str):
            return self._named[key]
        return super().__getitem__(key)

    def keys(self):
        return self._named.keys()

    def get(self, name, default=None):
        return self._named.get(name, default)


class ScriptRun:
    """The parts of Snakemake's `snakemake` object that our scripts use."""

    def __init__(self, input, output, params, log, threads=1, resources=None, wildcards=None, config=None):
        self.input = input
        self.output = output
        self.params = params
        self.log = log
        self.threads = threads
        self.resources = resources or Files({})
        self.wildcards = wildcards or Files({})
        self.config = config or {}


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    pairs = {}
    for value in values or []:
        name, sep, path = value.partition("=")
        if not sep:
            raise SystemExit(f"{flag} expects NAME=VALUE, got {value!r}")
        pairs[name] = path
    return pairs


def script_run(namespace: dict, description: str) -> ScriptRun:
    """The `snakemake` object when Snakemake runs the script, else one built from sys.argv.

    By hand:  python workflow_scripts/train.py --input train=data/processed/ml-100k/<p>/train.npz ...
              --output model=/tmp/model.pt --params params.yaml --param seed=0 --log /tmp/train.log
    `--params` reads a YAML/JSON mapping; `--param NAME=VALUE` parses VALUE as YAML; `--configfile`
    reads a workflow config, for the settings a script takes from the config rather than from its
    params (those that do not change its results, such as the checkpoint cadence).
    """
    if "snakemake" in namespace:
        return namespace["snakemake"]
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--input", action="append", metavar="NAME=PATH", default=[])
    parser.add_argument("--output", action="append", metavar="NAME=PATH", default=[])
    parser.add_argument("--params", metavar="FILE", help="YAML or JSON mapping of params")
    parser.add_argument("--param", action="append", metavar="NAME=VALUE", default=[])
    parser.add_argument("--log", metavar="PATH", help="log file (default: stderr only)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resource", action="append", metavar="NAME=VALUE", default=[])
    parser.add_argument("--configfile", metavar="FILE", help="a workflow config (YAML), as snakemake's --configfile")
    args = parser.parse_args()
    params = {}
    if args.params:
        params.update(yaml.safe_load(Path(args.params).read_text()) or {})
    params.update({k: yaml.safe_load(v) for k, v in _pairs(args.param, "--param").items()})
    inputs = _pairs(args.input, "--input")
    for name, value in inputs.items():
        if "," in value:
            inputs[name] = value.split(",")
    resources = {k: yaml.safe_load(v) for k, v in _pairs(args.resource, "--resource").items()}
    return ScriptRun(
        input=Files(inputs),
        output=Files(_pairs(args.output, "--output")),
        params=Files(params),
        log=Files(positional=[args.log] if args.log else []),
        threads=args.threads,
        resources=Files(resources),
        config=yaml.safe_load(Path(args.configfile).read_text()) if args.configfile else {},
    )


def setup_logging(run: ScriptRun, name: str) -> logging.Logger:
    """Log to the rule's log file (if any) and to stderr, with timestamps."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if len(run.log):
        log_path = Path(run.log[0])
        log_path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    logging.captureWarnings(True)
    logger = logging.getLogger(name)

    def log_uncaught(kind, error, traceback):
        """An error that ends the script goes into the log file too, so that a failed job's log
        names its cause, not only Snakemake's terminal."""
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, error, traceback)
            return
        logger.critical("%s: %s", kind.__name__, error, exc_info=(kind, error, traceback))

    sys.excepthook = log_uncaught
    return logger


def plain(value):
    """Snakemake params (Namedlists, ruamel/YAML types) as plain JSON-able Python values."""
    return json.loads(json.dumps(value, default=lambda o: dict(o) if hasattr(o, "keys") else list(o)))


def exit_without_teardown() -> NoReturn:
    """End a script that has written all its outputs: flush the log and the standard streams, then
    exit with status 0 at once. Python's teardown of the modules a job imports (torch above all)
    writes nothing and takes about 0.4 s of CPU, a quarter of a small job's. A script that fails
    never gets here: it ends the usual way, with its error in the log and a non-zero status."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
