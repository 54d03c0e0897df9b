"""Reference reproduction of POSIT (Xu, Shivaswamy, Zhang, arXiv 2308.03366) and its baselines."""

__version__ = "0.1.0"
