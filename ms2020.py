"""Channel-wise autoregressive image codec (Minnen & Singh, ICIP 2020), with latent residual prediction.

    x -> g_a -> y -> h_a -> z                       z is coded with a deep factorized prior
                       z_hat -> h_s^mu, h_s^sigma   two hyper-synthesis branches
    y is split along channels into slices y_1 .. y_K, coded in order: slice k is Gaussian(mu_k, sigma_k)
    convolved with U(-1/2, 1/2), where mu_k and sigma_k come from the hyper branches and the decoded slices
    before it (at most --max_support_slices of them). Latent residual prediction then adds
    0.5 tanh(LRP_k(support, y_hat_k)) to each decoded slice, undoing part of the quantization error.
    y_hat -> g_s -> x_hat

g_a and g_s are the GDN transforms shared with mbt2018 (utils/image_models.py). Layers, widths, biases, activations
and kernel parameterizations follow the paper's code and tfc's models/ms2020.py (tfc.SignalConv2D throughout):
at the default widths h_a is 320 -> 256 -> 192 channels, each h_s 192 -> 256 -> 320 with ReLUs, each slice
network 224 -> 128 -> 32. Training codes the rate of noisy z and noisy slices, but feeds the rounded z to the
hyper-synthesis and the rounded slices to the slice networks and the synthesis (straight-through gradients),
as the paper does. The model is in utils/image_models.py, which sga.py shares.

    python ms2020.py -V --checkpoint_dir ckpt --lambda 0.01 train --dataset bsds500 --epochs 100
    python ms2020.py --checkpoint_dir ckpt --lambda 0.01 eval --dataset kodak
    python ms2020.py --checkpoint_dir ckpt --lambda 0.01 compress kodim01.png kodim01.tfci
    python ms2020.py --checkpoint_dir ckpt --lambda 0.01 decompress kodim01.tfci kodim01-decoded.png
    python ms2020.py --checkpoint_dir ckpt --lambda 0.01 export ms2020-export   # a SavedModel: docs/deploy.md
"""
from utils import startup  # noqa: F401  (first, on purpose: TensorFlow's start-up lines; utils/startup.py)

from utils import codec_flags
from utils.cli import run


def main(argv):
    args = codec_flags.parse_args("ms2020", __doc__, argv)
    from utils import codec_commands  # TensorFlow: only once the command line is good (--help answers at once)
    codec_commands.main(args, "ms2020")


if __name__ == "__main__":
    run(main)
