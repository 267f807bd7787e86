"""What an experiment of the reproduction is, and the helpers its readers share.

An `Experiment` names the paper's (or a seed paper's) figure it reproduces and, for each tier, the package commands
that produce it (`Step`s, run in order from the repository root, with `{out}` standing for the experiment's folder).
Its `read(out)` turns the results those commands left on disk into `Row`s: one quantity of one method, beside its
reference value. `reproduce.py` runs the steps and renders the rows; nothing else on the page is typed by hand.

Tiers: `smoke` is every pipeline at a tiny size (the test suite runs it), `cpu` what 2 cores finish in under an
hour per experiment, `gpu` the paper's own scale (printed by --dry_run, run where a GPU is).
"""
import math
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from utils import jsonl, runs

TIERS = ("smoke", "cpu", "gpu")


@dataclass(frozen=True)
class Step:
    """One command: a script of this repository and its arguments, where `{out}` is the experiment's folder (an
    experiment trains what it needs, so that it runs alone). `resumable`: a training command that an interrupted run
    continues by appending `--cont` (the scripts' train subcommands take it last)."""
    argv: tuple
    resumable: bool = False

    def command(self, out):
        return [str(a).replace("{out}", str(out)) for a in self.argv]


def step(*argv, resumable=False):
    return Step(tuple(str(a) for a in argv), resumable)


def train(*argv):
    return step(*argv, resumable=True)


@dataclass
class Row:
    """One figure of the page: `value` (with `spread`, a standard error or half a 95% interval) beside `reference`
    (`reference_kind`: analytic, paper, seed, or the estimator it is compared with). `gap` = value - reference."""
    quantity: str
    method: str
    value: Optional[float]
    reference: Optional[float] = None
    reference_kind: str = ""
    spread: Optional[float] = None
    unit: str = ""
    note: str = ""

    @property
    def gap(self):
        if self.value is None or self.reference is None:
            return None
        return self.value - self.reference


@dataclass
class Experiment:
    name: str
    title: str
    reproduces: str  # the paper's (or seed paper's) figure, table or section
    commands: Callable  # tier -> list of Steps
    read: Callable  # Path (the experiment's folder) -> list of Rows
    tiers: tuple = TIERS  # the tiers it runs at
    needs: tuple = ()  # data files or folders under $RDS_DATA_DIR
    figure: bool = True  # the steps end with plot_rd.py writing {out}/figure.png
    notes: dict = field(default_factory=dict)  # tier -> what differs from the paper at that tier
    draw: Optional[Callable] = None  # (folder, png path): the figure, where no command draws it (figure=False)
    peer: str = ""  # how this package compares with the paper's own code at the same recipe, where that was run

    def steps(self, tier):
        return self.commands(tier) if tier in self.tiers else []


def shown(argv):
    """A command as the page and --dry_run print it."""
    return "python " + " ".join(shlex.quote(a) for a in argv)


def pick(tier, gpu, cpu, smoke):
    """The value of `tier`: the paper's (gpu), the CPU budget's, the toy's."""
    return {"smoke": smoke, "cpu": cpu, "gpu": gpu}[tier]


def data_root():
    return Path(os.environ.get("RDS_DATA_DIR", "data"))


def missing_data(experiment):
    """The experiment's data files that $RDS_DATA_DIR lacks."""
    return [n for n in experiment.needs if not (data_root() / n).exists()]


# ---- readers' helpers ---------------------------------------------------------------------------------------

def records(out, method=None):
    """Every results record below `out` (of one method), each with its run's flags in '_flags', in file order;
    a result evaluated twice keeps both (readers take the last of each run with `last_per`)."""
    found = []
    for path in sorted(Path(out).rglob("results.jsonl")):
        flags = runs.load_flags(path.parent)
        for r in jsonl.read(path):
            if method is None or r.get("method") == method:
                found.append({**r, "_flags": flags, "_run": path.parent.name})
    return found


def last_per(recs, key):
    """The last record for each value of key(record), in order of that value."""
    chosen = {}
    for r in recs:
        chosen[key(r)] = r
    return [chosen[k] for k in sorted(chosen)]


def lamb_of(record):
    return float(record["lamb"] if "lamb" in record else record["lambda"])


def ci_half(record, lo="R_lb_lo", hi="R_lb_hi"):
    return (record[hi] - record[lo]) / 2 if lo in record and hi in record else None


def fmt_lamb(lamb):
    return f"{lamb:g}"


def finite(x):
    return x is not None and math.isfinite(x)
