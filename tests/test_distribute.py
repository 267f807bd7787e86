"""utils.training under tf.distribute on the CPU, with the real engine: MirroredStrategy over two logical CPU
devices and a two-worker MultiWorkerMirroredStrategy on 127.0.0.1 train a tiny model exactly as one device does
at the same global batch (resumed halfway with --cont); only the chief writes; rdub_mlp.py's --strategy and
--tensorboard; the fallback without a GPU and a malformed TF_CONFIG."""
import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT, run_script
from utils import jsonl, train_flags, training
from utils.cli import InputError, run

GLOBAL_BATCH, STEPS = 8, 3
# The loss is scaled so far down that its gradients are ~ Adam's epsilon: the update is then nearly linear in the
# gradient, so replicas that summed unscaled gradients (twice the true one) would visibly leave the trajectory.
SCALE = 1e-8


class Tiny(training.LossModel):
    """A one-hidden-layer regression with fixed initial weights (no random state: every process starts equal).
    'rows' is the batch size one replica sees."""
    METRICS = ("loss", "rows")

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        self.w1 = tf.Variable(rng.normal(size=(3, 8)).astype(np.float32))
        self.w2 = tf.Variable(rng.normal(size=(8, 1)).astype(np.float32))

    def losses_of(self, batch, training=False):
        x, y = batch
        err = tf.tanh(x @ self.w1) @ self.w2 - y
        return {"loss": SCALE * tf.reduce_mean(tf.square(err)), "rows": tf.cast(tf.shape(x)[0], tf.float32)}


def tiny_data(seed, n):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = np.sin(x.sum(axis=1, keepdims=True)).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((x, y))


def train_tiny(run_dir, strategy=None, plan=(1, 3)):
    """Trains to each epoch count of `plan` in turn, resuming (--cont) for all but the first; returns the last
    records and the weights."""
    for i, epochs in enumerate(plan):
        with (strategy or tf.distribute.get_strategy()).scope():
            model = Tiny()
        # One pass of the training set per epoch, so that a resumed run sees the batches an unbroken one does.
        train_ds = tiny_data(0, STEPS * GLOBAL_BATCH).repeat().batch(GLOBAL_BATCH)
        val_ds = tiny_data(1, 4 * GLOBAL_BATCH).batch(GLOBAL_BATCH)
        records = training.fit(model, train_ds, val_ds, run_dir, epochs=epochs, steps_per_epoch=STEPS, lr=1e-3,
                               cont=i > 0, max_validation_steps=2)
    return records, [model.w1.numpy().tolist(), model.w2.numpy().tolist()]


def worker_main():
    """A subprocess: argv[1] the strategy ('mirrored' over two logical CPUs, or 'multiworker' from TF_CONFIG),
    argv[2] the run folder; prints the records and weights as JSON."""
    name, run_dir = sys.argv[1], sys.argv[2]
    strategy = training.make_strategy(name, cpu_devices=2 if name == "mirrored" else 0)
    records, weights = train_tiny(run_dir, strategy)
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "chief": training.is_chief(strategy),
                      "records": records, "weights": weights}))


def spawn(*args, env=None):
    code = f"import sys; sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]; import test_distribute; " \
           f"test_distribute.worker_main()"
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {})))


