"""utils.training: the log and checkpoints survive a resume, a used folder is refused, the paper's schedules
(step decay; reduce-on-plateau, checked against Keras' own callback and across --cont), early stopping."""

import numpy as np
import pytest
import tensorflow as tf

from utils import jsonl, training
from utils.cli import InputError


class Line(tf.keras.Model):
    """Fits y = 3x - 1 by least squares; reports loss and the slope."""

    def __init__(self):
        super().__init__()
        self.dense = tf.keras.layers.Dense(1)
        self.dense.build([None, 1])
        self.loss_tracker = tf.keras.metrics.Mean(name="loss")

    @property
    def metrics(self):
        return [self.loss_tracker]

    def _loss(self, batch):
        x, y = batch
        return tf.reduce_mean(tf.square(self.dense(x) - y))

    def train_step(self, batch):
        with tf.GradientTape() as tape:
            loss = self._loss(batch)
        self.optimizer.apply_gradients(zip(tape.gradient(loss, self.trainable_variables), self.trainable_variables))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, batch):
        self.loss_tracker.update_state(self._loss(batch))
        return {"loss": self.loss_tracker.result()}


def line_data(seed=0, noise=0.0, batches=16):
    x = np.random.default_rng(seed).normal(size=(16 * batches, 1)).astype(np.float32)
    y = (3 * x - 1 + noise * np.random.default_rng(seed + 1).normal(size=x.shape)).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16).repeat()


def test_resume_continues_log_and_state(tmp_path):
    tf.random.set_seed(0)
    m = Line()
    recs = training.fit(m, line_data(), line_data(1), tmp_path, epochs=2, steps_per_epoch=10, lr=0.05,
                        max_validation_steps=2)
    assert [r["epoch"] for r in recs] == [1, 2]
    assert {"loss", "val_loss", "lr", "step", "time"} <= set(recs[0])
    assert recs[1]["step"] == 20
    w_before = m.dense.kernel.numpy().copy()

    with pytest.raises(InputError, match="--cont"):
        training.fit(Line(), line_data(), None, tmp_path, epochs=4, steps_per_epoch=10, lr=0.05)

    m2 = Line()
    training.restore_latest(m2, tmp_path)
    np.testing.assert_array_equal(m2.dense.kernel.numpy(), w_before)
    recs = training.fit(m2, line_data(), line_data(1), tmp_path, epochs=4, steps_per_epoch=10, lr=0.05,
                        max_validation_steps=2, cont=True)
    log = jsonl.read(tmp_path / "log.jsonl")
    assert [r["epoch"] for r in log] == [1, 2, 3, 4] == [r["epoch"] for r in recs]
    # The optimizer's step counter (and with it the schedule) and the wall clock continue where they stopped.
    assert [r["step"] for r in log] == [10, 20, 30, 40]
    assert all(b["time"] > a["time"] for a, b in zip(log, log[1:]))
    assert log[-1]["loss"] < log[0]["loss"]


def test_restore_without_checkpoint(tmp_path):
    with pytest.raises(InputError, match="no checkpoint"):
        training.restore_latest(Line(), tmp_path)


class Scripted(training.LossModel):
    """Its loss is the batch's value (plus 0 x a weight, so Adam has a variable and a zero gradient): the
    monitored loss of an epoch is whatever the data says, and the weights never move."""

    def __init__(self):
        super().__init__()
        self.w = tf.Variable(0.0)

    def losses_of(self, x, training):
        return {"loss": tf.reduce_mean(x) + 0.0 * self.w}


STEPS = 2


def scripted_data(values, start=0):
    """Epochs `start`+1, ... see the losses `values[start:]` (each for STEPS steps)."""
    return tf.data.Dataset.from_tensor_slices(np.repeat(np.float32(values[start:]), STEPS)[:, None]).batch(1)


# Improves by 0.1 to epoch 6, then: flat, an improvement under the 1e-4 threshold, a real one, flat to the end.
PLATEAU_LOSSES = [1.0 - 0.1 * min(e, 5) for e in range(10)] + [0.5 - 5e-5, 0.5 - 5e-5, 0.3] + [0.3] * 13


def keras_reference_lrs(values, lr, warmup, patience, factor):
    """The rate of each epoch under Keras' ReduceLROnPlateau gated as the paper gates it (acting only on
    0-based epochs > warmup), in a plain Keras fit: an independent account of the paper's schedule."""
    class Gated(tf.keras.callbacks.ReduceLROnPlateau):
        def on_epoch_end(self, epoch, logs=None):
            if epoch > warmup:
                super().on_epoch_end(epoch, logs)

    lrs = []
    m = Scripted()
    m.compile(optimizer=tf.keras.optimizers.Adam(lr))
    seen = tf.keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: lrs.append(float(m.optimizer.lr)))
    gated = Gated(monitor="loss", mode="min", factor=factor, patience=patience, min_delta=1e-4, min_lr=1e-6)
    m.fit(scripted_data(values), epochs=len(values), steps_per_epoch=STEPS, verbose=0, callbacks=[seen, gated])
    return lrs


