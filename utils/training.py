"""The one training loop the scripts share: Keras fit with a JSONL log, per-epoch checkpoints, resuming,
the paper's learning-rate schedules, and early stopping.

The model is a tf.keras.Model whose `train_step` / `test_step` return dicts of scalar metrics including 'loss'
(and whose `metrics` property lists its Mean trackers, so Keras resets them every epoch).

Run folder layout (see utils/runs.py): `log.jsonl` gets one record per epoch with `epoch` (1-based, the number
of epochs done), the train metrics, `val_<metric>`, `lr` (the rate at the epoch's last step), `step` (optimizer
steps so far) and `time` (wall seconds, cumulative across resumes); `ckpt-*` holds model, optimizer, epoch and
the state of reduce-on-plateau (its lr multiplier, best value and epochs waited).

The learning rate at optimizer step t is lr x schedule(t) x plateau multiplier. Schedules (`--lr_schedule`),
with E epochs of S steps each:
- "step", the paper's decay for rdub_mlp.py and rdlb.py: lr during epochs e < E/2 (0-based), then x0.2 until
  3E/4, x0.2^2 until 7E/8, x0.2^3 after. It changes at epoch boundaries, as the paper's Keras scheduler does;
  with S = 1 (an "epoch" of one step) it is rdlb.py's per-step form;
- "cosine": lr * (1 + cos(pi t / (E S))) / 2, decaying to 0 at the end;
- "half_cosine", the variable-rate seed's: lr for the first half of the steps, then a cosine from lr to lr/100;
- "constant", the image scripts' default: the paper trains them at a constant rate lowered only on plateaus.
`ramp_steps` (off by default; not in the paper) adds a linear warm-up from lr/100 over the first steps.
Reduce-on-plateau (`patience` > 0; the paper's image-script callback, Keras ReduceLROnPlateau behind a warm-up):
the monitored loss (val_loss when there is validation data, else loss) is tracked from epoch warmup + 2 on
(1-based; the paper's callback acts on 0-based epochs > warmup); when it has not fallen below its best minus
1e-4 for `patience` tracked epochs, the rate is multiplied by `lr_decay_factor` (floor 1e-6) and the count
restarts. Its state is in the checkpoint, so `--cont` continues at the reduced rate with the count it had.
Because the schedule reads the optimizer's step counter, a resumed run continues on the same curve.

Stabilizers (off by default; the variable-rate seed uses both): `clip_norm` clips the gradient's global norm
(Keras' `global_clipnorm`); `ema` keeps, in the checkpoint, an exponential moving average of the trainable
weights, updated after every step with decay ema (1 - exp(-t / ema_warmup)) at step t (0 at the first step, so
the average starts at the weights), and `restore_latest` loads that average as the model's weights when the
run's flags.json names an `ema`.

Distribution (`--strategy`, see docs/distributed.md): a script builds its model inside `strategy_scope(args)`, and
`fit` trains it with the strategy the model was built under, compiling and creating its own state in that scope
so that Keras splits each global batch over the replicas and all-reduces the gradients. Only the chief writes
the log, the checkpoints and the TensorBoard events (`--tensorboard`: every logged metric and lr per epoch, in
`tb/` beside log.jsonl); the other workers save into a temporary folder (saving is collective) and resume from
the chief's, so a multi-worker `--cont` needs the run folder on storage that every worker reads.
"""
import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import tensorflow as tf

from utils import container, jsonl
from utils.cli import InputError
from utils.runs import FLAGS_NAME, LOG_NAME, load_flags, save_flags
from utils.train_flags import SCHEDULES, STRATEGIES

STEP_DECAY = 0.2
STEP_FRACTIONS = (1 / 2, 3 / 4, 7 / 8)
HALF_COSINE_FLOOR = 0.01  # "half_cosine" ends at lr / 100 (the seed's final factor)
# The paper's reduce-on-plateau constants (and early stopping's improvement threshold).
MIN_DELTA = 1e-4
MIN_LR = 1e-6
MAX_STEPS_PER_EXECUTION = 100
TB_NAME = "tb"
PREVIEW_IMAGES = 3  # reconstructions per epoch in TensorBoard
_strategy = None  # the process's strategy once make_strategy has run (a process has one)


