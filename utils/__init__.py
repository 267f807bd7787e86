"""Shared building blocks of the R-D estimation scripts.

Importing `utils` is cheap (no TensorFlow); modules that need TF import it themselves. Every script imports
`utils` before TensorFlow, so this is where TF's C++ start-up chatter is turned down (set
TF_CPP_MIN_LOG_LEVEL=0 to see it). `aggregate_lb_results` is re-exported because the paper's README calls it as
`utils.aggregate_lb_results`.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from utils.rd import aggregate_lb_results  # noqa: E402,F401
