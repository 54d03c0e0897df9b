"""The workflow's planning logic, kept out of the Snakefiles so it can be tested without Snakemake:
which files to build, the resolved hyperparameters of a job, and the resources it requests."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import shlex
import sys
from pathlib import Path

from semtail import registry
from semtail.checkpoint_cadence import CHECKPOINT_CADENCE
from semtail.datasets import DataError
from semtail.datasets.formats import DelimitedOptions
from semtail.datasets.split import SplitParameters
from semtail.provenance import code_version  # noqa: F401  (re-exported for rules/common.smk)
from semtail.run_metrics import CHECKSUMMED_SPLIT_FILES

FIGURES = ("coverage_at_k", "item_recall_by_popularity", "accuracy_coverage_tradeoff", "lorenz")
TABLES = (
    "summary.csv", "summary.md", "summary.tex", "paper_comparison.csv", "paper_comparison.md",
    "paper_comparison.tex", "significance.csv",
)  # fmt: skip
ADVERSARY_TABLES = ("adversary.csv", "adversary.md")


def put_first_on_pythonpath(folder: str) -> None:
    """Make the jobs' scripts import the semtail in `folder`, the one beside the Snakefile.

    Snakemake appends a script's folder to sys.path, after site-packages, where `pip install -e`
    of another checkout (or nothing, in a conda environment) would answer first. PYTHONPATH
    comes before site-packages, and the jobs inherit it, on SLURM too (sbatch --export=ALL).
    """
    entries = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != folder]
    os.environ["PYTHONPATH"] = os.pathsep.join([folder, *entries])


def quote_interpreter_for_shell() -> None:
    """Let a checkout whose path has a space in it (`/tmp/my proj`) run its jobs.

    Snakemake writes sys.executable unquoted into the shell commands it runs: its script runner's
    (`<python> script.py`, so every job failed with exit 127) and each spawned job's. Quoted once
    here, in the Snakemake process, the path stays one word. A path already quoted (this workflow
    read again in the same process, as a module) is left as it is.
    """
    if os.path.isfile(sys.executable):
        sys.executable = shlex.quote(sys.executable)


class ConfigError(ValueError):
    """A config that passed the schema but does not make sense as a whole."""


def check_config(config: dict) -> None:
    """Checks that the schema leaves to Python, naming the offending key: the methods and their
    hyperparameters against the methods' declarations (semtail.registry), in every section and
    then as each (dataset, name) job resolves them, and what spans several keys."""
    for dataset, settings in config["datasets"].items():
        SplitParameters.from_config(settings["preprocess"], f"datasets.{dataset}.preprocess")
        check_threshold_against_sources(dataset, settings)
        check_dataset_against_evaluation(dataset, settings, config["evaluation"])
    known = registry.names()
    for method, values in config["hyperparameters"].items():
        declared = declared_method(method, f"hyperparameters: {method!r}")
        checked(declared.check, values, f"hyperparameters.{method}")
    variants = config.get("variants", {})
    for name, variant in variants.items():
        if name in known:
            raise ConfigError(f"variants: {name!r} is also the name of a method; give the variant another name")
        declared = declared_method(variant["method"], f"variants.{name}.method: {variant['method']!r}")
        checked(declared.check, {k: v for k, v in variant.items() if k != "method"}, f"variants.{name}")
    for name in config["methods"]:
        if name not in known and name not in variants:
            raise ConfigError(
                f"methods: {name!r} is neither a method ({', '.join(known)}) nor a variant under variants"
            )
    for dataset, per_name in config.get("overrides", {}).items():
        if dataset not in config["datasets"]:
            raise ConfigError(f"overrides: {dataset!r} is not a configured dataset")
        for name, values in per_name.items():
            if name not in known and name not in variants:
                raise ConfigError(f"overrides.{dataset}: {name!r} is not a method or a configured variant")
            checked(registry.declaration(method_of(config, name)).check, values, f"overrides.{dataset}.{name}")
    for name in config["methods"]:
        declared = registry.declaration(method_of(config, name))
        for dataset in config["datasets"]:
            resolved = resolve_hyperparameters(config, dataset, name)
            if declared.training == "on_base":
                check_base(config, name, dataset, resolved["base"])


def declared_method(method: str, where: str) -> registry.Method:
    if method not in registry.names():
        raise ConfigError(f"{where} is not a method (known: {', '.join(registry.names())})")
    return registry.declaration(method)


def checked(check, *args):
    """Run a registry check, its error as a ConfigError."""
    try:
        return check(*args)
    except registry.HyperparameterError as error:
        raise ConfigError(str(error)) from None


def check_base(config: dict, name: str, dataset: str, base: str) -> None:
    if base not in config["methods"]:
        raise ConfigError(f"{name} for {dataset}: its base {base!r} must also be in methods")
    base_method = method_of(config, base)
    if registry.declaration(base_method).item_item is None:
        raise ConfigError(
            f"{name} for {dataset}: its base {base!r} is a {base_method} run, which does not score by an "
            "item–item matrix (its declaration has no item_item)"
        )


def check_threshold_against_sources(dataset: str, settings: dict) -> None:
    """A threshold on a delimited source without a rating column, whose every row is a positive. The
    delimited sources' layout is checked as the download stage will read it (DelimitedOptions)."""
    threshold = settings["preprocess"].get("threshold")
    for index, source in enumerate(settings["sources"]):
        if source.get("format") != "delimited":
            continue
        try:
            layout = DelimitedOptions.from_source(source, f"datasets.{dataset}.sources[{index}]")
        except DataError as error:
            raise ConfigError(str(error)) from None
        if threshold is not None and not layout.has_rating:
            raise ConfigError(
                f"datasets.{dataset}.preprocess.threshold is {threshold}, but sources[{index}] (format delimited) "
                "has no rating column, so every row is a positive: set the threshold to null or leave it out"
            )