def parse_tf_config(text):
    """The cluster and this task from TF_CONFIG's JSON text; InputError naming what is wrong."""
    if not text:
        raise InputError("--strategy multiworker needs TF_CONFIG (JSON with 'cluster' and 'task'; "
                         "see docs/distributed.md)")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"TF_CONFIG is not valid JSON ({e.msg} at character {e.pos})") from None
    cluster, task = (config.get("cluster"), config.get("task")) if isinstance(config, dict) else (None, None)
    if not isinstance(cluster, dict) or not cluster or not all(
            isinstance(v, list) and v and all(isinstance(a, str) and ":" in a for a in v) for v in cluster.values()):
        raise InputError("TF_CONFIG: 'cluster' must map job names ('chief', 'worker') to lists of 'host:port'")
    if set(cluster) - {"chief", "worker"}:
        raise InputError(f"TF_CONFIG: --strategy multiworker takes the jobs 'chief' and 'worker' only, "
                         f"not {', '.join(sorted(set(cluster) - {'chief', 'worker'}))}")
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise InputError(f"TF_CONFIG: 'task' must name one of the cluster's jobs ({', '.join(cluster)}) as 'type'")
    index = task.get("index")
    if not isinstance(index, int) or not 0 <= index < len(cluster[task["type"]]):
        raise InputError(f"TF_CONFIG: task index {index!r} is not one of 0..{len(cluster[task['type']]) - 1} "
                         f"of job {task['type']!r}")
    return cluster, task["type"], index


def make_strategy(name="default", cpu_devices=0):
    """The tf.distribute strategy of `--strategy`; call it before any other TensorFlow work (the multi-worker
    runtime and logical CPU devices can only be set up then). The process keeps it: later calls return it.

    "mirrored" mirrors over the local GPUs; without one it mirrors over the logical CPU devices when there are
    several (`cpu_devices` > 1 creates them; tests use this), else warns and falls back to the default.
    "multiworker" reads the cluster from TF_CONFIG and mirrors over each worker's GPUs (or its CPU).
    """
    global _strategy
    if _strategy is not None:
        return _strategy
    if name not in STRATEGIES:
        raise InputError(f"--strategy {name!r} is unknown; choose one of {', '.join(STRATEGIES)}")
    if cpu_devices and (cpu_devices < 1 or name != "mirrored"):
        raise InputError(f"--cpu_devices {cpu_devices} needs --strategy mirrored and a count >= 1")
    if name == "multiworker":
        parse_tf_config(os.environ.get("TF_CONFIG"))
        try:
            _strategy = tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as e:
            raise RuntimeError(f"{e}: call training.make_strategy (or enter strategy_scope) before any other "
                               f"TensorFlow work") from None
    elif name == "mirrored":
        if cpu_devices > 1:
            cpu = tf.config.list_physical_devices("CPU")[0]
            try:
                tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices)
            except RuntimeError as e:
                raise RuntimeError(f"{e}: --cpu_devices needs training.make_strategy before any other TensorFlow "
                                   f"work") from None
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        if len(devices) > 1 or tf.config.list_logical_devices("GPU"):
            _strategy = tf.distribute.MirroredStrategy([d.name for d in devices])
        else:
            warnings.warn("--strategy mirrored: no GPU found; training on the CPU with the default strategy")
            _strategy = tf.distribute.get_strategy()
    else:
        _strategy = tf.distribute.get_strategy()
    return _strategy


def strategy_from_flags(args):
    """make_strategy from the flags of add_run_flags (the default strategy for a subcommand without them)."""
    return make_strategy(getattr(args, "strategy", "default"), getattr(args, "cpu_devices", 0))


