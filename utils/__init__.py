"""Shared building blocks of the R-D estimation scripts.

Importing `utils` is cheap (no TensorFlow); modules that need TF import it themselves.
`aggregate_lb_results` is re-exported here because the paper's README calls it as
`utils.aggregate_lb_results`.
"""
from utils.rd import aggregate_lb_results  # noqa: F401