def check_dataset_against_evaluation(dataset: str, settings: dict, evaluation: dict) -> None:
    """Coverage blocks larger than the test users."""
    block, test_users = evaluation["coverage_block_size"], settings["preprocess"]["n_heldout"]
    if block > test_users:
        raise ConfigError(
            f"evaluation.coverage_block_size ({block}) is larger than datasets.{dataset}.preprocess.n_heldout "
            f"({test_users}), the number of test users: coverage@k averages over full blocks of test users, and "
            f"there would be none. Make it at most {test_users}."
        )


def unconfigured_dataset_pattern(datasets) -> str:
    """A wildcard regex for a path part that is none of `datasets` (followed by '/')."""
    return rf"(?!(?:{'|'.join(map(re.escape, datasets))})/)[^/]+"


def refuse_unconfigured_dataset(config: dict, path: str, dataset: str):
    raise ConfigError(
        f"{path}: {dataset!r} is not in datasets: of the config (configured: {', '.join(config['datasets'])}). "
        "Add it there (with its sources and preprocess settings), or pass the config that has it with --configfile."
    )


def dataset_config(config: dict, dataset: str) -> dict:
    try:
        return config["datasets"][dataset]
    except KeyError:
        raise ConfigError(f"datasets: no dataset named {dataset!r}") from None


def method_of(config: dict, name: str) -> str:
    """The method that a name in `methods:` trains: the name itself, or a variant's `method`."""
    variant = config.get("variants", {}).get(name)
    return name if variant is None else variant["method"]


def resolve_hyperparameters(config: dict, dataset: str, name: str) -> dict:
    """Exactly what the job of a method or variant uses, each step overriding the one before: the
    defaults the method declares, the config's `hyperparameters` of the method, the dataset's
    overrides of the method, the variant's settings, the dataset's overrides of the variant. Every
    declared key ends up in it, in the declaration's order; a missing one is an error naming the
    job."""
    method = method_of(config, name)
    overrides = config.get("overrides", {}).get(dataset, {})
    resolved = copy.deepcopy(config["hyperparameters"].get(method, {}))
    resolved.update(overrides.get(method, {}))
    if name != method:
        resolved.update({key: value for key, value in config["variants"][name].items() if key != "method"})
        resolved.update(overrides.get(name, {}))
    return checked(registry.declaration(method).complete, resolved, f"{name} for {dataset}")


# Where the preprocess stage writes a split: one folder per dataset and preprocess settings, so that
# configs that split one dataset differently (experiments) each keep their own.
PROCESSED_DIR = "data/processed/{dataset}/{split}"
SPLIT_KEY_LENGTH = 10
# The preprocess stage's outputs, by the names its rule and script give them.
SPLIT_FILES = {
    "train": "train.npz",
    "validation_tr": "validation_tr.npz",
    "validation_te": "validation_te.npz",
    "test_tr": "test_tr.npz",
    "test_te": "test_te.npz",
    "item_ids": "items.txt",
    "train_users": "train_users.txt",
    "validation_users": "validation_users.txt",
    "test_users": "test_users.txt",
    "stats": "stats.json",
}


def split_key(config: dict, dataset: str) -> str:
    """A short hash of the dataset's preprocess settings as the split reads them (SplitParameters:
    a threshold left out is null, numbers compared as numbers), naming its split's folder."""
    where = f"datasets.{dataset}.preprocess"
    try:
        parameters = SplitParameters.from_config(dict(dataset_config(config, dataset)["preprocess"]), where)
    except DataError as error:
        raise ConfigError(str(error)) from None
    settings = {
        name: float(value) if name in ("threshold", "test_prop") and value is not None else value
        for name, value in vars(parameters).items()
    }
    text = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:SPLIT_KEY_LENGTH]