def strategy_scope(args):
    """`with training.strategy_scope(args): model = ...`: builds the model under the flags' strategy. A script
    that does TensorFlow work before building its model calls strategy_from_flags(args) first."""
    return strategy_from_flags(args).scope()


def is_chief(strategy):
    """Whether this process writes the run's files: always, except on a multi-worker cluster's other workers."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    jobs = resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                             and "chief" not in jobs)


class LearningRate(tf.keras.optimizers.schedules.LearningRateSchedule):
    """lr x one of SCHEDULES over `epochs` x `steps_per_epoch` steps x `scale` (the plateau multiplier).
    With the default steps_per_epoch = 1, `epochs` counts optimizer steps (rdlb.py's per-step form)."""

    def __init__(self, lr, epochs, kind="step", steps_per_epoch=1, ramp_steps=0):
        if kind not in SCHEDULES:
            raise InputError(f"--lr_schedule {kind!r} is unknown; choose one of {', '.join(SCHEDULES)}")
        self.lr = float(lr)
        self.epochs, self.steps_per_epoch = max(int(epochs), 1), max(int(steps_per_epoch), 1)
        self.kind = kind
        self.ramp_steps = int(ramp_steps)
        self.scale = tf.Variable(1.0, trainable=False, dtype=tf.float32, name="lr_scale")

    def value(self, step):
        """The rate at `step` (a Python number; used for the log)."""
        return float(self(tf.constant(step, tf.int64)))

    def __call__(self, step):
        step = tf.cast(step, tf.int64)
        done = tf.cast(step, tf.float32) / float(self.epochs * self.steps_per_epoch)  # fraction of the run
        if self.kind == "step":
            epoch = tf.cast(step // self.steps_per_epoch, tf.float32)
            decays = tf.add_n([tf.cast(epoch >= f * self.epochs, tf.float32) for f in STEP_FRACTIONS])
            factor = STEP_DECAY ** decays
        elif self.kind == "cosine":
            factor = 0.5 * (1.0 + tf.cos(math.pi * tf.minimum(done, 1.0)))
        elif self.kind == "half_cosine":
            late = tf.clip_by_value(2.0 * done - 1.0, 0.0, 1.0)  # 0 until half-way, then to 1 at the end
            factor = HALF_COSINE_FLOOR + (1 - HALF_COSINE_FLOOR) * 0.5 * (1.0 + tf.cos(math.pi * late))
        else:
            factor = tf.constant(1.0)
        if self.ramp_steps > 0:
            factor *= 0.01 + 0.99 * tf.minimum(tf.cast(step, tf.float32) / self.ramp_steps, 1.0)
        return self.lr * factor * self.scale

    def get_config(self):
        return {"lr": self.lr, "epochs": self.epochs, "steps_per_epoch": self.steps_per_epoch, "kind": self.kind,
                "ramp_steps": self.ramp_steps}


class Plateau:
    """Reduce-on-plateau as the paper's image scripts (see the module docstring); `patience` 0 turns it off.
    Its state lives in variables that the checkpoint holds."""

    def __init__(self, schedule, warmup=0, patience=0, factor=0.5):
        self.schedule, self.warmup, self.patience, self.factor = schedule, warmup, patience, factor
        self.best = tf.Variable(math.inf, trainable=False, dtype=tf.float64, name="plateau_best")
        self.wait = tf.Variable(0, trainable=False, dtype=tf.int64, name="plateau_wait")

    def update(self, epoch, value):
        """After the 1-based `epoch` with monitored `value`: returns a message when it lowers the rate."""
        if not self.patience or epoch <= self.warmup + 1 or value is None:
            return None
        if value < float(self.best.numpy()) - MIN_DELTA:
            self.best.assign(value)
            self.wait.assign(0)
            return None
        self.wait.assign_add(1)
        old = self.schedule.lr * float(self.schedule.scale.numpy())
        # The relative slack keeps a rate already at the floor (up to float32 rounding) from "reducing" again.
        if int(self.wait.numpy()) < self.patience or old <= MIN_LR * (1 + 1e-6):
            return None
        new = max(old * self.factor, MIN_LR)
        self.schedule.scale.assign(new / self.schedule.lr)
        self.wait.assign(0)
        return (f"epoch {epoch}: no improvement by {MIN_DELTA:g} on {float(self.best.numpy()):.6g} for "
                f"{self.patience} epochs; learning rate {old:.4g} -> {new:.4g}")


def _checkpoint(model, epoch, schedule, plateau):
    return tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=epoch, lr_scale=schedule.scale,
                               plateau_best=plateau.best, plateau_wait=plateau.wait)


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
    """Loads the latest checkpoint's model weights (for eval/compress; open_run calls it): the moving average of
    the weights when the run kept one (`--ema`), else the weights; the optimizer state is ignored. Every weight
    of `model` that exists must be in the checkpoint (AssertionError otherwise)."""
    latest = tf.train.latest_checkpoint(str(run_dir))
    if latest is None:
        raise InputError(f"no checkpoint in {run_dir}; train the model first (or check --checkpoint_dir)")
    ema = load_flags(run_dir).get("ema")
    average = model.track_average(ema, 1) if ema else None  # restored with the weights, then put in their place
    # expect_partial: the optimizer's slots and the training state are in the checkpoint but not wanted here.
    tf.train.Checkpoint(model=model).restore(latest).expect_partial().assert_existing_objects_matched()
    for w, a in zip(model.trainable_variables, average or []):
        w.assign(a)
    return latest


def open_run(args, run_dir, build, script, arch_of):
    """Opens the trained run in `run_dir`, the one way every script loads a run: reads its flags.json, builds the
    model with `build(flags)` (`flags`: the command line `args` with the run's saved flags over them, so that a
    flag added after the run was trained has its current default; the model's weights created), restores every
    weight of it from the latest checkpoint, and computes its identity from `script`, its architecture flags
    `arch_of(flags)` (a dict; those set) and the weights. Returns (model, checkpoint, identity).

    Strict, because a partial restore is silent: weights missing from the checkpoint (another architecture, or
    an earlier version of the code) would keep their fresh values and give wrong files or a wrong bound."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"no checkpoint in {run_dir}: no such run folder (check --checkpoint_dir and the model "
                         f"flags, or give --run)")
    if not (run_dir / FLAGS_NAME).exists():
        raise InputError(f"{run_dir} has no {FLAGS_NAME}: is it a trained run folder?")
    flags = argparse.Namespace(**{**vars(args), **load_flags(run_dir)})
    model = build(flags)
    try:
        checkpoint = restore_latest(model, run_dir)
    except (AssertionError, ValueError) as e:
        raise InputError(f"the checkpoint in {run_dir} does not hold this model's weights (another architecture, or "
                         f"one of an earlier version of the code: retrain it): {str(e).splitlines()[0][:200]}")
    if args.verbose:
        print(f"restored {checkpoint}", file=sys.stderr)
    arch = {k: v for k, v in arch_of(flags).items() if v is not None}  # None: unset, its default from another
    identity = container.model_id(script, arch, [w.numpy() for w in model.trainable_weights])
    return model, checkpoint, identity


def _steps_per_execution(steps_per_epoch):
    """The largest divisor of steps_per_epoch up to MAX_STEPS_PER_EXECUTION: runs that many steps per call
    into the compiled graph, which removes most per-step Python overhead for small models."""
    return max(k for k in range(1, min(steps_per_epoch, MAX_STEPS_PER_EXECUTION) + 1) if steps_per_epoch % k == 0)


class _Logger(tf.keras.callbacks.Callback):
    """Per epoch: the record, the plateau decision, the checkpoint, the log line, then early stopping."""

    def __init__(self, manager, epoch_var, log_path, schedule, plateau, history, warmup, early_stop, monitor,
                 chief=True, tb_writer=None):
        super().__init__()
        self.manager, self.epoch_var, self.log_path = manager, epoch_var, log_path
        self.chief, self.tb_writer = chief, tb_writer
        self.preview = None  # images shown with their reconstructions in TensorBoard (fit sets them)
        self.schedule, self.plateau = schedule, plateau
        self.warmup, self.early_stop, self.monitor = warmup, early_stop, monitor
        self.records = list(history)
        self.time0 = history[-1]["time"] if history else 0.0
        self.best, self.best_epoch = math.inf, 0
        for r in history:
            self._track(r)

    def _track(self, record):
        value = record.get(self.monitor)
        if value is not None and value < self.best - MIN_DELTA:
            self.best, self.best_epoch = value, record["epoch"]

    def _write_images(self, step):
        """A few images, each above its reconstruction, when the model reconstructs images."""
        x_hat = None if self.preview is None else self.model.reconstruct(self.preview)
        if x_hat is not None:
            pair = tf.concat([self.preview, tf.clip_by_value(x_hat, 0.0, 255.0)], axis=1) / 255.0
            tf.summary.image("input above reconstruction", pair, step=step, max_outputs=PREVIEW_IMAGES)

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        step = int(self.model.optimizer.iterations.numpy())
        record = {"epoch": done}
        record.update({k: float(v) for k, v in (logs or {}).items()})
        record.update(lr=self.schedule.value(max(step - 1, 0)), step=step,
                      time=self.time0 + time.perf_counter() - self.start)
        finite = math.isfinite(record.get("loss", math.nan))
        # Decided before the checkpoint is written, so that a resumed run starts from the lowered rate.
        message = self.plateau.update(done, record.get(self.monitor)) if finite else None
        self.epoch_var.assign(done)
        self.manager.save(checkpoint_number=done)
        self.records.append(record)
        if self.chief:
            jsonl.append(self.log_path, record)
            if self.tb_writer is not None:
                with self.tb_writer.as_default():
                    for key, value in record.items():
                        if key not in ("epoch", "step", "time"):
                            tf.summary.scalar(key, value, step=done)
                    self._write_images(done)
                self.tb_writer.flush()
        if message and self.chief:
            print(message, file=sys.stderr)
        if not finite:
            print(f"stopping: the training loss is {record.get('loss')} at epoch {done}", file=sys.stderr)
            self.model.stop_training = True
            return
        self._track(record)
        if self.early_stop and done > self.warmup and done - self.best_epoch >= self.early_stop:
            print(f"early stop at epoch {done}: {self.monitor} has not improved on {self.best:.6g} "
                  f"(epoch {self.best_epoch}) for {self.early_stop} epochs", file=sys.stderr)
            self.model.stop_training = True


def fit(model, train_ds, val_ds, run_dir, *, epochs, steps_per_epoch, lr, lr_schedule="step", ramp_steps=0,
        warmup=0, patience=0, lr_decay_factor=0.5, early_stop=None, max_validation_steps=None, cont=False,
        verbose=False, tensorboard=False, clip_norm=None, ema=None, ema_warmup=10000):
    """Trains `model` on `train_ds` (an endless tf.data of batches) for `epochs` x `steps_per_epoch` steps.

    Validates on `val_ds` (or its first `max_validation_steps` batches) after each epoch when given.
    `cont=True` resumes from the latest checkpoint in `run_dir` and continues its log; without it, a folder
    holding a checkpoint is refused. The rate follows `lr_schedule` (with `ramp_steps`) and reduce-on-plateau
    (`warmup`, `patience`, `lr_decay_factor`; see the module docstring). With `early_stop`, training stops once
    the monitored loss has not improved by 1e-4 for that many epochs, never within the first `warmup` epochs.
    The model trains under the strategy it was built in (see strategy_scope); its batches are global batches.
    `tensorboard` also writes the records as TensorBoard scalars into `run_dir`/tb (and, for a model whose
    `reconstruct` returns images, a few validation images above their reconstructions). `clip_norm`, `ema` and
    `ema_warmup`: the stabilizers of the module docstring.
    Returns the list of all epoch records of the run (earlier sessions included).
    """
    if val_ds is not None and max_validation_steps is not None:
        val_ds = val_ds.take(max_validation_steps)
    if val_ds is not None and val_ds.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise ValueError("an endless validation dataset needs max_validation_steps")
    run_dir = Path(run_dir)
    has_ckpt = check_run_dir(run_dir, cont)
    strategy = model.distribute_strategy
    chief = is_chief(strategy)
    if chief:
        run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / LOG_NAME
    # The other workers' checkpoints: saving takes part in collectives, but only the chief's copy is kept.
    save_dir = Path(run_dir if chief else tempfile.mkdtemp(prefix="worker-ckpt-"))
    try:
        with strategy.scope():  # the optimizer, the schedule's and the plateau's variables live with the model
            schedule = LearningRate(lr, epochs, lr_schedule, steps_per_epoch, ramp_steps)
            plateau = Plateau(schedule, warmup, patience, lr_decay_factor)
            model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=schedule, global_clipnorm=clip_norm),
                          steps_per_execution=_steps_per_execution(steps_per_epoch))
            if ema:
                model.track_average(ema, ema_warmup)
            epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            ckpt = _checkpoint(model, epoch_var, schedule, plateau)
            manager = _manager(ckpt, save_dir)
            history = []
            if has_ckpt:
                model.optimizer.build(model.trainable_variables)  # create the slots so they restore now, not lazily
                latest = tf.train.latest_checkpoint(str(run_dir))
                ckpt.restore(latest).assert_existing_objects_matched()
                history = [r for r in jsonl.read(log_path) if r.get("epoch", 0) <= int(epoch_var.numpy())]
                if verbose and chief:
                    print(f"resuming {latest} at epoch {int(epoch_var.numpy())}, learning-rate "
                          f"multiplier {float(schedule.scale.numpy()):.4g}", file=sys.stderr)
        initial_epoch = int(epoch_var.numpy())
        if initial_epoch >= epochs:
            if verbose and chief:
                print(f"nothing to do: {run_dir} has already trained {initial_epoch} of {epochs} epochs",
                      file=sys.stderr)
            return history

        monitor = "val_loss" if val_ds is not None else "loss"
        tb_writer = tf.summary.create_file_writer(str(run_dir / TB_NAME)) if tensorboard and chief else None
        logger = _Logger(manager, epoch_var, log_path, schedule, plateau, history, warmup, early_stop, monitor,
                         chief, tb_writer)
        if tb_writer is not None:  # the same few (validation) images every epoch, to watch them improve
            batch = next(iter((val_ds if val_ds is not None else train_ds).take(1)))
            logger.preview = batch[:PREVIEW_IMAGES] if batch.shape.rank == 4 else None
        # Verbose: a progress bar on a terminal, one line per epoch otherwise (logs, captured test output).
        keras_verbose = (1 if sys.stdout.isatty() else 2) if verbose and chief else 0
        model.fit(_sharded(train_ds).prefetch(tf.data.AUTOTUNE), epochs=epochs, initial_epoch=initial_epoch,
                  steps_per_epoch=steps_per_epoch, validation_data=None if val_ds is None else _sharded(val_ds),
                  verbose=keras_verbose, callbacks=[logger])
        if tb_writer is not None:
            tb_writer.close()
        return logger.records
    finally:
        if not chief:
            shutil.rmtree(save_dir, ignore_errors=True)


def _sharded(ds):
    """Shards by batch across workers: each worker runs the whole (seeded) pipeline and keeps its share of every
    global batch, which for in-memory and generated data is the only policy that applies (no-op on one worker)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


class LossModel(tf.keras.Model):
    """A model that `fit` trains. Subclasses set METRICS (the names `losses_of` returns, 'loss' first) and define
    `losses_of(x, training)`; this class gives Keras the train and test steps and the per-epoch means."""
    METRICS = ("loss",)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.trackers = [tf.keras.metrics.Mean(name=n) for n in self.METRICS]
        self.average = None  # the moving average of the trainable weights (track_average)

    def track_average(self, decay, warmup):
        """Creates the moving average of the trainable weights that every train step updates (and checkpoints
        save, as `average`); returns its variables, in the order of trainable_variables."""
        self.ema_decay, self.ema_warmup = decay, float(warmup)
        self.average = [tf.Variable(v, trainable=False, aggregation=tf.VariableAggregation.MEAN,
                                    name=f"average{i}") for i, v in enumerate(self.trainable_variables)]
        return self.average

    @property
    def metrics(self):  # Keras resets these at every epoch
        return self.trackers

    def train_step(self, x):
        with tf.GradientTape() as tape:
            values = self.losses_of(x, training=True)
            # The optimizer sums the replicas' gradients: each replica's share of the mean over the global batch.
            scaled = values["loss"] / tf.distribute.get_strategy().num_replicas_in_sync
        variables = self.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
        if self.average is not None:
            step = tf.cast(self.optimizer.iterations - 1, tf.float32)  # 0 at the first step
            decay = self.ema_decay * (1 - tf.exp(-step / self.ema_warmup))
            for a, v in zip(self.average, variables):
                a.assign(decay * a + (1 - decay) * v)
        return self._track(values)

    def test_step(self, x):
        return self._track(self.losses_of(x, training=False))

    def _track(self, values):
        for t in self.trackers:
            t.update_state(values[t.name])
        return {t.name: t.result() for t in self.trackers}

    def reconstruct(self, x):
        """An image model's reconstruction of a batch x on [0, 255] (for TensorBoard); None: not an image model."""
        return None


def _check_schedule_flags(args):
    for flag in ("lr_ramp", "warmup", "patience"):
        if getattr(args, flag) < 0:
            raise InputError(f"--{flag} must be >= 0, got {getattr(args, flag)}")
    if not 0 < args.lr_decay_factor < 1:
        raise InputError(f"--lr_decay_factor must lie in (0, 1), got {args.lr_decay_factor}")
    if args.ema is not None and not 0 < args.ema < 1:
        raise InputError(f"--ema {args.ema}: the decay must lie in (0, 1)")


def fit_from_flags(args, model, run_dir, train_ds, val_ds, max_validation_steps=None):
    """Creates the run folder with its flags.json, then `fit` with the `train` subcommand's flags (those of
    add_schedule_flags among them). Call check_run_dir and validate the inputs first, so that a refused run
    leaves nothing behind."""
    _check_schedule_flags(args)
    strategy = model.distribute_strategy
    if args.strategy != "default" and _strategy is None:
        raise InputError(f"--strategy {args.strategy}: this script does not build its model under "
                         f"training.strategy_scope yet (see docs/distributed.md)")
    replicas = strategy.num_replicas_in_sync
    if getattr(args, "batchsize", 0) % replicas:
        raise InputError(f"--batchsize {args.batchsize} (the global batch) does not split evenly over "
                         f"{replicas} replicas")
    if is_chief(strategy):
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        save_flags(run_dir, args)
    if max_validation_steps is None:
        max_validation_steps = args.max_validation_steps
    return fit(model, train_ds, val_ds, run_dir, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
               lr=args.lr, lr_schedule=args.lr_schedule, ramp_steps=args.lr_ramp, warmup=args.warmup,
               patience=args.patience, lr_decay_factor=args.lr_decay_factor, early_stop=args.early_stop,
               max_validation_steps=max_validation_steps, cont=args.cont, verbose=args.verbose,
               tensorboard=args.tensorboard, clip_norm=args.clip_norm, ema=args.ema, ema_warmup=args.ema_warmup)
