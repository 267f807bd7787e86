"""BD-rate of one image R-D curve against another: published curves and this package's results alike.

  python bd_rate.py --dataset kodak --test "RD-sandwich upper bound (resnet_vae)"        # anchor: VTM 18.0
  python bd_rate.py --anchor "mbt2018 re-implementation (base, amortized)" --test "mbt2018 + SGA"
  python bd_rate.py --test 'checkpoints/kodak/*/results.jsonl' --method pchip --plot rd.png

A curve is a method name of the published curves (`--reference`, data/reference/image_rd.csv), or results files:
this package's eval JSONL (the records' `bpp` and `psnr`; a run evaluated more than once counts once, with its
last record), or any CSV with columns `bpp` and `psnr`; a quoted glob gathers several files into one curve.
Records and rows that name another dataset than --dataset are left out: a subset of a set's images evaluated
alone (`kodak-subset=<hash>`) is a dataset of its own, selected by that name. The method and the overlap are printed;
the last line is `BD-rate: <x>%` (negative: the test needs fewer bits than the anchor at equal PSNR).
See docs/bd_rate.md.
"""
from utils import startup  # noqa: F401  (first, on purpose: TensorFlow's start-up lines; utils/startup.py)

import csv
import glob
import os
import tempfile
from pathlib import Path

import numpy as np

from utils import jsonl, rd
from utils.cli import ArgumentParser, InputError, output_file, read_text, run
from utils.sources import resolve_path

# Shipped with the package (data/reference/README.md names each curve's source); --help shows the default
# repository-relative, and it is read from beside this file, so that it works from any working folder.
REFERENCE_RELATIVE = Path("data") / "reference" / "image_rd.csv"
DEFAULT_REFERENCE = Path(__file__).resolve().parent / REFERENCE_RELATIVE
DEFAULT_ANCHOR = "VTM 18.0"
# Drawn on every --plot for context: the standard anchor, tfc's ms2020 codec, and the paper's upper bound.
CONTEXT_CURVES = ("VTM 18.0", "ms2020 (channel-wise autoregressive)", "RD-sandwich upper bound (resnet_vae)")
PLOT_FORMATS = (".png", ".pdf", ".svg")


class Curve:
    """A named R-D curve: bpp and PSNR (dB) arrays, sorted by rate."""

    def __init__(self, label, bpp, psnr, origin):
        order = np.argsort(bpp, kind="stable")
        self.label, self.origin = label, origin
        self.bpp, self.psnr = np.asarray(bpp, np.float64)[order], np.asarray(psnr, np.float64)[order]

    def describe(self):
        return (f"{self.label} [{self.origin}]: {len(self.bpp)} points, {self.bpp.min():.4g} to "
                f"{self.bpp.max():.4g} bpp, {self.psnr.min():.2f} to {self.psnr.max():.2f} dB")


def read_reference(path):
    """{dataset: {method: [(bpp, psnr), ...]}} from the published-curves CSV."""
    path = resolve_path(path, "--reference")  # a data/... path is also looked up under $RDS_DATA_DIR
    if not path.is_file():
        raise InputError(f"--reference {path}: not a file; give the path of the published curves (image_rd.csv)")
    table = {}
    for row in csv.DictReader(read_text(path, "--reference").splitlines()):
        try:
            point = (float(row["bpp"]), float(row["psnr_rgb_db"]))
            table.setdefault(row["dataset"], {}).setdefault(row["method"], []).append(point)
        except (KeyError, TypeError, ValueError):
            raise InputError(f"--reference {path}: expected columns dataset, method, bpp, psnr_rgb_db")
    return table


def published(table, dataset, name, flag):
    """The published curve called `name` (exactly, or an unambiguous part of a name; case ignored)."""
    if "-subset=" in dataset:
        raise InputError(f"--dataset {dataset}: a subset of {dataset.split('-subset=')[0]}'s images; the published "
                         f"curves are of whole sets, so give results files on this subset to both --anchor and --test")
    if dataset not in table:
        raise InputError(f"--dataset {dataset}: the published curves cover {', '.join(sorted(table))}; "
                         f"for another dataset give results files to both --anchor and --test")
    methods = table[dataset]
    key = name.strip().casefold()
    found = [m for m in methods if m.casefold() == key] or [m for m in methods if key in m.casefold()]
    if len(found) > 1:
        raise InputError(f"{flag} {name!r} is ambiguous; it matches: " + "; ".join(sorted(found)))
    if not found:
        raise InputError(f"{flag} {name!r} is neither a results file nor a published method; the published "
                         f"methods on {dataset}: " + "; ".join(sorted(methods)))
    bpp, psnr = zip(*methods[found[0]])
    return Curve(found[0], bpp, psnr, f"published, {dataset}")


def _from_jsonl(path, dataset):
    latest = {}
    for i, r in enumerate(jsonl.read(path)):
        if "bpp" not in r or "psnr" not in r or r.get("dataset", dataset) != dataset:
            continue
        latest[r.get("npz", i)] = (r["bpp"], r["psnr"])  # a re-evaluated run: its last record wins
    return list(latest.values())