def processed_dir(config: dict, dataset: str) -> str:
    """data/processed/{dataset}/{split key}: the folder of the split that the config's preprocess
    settings of `dataset` make. Every path of a split is built from it."""
    return PROCESSED_DIR.format(dataset=dataset, split=split_key(config, dataset))


def split_files(config: dict, dataset: str, names=tuple(SPLIT_FILES)) -> dict[str, str]:
    """The paths of the split's outputs named (SPLIT_FILES' names), for the rules that read them."""
    folder = processed_dir(config, dataset)
    return {name: f"{folder}/{SPLIT_FILES[name]}" for name in names}


def split_file_patterns() -> dict[str, str]:
    """The preprocess rule's outputs, with the wildcards {dataset} and {split}."""
    return {name: f"{PROCESSED_DIR}/{file}" for name, file in SPLIT_FILES.items()}


def split_settings(config: dict, dataset: str, split: str) -> dict:
    """The preprocess settings of the split `data/processed/{dataset}/{split}`, which must be the one
    that the config's settings of `dataset` name: another config's split is not made from this one."""
    settings = dataset_config(config, dataset)["preprocess"]
    wanted = split_key(config, dataset)
    if split != wanted:
        raise ConfigError(
            f"{PROCESSED_DIR.format(dataset=dataset, split=split)}: not the split of this config's "
            f"datasets.{dataset}.preprocess settings, which is {processed_dir(config, dataset)}; a split "
            "of other settings is made by a config that has them"
        )
    return settings


def results_root(config: dict) -> str:
    """results/, or results/<experiment>/ for a config that names an experiment."""
    return "results" if not config.get("experiment") else f"results/{config['experiment']}"


def logs_root(config: dict) -> str:
    return "logs" if not config.get("experiment") else f"logs/{config['experiment']}"


# The run folder of a name whose result does not depend on the seed: trained and evaluated once.
SEED_INDEPENDENT = "seed-independent"
SEEDED_RUN = re.compile(r"^seed(\d+)$")


def seed_independent(config: dict, dataset: str, name: str) -> bool:
    """Whether a name in `methods:` gives the same result for every seed on a dataset: its method
    declares `seed_dependent: false` and, for a method on a base, that base is seed-independent too
    (rerank and post on ease_closed, not on ease)."""
    seen = []
    while name not in seen:
        seen.append(name)
        declared = registry.declaration(method_of(config, name))
        if declared.seed_dependent:
            return False
        if declared.training != "on_base":
            return True
        name = resolve_hyperparameters(config, dataset, name)[registry.BASE]
    raise ConfigError(f"{dataset}: the bases of {seen[0]} go round in a circle ({' -> '.join(seen + [name])})")


def run_seeds(config: dict, dataset: str, name: str) -> list:
    """The seeds a name runs with on a dataset: the config's `seeds`, or [None], one run, for a
    seed-independent name."""
    return [None] if seed_independent(config, dataset, name) else list(config["seeds"])


def run_folder(seed) -> str:
    """seed<seed>, or seed-independent for the seed None."""
    return SEED_INDEPENDENT if seed is None else f"seed{seed}"


def run_dir(config: dict, dataset: str, name: str, seed) -> str:
    """A run's folder: results/{dataset}/{name}/seed{seed}, or .../{name}/seed-independent for a
    seed-independent name, whatever `seed` is (so that a run on such a base finds it)."""
    if seed_independent(config, dataset, name):
        seed = None
    elif seed is None:
        raise ConfigError(f"{dataset}/{name} depends on the seed: its runs need one")
    return f"{results_root(config)}/{dataset}/{name}/{run_folder(seed)}"


def run_seed(config: dict, dataset: str, name: str, folder: str) -> int | None:
    """The seed of a run folder (the rules' `run` wildcard): seed<N> gives N, seed-independent None.
    A folder that does not fit the name (seed0 of mostpop, seed-independent of ease) is an error
    naming the folder that does."""
    match = SEEDED_RUN.match(folder)
    if seed_independent(config, dataset, name):
        if folder != SEED_INDEPENDENT:
            raise ConfigError(
                f"{dataset}/{name}/{folder}: {name} gives the same result for every seed, so it runs once, "
                f"in {run_dir(config, dataset, name, None)}"
            )
        return None
    if match is None:
        raise ConfigError(
            f"{dataset}/{name}/{folder}: {name} depends on the seed, so its runs are seed<N> folders "
            f"({', '.join(run_folder(s) for s in config['seeds'])})"
        )
    return int(match.group(1))


def train_inputs(config: dict, dataset: str, name: str, seed) -> dict:
    inputs = split_files(config, dataset, ("train", "validation_tr", "validation_te", "stats"))
    return {**inputs, **base_model_input(config, dataset, name, seed)}


