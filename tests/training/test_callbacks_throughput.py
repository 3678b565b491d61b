"""`Throughput`: images per second from epoch-boundary clocks, no per-step sync."""

import keras
import numpy as np
import pytest

from keras_spvit.training import callbacks as callbacks_module
from keras_spvit.training.callbacks import Throughput


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(callbacks_module.time, "perf_counter", fake)
    return fake


def tiny_model(steps_per_execution=1):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse", steps_per_execution=steps_per_execution)
    return model


def run_epoch(callback, clock, epoch, begins, step_seconds, first_step_seconds=None,
              validation_seconds=None):
    callback.on_epoch_begin(epoch)
    for i, step in enumerate(begins):
        callback.on_train_batch_begin(step)
        clock.now += first_step_seconds if (i == 0 and first_step_seconds) else step_seconds
    logs = {"loss": 1.0}
    if validation_seconds is not None:
        callback.on_test_begin()
        clock.now += validation_seconds
        callback.on_test_end()
    callback.on_epoch_end(epoch, logs)
    return logs


def test_throughput_times_epochs_without_compilation_and_validation(clock):
    callback = Throughput(batch_size=8)
    callback.set_model(tiny_model())
    callback.set_params({"steps": 5, "epochs": 2})
    callback.on_train_begin()
    # Epoch 0: the first step compiles (10 s) and is left out: 4 steps of 8
    # images in 4 s. Validation (7 s) is not training time.
    logs = run_epoch(callback, clock, 0, range(5), 1.0, first_step_seconds=10.0,
                     validation_seconds=7.0)
    assert logs["images_per_second"] == 8.0
    # Epoch 1: 5 steps of 0.5 s.
    logs = run_epoch(callback, clock, 1, range(5), 0.5)
    assert logs["images_per_second"] == 16.0
    assert callback.history == [8.0, 16.0]


def test_throughput_counts_steps_per_execution(clock):
    callback = Throughput(batch_size=4)
    callback.set_model(tiny_model(steps_per_execution=2))
    callback.set_params({"steps": 5, "epochs": 1})
    callback.on_train_begin()
    # Executions begin at steps 0, 2, 4 (the last one runs 1 step): timed
    # from step 2 to the end, 3 steps of 4 images in 2 s.
    logs = run_epoch(callback, clock, 0, [0, 2, 4], 1.0, first_step_seconds=30.0)
    assert logs["images_per_second"] == 6.0


def test_throughput_hooks_no_batch_end():
    # A callback with `on_train_batch_end` makes Keras run batch ends
    # synchronously (and read the step's logs): Throughput defines none.
    assert Throughput.on_train_batch_end is keras.callbacks.Callback.on_train_batch_end
    assert Throughput.on_batch_end is keras.callbacks.Callback.on_batch_end
    assert (
        keras.callbacks.CallbackList([Throughput(8)])._async_train
        == keras.callbacks.CallbackList([])._async_train
    )


def test_throughput_in_fit_reports_images_per_second():
    model = tiny_model()
    x = np.random.default_rng(0).normal(size=(32, 3)).astype("float32")
    y = np.zeros((32, 2), "float32")
    callback = Throughput(batch_size=8)
    history = model.fit(x, y, batch_size=8, epochs=2, validation_data=(x, y), verbose=0,
                        callbacks=[callback])
    rates = history.history["images_per_second"]
    assert len(rates) == 2 and all(rate > 0 for rate in rates)
    assert callback.history == rates


def test_an_untimed_first_epoch_logs_nan_so_a_csv_log_keeps_the_column(tmp_path):
    # One step per epoch: the first epoch's only step compiles and is not timed.
    model = tiny_model()
    x, y = np.ones((8, 3), "float32"), np.zeros((8, 2), "float32")
    callback = Throughput(batch_size=8)
    path = tmp_path / "log.csv"
    model.fit(x, y, batch_size=8, epochs=3, verbose=0,
              callbacks=[callback, keras.callbacks.CSVLogger(str(path))])
    header, *rows = [line.split(",") for line in path.read_text().splitlines()]
    rates = [float(row[header.index("images_per_second")]) for row in rows]
    assert np.isnan(rates[0]) and all(rate > 0 for rate in rates[1:])
    assert callback.history == rates[1:]


@pytest.mark.parametrize("bad", [0, -8, 2.5, True, "64"])
def test_throughput_rejects_bad_batch_sizes(bad):
    with pytest.raises(ValueError, match="batch_size="):
        Throughput(bad)
