"""Lossless compression of binary images with bits-back coding and importance sampling (BB-ELBO, BB-IS, BB-CIS).

Monte-Carlo bits-back coding (Ruan et al., ICML 2021) turns a latent-variable model into a lossless codec whose
net rate approaches the model's importance-weighted bound (-IWAE_K) instead of its -ELBO. The model is the
IWAE paper's binary VAE 784-200-200-50, trained here (`train`) or loaded from the released McBits checkpoints
(`--weights FILE.npz`). The coders and their discretization are described in utils/mcbits.py, which holds them.

    python mcbits.py --dataset mnist train --bound iwae --num_particles 5 --epochs 20
    python mcbits.py --weights data/mcbits/train_bin_emnist_split=mnist_num=50.npz \\
        compress --coder bb_is --num_particles 50 --num_compress 10000 --output test.mcb
    python mcbits.py --weights W.npz decompress test.mcb --output decoded.npy

`train` writes <checkpoint_dir>/mcbits-dataset=...-bound=...-num_particles=...-hidden=...-latent=.../weights.npz
(with the training logs and flags.json). `compress` codes the first --num_compress test images as one message on
one ANS stack with --coder (bb_elbo: one posterior draw; bb_is: importance sampling over K = --num_particles
draws; bb_cis: K coupled draws from one uniform integer per latent dimension), decodes it again to check it
(--no-decode_check skips that), appends a record to <results_dir>/mcbits.jsonl, writes the per-image rates to an
.npz there and, with --output, the message to a file. `decompress` decodes such a file (without TensorFlow).

Rates, in bits per dimension (784 per image): `net_bpd` is the growth of the stack over the initial bits,
`total_bpd` the whole message (initial bits included), `ideal_bpd` the continuous bound of the same model on
the same images (-ELBO for bb_elbo, -IWAE_K otherwise; Monte Carlo), `disc_bpd` the information content of all
pushes minus pops under our count tables (what net_bpd should equal, up to constriction's 24-bit requantization).
"""
from utils import startup  # noqa: F401  (first, on purpose: TensorFlow's start-up lines; utils/startup.py)

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

# The coding path is thousands of tiny matrix products; BLAS threads only add synchronization to them
# (5-10x slower on a busy machine). Set before NumPy loads; TensorFlow's own threads are unaffected.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

from utils import ans, cli, container, jsonl, mnist, runs, train_flags  # noqa: E402
from utils.cli import InputError, positive_float, positive_int, run  # noqa: E402
# The engine: NumPy only at import (TensorFlow loads inside make_model and continuous_bounds, which decompress never
# calls), so it is imported here, not inside the commands.
from utils.mcbits import (BITS, CODERS, DIM, Codec, Net, continuous_bounds, load_weights, make_model,  # noqa: E402
                          model_arrays)
from utils.sources import resolve_path  # noqa: E402

RESULTS_NAME = "mcbits.jsonl"
UNITS = "rates in bits per dimension (784 per image); speeds in images per second"


def codec_from_flags(net, args):
    """The coder that the compress flags (or a message's stored coding parameters) name."""
    return Codec(net, args.coder, args.num_particles, args.log_num_bucket, args.prop_mprec, args.cond_mprec,
                 args.index_mprec, args.iterative_improvement_steps if args.iterative_post_improvement else 0,
                 args.iterative_improvement_lr)


# ---- flags --------------------------------------------------------------------------------------