def base_model_input(config: dict, dataset: str, name: str, seed) -> dict:
    """{"base_model": the model file of its base} for a name on a base (of the same seed, or the
    base's seed-independent run), else {}: an input of the name's train and evaluate jobs."""
    if registry.declaration(method_of(config, name)).training != "on_base":
        return {}
    base = resolve_hyperparameters(config, dataset, name)[registry.BASE]
    return {"base_model": f"{run_dir(config, dataset, base, seed)}/model.pt"}


def run_files(config: dict, dataset: str) -> dict[str, list[str]]:
    """Every run's evaluation outputs of a dataset, method-major (one run of a seed-independent
    name, one per seed of the others), plus the split they were evaluated on
    (run_metrics.CHECKSUMMED_SPLIT_FILES), whose checksums each metrics.json records."""
    runs = [run_dir(config, dataset, m, s) for m in config["methods"] for s in run_seeds(config, dataset, m)]
    return {
        "metrics": [f"{r}/metrics.json" for r in runs],
        "topk": [f"{r}/topk.npz" for r in runs],
        "item_stats": [f"{r}/items.npz" for r in runs],
        "per_user": [f"{r}/per_user.csv" for r in runs],
        **split_files(config, dataset, CHECKSUMMED_SPLIT_FILES),
    }


def evaluation_inputs(config: dict, dataset: str) -> dict[str, str]:
    """The split's files that evaluating a run reads."""
    return split_files(config, dataset, ("train", "test_tr", "test_te", "test_users"))


# The significance tests of the aggregate rule (semtail/significance.py), unless `compare:` says otherwise.
DEFAULT_REFERENCE = "ease"
DEFAULT_ALPHA = 0.05
DEFAULT_BOOTSTRAP = {"samples": 10_000, "seed": 0}


def compare_settings(config: dict) -> dict:
    """reference, alpha and the bootstrap's samples and seed. The reference defaults to ease, or
    to the first name in `methods:` when ease is not run."""
    compare = config.get("compare") or {}
    fallback = DEFAULT_REFERENCE if DEFAULT_REFERENCE in config["methods"] else config["methods"][0]
    bootstrap = {**DEFAULT_BOOTSTRAP, **compare.get("bootstrap", {})}
    return {
        "reference": compare.get("reference", fallback),
        "alpha": float(compare.get("alpha", DEFAULT_ALPHA)),
        "bootstrap_samples": int(bootstrap["samples"]),
        "bootstrap_seed": int(bootstrap["seed"]),
    }


def check_compare(config: dict) -> None:
    reference = compare_settings(config)["reference"]
    if reference not in config["methods"]:
        raise ConfigError(f"compare.reference: {reference!r} is not in methods ({', '.join(config['methods'])})")


def weighted_runs(config: dict) -> list[str]:
    """The names in `methods:` whose method learns item weights (POSIT and its variants)."""
    return [name for name in config["methods"] if registry.declaration(method_of(config, name)).item_weights]


def model_files_are_temporary(config: dict) -> bool:
    """`model_files: temporary`: Snakemake deletes each model file once every job reading it is done."""
    return config.get("model_files", "keep") == "temporary"


def weight_landscape_evaluations(config: dict, dataset: str) -> list[str]:
    """The items.npz (with POSIT's item weights) of the runs drawn in the weight landscape: those of
    the first weighted run that is a method itself, else of the first variant of one."""
    runs = weighted_runs(config)
    name = next((name for name in runs if name == method_of(config, name)), runs[0])
    return [f"{run_dir(config, dataset, name, s)}/items.npz" for s in run_seeds(config, dataset, name)]


def adversary_evaluations(config: dict, dataset: str) -> list[str]:
    """Every weighted run's metrics.json (with its model's per-epoch history), name-major."""
    return [
        f"{run_dir(config, dataset, name, s)}/metrics.json"
        for name in weighted_runs(config)
        for s in run_seeds(config, dataset, name)
    ]


def figure_styles(config: dict) -> dict[str, dict]:
    """The figures block of the declaration of the method behind each name in `methods:`: a params
    value of the rules that draw, so that a changed label or colour redraws the figures (the
    declarations are left out of code versions)."""
    return {name: registry.declaration(method_of(config, name)).figures for name in config["methods"]}


def final_targets(config: dict) -> list[str]:
    """Every dataset's tables and figures, and every run's metric JSON: a target of its own, so that
    a run whose files went missing is made again even where the tables after it are up to date."""
    targets = []
    for dataset in config["datasets"]:
        results = f"{results_root(config)}/{dataset}"
        tables, figures = list(TABLES), list(FIGURES)
        if weighted_runs(config):
            tables += list(ADVERSARY_TABLES)
            figures += ["weight_landscape", "adversary"]
        targets += run_files(config, dataset)["metrics"]
        targets += [f"{results}/{name}" for name in tables]
        targets += [f"{results}/figures/{f}.{ext}" for f in figures for ext in ("png", "pdf")]
    return targets


