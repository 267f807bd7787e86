"""The one training loop the scripts share: Keras fit with a JSONL log, per-epoch checkpoints, resuming,
a learning-rate schedule with warm-up, and early stopping.

The model is a tf.keras.Model whose `train_step` / `test_step` return dicts of scalar metrics including 'loss'
(and whose `metrics` property lists its Mean trackers, so Keras resets them every epoch).

Run folder layout (see utils/runs.py): `log.jsonl` gets one record per epoch with `epoch` (1-based, the number
of epochs done), the train metrics, `val_<metric>`, `lr` (the rate at the epoch's last step), `step` (optimizer
steps so far) and `time` (wall seconds, cumulative across resumes); `ckpt-*` holds model, optimizer and epoch.

Learning-rate schedules, as a function of the optimizer step t out of T = epochs * steps_per_epoch:
- "step" (default, the paper's decay): lr until T/2, then x0.2 until 3T/4, x0.2^2 until 7T/8, x0.2^3 after;
- "cosine": lr * (1 + cos(pi t / T)) / 2, decaying to 0 at T;
- "constant".
Each starts with a linear warm-up from lr/100 to lr over the first 1% of the steps (at most 1000), which keeps
Adam's first, badly scaled steps from throwing a fresh model far off.
Because the schedule reads the optimizer's step counter, a resumed run continues on the same curve.
"""
import math
import sys
import time
from pathlib import Path

import tensorflow as tf

from utils import jsonl
from utils.cli import InputError
from utils.runs import LOG_NAME, save_flags

SCHEDULES = ("step", "cosine", "constant")
WARMUP_FRACTION = 0.01
MAX_WARMUP_STEPS = 1000
STEP_DECAY = 0.2
MAX_STEPS_PER_EXECUTION = 100