def parse_args(argv):
    p = cli.ArgumentParser(description=__doc__)
    p.add_argument("-V", "--verbose", action="store_true", help="progress and messages on stderr")
    p.add_argument("--dataset", default="mnist", help=f"{', '.join(mnist.NAMED)} (IDX files under $RDS_DATA_DIR), "
                   "or an .npy of binary images uint8 [N, 28, 28] or [N, 784] (compress only)")
    p.add_argument("--hidden_units", type=positive_int, default=200, help="units of each of the two hidden layers")
    p.add_argument("--latent_dim", type=positive_int, default=50, help="latent dimensions")
    p.add_argument("--weights", help="an .npz of weights in the McBits layout (compress, decompress)")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds training, the initial bits and the Monte Carlo draws")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train the VAE; writes <run folder>/weights.npz",
                       description="Train the VAE; writes <run folder>/weights.npz.")
    t.add_argument("--bound", choices=("elbo", "iwae"), default="elbo", help="the training objective")
    t.add_argument("--num_particles", type=positive_int, default=1, help="K of the bound")
    t.add_argument("--checkpoint_dir", default="checkpoints", help="run folders go under here")
    t.add_argument("--epochs", type=positive_int, default=100, help="training epochs")
    t.add_argument("--steps_per_epoch", type=positive_int, default=3000,
                   help="optimizer steps per epoch (the default, 60,000 / 20, is one pass over MNIST)")
    t.add_argument("--batchsize", type=positive_int, default=20, help="images per optimizer step")
    t.add_argument("--lr", type=positive_float, default=1e-3, help="learning rate (Adam)")
    t.add_argument("--lr_schedule", default="constant",
                   help=f"learning-rate schedule: {', '.join(train_flags.SCHEDULES)}")
    t.add_argument("--max_validation_steps", type=positive_int, default=2, help="batches of 500 test images")
    t.add_argument("--cont", action="store_true", help="resume the run's latest checkpoint")
    train_flags.add_run_flags(t)

    for name, help_ in (("compress", "code test images into one message; report net, total and ideal rates"),
                        ("decompress", "decode a message file into images")):
        c = sub.add_parser(name, help=help_, description=f"{help_[0].upper()}{help_[1:]}.")
        if name == "compress":
            c.add_argument("--coder", choices=CODERS, default="bb_elbo",
                           help="bb_elbo: bits-back with one posterior draw; bb_is: importance sampling over "
                                "--num_particles; bb_cis: coupled importance sampling (each is described in "
                                "mcbits.py --help)")
            c.add_argument("--num_particles", type=positive_int, default=1, help="K of bb_is and bb_cis")
            c.add_argument("--num_compress", type=positive_int, default=500, help="test images coded")
            c.add_argument("--log_num_bucket", type=positive_int, default=8,
                           help="bits per latent dimension: the prior's 2^log_num_bucket equal-mass buckets")
            c.add_argument("--prop_mprec", type=positive_int, default=20,
                           help="bits of the posterior's counts (McBits: 16, which costs ~3%%, see docs/mcbits.md)")
            c.add_argument("--cond_mprec", type=positive_int, default=16, help="bits of the likelihood's counts")
            c.add_argument("--index_mprec", type=positive_int, default=16, help="bits of the index j's counts")
            c.add_argument("--iterative_post_improvement", action="store_true",
                           help="refine each image's posterior by Adam on its negative ELBO before coding (the "
                                "decoder repeats it)")
            c.add_argument("--iterative_improvement_steps", type=positive_int, default=50,
                           help="Adam steps of --iterative_post_improvement")
            c.add_argument("--iterative_improvement_lr", type=positive_float, default=1e-3,
                           help="their learning rate")
            c.add_argument("--ideal_samples", type=positive_int, default=100,
                           help="posterior draws per image for the ideal bound (at least K)")
            c.add_argument("--decode_check", default=True, action=argparse.BooleanOptionalAction,
                           help="decode the message again and check it against the images")
            c.add_argument("--results_dir", default="results", help="where the records and the per-image .npz go")
            c.add_argument("--output", help="also write the message to this file")
        else:
            c.add_argument("message", help="a file written by compress --output")
            c.add_argument("--output", required=True, help="decoded images, .npy uint8 [N, 28, 28]")
        cli.add_force_flag(c)
    args = p.parse_args(argv)
    check_files(args)
    if args.command == "compress":
        check_coding_flags(args)
    return args


def check_files(args):
    """Refuses, before any work, the paths a command cannot read or write."""
    if args.command == "train":
        cli.output_dir(args.checkpoint_dir, "--checkpoint_dir")
        return
    if args.weights:
        cli.input_file(resolve_path(args.weights, "--weights"), "--weights")
    if args.command == "compress":
        results = cli.output_dir(args.results_dir, "--results_dir")
        if (results / RESULTS_NAME).is_dir():
            raise InputError(f"--results_dir {results}: {results / RESULTS_NAME} is a folder, where a file is written")
    else:
        cli.input_file(args.message, "message")
    if args.output:
        cli.output_file(args.output, "--output", force=args.force)


def check_coding_flags(args):
    if args.coder == "bb_elbo" and args.num_particles != 1:
        raise InputError(f"--num_particles {args.num_particles}: bb_elbo uses one particle (choose bb_is or bb_cis)")
    if not 1 <= args.log_num_bucket <= 12:
        raise InputError(f"--log_num_bucket {args.log_num_bucket}: must be 1..12")
    for flag in ("prop_mprec", "cond_mprec", "index_mprec"):
        if getattr(args, flag) > ans.MAX_PRECISION:
            raise InputError(f"--{flag} {getattr(args, flag)}: at most {ans.MAX_PRECISION} bits")
    if args.prop_mprec <= args.log_num_bucket:
        raise InputError(f"--prop_mprec {args.prop_mprec} must exceed --log_num_bucket {args.log_num_bucket}")
    if args.num_particles >= 1 << args.index_mprec:
        raise InputError(f"--num_particles {args.num_particles} needs --index_mprec above {args.index_mprec}")
    if args.num_particles >= 1 << 24:
        raise InputError(f"--num_particles {args.num_particles}: at most 2^24 - 1")