def test_plateau_matches_the_papers_callback_and_survives_cont(tmp_path):
    # lr 1e-5: four halvings reach the 1e-6 floor (the fourth is cut to it), after which the rate stays.
    kw = dict(steps_per_epoch=STEPS, lr=1e-5, lr_schedule="constant", warmup=3, patience=2, lr_decay_factor=0.5)
    expected = keras_reference_lrs(PLATEAU_LOSSES, 1e-5, 3, 2, 0.5)
    n = len(PLATEAU_LOSSES)
    recs = training.fit(Scripted(), scripted_data(PLATEAU_LOSSES), None, tmp_path / "a", epochs=n, **kw)
    lrs = [r["lr"] for r in recs]
    np.testing.assert_allclose(lrs, expected, rtol=1e-5)
    # By hand (lrs[e - 1] is epoch e's rate): the loss is flat from epoch 6, so epochs 7 and 8 use up the patience
    # and epoch 9 runs at half the rate, epoch 11 at a quarter; the gain under 1e-4 at epoch 11 does not reset
    # the count (epoch 13 at 1/8), the real one at epoch 13 does (the next halving, cut to the floor, after 15).
    assert lrs[:8] == pytest.approx([1e-5] * 8)
    assert lrs[8:16] == pytest.approx([5e-6, 5e-6, 2.5e-6, 2.5e-6, 1.25e-6, 1.25e-6, 1.25e-6, 1e-6])
    assert lrs[-1] == pytest.approx(1e-6)

    # Interrupted after epoch 14 (three reductions behind it, the best value from epoch 13, one epoch of patience
    # used) and resumed: the same rates, so the rate, the best value and the count all came back.
    stop = 14
    training.fit(Scripted(), scripted_data(PLATEAU_LOSSES), None, tmp_path / "b", epochs=stop, **kw)
    recs = training.fit(Scripted(), scripted_data(PLATEAU_LOSSES, stop), None, tmp_path / "b", epochs=n,
                        cont=True, **kw)
    log = jsonl.read(tmp_path / "b" / "log.jsonl")
    assert [r["epoch"] for r in log] == list(range(1, n + 1))
    np.testing.assert_allclose([r["lr"] for r in log], expected, rtol=1e-5)


def test_plateau_never_acts_before_warmup(tmp_path):
    # A loss that never improves: the paper's callback tracks it from epoch W + 2 on, so with patience 2 the rate
    # first halves for epoch W + 5, and again two epochs later.
    for warmup in (0, 4):
        recs = training.fit(Scripted(), scripted_data([1.0] * 12), None, tmp_path / str(warmup), epochs=12,
                            steps_per_epoch=STEPS, lr=1e-3, lr_schedule="constant", warmup=warmup, patience=2)
        lrs = np.array([r["lr"] for r in recs])
        first = warmup + 5
        np.testing.assert_allclose(lrs[:first - 1], 1e-3, rtol=1e-6)
        np.testing.assert_allclose(lrs[first - 1:first + 1], 5e-4, rtol=1e-6)
        assert lrs[first + 1] == pytest.approx(2.5e-4)


def test_early_stopping_is_its_own_flag(tmp_path):
    # A loss that never improves after epoch 1: early_stop 2 stops at epoch 3, unless warm-up forbids stopping
    # within the first 5 epochs; with patience alone (reduce-on-plateau) training runs to the end.
    common = dict(epochs=8, steps_per_epoch=STEPS, lr=1e-3, lr_schedule="constant")
    flat = [1.0] * 8
    assert len(training.fit(Scripted(), scripted_data(flat), None, tmp_path / "a", early_stop=2, **common)) == 3
    assert len(training.fit(Scripted(), scripted_data(flat), None, tmp_path / "b", early_stop=2, warmup=5,
                            **common)) == 6
    assert len(training.fit(Scripted(), scripted_data(flat), None, tmp_path / "c", patience=1, **common)) == 8


