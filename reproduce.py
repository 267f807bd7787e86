"""Runs the reproduction of the paper's figures and renders its page, docs/reproduction.md.

    python reproduce.py --tier cpu                        # every experiment 2 cores can do, then the page
    python reproduce.py --tier cpu --only physics-2d --jobs 2
    python reproduce.py --tier gpu --dry_run              # the paper-scale commands, printed
    python reproduce.py --tier cpu --render_only          # the page from the results already on disk

Each experiment (utils/experiments/) is a list of package commands run in order from the repository root; its
results go to OUT/TIER/NAME (default OUT: runs/reproduce). Every command's start and end, wall time and machine
are appended to NAME/steps.jsonl, and its output to NAME/logs/. A finished experiment is not run again; an
interrupted one refuses to start over what it left unless --cont, which skips the finished commands and resumes
an interrupted training with the script's own --cont. --jobs N runs N experiments at once, each with
cores/N threads. The page's numbers are read from the results on disk by each experiment's reader; none is typed.

Tiers: smoke (every pipeline at a tiny size, in seconds to a minute each; the test suite runs it), cpu (each
experiment under an hour on 2 cores), gpu (the paper's scale).
"""
from utils import startup  # noqa: F401  (first, on purpose: TensorFlow's start-up lines; utils/startup.py)

import os
import platform
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from utils import cli, jsonl
from utils import experiments
from utils.experiments import TIERS, page
from utils.experiments.base import shown

ROOT = Path(__file__).resolve().parent


def parse_args(argv):
    p = cli.ArgumentParser(description=__doc__)
    p.add_argument("--tier", required=True, choices=TIERS, help="which sizes to run")
    p.add_argument("--only", nargs="+", metavar="NAME", choices=list(experiments.BY_NAME),
                   help="these experiments only (default: all); names: " + ", ".join(experiments.BY_NAME))
    p.add_argument("--jobs", type=cli.int_in(1, 64), default=1, help="experiments run at once")
    p.add_argument("--dry_run", action="store_true", help="print the commands and run nothing")
    p.add_argument("--cont", action="store_true", help="continue interrupted experiments")
    p.add_argument("--render_only", action="store_true", help="render the page from the results on disk")
    p.add_argument("--out", default="runs/reproduce", help="root of the experiments' folders")
    p.add_argument("--page", help="the page written (default: docs/reproduction.md for the cpu and gpu tiers, "
                                  "OUT/TIER/reproduction.md for smoke); its figures go to figures/reproduction/ "
                                  "beside it")
    args = p.parse_args(argv)
    # In the registry's order (the page's), whatever the order of --only.
    args.experiments = [e for e in experiments.BY_NAME.values() if not args.only or e.name in args.only]
    unsupported = [e.name for e in args.experiments if not e.steps(args.tier)]
    if unsupported and args.only:
        raise cli.InputError(f"--only: {', '.join(unsupported)} has no --tier {args.tier} commands")
    args.experiments = [e for e in args.experiments if e.steps(args.tier)]
    args.out = Path(args.out)
    if args.page is None:
        args.page = args.out / args.tier / "reproduction.md" if args.tier == "smoke" else ROOT / "docs/reproduction.md"
    args.page = Path(args.page)
    if args.page.suffix != ".md":
        raise cli.InputError(f"--page {args.page}: expected a .md file")
    return args


