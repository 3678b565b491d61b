"""One worker of `test_multi_worker_input.py`: reads an image folder as `fit` would.

Run one process per worker (the backend is `KERAS_BACKEND`):

    python tests/data/multi_worker_input_steps.py ROOT OUT.json --task 0 --ports 5001,5002

TensorFlow: a `TF_CONFIG` for `MultiWorkerMirroredStrategy`; JAX: the
`KERAS_DISTRIBUTION_*` variables for `keras.distribution.initialize()`. The
worker builds the training pipeline with `distribute_input` inside
`data_parallel("multi_worker")`, checks that Keras' `fit` input path hands
that dataset on untouched, reads two epochs from it (recording, per step, the
image ids in its batch and the files it decoded), runs a plain `model.fit`
for one epoch, and finally reads the single-worker pipeline (the reference)
in the same process. It writes everything as JSON to OUT.
"""

import argparse
import functools
import json
import os
import sys

IMAGE_SIZE, BATCH_SIZE, SEED = 8, 4, 3


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("out")
    parser.add_argument("--task", type=int, required=True)
    parser.add_argument("--ports", required=True)
    parser.add_argument("--fit", action="store_true", help="also run a plain model.fit")
    args = parser.parse_args(argv)
    backend = os.environ["KERAS_BACKEND"]
    addresses = [f"127.0.0.1:{port}" for port in args.ports.split(",")]
    if backend == "tensorflow":
        os.environ["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": args.task}}
        )
    else:
        os.environ["KERAS_DISTRIBUTION_JOB_ADDRESSES"] = addresses[0]
        os.environ["KERAS_DISTRIBUTION_NUM_PROCESSES"] = str(len(addresses))
        os.environ["KERAS_DISTRIBUTION_PROCESS_ID"] = str(args.task)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

    import keras

    keras.config.disable_traceback_filtering()
    import numpy as np
    import tensorflow as tf

    from keras_spvit.data import datasets
    from keras_spvit.training.distribution import data_parallel, distribute_input

    decoded = []
    read_image = datasets._read_image

    def counting_read_image(path):
        def record(p):
            decoded.append(int(os.path.basename(p.numpy().decode()).split(".")[0]))
            return True

        token = tf.py_function(record, [path], tf.bool)
        with tf.control_dependencies([token]):
            return read_image(path)

    datasets._read_image = counting_read_image  # looked up when the pipeline is built

    build = functools.partial(
        datasets.image_folder_dataset, args.root, image_size=IMAGE_SIZE,
        batch_size=BATCH_SIZE, training=True, seed=SEED, mean=(0, 0, 0), std=(1, 1, 1),
    )

    def ids(images, labels):
        # Pixels are 10 * id everywhere; labels are ids: both must agree.
        from_pixels = np.rint(np.asarray(images)[:, 0, 0, 0] * 255 / 10).astype(int)
        labels = np.asarray(labels).astype(int)
        assert (from_pixels == labels).all(), (from_pixels, labels)
        return labels.tolist()

    result = {"task": args.task}
    with data_parallel("multi_worker") as replicas:
        result["replicas"] = replicas
        train = distribute_input(build)
        result["input_type"] = type(train).__name__
        if backend == "tensorflow":
            from keras.src.backend.tensorflow.trainer import TFEpochIterator

            strategy = tf.distribute.get_strategy()
            consumed = TFEpochIterator(distribute_strategy=strategy, x=train)._distributed_dataset

            def local(value):
                return np.concatenate(
                    [np.asarray(v) for v in strategy.experimental_local_results(value)]
                )
        else:
            from keras.src.trainers.data_adapters import get_data_adapter

            consumed = get_data_adapter(train).get_tf_dataset()
            local = np.asarray
        result["fit_consumes_it_as_is"] = consumed is train
        cardinality = train.cardinality
        result["num_batches"] = int(cardinality() if callable(cardinality) else cardinality)

        epochs = []
        for _ in range(2):
            steps = [ids(local(x), local(y)) for x, y in train]
            epochs.append({"steps": steps, "decoded": sorted(decoded)})
            decoded.clear()
        result["epochs"] = epochs

        if args.fit:
            model = keras.Sequential(
                [keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3)), keras.layers.Flatten(),
                 keras.layers.Dense(24)]
            )
            model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))

            class CountSteps(keras.callbacks.Callback):
                count = 0

                def on_train_batch_end(self, batch, logs=None):
                    CountSteps.count += 1

            history = model.fit(train, epochs=1, verbose=0, callbacks=[CountSteps()])
            result["fit"] = {
                "steps": CountSteps.count,
                "loss": float(history.history["loss"][-1]),
                "kernel_sum": float(np.sum(keras.ops.convert_to_numpy(model.weights[0]))),
            }
    decoded.clear()
    reference = build(input_context=None)
    result["single_worker"] = [
        [ids(x.numpy(), y.numpy()) for x, y in reference] for _ in range(2)
    ]
    with open(args.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