# Snakemake's benchmark file of each rule's jobs (semtail/resource_check.py reads them), under the
# experiment's logs folder; the data's jobs, shared by experiments, under logs/.
BENCHMARKS = {
    "download": "benchmarks/download/{dataset}.jsonl",
    "preprocess": "benchmarks/preprocess/{dataset}/{split}.jsonl",
    "train": "benchmarks/train/{dataset}/{method}/{run}.jsonl",
    "evaluate": "benchmarks/evaluate/{dataset}/{method}/{run}.jsonl",
    "aggregate": "benchmarks/aggregate/{dataset}.jsonl",
    "plot": "benchmarks/plot/{dataset}.jsonl",
    "plot_weight_landscape": "benchmarks/plot_weight_landscape/{dataset}.jsonl",
    "plot_adversary": "benchmarks/plot_adversary/{dataset}.jsonl",
    "tune_candidate": "benchmarks/tune_candidate/{dataset}/{method}/{candidate}.jsonl",
    "tune_candidate_seed": "benchmarks/tune_candidate/{dataset}/{method}/{candidate}.seed{seed}.jsonl",
    "select_hyperparameters": "benchmarks/select_hyperparameters/{dataset}/{method}.jsonl",
    "tuning_table": "benchmarks/tuning_table/{dataset}.jsonl",
}
DATA_RULES = ("download", "preprocess")


def benchmark_pattern(config: dict, rule: str) -> str:
    root = "logs" if rule in DATA_RULES else logs_root(config)
    return f"{root}/{BENCHMARKS[rule]}"


def benchmark_files(config: dict) -> list[str]:
    """The benchmark file of every job the config's default targets run, dataset by dataset."""
    from semtail import tuning  # imports this module

    files = []
    for dataset in config["datasets"]:
        def of(rule, **wildcards):
            return benchmark_pattern(config, rule).format(dataset=dataset, **wildcards)

        files += [of("download"), of("preprocess", split=split_key(config, dataset))]
        for name in tuning.tuned_names(config, dataset):
            _, *further = tuning.search_seeds(config)
            for c in tuning.candidates(config, dataset, name):
                files.append(of("tune_candidate", method=name, candidate=c.name))
                files += [of("tune_candidate_seed", method=name, candidate=c.name, seed=seed) for seed in further]
            files.append(of("select_hyperparameters", method=name))
        if tuning.tuned_names(config, dataset):
            files.append(of("tuning_table"))
        for name in config["methods"]:
            for seed in run_seeds(config, dataset, name):
                run = run_folder(seed)
                files += [of("train", method=name, run=run), of("evaluate", method=name, run=run)]
        files += [of("aggregate"), of("plot")]
        if weighted_runs(config):
            files += [of("plot_weight_landscape"), of("plot_adversary")]
    return files


def job_gpus(config: dict, stage: str, method: str | None = None) -> int:
    """The `gpu` resource a stage's jobs get from the config: training's and evaluation's, else 0."""
    if stage == "train":
        return training_gpus(config, method)
    return gpus_per_job(config) if stage == "evaluate" else 0


def runs_on_gpu(gpus: int, cluster: bool, gpu_limit: int | None, visible_gpus: int) -> bool:
    """Whether a job will use a GPU (semtail/device.py:select_device), for the runtime it declares:
    only with a `gpu` resource above 0 (after --set-resources), on a cluster node that was given it,
    or on this machine when the run's `gpu` limit (profiles/default counts the GPUs) is above 0,
    or without a limit, when a GPU is visible."""
    if gpus <= 0:
        return False
    if cluster:
        return True
    return gpu_limit > 0 if gpu_limit is not None else visible_gpus > 0
def building_report(argv: list[str]) -> bool:
    """Whether this Snakemake process only writes the report (`snakemake --report FILE`, not
    `--report-after-run`): then the default target is what exists (report_targets)."""
    options = {argument.split("=", 1)[0] for argument in argv[1:]}
    return "--report" in options and "--report-after-run" not in options


