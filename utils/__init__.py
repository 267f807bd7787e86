"""Shared building blocks of the R-D estimation scripts (docs/architecture.md maps them).

Importing `utils` loads nothing: a script imports `utils.startup` first, on purpose (see that module).
`aggregate_lb_results` is reachable here because the paper's README calls it as `utils.aggregate_lb_results`.
"""


def __getattr__(name):
    if name == "aggregate_lb_results":  # loaded on first use, so that `import utils` stays free
        from utils.rd import aggregate_lb_results
        return aggregate_lb_results
    raise AttributeError(f"module 'utils' has no attribute {name!r}")
