"""The workflow's planning logic, kept out of the Snakefiles so it can be tested without Snakemake:
which files to build, the resolved hyperparameters of a job, and the checks across config keys. What
a job requests of the scheduler: semtail.job_resources."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shlex
import sys

from semtail import registry
from semtail.datasets import DataError
from semtail.datasets.formats import DelimitedOptions
from semtail.datasets.split import SplitParameters
from semtail.provenance import TRAIN_SCRIPT, code_version
from semtail.run_metrics import CHECKSUMMED_SPLIT_FILES

FIGURES = ("coverage_at_k", "item_recall_by_popularity", "accuracy_coverage_tradeoff", "lorenz")
TABLES = (
    "summary.csv",
    "summary.md",
    "summary.tex",
    "paper_comparison.csv",
    "paper_comparison.md",
    "paper_comparison.tex",
    "significance.csv",
)
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


def method_code_version(config: dict, name: str, script: str = TRAIN_SCRIPT) -> str:
    """The code version of the training of a name in `methods:` (semtail.provenance.code_version
    of its method), run by `script`: train.py, or tune_candidate.py for a search's candidate."""
    return code_version(method_of(config, name), script=script)


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
    from semtail import search  # imports this module

    files = []
    for dataset in config["datasets"]:

        def of(rule, dataset=dataset, **wildcards):
            return benchmark_pattern(config, rule).format(dataset=dataset, **wildcards)

        files += [of("download"), of("preprocess", split=split_key(config, dataset))]
        for name in search.tuned_names(config, dataset):
            _, *further = search.search_seeds(config)
            for c in search.candidates(config, dataset, name):
                files.append(of("tune_candidate", method=name, candidate=c.name))
                files += [of("tune_candidate_seed", method=name, candidate=c.name, seed=seed) for seed in further]
            files.append(of("select_hyperparameters", method=name))
        if search.tuned_names(config, dataset):
            files.append(of("tuning_table"))
        for name in config["methods"]:
            for seed in run_seeds(config, dataset, name):
                run = run_folder(seed)
                files += [of("train", method=name, run=run), of("evaluate", method=name, run=run)]
        files += [of("aggregate"), of("plot")]
        if weighted_runs(config):
            files += [of("plot_weight_landscape"), of("plot_adversary")]
    return files


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
    listed = (
        ", ".join(missing) if few else f"{', '.join(missing[:MISSING_LISTED])} and {len(missing) - MISSING_LISTED} more"
    )
    command = f"snakemake {' '.join(missing)}" if few else "snakemake"
    warning = (
        f"--report: {len(missing)} of the workflow's outputs do not exist (a job failed, or has not run), so "
        f"the report is built without them: {listed}. To have them in it, make them first (`{command}`; "
        "a failed job's log says why it failed), then build the report again."
    )
    return [target for target in targets if target not in missing], warning


MISSING_LISTED = 10


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
