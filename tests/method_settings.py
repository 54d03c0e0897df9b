"""Hyperparameters for tests that call a method's `fit` directly, and the one table of every
method's for tests on tiny data: small steps, a few epochs."""

from semtail import registry


def completed(method: str, hyperparameters: dict, name: str | None = None) -> dict:
    """`hyperparameters` as a job of `method` (or of its variant `name`) trains with them: checked
    against the method's declaration and completed with its defaults, as semtail.train_job does
    before `fit`, which takes them as given."""
    return registry.declaration(method).complete(hyperparameters, f"hyperparameters.{name or method}")


def settings(batch_size: int, epochs: int = 4) -> dict[str, dict]:
    """The one table of the tests' hyperparameters, keyed by method: every method of the registry,
    plus `posit_mlp`: POSIT with the 2bmlp2 adversary, the ones-aware recall signal and the authors'
    tie rule (`posit` has the linear adversary, recall_dist and shared ties). The on-base methods
    build on `ease`. Completed by the declarations' defaults."""
    sgd = {"lr": 0.002, "wd": 1e-4, "batch_size": batch_size, "epochs": epochs, "patience": epochs, "drop_last": False}
    given = {
        "mostpop": {},
        "ease_closed": {"l2": 20.0},
        "ease": sgd,
        "ipw": {**sgd, "alpha": 0.01},
        "cvar": {**sgd, "lam": 1.0, "beta": 0.3, "alr": 1e-4},
        "posit": {
            **sgd,
            "alr": 0.5,
            "nstd": 1.0,
            "adversary": "linear",
            "signal": "recall_dist",
            "k": 20,
            "ties": "share",
        },
        "causal": {**sgd, "gamma": 0.5},
        "posit_mlp": {
            **sgd,
            "alr": 1.0,
            "nstd": 1.5,
            "awd": 1e-5,
            "adversary": "2bmlp2",
            "signal": "recall",
            "ones_aware": True,
            "k": 20,
            "ties": "topk",
        },
        "rerank": {"base": "ease", "high": 0.3, "low": 0.05, "thresholds": "score"},
        "post": {"base": "ease", "gamma": 0.05},
    }
    return {name: completed(method_of(name), hyperparameters, name) for name, hyperparameters in given.items()}


def sgd_methods(batch_size: int, epochs: int = 4) -> dict[str, dict]:
    """settings' methods (and posit_mlp) that train by SGD."""
    every = settings(batch_size, epochs)
    return {name: every[name] for name in every if registry.declaration(method_of(name)).training == "sgd"}


def method_of(name: str) -> str:
    return "posit" if name.startswith("posit") else name