class LearningRate(tf.keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then one of SCHEDULES, over `total_steps` optimizer steps."""

    def __init__(self, lr, total_steps, kind="step"):
        if kind not in SCHEDULES:
            raise InputError(f"--lr_schedule {kind!r} is unknown; choose one of {', '.join(SCHEDULES)}")
        self.lr = float(lr)
        self.total_steps = max(int(total_steps), 1)
        self.kind = kind
        self.warmup_steps = min(MAX_WARMUP_STEPS, int(WARMUP_FRACTION * self.total_steps))

    def value(self, step):
        """The rate at `step` (a Python number; used for the log)."""
        return float(self(tf.constant(step, tf.int64)))

    def __call__(self, step):
        t = tf.cast(step, tf.float32)
        T = float(self.total_steps)
        if self.kind == "step":
            factor = tf.where(t < T / 2, 1.0, tf.where(t < 3 * T / 4, STEP_DECAY,
                                                          tf.where(t < 7 * T / 8, STEP_DECAY ** 2, STEP_DECAY ** 3)))
        elif self.kind == "cosine":
            factor = 0.5 * (1.0 + tf.cos(math.pi * tf.minimum(t / T, 1.0)))
        else:
            factor = tf.constant(1.0)
        if self.warmup_steps > 0:
            ramp = 0.01 + 0.99 * tf.minimum(t / self.warmup_steps, 1.0)
            factor = factor * ramp
        return self.lr * factor

    def get_config(self):
        return {"lr": self.lr, "total_steps": self.total_steps, "kind": self.kind}


def _checkpoint(model, epoch):
    return tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=epoch)


def _manager(ckpt, run_dir):
    return tf.train.CheckpointManager(ckpt, str(run_dir), max_to_keep=2)


def check_run_dir(run_dir, cont):
    """Refuses to start afresh over a trained run; True when `cont` and there is a checkpoint to resume.

    Scripts call it before writing anything into the folder; `fit` calls it again.
    """
    has_ckpt = tf.train.latest_checkpoint(str(run_dir)) is not None
    if has_ckpt and not cont:
        raise InputError(f"{run_dir} already holds a trained checkpoint; pass --cont to resume it, "
                         f"or pick another --checkpoint_dir")
    return has_ckpt


def restore_latest(model, run_dir):
    """Loads the latest checkpoint's model weights (for eval/compress); the optimizer state is ignored."""
    latest = tf.train.latest_checkpoint(str(run_dir))
    if latest is None:
        raise InputError(f"no checkpoint in {run_dir}; train the model first (or check --checkpoint_dir)")
    tf.train.Checkpoint(model=model).restore(latest).expect_partial()
    return latest


def _steps_per_execution(steps_per_epoch):
    """The largest divisor of steps_per_epoch up to MAX_STEPS_PER_EXECUTION: runs that many steps per call
    into the compiled graph, which removes most per-step Python overhead for small models."""
    return max(k for k in range(1, min(steps_per_epoch, MAX_STEPS_PER_EXECUTION) + 1) if steps_per_epoch % k == 0)


class _Logger(tf.keras.callbacks.Callback):
    """Checkpoints, then appends the epoch's record, then decides on early stopping."""

    def __init__(self, manager, epoch_var, log_path, schedule, history, warmup, patience, monitor):
        super().__init__()
        self.manager, self.epoch_var, self.log_path, self.schedule = manager, epoch_var, log_path, schedule
        self.warmup, self.patience, self.monitor = warmup, patience, monitor
        self.records = list(history)
        self.time0 = history[-1]["time"] if history else 0.0
        self.best, self.best_epoch = math.inf, 0
        for r in history:
            self._track(r)

    def _track(self, record):
        value = record.get(self.monitor)
        if value is not None and value < self.best:
            self.best, self.best_epoch = value, record["epoch"]

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        step = int(self.model.optimizer.iterations.numpy())
        self.epoch_var.assign(done)
        self.manager.save(checkpoint_number=done)
        record = {"epoch": done}
        record.update({k: float(v) for k, v in (logs or {}).items()})
        record.update(lr=self.schedule.value(max(step - 1, 0)), step=step,
                      time=self.time0 + time.perf_counter() - self.start)
        jsonl.append(self.log_path, record)
        self.records.append(record)
        if not math.isfinite(record.get("loss", math.nan)):
            print(f"stopping: the training loss is {record.get('loss')} at epoch {done}", file=sys.stderr)
            self.model.stop_training = True
            return
        self._track(record)
        if self.patience is not None and done > self.warmup and done - self.best_epoch >= self.patience:
            print(f"early stop at epoch {done}: {self.monitor} has not improved on {self.best:.6g} "
                  f"(epoch {self.best_epoch}) for {self.patience} epochs", file=sys.stderr)
            self.model.stop_training = True


def fit(model, train_ds, val_ds, run_dir, *, epochs, steps_per_epoch, lr, warmup=0, patience=None,
        max_validation_steps=None, cont=False, verbose=False, lr_schedule="step"):
    """Trains `model` on `train_ds` (an endless tf.data of batches) for `epochs` x `steps_per_epoch` steps.

    Validates on `val_ds` (or its first `max_validation_steps` batches) after each epoch when given.
    `cont=True` resumes from the latest checkpoint in `run_dir` and continues its log; without it, a folder
    holding a checkpoint is refused. With `patience`, training stops once the monitored loss (val_loss when
    there is validation data, else loss) has not improved for `patience` epochs, never within the first
    `warmup` epochs. Returns the list of all epoch records of the run (earlier sessions included).
    """
    if val_ds is not None and max_validation_steps is not None:
        val_ds = val_ds.take(max_validation_steps)
    if val_ds is not None and val_ds.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise ValueError("an endless validation dataset needs max_validation_steps")
    run_dir = Path(run_dir)
    has_ckpt = check_run_dir(run_dir, cont)
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / LOG_NAME

    schedule = LearningRate(lr, epochs * steps_per_epoch, lr_schedule)
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=schedule),
                  steps_per_execution=_steps_per_execution(steps_per_epoch))
    epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    ckpt = _checkpoint(model, epoch_var)
    manager = _manager(ckpt, run_dir)
    history = []
    if has_ckpt:
        model.optimizer.build(model.trainable_variables)  # create the slots so they restore now, not lazily
        ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        history = [r for r in jsonl.read(log_path) if r.get("epoch", 0) <= int(epoch_var.numpy())]
        if verbose:
            print(f"resuming {manager.latest_checkpoint} at epoch {int(epoch_var.numpy())}", file=sys.stderr)
    initial_epoch = int(epoch_var.numpy())
    if initial_epoch >= epochs:
        if verbose:
            print(f"nothing to do: {run_dir} has already trained {initial_epoch} of {epochs} epochs", file=sys.stderr)
        return history

    monitor = "val_loss" if val_ds is not None else "loss"
    logger = _Logger(manager, epoch_var, log_path, schedule, history, warmup, patience, monitor)
    # Verbose: a progress bar on a terminal, one line per epoch otherwise (logs, captured test output).
    keras_verbose = (1 if sys.stdout.isatty() else 2) if verbose else 0
    model.fit(train_ds.prefetch(tf.data.AUTOTUNE), epochs=epochs, initial_epoch=initial_epoch,
              steps_per_epoch=steps_per_epoch, validation_data=val_ds, verbose=keras_verbose,
              callbacks=[logger])
    return logger.records


class LossModel(tf.keras.Model):
    """A model that `fit` trains. Subclasses set METRICS (the names `losses_of` returns, 'loss' first) and define
    `losses_of(x, training)`; this class gives Keras the train and test steps and the per-epoch means."""
    METRICS = ("loss",)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.trackers = [tf.keras.metrics.Mean(name=n) for n in self.METRICS]

    @property
    def metrics(self):  # Keras resets these at every epoch
        return self.trackers

    def train_step(self, x):
        with tf.GradientTape() as tape:
            values = self.losses_of(x, training=True)
        variables = self.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(values["loss"], variables), variables))
        return self._track(values)

    def test_step(self, x):
        return self._track(self.losses_of(x, training=False))

    def _track(self, values):
        for t in self.trackers:
            t.update_state(values[t.name])
        return {t.name: t.result() for t in self.trackers}


def fit_from_flags(args, model, run_dir, train_ds, val_ds, max_validation_steps=None):
    """Creates the run folder with its flags.json, then `fit` with the `train` subcommand's flags.
    Call check_run_dir and validate the inputs first, so that a refused run leaves nothing behind."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    save_flags(run_dir, args)
    if max_validation_steps is None:
        max_validation_steps = args.max_validation_steps
    return fit(model, train_ds, val_ds, run_dir, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
               lr=args.lr, warmup=args.warmup, patience=args.patience, max_validation_steps=max_validation_steps,
               cont=args.cont, verbose=args.verbose, lr_schedule=args.lr_schedule)
