"""`Progress`: the progress bar of long loops (BA sweeps, evaluation, the prepare scripts), on stderr."""
import contextlib
import sys


class Progress:
    """Progress of `total` steps on stderr through Keras's Progbar: a live bar when stderr is a terminal, one line
    per bar when it finishes if `verbose` (-V) and stderr is not a terminal (a log), otherwise nothing, so that CI
    logs stay short. Keras, and so TensorFlow, is imported only when the bar is shown.

        bar = Progress(len(files), verbose=args.verbose, unit="file")
        bar.update(i + 1, R=0.5)              # names in `values` shown as given, others as their running mean
        bar.update(steps, finalize=True)      # a loop that stops early (converged) closes its bar
    """

    def __init__(self, total, verbose=False, unit="step", values=()):
        """`total` steps (None when unknown: the bar counts without an end; finish it with finalize=True)."""
        tty = getattr(sys.stderr, "isatty", lambda: False)()
        self.bar = None
        # An unknown total (None) gets a live bar on a terminal only: Keras' one-line summary needs the total.
        if (tty and (total is None or total > 0)) or (verbose and total is not None and total > 0):
            import tensorflow as tf
            with contextlib.redirect_stdout(sys.stderr):  # Progbar writes to sys.stdout
                # `values` are shown as they are, not averaged over the steps (Progbar's default).
                self.bar = tf.keras.utils.Progbar(total, verbose=1 if tty else 2, unit_name=unit,
                                                  stateful_metrics=values)

    def update(self, current, finalize=None, **values):
        if self.bar is not None:
            with contextlib.redirect_stdout(sys.stderr):
                self.bar.update(current, list(values.items()), finalize)