def coding_params(args):
    """What the decoder must know besides the weights; stored in the message."""
    keys = ("coder", "num_particles", "log_num_bucket", "prop_mprec", "cond_mprec", "index_mprec",
            "iterative_post_improvement", "iterative_improvement_steps", "iterative_improvement_lr")
    return {k: getattr(args, k) for k in keys}


def model_identity(args, arrays):
    return container.model_id("mcbits", {"hidden_units": args.hidden_units, "latent_dim": args.latent_dim},
                           [arrays[k] for k in sorted(arrays)])


def need_weights(args):
    if not args.weights:
        raise InputError(f"{args.command} needs --weights FILE.npz (train writes <run folder>/weights.npz)")
    return load_weights(args.weights, args.hidden_units, args.latent_dim)


def progress(total, verbose, label):
    if not verbose:
        return None
    import tensorflow as tf
    print(label, file=sys.stderr)
    return tf.keras.utils.Progbar(total, stateful_metrics=["net_bpd"])


# ---- train --------------------------------------------------------------------------------------

def train(args):
    import tensorflow as tf
    from utils import training
    if args.dataset not in mnist.NAMED:
        raise InputError(f"--dataset {args.dataset}: training needs grey levels, one of {', '.join(mnist.NAMED)}")
    run_dir = Path(args.checkpoint_dir) / runs.run_name("mcbits", dataset=args.dataset, bound=args.bound,
                                                         num_particles=args.num_particles, hidden=args.hidden_units,
                                                         latent=args.latent_dim)
    training.check_run_dir(run_dir, args.cont)
    training.strategy_from_flags(args)  # before any other TensorFlow work (docs/distributed.md)
    greys = mnist.greys(args.dataset, "train")
    test = mnist.test_images(args.dataset)
    tf.random.set_seed(args.seed)
    with training.strategy_scope(args):
        model = make_model(args.hidden_units, args.latent_dim, args.bound, args.num_particles)
        mean = np.clip(greys.mean(0), 1e-3, 1 - 1e-3)  # dec_fc3's bias starts at the logit of the training mean
        w, _ = model.layer["dec_fc3"].get_weights()
        model.layer["dec_fc3"].set_weights([w, np.log(mean / (1 - mean)).astype(np.float32)])

    def binarize(g):  # dynamic binarization: a fresh Bernoulli draw each time an image is used
        return tf.cast(tf.random.uniform(tf.shape(g)) < g, tf.float32)

    train_ds = (tf.data.Dataset.from_tensor_slices(greys).shuffle(len(greys), seed=args.seed).repeat()
                .batch(args.batchsize).map(binarize))
    val_ds = tf.data.Dataset.from_tensor_slices(test.astype(np.float32)).batch(500)
    run_dir.mkdir(parents=True, exist_ok=True)
    runs.save_flags(run_dir, args)
    if args.verbose:
        print(f"run folder: {run_dir}", file=sys.stderr)
    training.fit(model, train_ds, val_ds, run_dir, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                 lr=args.lr, lr_schedule=args.lr_schedule, max_validation_steps=args.max_validation_steps,
                 cont=args.cont, verbose=args.verbose, tensorboard=args.tensorboard)
    runs.atomic_save_npz(run_dir / "weights.npz", **model_arrays(model))
    print(json.dumps({"run_dir": str(run_dir), "weights": str(run_dir / "weights.npz")}))


# ---- compress / decompress ----------------------------------------------------------------------