def result(proc):
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def check_same_training(reference, run, replicas):
    ref_records, ref_weights = reference
    assert run["replicas"] == replicas
    assert [r["step"] for r in run["records"]] == [r["step"] for r in ref_records] == [STEPS, 2 * STEPS, 3 * STEPS]
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose([r[key] for r in run["records"]], [r[key] for r in ref_records], rtol=1e-5)
    # Each replica saw its share of the global batch (not a copy of it), in training and in validation.
    assert {r["rows"] for r in run["records"]} == {GLOBAL_BATCH / replicas}
    assert {r["val_rows"] for r in run["records"]} == {GLOBAL_BATCH / replicas}
    for w, v in zip(run["weights"], ref_weights):
        np.testing.assert_allclose(w, v, rtol=1e-5, atol=1e-6)
    assert ref_records[-1]["loss"] < ref_records[0]["loss"]  # it did learn


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mirrored_and_multiworker_train_as_one_device(tmp_path):
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    workers = [spawn("multiworker", str(tmp_path / "multi"),
                     env={"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})})
               for i in range(2)]
    mirrored = spawn("mirrored", str(tmp_path / "mirrored"))
    reference = train_tiny(tmp_path / "one", plan=(3,))

    check_same_training(reference, result(mirrored), replicas=2)
    chief, other = (result(w) for w in workers)
    assert (chief["chief"], other["chief"]) == (True, False)
    check_same_training(reference, chief, replicas=2)
    np.testing.assert_allclose(other["weights"][1], chief["weights"][1], rtol=1e-6)
    for name in ("mirrored", "multi"):
        # One log (the chief's), resumed once: no record twice, the chief's checkpoints only.
        assert [r["epoch"] for r in jsonl.read(tmp_path / name / "log.jsonl")] == [1, 2, 3]
        assert sorted(p.name for p in (tmp_path / name).glob("ckpt-*.index")) == ["ckpt-2.index", "ckpt-3.index"]


def tb_scalars(folder):
    """{tag: {step: value}} of the TensorBoard event files under `folder`."""
    out = {}
    for path in Path(folder).glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for v in event.summary.value:
                out.setdefault(v.tag, {})[event.step] = float(tf.make_ndarray(v.tensor))
    return out


def test_rdub_mlp_mirrored_with_tensorboard(tmp_path):
    run_script("rdub_mlp.py", "--dataset", "gaussian", "--data_dim", "4", "--decoder_units", "0", "--prior_type",
               "gmm_1", "--encoder_activation", "none", "--lambda", "10", "--checkpoint_dir", str(tmp_path), "train",
               "--epochs", "2", "--steps_per_epoch", "5", "--batchsize", "32", "--max_validation_steps", "2",
               "--strategy", "mirrored", "--cpu_devices", "2", "--tensorboard", check=True)
    (run_dir,) = tmp_path.iterdir()
    log = jsonl.read(run_dir / "log.jsonl")
    assert [r["step"] for r in log] == [5, 10]  # optimizer steps of the global batch, not per replica
    scalars = tb_scalars(run_dir / "tb")
    assert {"loss", "rate", "mse", "val_loss", "lr"} <= set(scalars)
    for key in scalars:
        assert scalars[key] == pytest.approx({r["epoch"]: r[key] for r in log}, rel=1e-6)
    assert json.loads((run_dir / "flags.json").read_text())["strategy"] == "mirrored"


def test_rdlb_mirrored_over_two_devices_trains_as_one_device(tmp_path):
    """rdlb.py's own loop under MirroredStrategy (two logical CPUs, each with half of the M draws of C_k) follows
    the one-device run step for step: the draws are coupled only through log mean C_k, which every replica
    gathers; TensorBoard gets the logged scalars. An M that does not split among the replicas is refused."""
    common = ["--dataset", "gaussian", "--data_dim", "2", "--units", "8,8", "--lamb", "10"]
    train = ["train", "--last_step", "4", "--num_Ck_samples", "4", "--batchsize", "32", "--log_interval", "1"]
    run_script("rdlb.py", *common, "--checkpoint_dir", tmp_path / "one", *train, check=True)
    run_script("rdlb.py", *common, "--checkpoint_dir", tmp_path / "two", *train, "--strategy", "mirrored",
               "--cpu_devices", "2", "--tensorboard", check=True)
    (one,), (two,) = (tmp_path / "one").iterdir(), (tmp_path / "two").iterdir()
    log1, log2 = jsonl.read(one / "log.jsonl"), jsonl.read(two / "log.jsonl")
    assert [r["step"] for r in log2] == [1, 2, 3, 4]
    for key in ("objective", "log_mean_Ck", "log_alpha"):
        np.testing.assert_allclose([r[key] for r in log2], [r[key] for r in log1], rtol=1e-5, atol=1e-5)
    scalars = tb_scalars(two / "tb")
    assert scalars["objective"] == pytest.approx({r["step"]: r["objective"] for r in log2}, rel=1e-6)
    proc = run_script("rdlb.py", *common, "--checkpoint_dir", tmp_path / "odd", "train", "--last_step", "2",
                      "--num_Ck_samples", "3", "--strategy", "mirrored", "--cpu_devices", "2", check=False)
    assert proc.returncode == 2 and "--num_Ck_samples 3" in proc.stderr and not (tmp_path / "odd").exists()


def test_image_model_tensorboard_shows_inputs_above_their_reconstructions(tmp_path):
    """An image model's --tensorboard run also writes, per epoch, a few validation images each stacked above
    its reconstruction (PNG summaries of twice the crop's height)."""
    import mbt2018
    from PIL import Image
    from test_codecs import smooth_image
    for i in range(2):
        Image.fromarray(smooth_image(80, 96, i)).save(tmp_path / f"t{i}.png")
    mbt2018.main(["--checkpoint_dir", str(tmp_path / "ckpt"), "--num_filters", "8", "train", "--train_glob",
                  str(tmp_path / "*.png"), "--patchsize", "64", "--batchsize", "2", "--epochs", "2",
                  "--steps_per_epoch", "1", "--max_validation_steps", "1", "--tensorboard"])
    (run_dir,) = (tmp_path / "ckpt").iterdir()
    steps = {}
    for path in (run_dir / "tb").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for v in event.summary.value:
                if v.tag == "input above reconstruction":
                    steps[event.step] = tf.make_ndarray(v.tensor)
    assert sorted(steps) == [1, 2]
    width, height, *pngs = steps[2]
    assert (int(width), int(height)) == (64, 128) and len(pngs) == 2
    pair = tf.io.decode_png(pngs[0]).numpy().astype(int)
    assert pair.shape == (128, 64, 3) and np.abs(pair[:64] - pair[64:]).mean() > 1  # a reconstruction, not a copy


def test_mirrored_without_gpu_falls_back_with_one_warning(monkeypatch):
    if tf.config.list_logical_devices("GPU") or len(tf.config.list_logical_devices("CPU")) > 1:
        pytest.skip("this process has several devices")
    monkeypatch.setattr(training, "_strategy", None)
    with pytest.warns(UserWarning, match="no GPU") as caught:
        strategy = training.make_strategy("mirrored")
    assert len(caught) == 1 and strategy is tf.distribute.get_strategy()


@pytest.mark.parametrize("config, message", [
    (None, "needs TF_CONFIG"),
    ("{cluster: 1}", "not valid JSON"),
    ('{"cluster": {"worker": ["127.0.0.1"]}, "task": {"type": "worker", "index": 0}}', "host:port"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "chief", "index": 0}}', "'task' must name"),
    ('{"cluster": {"worker": ["127.0.0.1:1"], "ps": ["127.0.0.1:2"]}, "task": {"type": "ps", "index": 0}}',
     "not ps"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}}', "index 1"),
])
def test_malformed_tf_config_is_one_line_and_exit_2(monkeypatch, capsys, config, message):
    import rdub_mlp
    monkeypatch.setattr(training, "_strategy", None)
    if config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", config)
    with pytest.raises(SystemExit) as e:
        run(rdub_mlp.main, ["--data_dim", "2", "--lambda", "1", "train", "--strategy", "multiworker"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert training._strategy is None


def test_scripts_not_built_in_scope_refuse_a_strategy(tmp_path, monkeypatch):
    # A script that takes the flags but does not build its model under strategy_scope yet: one clear error.
    p = argparse.ArgumentParser()
    train_flags.add_schedule_flags(p, "constant", 0, 0)
    args = p.parse_args(["--strategy", "mirrored"])
    monkeypatch.setattr(training, "_strategy", None)
    with pytest.raises(InputError, match="strategy_scope"):
        training.fit_from_flags(args, Tiny(), tmp_path / "run", None, None)
    # An odd global batch cannot split over two replicas: refused before anything is written.
    two = SimpleNamespace(distribute_strategy=SimpleNamespace(num_replicas_in_sync=2, cluster_resolver=None))
    monkeypatch.setattr(training, "_strategy", two.distribute_strategy)
    args.batchsize = 33
    with pytest.raises(InputError, match="--batchsize 33"):
        training.fit_from_flags(args, two, tmp_path / "run", None, None)
    assert not (tmp_path / "run").exists()
