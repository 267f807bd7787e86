"""Mean-scale hyperprior image codec (Minnen, Ballé & Toderici, NeurIPS 2018), without the autoregressive context.

    x -> g_a -> y -> h_a -> z                       z is coded with a deep factorized prior
                       z_hat -> h_s -> (mu, sigma)  y is coded as Gaussian(mu, sigma) convolved with U(-1/2, 1/2)
    y_hat -> g_s -> x_hat

The transforms are four 5x5 stride-2 convolutions with GDN (analysis) or IGDN (synthesis), shared with ms2020
in utils/image_models.py; the hyper transforms use ReLUs, and the hyper-synthesis predicts both the mean and the scale
(as an index into a table of log-spaced scales) of every latent. Layers, widths, biases, activations and kernel
parameterizations are those of the paper's code (tfc.SignalConv2D throughout); the model is in
utils/image_models.py, which sga.py and bb_sga.py share. Training replaces quantization with additive uniform
noise.

    python mbt2018.py -V --checkpoint_dir ckpt --lambda 0.01 train --dataset bsds500 --epochs 100
    python mbt2018.py --checkpoint_dir ckpt --lambda 0.01 eval --dataset kodak
    python mbt2018.py --checkpoint_dir ckpt --lambda 0.01 compress kodim01.png kodim01.tfci
    python mbt2018.py --checkpoint_dir ckpt --lambda 0.01 decompress kodim01.tfci kodim01-decoded.png
    python mbt2018.py --checkpoint_dir ckpt --lambda 0.01 export mbt2018-export   # a SavedModel: docs/deploy.md
"""
from utils import startup  # noqa: F401  (first, on purpose: TensorFlow's start-up lines; utils/startup.py)

from utils import codec_flags
from utils.cli import run


def main(argv):
    args = codec_flags.parse_args("mbt2018", __doc__, argv)
    from utils import codec_commands  # TensorFlow: only once the command line is good (--help answers at once)
    codec_commands.main(args, "mbt2018")


if __name__ == "__main__":
    run(main)