def machine():
    """The machine in words: CPU model and count, and GPUs where nvidia-smi lists some."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    words = f"{os.cpu_count()} x {cpu}"
    try:
        gpus = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        gpus = []
    if gpus:
        words += "; " + ", ".join(g.split(" (")[0] for g in gpus)
    return words


class Run:
    """One experiment's folder: its steps' log (append-only) and its outputs."""

    def __init__(self, experiment, tier, out):
        self.experiment, self.tier = experiment, tier
        self.dir = out / tier / experiment.name
        self.log = self.dir / "steps.jsonl"

    def commands(self):
        return [s.command(self.dir) for s in self.experiment.steps(self.tier)]

    def events(self):
        return jsonl.read(self.log)

    def state(self):
        """'done', 'new', or 'interrupted' (a command started and did not finish, or failed)."""
        events = self.events()
        if not events:
            return "new"
        finished = {e["step"] for e in events if e["event"] == "done"}
        if finished >= set(range(len(self.commands()))) and any(e["event"] == "finished" for e in events):
            return "done"
        return "interrupted"

    def check_recipe(self):
        """Refuses to continue a folder whose finished commands were made by another recipe (an unfinished one may
        have been mended: it runs again as the recipe now says)."""
        commands = self.commands()
        for e in self.events():
            if e["event"] == "done" and (e["step"] >= len(commands) or e["argv"] != commands[e["step"]]):
                raise cli.InputError(f"{self.dir}: command {e['step'] + 1} there was `{shown(e['argv'])}`, the "
                                     f"recipe now says otherwise; remove the folder to run the experiment afresh")

    def execute(self, env, lock):
        commands = self.commands()
        events = self.events()
        finished = {e["step"] for e in events if e["event"] == "done"}
        started = {(e["step"], tuple(e["argv"])) for e in events if e["event"] == "start"}
        logs = self.dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        where = machine()
        for i, (argv, spec) in enumerate(zip(commands, self.experiment.steps(self.tier))):
            if i in finished:
                continue
            resumed = (i, tuple(argv)) in started and spec.resumable
            run_argv = argv + ["--cont"] if resumed else argv
            jsonl.append(self.log, {"event": "start", "step": i, "argv": argv, "resumed": resumed,
                                    "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
            with lock:
                print(f"[{self.experiment.name}] {i + 1}/{len(commands)}: {shown(run_argv)}", flush=True)
            t0 = time.time()
            with open(logs / f"step-{i + 1:02d}.log", "ab") as out:
                rc = subprocess.run([sys.executable, *run_argv], cwd=ROOT, env=env, stdout=out,
                                    stderr=subprocess.STDOUT).returncode
            wall = round(time.time() - t0, 1)
            if rc != 0:
                jsonl.append(self.log, {"event": "failed", "step": i, "argv": argv, "rc": rc, "wall_s": wall})
                tail = (logs / f"step-{i + 1:02d}.log").read_text(errors="replace").strip().splitlines()[-5:]
                raise RuntimeError(f"[{self.experiment.name}] command {i + 1} failed (exit {rc}) after {wall} s: "
                                   f"{shown(run_argv)}\n  " + "\n  ".join(tail))
            jsonl.append(self.log, {"event": "done", "step": i, "argv": argv, "wall_s": wall, "machine": where})
        wall = sum(e["wall_s"] for e in self.events() if e["event"] == "done")
        jsonl.append(self.log, {"event": "finished", "wall_s": round(wall, 1), "machine": where,
                                "time": time.strftime("%Y-%m-%dT%H:%M:%S")})


def thread_env(jobs):
    """Each of `jobs` experiments gets its share of the cores (TensorFlow and oneDNN read these at start-up)."""
    env = dict(os.environ)
    if jobs > 1:
        share = str(max(1, (os.cpu_count() or 1) // jobs))
        env.update(TF_NUM_INTRAOP_THREADS=share, TF_NUM_INTEROP_THREADS="1", OMP_NUM_THREADS=share)
    return env


def run_all(args):
    pending = []
    for e in args.experiments:
        run = Run(e, args.tier, args.out)
        state = run.state()
        if state == "done":
            print(f"[{e.name}] finished earlier ({run.dir}); not run again")
            continue
        missing = experiments.missing_data(e)
        if missing:
            raise cli.InputError(f"{e.name} needs {', '.join(missing)} under $RDS_DATA_DIR "
                                 f"({os.environ.get('RDS_DATA_DIR', 'unset: data/')}); leave it out with --only")
        if state == "interrupted":
            if not args.cont:
                raise cli.InputError(f"{e.name}: {run.dir} holds an interrupted run; pass --cont to continue it, "
                                     f"or remove the folder to start afresh")
            run.check_recipe()
        pending.append(run)
    lock, env, failures = threading.Lock(), thread_env(args.jobs), []

    def one(run):
        try:
            run.execute(env, lock)
        except RuntimeError as err:
            with lock:
                print(err, file=sys.stderr, flush=True)
            failures.append(run.experiment.name)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(one, pending))
    return failures


def main(argv):
    args = parse_args(argv)
    if args.dry_run:
        for e in args.experiments:
            run = Run(e, args.tier, args.out)
            print(f"# {e.name}: {e.reproduces}")
            for argv_ in run.commands():
                print(shown(argv_))
        return
    failures = [] if args.render_only else run_all(args)
    page.render(args.tier, args.out, args.page, Run)
    print(f"wrote {args.page}")
    if failures:
        raise cli.InputError(f"{len(failures)} experiment(s) failed: {', '.join(failures)} (their logs are under "
                             f"{args.out / args.tier}/NAME/logs/)")


if __name__ == "__main__":
    cli.run(main)
