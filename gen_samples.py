"""Draws samples of a built-in source into an .npy file (e.g. the banana samples of the paper's BA command).

    python gen_samples.py --dataset banana --data_dim 2 --num_samples 100000 --save_dir data

writes `data/banana-dim=2-samples=100000.npy` (float64, [num_samples, data_dim]).
"""
from utils import startup  # noqa: F401  (first, on purpose: TensorFlow's start-up lines; utils/startup.py)

import io
from pathlib import Path

import numpy as np

from utils import cli, runs
from utils.sources import make_source


def main(argv):
    p = cli.ArgumentParser(description=__doc__)
    p.add_argument("--dataset", choices=["banana", "gaussian"], default="banana", help="the built-in source")
    p.add_argument("--data_dim", type=cli.positive_int,
                   help="dimension of the source (default: 2; with --gparams_path, the file's, checked if given)")
    p.add_argument("--gparams_path", help="loc/scale .npz of a gaussian source (gen_gaussian_params.py)")
    p.add_argument("--num_samples", type=cli.positive_int, default=100000, help="samples to draw")
    p.add_argument("--save_dir", default="data", help="folder of the .npy")
    p.add_argument("--seed", type=int, default=0, help="seeds the draws")
    args = p.parse_args(argv)
    cli.output_dir(args.save_dir, "--save_dir")
    # No default of 2 with --gparams_path: it was checked against the file, so a Gaussian of any other dimension
    # needed --data_dim repeated.
    data_dim = args.data_dim if args.data_dim is not None or args.gparams_path else 2
    source = make_source(args.dataset, data_dim, args.gparams_path)
    x = source.sample(args.num_samples, seed=args.seed).astype(np.float64)
    path = Path(args.save_dir) / f"{args.dataset}-dim={source.dim}-samples={args.num_samples}.npy"
    buf = io.BytesIO()
    np.save(buf, x)
    runs.atomic_write_bytes(path, buf.getvalue())
    print(f"wrote {path}")


if __name__ == "__main__":
    cli.run(main)
