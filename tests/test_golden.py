"""Golden files: every file format the package writes, byte for byte (tests/golden/README.md).

tests/golden/make_golden.py writes and decodes one file per case from checked-in tiny models and inputs, through
the scripts' own command lines. It runs here in two fresh processes, one with one TensorFlow thread and one with
two: both must give exactly the hashes of tests/golden/expected.json, so a file's bytes and its decoded output
depend neither on the process nor on the thread count, and any change of format or numerics fails here.
"""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

GOLDEN = ROOT / "tests" / "golden"
CHECKER = GOLDEN / "make_golden.py"
LOSSLESS = ("rec_lossless/", "mcbits/")  # cases whose decoded output is the input itself
REGENERATE = ("If the change is deliberate, regenerate with `python tests/golden/make_golden.py --write` and commit "
              "expected.json on its own, saying which format changed and why.")


@pytest.fixture(scope="module", params=[1, 2], ids=["1-thread", "2-threads"])
def run(request, tmp_path_factory):
    """The checker's records from a fresh process with `threads` TensorFlow threads."""
    out = tmp_path_factory.mktemp("golden") / "got.json"
    env = dict(os.environ, PYTHONHASHSEED="0", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, str(CHECKER), "--threads", str(request.param), "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.exists(), f"the checker failed before writing its records:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return request.param, json.loads(out.read_text()), proc


def test_every_case_matches_the_manifest(run):
    threads, got, proc = run
    expected = json.loads((GOLDEN / "expected.json").read_text())
    assert sorted(got) == sorted(expected), f"cases run {sorted(got)} != cases in expected.json {sorted(expected)}"
    bad = []
    for case, want in expected.items():
        for key in ("file_sha256", "file_bytes", "decoded_sha256", "input_sha256"):
            if got[case].get(key) != want.get(key):
                bad.append(f"{case}: {key} is {got[case].get(key)}, expected {want.get(key)}")
    assert not bad, (f"with {threads} thread(s), the files or decoded outputs changed:\n  " + "\n  ".join(bad) +
                     f"\n{REGENERATE}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_lossless_formats_decode_to_their_input(run):
    _, got, _ = run
    lossless = [case for case in got if case.startswith(LOSSLESS)]
    assert len(lossless) >= 4
    for case in lossless:
        assert got[case]["decoded_sha256"] == got[case]["input_sha256"], f"{case}: decode(encode(x)) != x"