def compress(args):
    arrays = need_weights(args)
    x = mnist.test_images(args.dataset, args.num_compress)
    if len(x) < args.num_compress:
        print(f"note: {args.dataset} has {len(x)} test images; coding all of them", file=sys.stderr)
    codec = codec_from_flags(Net(arrays), args)
    n = len(x)

    start = time.perf_counter()
    posteriors = [codec.posterior(xi) for xi in x]
    stack = ans.Stack.seeded(codec.max_pop_bits() + 64, args.seed)
    initial_words, initial_bits = stack.words(), stack.bits
    per_image, lowest = np.zeros(n), initial_bits
    bar = progress(n, args.verbose, f"encoding {n} images with {args.coder}")
    for i in range(n):
        before = stack.bits
        lowest = min(lowest, codec.encode(stack, x[i], posteriors[i]))
        per_image[i] = stack.bits - before
        if bar:
            bar.update(i + 1, [("net_bpd", (stack.bits - initial_bits) / ((i + 1) * DIM))])
    encode_s = time.perf_counter() - start
    words, total_bits, disc_bits = stack.words(), stack.bits, stack.info_bits

    decode_s = None
    if args.decode_check:
        start = time.perf_counter()
        decoder = ans.Stack(words)
        bar = progress(n, args.verbose, "decoding")
        for i in reversed(range(n)):
            xi, _ = codec.decode(decoder)
            if not np.array_equal(xi, x[i]):
                raise RuntimeError(f"decode check failed: image {i} differs from the input")
            if bar:
                bar.update(n - i)
        if not np.array_equal(decoder.words(), initial_words):
            raise RuntimeError("decode check failed: the stack does not return to its initial words")
        decode_s = time.perf_counter() - start

    model = make_model(args.hidden_units, args.latent_dim, arrays=arrays)
    mu, log_sig = (np.stack(p) for p in zip(*posteriors))
    samples = max(args.ideal_samples, codec.k)
    elbo, iwae = continuous_bounds(model, x, mu, log_sig, codec.k, samples, args.seed)
    ideal = -(elbo if codec.k == 1 else iwae)

    net_bits = total_bits - initial_bits
    record = {
        "coder": args.coder, "num_particles": codec.k, "num_images": n, "dataset": args.dataset,
        "weights": str(args.weights),
        "net_bpd": net_bits / (n * DIM), "total_bpd": total_bits / (n * DIM),
        "ideal_bpd": float(ideal.mean() / BITS), "ideal_se_bpd": float(ideal.std(ddof=1) / BITS / math.sqrt(n))
        if n > 1 else None,
        "disc_bpd": disc_bits / (n * DIM), "elbo_bpd": float(-elbo.mean() / BITS),
        "initial_bits": initial_bits, "initial_bits_used": initial_bits - lowest,
        "encode_images_per_s": n / encode_s, "decode_images_per_s": n / decode_s if decode_s else None,
        "decode_check": bool(args.decode_check), **coding_params(args), "units": UNITS,
    }
    record["net_over_ideal"] = record["net_bpd"] / record["ideal_bpd"] - 1.0
    # the paired standard error of net - ideal over images (each image's coding is one Monte-Carlo draw)
    record["net_minus_ideal_se_bpd"] = (float(np.std(per_image - ideal / math.log(2.0), ddof=1) / DIM / math.sqrt(n))
                                        if n > 1 else None)
    name = runs.run_name("mcbits", weights=Path(args.weights).stem, coder=args.coder, num_particles=codec.k,
                         num_compress=n, **({"refine": args.iterative_improvement_steps}
                                            if args.iterative_post_improvement else {}))
    results = Path(args.results_dir)
    if args.output:
        message = container.pack("mcbits", model_identity(args, arrays), (n, DIM), 1,
                              [json.dumps(coding_params(args), sort_keys=True).encode(), words.tobytes()])
        runs.atomic_write_bytes(args.output, message)
        record["message_bytes"] = len(message)
    runs.atomic_save_npz(results / f"{name}.npz", net_bits=per_image, ideal_bits=ideal / math.log(2.0),
                         elbo_nats=elbo, iwae_nats=iwae, initial_words=initial_words, units=UNITS)
    jsonl.append(results / RESULTS_NAME, record)
    print(json.dumps(record))


def decompress(args):
    arrays = need_weights(args)
    path = Path(args.message)
    (n, dim), _, strings = container.unpack(path.read_bytes(), "mcbits", model_identity(args, arrays),
                                         f"message {path}", "--weights, --hidden_units and --latent_dim")
    if dim != DIM or len(strings) != 2 or len(strings[1]) % 4:
        raise InputError(f"message {path}: corrupt (not a message of {DIM}-pixel images)")
    try:
        params = json.loads(strings[0])
        for k, v in params.items():
            setattr(args, k, v)
        check_coding_flags(args)
    except (ValueError, AttributeError, TypeError, KeyError) as e:
        raise InputError(f"message {path}: corrupt coding parameters ({e})")
    codec = codec_from_flags(Net(arrays), args)
    stack = ans.Stack(np.frombuffer(strings[1], np.uint32))
    images = np.zeros((n, DIM), np.uint8)
    for i in reversed(range(n)):
        images[i], _ = codec.decode(stack)
    runs.atomic_write_bytes(args.output, _npy_bytes(images.reshape(n, 28, 28)))
    print(json.dumps({"images": n, "output": args.output}))


def _npy_bytes(a):
    import io
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def main(argv):
    args = parse_args(argv)
    np.random.seed(args.seed)
    {"train": train, "compress": compress, "decompress": decompress}[args.command](args)


if __name__ == "__main__":
    run(main)