def report_targets(targets: list[str], reading_every_job: tuple[str, ...] = ()) -> tuple[list[str], str | None]:
    """The targets that exist, for `snakemake --report` to build the report from, and a warning
    naming the others (a failed job's, or one not run yet) with the command that makes them; None
    when every target exists. Snakemake's report refuses an output marked for it that is missing.
    `reading_every_job`: targets made from every job's records (resources.csv), left out too when
    something is missing, since asking for them would plan the missing jobs again."""
    missing = [target for target in targets if not os.path.exists(target)]
    if not missing:
        return targets, None
    missing += [target for target in reading_every_job if target in targets and target not in missing]
    few = len(missing) <= MISSING_LISTED
    listed = ", ".join(missing) if few else f"{', '.join(missing[:MISSING_LISTED])} and {len(missing) - MISSING_LISTED} more"
    command = f"snakemake {' '.join(missing)}" if few else "snakemake"
    warning = (
        f"--report: {len(missing)} of the workflow's outputs do not exist (a job failed, or has not run), so "
        f"the report is built without them: {listed}. To have them in it, make them first (`{command}`; "
        "a failed job's log says why it failed), then build the report again."
    )
    return [target for target in targets if target not in missing], warning


MISSING_LISTED = 10


def gpus_per_job(config: dict) -> int:
    return 0 if config["compute"]["device"] == "cpu" else int(config["compute"]["gpus_per_job"])


def training_gpus(config: dict, name: str) -> int:
    """The `gpu` resource of a method's train job: none where its declaration says it needs none
    (training that only counts or copies; the scoring of every method still uses the GPU)."""
    return gpus_per_job(config) if registry.declaration(method_of(config, name)).gpu else 0


def dataset_size(config: dict, dataset: str, stats_file: str | os.PathLike | None = None) -> dict:
    """Users, items and interactions of a dataset after preprocessing: measured (its stats.json)
    once preprocessing ran, else the config's `expected` sizes, else a demo-sized guess.

    stats_file: where the job's stats.json is (rules pass the one among their inputs); by default
    the config's split's (split_files) under the working directory.
    """
    stats_file = Path(stats_file if stats_file is not None else split_files(config, dataset, ("stats",))["stats"])
    if stats_file.is_file():
        try:
            stats = json.loads(stats_file.read_text())
            return {k: int(stats[k]) for k in ("users", "items", "interactions")}
        except (ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"{stats_file}: needs integer users, items and interactions ({error})") from None
    expected = dataset_config(config, dataset).get("expected", {})
    users = int(expected.get("users", 10_000))
    items = int(expected.get("items", 5_000))
    interactions = int(expected.get("interactions", users * 100))
    return {"users": users, "items": items, "interactions": interactions}


def model_file_bytes(config: dict, dataset: str, name: str, stats_file: str | os.PathLike | None = None) -> int:
    """About how many bytes one model file of a name holds on a dataset (dataset_size): the float32
    tensors of its declared state, but the base matrix that a method on a base refers to instead of
    storing, and its item weights. The history and the rest add a few kilobytes, left out."""
    n = dataset_size(config, dataset, stats_file)["items"]
    declared = registry.declaration(method_of(config, name))
    stored = [shape for key, shape in declared.state.items() if not (declared.training == "on_base" and key == registry.BASE)]
    return 4 * (sum(n ** len(shape) for shape in stored) + (n if declared.item_weights else 0))


def model_file_estimate(config: dict) -> list[dict]:
    """What a run of the config writes in model files, from the datasets' sizes: per (dataset, name)
    its number of runs, the bytes of one model file, of all of them, and of those kept once the run
    ends (none under `model_files: temporary`)."""
    rows = []
    kept = not model_files_are_temporary(config)
    for dataset in config["datasets"]:
        for name in config["methods"]:
            runs, each = len(run_seeds(config, dataset, name)), model_file_bytes(config, dataset, name)
            rows.append({
                "dataset": dataset, "name": name, "runs": runs, "bytes_each": each, "bytes": runs * each,
                "kept_bytes": runs * each if kept else 0,
            })  # fmt: skip
    return rows


# What the resource model assumes of the hardware. Conservative on purpose: a job that asks for too
# little is killed, one that asks for a little too much only waits a little longer in the queue.
GPU_BYTES_PER_S = 300e9  # effective memory bandwidth of an older datacenter GPU on sparse x dense products
CPU_BYTES_PER_S = 5e9  # the same on a multi-core CPU
DISK_BYTES_PER_S = 200e6  # writing checkpoints and model files to a shared file system
CPU_FLOPS_FLOAT64 = 20e9  # dense float64 solves (closed-form EASE) on the CPU
EVALUATION_ENTRY_BYTES = 16  # per (user, item) entry of an evaluation batch: fold-in, held-out, scores, masked scores
SORT_RATE = 1e8  # comparisons per second of a sort of score rows on the CPU (about 50 times more on a GPU)
SYNTHETIC_SECONDS_PER_POSITIVE = 1.2e-4  # 1,177 s for ML-20M's on the 2-core machine shared with other work
SYNTHETIC_BYTES_PER_POSITIVE = 100  # generating a synthetic source: a 694 MiB peak for ML-20M's 10M positives
RUNTIME_SAFETY = 2.0  # estimates are multiplied by this before the job's own start-up minutes
MIB = 2**20
LARGE_CATALOG = 10_000  # items from which a job gets more CPU threads (ML-20M: 20,108; ML-100K: 1,682)
# Items below which a job gets one thread: on such data each operation is too small to gain from a
# second (a demo training job takes as long on one as on two), so two jobs share two cores instead.
SMALL_CATALOG = 5_000


