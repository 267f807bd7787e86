"""Builds the speech sources of the paper's commands from the Free Spoken Digit Dataset (FSDD).

    python prepare_speech.py                      # reads $RDS_DATA_DIR/fsdd/recordings, writes data/speech/

Each recording (8 kHz mono) is cut into frames of 63 samples (Hann window, hop 32), and each frame becomes the
magnitude of its 64-point FFT: a 33-d vector. FSDD's customary split holds out recordings 0-4 of every
speaker and digit as the test set. Written (float64 [N, dim]):

    data/speech/stft-split={train,test}.npy                                       33-d, all speakers
    data/speech/n=2-stft-split={train,test}.npy                                   its first 2 coordinates
    data/speech/frame_length=63/n=2-dig=all-speaker=theo-split={train,test}-stft.npy   2-d, speaker theo

This re-creates the paper's preprocessing from its file names and dimensions (frame length 63 -> 33
frequency bins); the paper's own script is not public here, so its exact choices (hop, window, which two
coordinates form the 2-d marginal) may differ and its numbers are not expected to be reproduced exactly.
Frames of digital silence (all-zero spectra) are dropped. Each file's coordinates are standardized with the
mean and standard deviation of its training split (the test split uses the same statistics), so that the
paper's lambda grids (0.1 ... 100) span the R-D curve; raw magnitudes have standard deviations of ~0.03 to
0.7, at which those lambdas give almost zero rate.

On a terminal a progress bar over the recordings runs on stderr (-V: also in a log, as one line at the end).
"""
from utils import startup  # noqa: F401  (first, on purpose: TensorFlow's start-up lines; utils/startup.py)

import io
import re
from pathlib import Path

import numpy as np
from scipy.io import wavfile

from utils import cli, runs
from utils.progress import Progress
from utils.sources import data_dir, resolve_path

FRAME_LENGTH, HOP, FFT_LENGTH = 63, 32, 64
TEST_TAKES = range(5)  # takes 0-4 of every speaker and digit are the test set
NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")


def spectra(signal):
    """Magnitude spectra [frames, 33] of a 1-d signal in [-1, 1]."""
    if len(signal) < FRAME_LENGTH:
        signal = np.pad(signal, (0, FRAME_LENGTH - len(signal)))
    count = 1 + (len(signal) - FRAME_LENGTH) // HOP
    idx = np.arange(FRAME_LENGTH)[None, :] + HOP * np.arange(count)[:, None]
    frames = signal[idx] * np.hanning(FRAME_LENGTH)
    mags = np.abs(np.fft.rfft(frames, n=FFT_LENGTH, axis=1))
    return mags[mags.any(axis=1)]


def read_wav(path):
    rate, x = wavfile.read(path)
    if x.ndim != 1:
        x = x.mean(axis=1)
    scale = np.iinfo(x.dtype).max if np.issubdtype(x.dtype, np.integer) else 1.0
    return x.astype(np.float64) / scale


def collect(recordings, verbose=False):
    """{(speaker, split): [spectra arrays]} over every FSDD file in the folder."""
    parts = {}
    paths = [p for p in sorted(recordings.glob("*.wav")) if NAME.match(p.name)]
    bar = Progress(len(paths), verbose, unit="recording")
    for i, path in enumerate(paths):
        speaker, take = NAME.match(path.name).group(2, 3)
        split = "test" if int(take) in TEST_TAKES else "train"
        parts.setdefault((speaker, split), []).append(spectra(read_wav(path)))
        bar.update(i + 1)
    return parts


def save(path, array):
    buf = io.BytesIO()
    np.save(buf, array)
    runs.atomic_write_bytes(path, buf.getvalue())
    print(f"wrote {path} {array.shape}")


def main(argv):
    p = cli.ArgumentParser(description=__doc__)
    p.add_argument("--fsdd_dir", help="folder of FSDD .wav files (default: $RDS_DATA_DIR/fsdd/recordings)")
    p.add_argument("--save_dir", default="data/speech", help="folder of the .npy files")
    p.add_argument("-V", "--verbose", action="store_true",
                   help="the progress bar even when stderr is not a terminal; TensorFlow's start-up log lines")
    args = p.parse_args(argv)
    cli.output_dir(args.save_dir, "--save_dir")
    recordings = resolve_path(args.fsdd_dir, "--fsdd_dir") if args.fsdd_dir else data_dir() / "fsdd" / "recordings"
    if not recordings.is_dir():
        raise cli.InputError(f"--fsdd_dir: {recordings} is not a folder of FSDD recordings")
    parts = collect(recordings, args.verbose)
    if not parts:
        raise cli.InputError(f"--fsdd_dir: no FSDD recordings (<digit>_<speaker>_<take>.wav) in {recordings}")
    def pooled(split, speaker=None):
        return np.concatenate([a for (who, s), arrays in parts.items()
                               if s == split and speaker in (None, who) for a in arrays])

    out = Path(args.save_dir)
    files = {"stft-split={}.npy": lambda split: pooled(split),
             "n=2-stft-split={}.npy": lambda split: pooled(split)[:, :2]}
    if ("theo", "train") in parts and ("theo", "test") in parts:
        theo = f"frame_length={FRAME_LENGTH}/n=2-dig=all-speaker=theo-split={{}}-stft.npy"
        files[theo] = lambda split: pooled(split, "theo")[:, :2]
    arrays = {}  # every file computed before the first is written
    for pattern, make in files.items():
        train, test = make("train"), make("test")
        mean, std = train.mean(axis=0), train.std(axis=0)
        std[std == 0] = 1.0
        arrays[out / pattern.format("train")] = (train - mean) / std
        arrays[out / pattern.format("test")] = (test - mean) / std
    for path, array in arrays.items():
        save(path, array)


if __name__ == "__main__":
    cli.run(main)
