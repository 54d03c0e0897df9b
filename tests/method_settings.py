"""Hyperparameters of every SGD method for tests on tiny data: small steps, a few epochs."""


def sgd_methods(batch_size: int, epochs: int = 4) -> dict[str, dict]:
    """Keyed by method (every one that trains by SGD), plus `posit_mlp`: POSIT with the 2bmlp2
    adversary and the ones-aware recall signal (`posit` has the linear adversary)."""
    sgd = {"lr": 0.002, "wd": 1e-4, "batch_size": batch_size, "epochs": epochs, "patience": epochs, "drop_last": False}
    return {
        "ease": sgd,
        "ipw": {**sgd, "lam": 1.0, "alpha": 0.01},
        "cvar": {**sgd, "lam": 1.0, "beta": 0.3, "alr": 1e-4},
        "posit": {
            **sgd, "lam": 1.0, "alr": 0.5, "nstd": 1.0, "awd": 0.0, "adversary": "linear", "signal": "recall_dist",
            "ones_aware": False, "k": 20, "signal_momentum": 0.9, "ties": "share", "adversary_init": "authors",
        },
        "causal": {**sgd, "gamma": 0.5},
        "posit_mlp": {
            **sgd, "lam": 1.0, "alr": 1.0, "nstd": 1.5, "awd": 1e-5, "adversary": "2bmlp2", "signal": "recall",
            "ones_aware": True, "k": 20, "signal_momentum": 0.9, "ties": "topk", "adversary_init": "authors",
        },
    }  # fmt: skip


def method_of(name: str) -> str:
    return "posit" if name.startswith("posit") else name
