"""utils.training: the log and checkpoints survive a resume, a used folder is refused, early stopping."""
import math

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


def test_early_stopping_respects_warmup(tmp_path):
    # One repeated batch and lr ~ 0: the loss never improves after epoch 1, so patience 2 stops at epoch 3,
    # unless warm-up forbids stopping within the first 5 epochs.
    common = dict(epochs=20, steps_per_epoch=5, lr=1e-30, patience=2, lr_schedule="constant")
    recs = training.fit(Line(), line_data(noise=1.0, batches=1), None, tmp_path / "a", **common)
    assert len(recs) == 3
    recs = training.fit(Line(), line_data(noise=1.0, batches=1), None, tmp_path / "b", warmup=5, **common)
    assert len(recs) == 6


def test_schedule_shapes():
    s = training.LearningRate(1.0, 10000, "step")
    assert s.warmup_steps == 100
    assert s.value(0) == pytest.approx(0.01)
    assert s.value(100) == pytest.approx(1.0)
    assert [s.value(t) for t in (4999, 5000, 7500, 8750)] == pytest.approx([1.0, 0.2, 0.04, 0.008])
    c = training.LearningRate(1.0, 10000, "cosine")
    assert c.value(5000) == pytest.approx(0.5, abs=1e-6)
    assert c.value(10000) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(InputError, match="lr_schedule"):
        training.LearningRate(1.0, 10, "bogus")
    assert math.isfinite(training.LearningRate(1.0, 1, "step").value(0))