def test_step_decay_is_the_papers():
    # The paper's rdub_mlp.py scheduler, per 0-based epoch e of E: x0.2 for each of 1/2, 3/4, 7/8 that e has reached.
    for epochs, per in ((10, 7), (8, 1), (3000, 1)):
        s = training.LearningRate(1.0, epochs, "step", per)
        for e in sorted({0, epochs // 2 - 1, epochs // 2, (3 * epochs) // 4, (7 * epochs) // 8, epochs - 1}):
            k = sum(e >= f * epochs for f in (0.5, 0.75, 0.875))
            assert s.value(e * per) == pytest.approx(0.2 ** k) == pytest.approx(s.value(e * per + per - 1))
    # No warm-up unless asked: rdlb.py's recipe (5e-4 over 3000 steps) is still at 5e-4 at step 1000.
    assert training.LearningRate(5e-4, 3000, "step").value(1000) == pytest.approx(5e-4)
    r = training.LearningRate(1.0, 100, "step", 100, ramp_steps=100)
    assert [r.value(t) for t in (0, 50, 100)] == pytest.approx([0.01, 0.505, 1.0])
    c = training.LearningRate(1.0, 100, "cosine", 100)
    assert c.value(5000) == pytest.approx(0.5, abs=1e-6)
    assert c.value(10000) == pytest.approx(0.0, abs=1e-6)
    # the variable-rate seed's: constant for half the steps, then a cosine from 1 to 0.01
    h = training.LearningRate(1.0, 100, "half_cosine", 100)
    assert [h.value(t) for t in (0, 4999, 5000, 7500, 10000)] == pytest.approx([1, 1, 1, 0.505, 0.01], abs=1e-4)
    with pytest.raises(InputError, match="lr_schedule"):
        training.LearningRate(1.0, 10, "bogus")


def test_image_scripts_default_to_the_papers_schedule():
    from utils import codec_flags
    p = codec_flags.build_parser("mbt2018", "")
    a = p.parse_args(["train", "--dataset", "kodak"])
    assert (a.lr_schedule, a.lr_ramp, a.warmup, a.patience, a.lr_decay_factor, a.early_stop) == \
        ("constant", 0, 100, 10, 0.5, None)
    for flags, message in ((["--lr_decay_factor", "1"], "--lr_decay_factor"), (["--warmup", "-1"], "--warmup")):
        bad = p.parse_args(["train", "--dataset", "kodak", *flags])
        with pytest.raises(InputError, match=message):
            training.fit_from_flags(bad, None, "/nonexistent/run", None, None)


class LineLoss(training.LossModel):
    """Line as a LossModel (the train step that keeps the moving average)."""

    def __init__(self):
        super().__init__()
        self.dense = tf.keras.layers.Dense(1)
        self.dense.build([None, 1])

    def losses_of(self, batch, training=False):
        x, y = batch
        return {"loss": tf.reduce_mean(tf.square(self.dense(x) - y))}


def test_moving_average_follows_the_seed_recursion_and_is_what_eval_restores(tmp_path):
    """a_0 = w_1 (decay 0 at the first step), a_t = d_t a_(t-1) + (1 - d_t) w_t with d_t = ema (1 - e^(-t/warmup)),
    replayed in numpy from the weights after each step; fit saves it, and restore_latest loads it as the weights
    when flags.json names the run's --ema (and the plain weights otherwise)."""
    tf.random.set_seed(0)
    m = LineLoss()
    m.compile(optimizer=tf.keras.optimizers.Adam(0.05))
    average = m.track_average(0.8, 3)
    step = tf.function(m.train_step)
    weights, expected = [], None
    for t, batch in enumerate(line_data().take(12)):
        step(batch)
        w = np.concatenate([v.numpy().ravel() for v in m.trainable_variables])
        d = 0.8 * (1 - np.exp(-t / 3))
        expected = w if expected is None else d * expected + (1 - d) * w
        weights.append(w)
    got = np.concatenate([a.numpy().ravel() for a in average])
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert np.abs(got - weights[-1]).max() > 1e-3  # the average lags the weights

    tf.random.set_seed(0)
    trained = LineLoss()
    training.fit(trained, line_data(), None, tmp_path, epochs=1, steps_per_epoch=20, lr=0.05, ema=0.9,
                 ema_warmup=2)
    raw = trained.dense.kernel.numpy().copy()
    kept = trained.average[0].numpy().copy()
    assert abs(raw - kept).max() > 1e-4
    fresh = LineLoss()
    training.restore_latest(fresh, tmp_path)  # no flags.json: the weights
    np.testing.assert_array_equal(fresh.dense.kernel.numpy(), raw)
    from utils.runs import save_flags
    save_flags(tmp_path, {"ema": 0.9})
    fresh = LineLoss()
    training.restore_latest(fresh, tmp_path)
    np.testing.assert_array_equal(fresh.dense.kernel.numpy(), kept)


def test_clip_norm_clips_the_step(tmp_path):
    """One step of fit at clip_norm 2 on targets scaled by 1e6 (a gradient norm ~6e6). Adam moves each weight by
    about lr at its first step whatever the gradient's size, so the weights cannot show the clip; its moments do:
    after one step m = (1 - beta_1) g and v = (1 - beta_2) g^2 for the gradient g it was given, which must be
    the raw gradient scaled to global norm 2."""
    tf.random.set_seed(0)
    m = LineLoss()
    data = line_data().map(lambda x, y: (x, 1e6 * y))
    with tf.GradientTape() as tape:  # the raw gradient at the initial weights, on the batch fit takes first
        loss = m.losses_of(next(iter(data)))["loss"]
    raw = np.concatenate([g.numpy().ravel() for g in tape.gradient(loss, m.trainable_variables)])
    assert np.linalg.norm(raw) > 1e6
    training.fit(m, data, None, tmp_path, epochs=1, steps_per_epoch=1, lr=0.05, clip_norm=2.0)
    moments = {k: np.concatenate([v.numpy().ravel() for v in m.optimizer.variables if f"/{k}/" in v.name])
               for k in "mv"}
    clipped = 2.0 * raw / np.linalg.norm(raw)
    np.testing.assert_allclose(moments["m"] / 0.1, clipped, rtol=1e-5)  # float32
    np.testing.assert_allclose(moments["v"] / 1e-3, clipped ** 2, rtol=1e-5)