def _from_csv(path, dataset):
    reader = csv.DictReader(read_text(path, "results file").splitlines())
    columns = {c.strip().lower(): c for c in reader.fieldnames or []}
    if "bpp" not in columns or "psnr" not in columns:
        raise InputError(f"{path}: a results CSV needs columns 'bpp' and 'psnr' (it has: "
                         f"{', '.join(reader.fieldnames or []) or 'no header'})")
    ds = columns.get("dataset")
    return [(row[columns["bpp"]], row[columns["psnr"]]) for row in reader
            if ds is None or row[ds] == dataset]


def results(pattern, dataset, flag):
    """The curve in results files (a path or a glob): JSONL eval records or CSV rows."""
    paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
    if not paths or not all(os.path.isfile(p) for p in paths):
        raise InputError(f"{flag} {pattern}: no such results file")
    points = []
    for p in paths:
        points += _from_csv(p, dataset) if p.lower().endswith(".csv") else _from_jsonl(p, dataset)
    try:
        bpp, psnr = (np.array(v, dtype=np.float64) for v in zip(*points)) if points else ([], [])
    except (TypeError, ValueError):
        raise InputError(f"{flag} {pattern}: bpp and psnr must be numbers")
    if len(bpp) == 0:
        raise InputError(f"{flag} {pattern}: no points with bpp and psnr for --dataset {dataset}")
    if not (np.all(np.isfinite(bpp)) and np.all(np.isfinite(psnr)) and np.all(bpp > 0)):
        raise InputError(f"{flag} {pattern}: bpp must be positive and finite, psnr finite")
    return Curve(pattern, bpp, psnr, f"{len(paths)} results file{'s' if len(paths) > 1 else ''}")


def load_curve(spec, dataset, table, flag):
    """A results file or glob when `spec` names one (or looks like one), else a published method name."""
    if glob.has_magic(spec) or os.path.exists(spec) or spec.lower().endswith((".jsonl", ".csv")):
        return results(spec, dataset, flag)
    if table is None:
        raise InputError(f"{flag} {spec!r} is not a file, and no published curves were read")
    return published(table, dataset, spec, flag)


def plot(path, anchor, test, table, dataset, method, value):
    """Both curves and the published context curves, bpp against PSNR, written atomically."""
    from utils.plotting import plot_rd
    curves = [dict(label=f"anchor: {anchor.label}", D=anchor.bpp, R=anchor.psnr, marker="o"),
              dict(label=f"test: {test.label}", D=test.bpp, R=test.psnr, marker="s")]
    for name in CONTEXT_CURVES:
        if name in (anchor.label, test.label) or name not in (table or {}).get(dataset, {}):
            continue
        c = published(table, dataset, name, "--plot")
        curves.append(dict(label=name, D=c.bpp, R=c.psnr, marker="."))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        plot_rd(curves, tmp, xlabel="bits per pixel", ylabel="PSNR (dB)",
                title=f"{dataset}: BD-rate {value:+.2f}% ({method})")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def parse_args(argv):
    p = ArgumentParser(description=__doc__)
    p.add_argument("--dataset", default="kodak", help="which published curves (kodak, tecnick), and which results "
                                                      "(also a subset's name, e.g. kodak-subset=<hash>)")
    p.add_argument("--anchor", default=DEFAULT_ANCHOR, help="the reference curve: a published method or results files")
    p.add_argument("--test", required=True, help="the curve compared: a published method or results files")
    p.add_argument("--method", default="cubic", choices=rd.BD_METHODS,
                   help="cubic: ln rate as a least-squares cubic in PSNR (Bjontegaard); pchip: piecewise-cubic "
                        "Hermite interpolation")
    p.add_argument("--plot", type=Path, help="also draw the curves into this .png (.pdf, .svg)")
    p.add_argument("--reference", default=str(REFERENCE_RELATIVE),
                   help="the published curves (CSV); the default is the repository's copy, from any working folder")
    return p.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    if args.plot is not None:
        if args.plot.suffix.lower() not in PLOT_FORMATS:
            raise InputError(f"--plot {args.plot}: give a file ending in {', '.join(PLOT_FORMATS)}")
        output_file(args.plot, "--plot")
    specs = (args.anchor, args.test)
    needs_table = args.plot is not None or not all(
        glob.has_magic(s) or os.path.exists(s) or s.lower().endswith((".jsonl", ".csv")) for s in specs)
    reference = DEFAULT_REFERENCE if args.reference == str(REFERENCE_RELATIVE) else args.reference
    table = read_reference(reference) if needs_table else None
    anchor = load_curve(args.anchor, args.dataset, table, "--anchor")
    test = load_curve(args.test, args.dataset, table, "--test")
    try:
        value = rd.bd_rate(anchor.bpp, anchor.psnr, test.bpp, test.psnr, method=args.method)
        lo, hi = rd.psnr_overlap(anchor.psnr, test.psnr)
    except ValueError as e:
        raise InputError(f"--anchor/--test: {e}")
    print(f"anchor: {anchor.describe()}")
    print(f"test:   {test.describe()}")
    share = [f"{(hi - lo) / np.ptp(c.psnr):.0%} of the {w}'s" for c, w in ((anchor, "anchor"), (test, "test"))]
    print(f"overlap: {lo:.2f} to {hi:.2f} dB PSNR ({share[0]} range, {share[1]})")
    print(f"method: {args.method}")
    if args.plot is not None:
        plot(args.plot, anchor, test, table, args.dataset, args.method, value)
        print(f"plot: {args.plot}")
    print(f"BD-rate: {value:.2f}%")


if __name__ == "__main__":
    run(main)
