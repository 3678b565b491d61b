"""Training callbacks: throughput in the logs."""

import time

import keras


class Throughput(keras.callbacks.Callback):
    """Adds `images_per_second` (training) to each epoch's logs.

    The first batch of the first epoch (tracing, compilation) is left out.

    Args:
        batch_size: int. Global batch size.

    Example:

    >>> model.fit(dataset, callbacks=[Throughput(batch_size=64)])
    """

    def __init__(self, batch_size):
        super().__init__()
        self.batch_size = batch_size
        self.history = []
        self._compiled = False

    def on_epoch_begin(self, epoch, logs=None):
        self._images = 0
        self._seconds = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if not self._compiled:
            self._compiled = True
            return
        self._seconds += time.perf_counter() - self._start
        self._images += self.batch_size

    def on_epoch_end(self, epoch, logs=None):
        if self._seconds > 0 and logs is not None:
            logs["images_per_second"] = self._images / self._seconds
            self.history.append(logs["images_per_second"])


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