def threads_for(n_items: int, large: int) -> int:
    """A job's CPU threads from the catalog size: 1 below SMALL_CATALOG, `large` from LARGE_CATALOG, else 2."""
    if n_items < SMALL_CATALOG:
        return 1
    return large if n_items >= LARGE_CATALOG else 2


def _batches(rows: int, batch: int) -> int:
    return max(1, -(-rows // max(1, batch)))


def resources(
    config: dict,
    stage: str,
    dataset: str,
    attempt: int = 1,
    method: str | None = None,
    stats_file: str | os.PathLike | None = None,
    hyperparameters: dict | None = None,
    on_gpu: bool | None = None,
) -> dict:
    """threads, mem_mb (host memory, MiB) and runtime (minutes) of one job, from the dataset's size.

    stage: download, preprocess, train (with `method`, a name in `methods:`), evaluate,
    weight_landscape, adversary or report (aggregate and plot). A retry (attempt 2, 3, ...) asks for that many times the memory and time.
    hyperparameters: what a training job trains with (a search's choice, or a candidate's); by
    default the method's as the config resolves them.
    on_gpu: whether the job will run on a GPU (runs_on_gpu); by default, whether the config gives it one.

    Sizes: n items, nnz interactions, b users per batch. One dense item x item float32 matrix is
    D = 4 n^2 bytes: 6.8 GB for MSD's 41,140 items, 1.6 GB for ML-20M's 20,108. SGD training holds
    U, its momentum and the best epoch's copy, and of U's gradient a block of rows of at most
    128 MiB (semtail.training.GRADIENT_BLOCK_BYTES; on a GPU the gradient is in the GPU's memory
    and the host holds the best copy and, while a checkpoint is written, one more): 3 D + 128 MiB.
    A batch's dense predictions and gradient are b x n float32 each.
    """
    size = dataset_size(config, dataset, stats_file)
    n, nnz, users = size["items"], size["interactions"], max(1, size["users"])
    heldout = int(dataset_config(config, dataset).get("preprocess", {}).get("n_heldout", 0))
    train_users = max(1, users - 2 * heldout)
    per_user = nnz / users
    dense = 4.0 * n * n
    sparse = 12.0 * nnz  # CSR: float32 value + int64 column per entry
    if stage == "train" and method is None:
        raise ValueError("resources for the train stage need the method")
    if on_gpu is None:
        on_gpu = job_gpus(config, stage, method) > 0
    bandwidth = GPU_BYTES_PER_S if on_gpu else CPU_BYTES_PER_S
    base = 2.0 * 2**30  # the interpreter, torch, numpy and scipy

    def minutes(seconds: float, startup: float = 10) -> float:
        return startup + RUNTIME_SAFETY * seconds / 60

    if stage == "download":
        # A synthetic source's positives, as the int64 arrays that generating and ordering them hold.
        generated = max(
            (int(source["synthetic"]["interactions"]) for source in dataset_config(config, dataset)["sources"]
             if "synthetic" in source),
            default=0,
        )  # fmt: skip
        threads, mem = 1, 1.0 * 2**30 + SYNTHETIC_BYTES_PER_POSITIVE * generated
        runtime = minutes(SYNTHETIC_SECONDS_PER_POSITIVE * generated) if generated else 240
    elif stage == "preprocess":
        # The raw ratings, about twice the filtered ones, as pandas frames and the copies that
        # filtering, grouping and splitting make: about 100 bytes a raw row at the peak.
        raw_rows = 2 * nnz
        threads = threads_for(n, large=4)
        mem = base + 100.0 * raw_rows
        runtime = minutes(raw_rows / 1e6 * 1.0)
    elif stage == "train":
        if method is None:
            raise ValueError("resources for the train stage need the method")
        threads = threads_for(n, large=8)
        hyper = resolve_hyperparameters(config, dataset, method) if hyperparameters is None else hyperparameters
        declared = registry.declaration(method_of(config, method))
        memory, seconds = declared.resources["memory"], 0.0
        mem = base
        if declared.training == "sgd":
            batch = int(hyper["batch_size"])
            epochs = int(hyper["epochs"])
            batch_dense = 4.0 * batch * n
            mem += 3 * dense + min(dense, 2.0**27) + 4 * batch_dense + 3 * sparse
            # Per step: X_b U and X_b^T G read a row of U (or G) per entry of the batch; the
            # optimiser reads and writes U, its gradient and momentum.
            step_bytes = 2 * batch * per_user * n * 4 + 6 * dense
            validation_bytes = _batches(heldout, batch) * (batch * per_user * n * 4 + 3 * batch_dense)
            epoch_s = (_batches(train_users, batch) * step_bytes + validation_bytes) / bandwidth
            # The checkpoint (U and its momentum) at most every `checkpoints.every_epochs` epochs
            # (fewer under min_seconds); the best epoch's U when the best epoch is left behind, at
            # most every other checkpoint.
            every = int((config.get("checkpoints") or {}).get("every_epochs", CHECKPOINT_CADENCE["every_epochs"]))
            epoch_s += 2.5 * dense / DISK_BYTES_PER_S / every
            seconds = epochs * epoch_s + dense / DISK_BYTES_PER_S
        # What the method declares on top: item x item matrices, copies of X, bytes per training
        # user; passes of a matrix through the disk or of X through memory, and n^3 float64 flops
        # (a solve, about 50 times faster on a GPU).
        mem += memory.get("dense", 0) * dense + memory.get("sparse", 0) * sparse
        mem += memory.get("bytes_per_training_user", 0) * train_users
        runtime_terms = declared.resources["runtime"]
        seconds += runtime_terms.get("cubic_flops", 0) * n**3 / (CPU_FLOPS_FLOAT64 * (50 if on_gpu else 1))
        seconds += runtime_terms.get("dense_file_passes", 0) * dense / DISK_BYTES_PER_S
        seconds += runtime_terms.get("sparse_passes", 0) * sparse / bandwidth
        runtime = minutes(seconds)
    elif stage == "evaluate":
        threads = threads_for(n, large=8)
        batch = int(config["evaluation"].get("batch_size", 1024))
        batch_dense = 4.0 * batch * n
        # What the method's scoring holds (its declaration's `evaluation` terms; by default an
        # item x item matrix read from the model file, and a second while it loads): its matrices,
        # and bytes per (user, item) entry of a batch of test users on top of the evaluation's own
        # dense rows, scores, masked scores and lists (EVALUATION_ENTRY_BYTES). Rerank's two sorts
        # of a batch add 32 bytes an entry (benchmarks/evaluate_memory.py).
        scoring = registry.declaration(method_of(config, method)).resources["evaluation"] if method else {}
        entry_bytes = EVALUATION_ENTRY_BYTES + scoring.get("batch_entry_bytes", 0)
        mem = base + scoring.get("dense", 2) * dense + entry_bytes * batch * n + 2 * sparse
        score_bytes = 2 * _batches(heldout, batch) * (batch * per_user * n * 4 + 3 * batch_dense)
        sorts = scoring.get("batch_sorts", 0) * heldout * n * math.log2(max(2, n)) / (SORT_RATE * (50 if on_gpu else 1))
        runtime = minutes(score_bytes / bandwidth + sorts + dense / DISK_BYTES_PER_S)
    elif stage == "adversary":
        threads = 1
        runs = len(weighted_runs(config)) * len(config["seeds"])
        mem = base + 8.0 * n * runs  # metric JSONs: per-epoch numbers, no item x item matrix
        runtime = minutes(0)
    elif stage == "weight_landscape":
        threads = threads_for(n, large=4)
        seeds = len(config["seeds"])
        mem = base + 8.0 * n * seeds + 4 * sparse  # each run's item weights, the SVD of X's columns
        runtime = minutes(100 * sparse / CPU_BYTES_PER_S)
    elif stage == "report":
        threads = 1
        runs = len(config["methods"]) * len(config["seeds"])
        topk = runs * heldout * 100 * 8 * 2  # masked and unmasked top-100 of every run
        mem = 1.0 * 2**30 + 2 * topk + 4 * n * runs * 8
        runtime = minutes(topk / DISK_BYTES_PER_S)
    else:
        raise ValueError(f"no resource model for stage {stage!r}")
    attempt = max(1, int(attempt))
    return {
        "threads": threads,
        "mem_mb": int(-(-mem * attempt // MIB)),
        "runtime": int(-(-runtime * attempt // 1)),
    }


PLACEHOLDER_MARK = "<set "


def check_cluster_resources(default_resources: dict[str, str]) -> None:
    """Refuse to run while a profile's placeholder (profiles/slurm: "<set slurm_partition>") is left."""
    unset = sorted(name for name, value in default_resources.items() if PLACEHOLDER_MARK in str(value))
    if unset:
        example = " ".join(f"{name}=<your {name.removeprefix('slurm_')}>" for name in unset)
        raise ConfigError(
            f"default-resources: {', '.join(unset)} still hold the profile's placeholder. Pass "
            f"--default-resources {example} (this replaces the profile's whole default-resources block: "
            "give them all), or edit profiles/slurm/config.yaml. Leave slurm_account out on clusters "
            "without accounts. See docs/running.md."
        )
