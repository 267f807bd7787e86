"""prepare_speech.py: FSDD recordings -> 33-d magnitude spectra, split by take, standardized, with 2-d marginals."""
import re

import numpy as np
import pytest
from scipy.io import wavfile

import prepare_speech
from conftest import run_script
from prepare_speech import FRAME_LENGTH, HOP, spectra

T = np.arange(4000) / 8000.0


def test_a_tone_peaks_in_its_fft_bin():
    # f Hz lands in bin f / 8000 * 64: bin 8 for 1 kHz, bin 16 for 2 kHz.
    for freq, expected in ((1000.0, 8), (2000.0, 16)):
        s = spectra(0.5 * np.sin(2 * np.pi * freq * T))
        assert s.shape == (1 + (4000 - FRAME_LENGTH) // HOP, 33)
        assert set(np.argmax(s, axis=1)) == {expected}


def write_recordings(folder):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for take in (0, 1, 7, 8):  # takes 0-4 are test, the rest train
        for speaker in ("theo", "jackson"):
            noise = (rng.normal(0, 0.2, 4000) * 32767).astype(np.int16)
            wavfile.write(folder / f"3_{speaker}_{take}.wav", 8000, noise)
    (folder / "README.wav").write_bytes(b"")  # not an FSDD name: skipped, and not counted by the progress bar


def test_files_split_by_take_and_standardized(tmp_path):
    rec = tmp_path / "recordings"
    write_recordings(rec)
    proc = run_script("prepare_speech.py", "--fsdd_dir", rec, "--save_dir", tmp_path / "speech", check=True)
    assert "/8" not in proc.stderr  # no progress bar in a log without -V
    out = tmp_path / "speech"
    train, test = np.load(out / "stft-split=train.npy"), np.load(out / "stft-split=test.npy")
    frames = 1 + (4000 - FRAME_LENGTH) // HOP
    assert train.shape == test.shape == (4 * frames, 33)
    assert train.mean(axis=0) == pytest.approx(np.zeros(33), abs=1e-9)
    assert train.std(axis=0) == pytest.approx(np.ones(33), abs=1e-9)
    assert np.load(out / "n=2-stft-split=test.npy") == pytest.approx(test[:, :2])
    theo = np.load(out / "frame_length=63" / "n=2-dig=all-speaker=theo-split=test-stft.npy")
    assert theo.shape == (2 * frames, 2)


def test_missing_folder_is_a_clear_error(tmp_path):
    proc = run_script("prepare_speech.py", "--fsdd_dir", tmp_path / "nope", check=False)
    assert proc.returncode == 2 and "--fsdd_dir" in proc.stderr


def test_progress_with_V(tmp_path, capsys):
    rec = tmp_path / "recordings"
    write_recordings(rec)
    prepare_speech.main(["--fsdd_dir", str(rec), "--save_dir", str(tmp_path / "speech"), "-V"])
    # stderr is not a terminal here: one line when the 8 recordings are read, the rate per recording included.
    err = capsys.readouterr().err
    assert re.search(r"^8/8 - \d+s - .*/recording$", err, re.M), err
