"""Training callbacks: throughput in the logs."""

import math
import time

import keras
import numpy as np


class Throughput(keras.callbacks.Callback):
    """Adds `images_per_second` (training) to each epoch's logs, without a
    host sync per step.

    The clock is read at epoch boundaries only: the training part of an
    epoch runs from `on_epoch_begin` to the start of validation (or the
    epoch's end), when the device has finished its steps (the callback then
    waits for one variable, once per epoch). The callback defines no
    `on_train_batch_end`, so Keras keeps dispatching batch-end callbacks
    asynchronously and JAX keeps running ahead of the host; it reads no logs.
    `on_train_batch_begin` only counts steps. The first step of each `fit`
    call (tracing, compilation) is left out: that epoch is timed from the
    second step's dispatch (on JAX, which dispatches asynchronously, the
    window can also hold the end of the first step's execution: a
    conservative figure). An epoch it cannot time (a `fit`'s first epoch of
    one step) logs NaN, so that a `CSVLogger` keeps the column.

    Args:
        batch_size: positive int. Global batch size.

    Example:

    >>> model.fit(dataset, callbacks=[Throughput(batch_size=64)])
    """

    def __init__(self, batch_size):
        super().__init__()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(
                f"Expected `batch_size` to be a positive int. Received: batch_size={batch_size!r}"
            )
        self.batch_size = batch_size
        self.history = []
        self._compiling = True
        self._dispatched = 0

    def on_train_begin(self, logs=None):
        self._compiling = True
        self._dispatched = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._stopped = None
        self._last_step = None
        if self._compiling:
            self._start, self._first_step = None, None
        else:
            self._start, self._first_step = time.perf_counter(), 0

    def on_train_batch_begin(self, batch, logs=None):
        if self._compiling and self._dispatched:
            # The fit's first execution has been dispatched (and compiled).
            self._compiling = False
            self._start, self._first_step = time.perf_counter(), batch
        self._dispatched += 1
        self._last_step = batch

    def on_test_begin(self, logs=None):
        # Validation inside `fit`: stop the clock when training has finished.
        if getattr(self, "_start", None) is not None and self._stopped is None:
            self._wait_for_device()
            self._stopped = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        # NaN rather than no key for an epoch it could not time: a `CSVLogger`
        # takes its columns from the first epoch.
        logs["images_per_second"] = rate = self._images_per_second()
        if not math.isnan(rate):
            self.history.append(rate)
        self._start = None

    def _images_per_second(self):
        """The epoch's training images per second, or NaN when it was not timed
        (a one-step first epoch: its step compiled)."""
        if self._start is None or self._last_step is None:
            return math.nan
        if self._stopped is None:
            self._wait_for_device()
            self._stopped = time.perf_counter()
        steps = self._last_step + max(1, int(getattr(self.model, "steps_per_execution", 1) or 1))
        if self.params and self.params.get("steps"):
            steps = min(steps, self.params["steps"])
        seconds = self._stopped - self._start
        images = (steps - self._first_step) * self.batch_size
        return images / seconds if seconds > 0 and images > 0 else math.nan

    def _wait_for_device(self):
        """Blocks until the last step has run: reads the smallest trainable variable."""
        model = self.model
        variables = list(getattr(model, "trainable_variables", None) or [])
        if variables:
            smallest = min(variables, key=lambda v: int(np.prod(v.shape)))
            keras.ops.convert_to_numpy(smallest)


class SwapEMAWeights(keras.callbacks.SwapEMAWeights):
    """Keras' `SwapEMAWeights(swap_on_epoch=True)` that leaves the EMA in the
    model only after the run's last epoch.

    Keras' callback copies the EMA over the training weights at the end of
    each `fit` call's last epoch; a resumed run calls `fit` twice (the rest of
    the interrupted epoch, then the other epochs) and must go on training the
    training weights after the first call, not the EMA.

    Args:
        last_epoch: int. The run's last epoch (0-based).

    Example:

    >>> model.fit(data, epochs=30, callbacks=[SwapEMAWeights(last_epoch=29)])
    """

    def __init__(self, last_epoch):
        super().__init__(swap_on_epoch=True)
        self.last_epoch = int(last_epoch)

    def on_epoch_end(self, epoch, logs=None):
        if not self._ema_weights_in_model:
            self._swap_variables()
            self._ema_weights_in_model = True
            if epoch == self.last_epoch:
                self._finalize_ema_values()
