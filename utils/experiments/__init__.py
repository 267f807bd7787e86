"""The registry of `reproduce.py`: every experiment of the reproduction, in the order of the page.

`base.py` says what an experiment is; `vector.py`, `images.py` and `seeds.py` define them by family.
"""
from utils.experiments import images, seeds, vector
from utils.experiments.base import TIERS, Experiment, Row, Step, missing_data  # noqa: F401 (the registry's API)

EXPERIMENTS = [*vector.EXPERIMENTS, *images.EXPERIMENTS, *seeds.EXPERIMENTS]
BY_NAME = {e.name: e for e in EXPERIMENTS}
