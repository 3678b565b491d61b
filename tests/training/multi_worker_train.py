"""One worker of `test_multi_worker_train.py`: `trainer.fit` on 1 or 2 processes.

    python tests/training/multi_worker_train.py OUT --task 0 --ports 5001,5002 [--kill-at 6]

With two ports, TensorFlow gets a `TF_CONFIG` for `MultiWorkerMirroredStrategy`
and JAX the `KERAS_DISTRIBUTION_*` variables of `keras.distribution.initialize()`
(one CPU device per process); with one port the run is a single process. It
trains a tiny SP-ViT for 2 epochs of 4 steps (global batch 8) on a position
stream of random images read through `distribute_input`, backing up every 2
steps, validating on 11 images (a last batch of 3). `--kill-at N` SIGKILLs the process after optimizer step N (every worker
does: a crash of the job). `--images DIR`: after `fit` each worker decodes its
share of DIR's files and the chief adds every worker's bad files to
OUT/summary.json (`gather_from_workers`). A finished run writes OUT/../final_TASK.npz: the
weights and the step count.
"""

import argparse
import json
import os
import signal
import sys

EPOCHS, STEPS, BATCH = 2, 4, 8
VAL = 11  # validation examples: a last batch of 3, which 2 replicas cannot split evenly


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--task", type=int, default=0)
    parser.add_argument("--ports", default="0")
    parser.add_argument("--kill-at", type=int, default=None)
    parser.add_argument("--images", default=None)
    args = parser.parse_args()
    addresses = [f"127.0.0.1:{port}" for port in args.ports.split(",")]
    backend = os.environ["KERAS_BACKEND"]
    workers = len(addresses)
    if workers > 1 and backend == "tensorflow":
        os.environ["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": args.task}}
        )
    elif workers > 1:
        os.environ["KERAS_DISTRIBUTION_JOB_ADDRESSES"] = addresses[0]
        os.environ["KERAS_DISTRIBUTION_NUM_PROCESSES"] = str(workers)
        os.environ["KERAS_DISTRIBUTION_PROCESS_ID"] = str(args.task)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

    import keras
    import numpy as np

    import keras_spvit
    from keras_spvit.data import array_dataset
    from keras_spvit.training import data_parallel, distribute_input, fit
    from keras_spvit.training.trainer import for_model

    with data_parallel("multi_worker" if workers > 1 else "none") as replicas:
        keras.utils.set_random_seed(0)
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (STEPS * BATCH, 16, 16, 3), dtype=np.uint8)
        labels = rng.integers(0, 4, STEPS * BATCH).astype("int32")
        val_images = rng.integers(0, 256, (VAL, 16, 16, 3), dtype=np.uint8)
        val_labels = rng.integers(0, 4, VAL).astype("int32")
        val = array_dataset(val_images, val_labels, image_size=16, batch_size=BATCH,
                            training=False, num_classes=4)
        model = keras_spvit.SPViT(
            num_classes=4, image_shape=(16, 16, 3), embed_dim=16, depth=2, num_heads=2,
            spatial_prior_blocks=1, stem="patch", patch_size=4,
        )

        def stream(epoch, batch):
            def build(input_context=None):
                data = array_dataset(images, labels, image_size=16, batch_size=BATCH,
                                     training=True, num_classes=4, seed=0, start=(epoch, batch),
                                     input_context=input_context)
                return for_model(data, model)

            return distribute_input(build)

        class Kill(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                steps = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
                if steps == args.kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)

        summary = fit(
            model, stream, val, recipe="digits", batch_size=BATCH, out_dir=args.out, epochs=EPOCHS,
            steps_per_epoch=STEPS, save_freq=2, verbose=0,
            # TensorFlow compiles for longer than these 8 steps last on a CPU.
            jit_compile=backend == "jax",
            callbacks=[Kill()] if args.kill_at else [],
        )
        if args.images:
            # Each worker decodes its share of the files (a corrupt one in
            # each share, as `distribute_input` shards them), the chief
            # reports every worker's bad files, as `keras-spvit train` does.
            import tensorflow as tf

            from keras_spvit.data.decode_errors import DecodeErrors, safe_decode
            from keras_spvit.training.distribution import gather_from_workers, worker

            index, count = worker()
            paths = sorted(os.path.join(args.images, n) for n in os.listdir(args.images))
            files = tf.data.Dataset.from_tensor_slices((paths, [0] * len(paths)))
            errors = DecodeErrors()
            read = lambda p: tf.io.decode_image(tf.io.read_file(p), 3, expand_animations=False)  # noqa: E731
            for _ in safe_decode(files.shard(count, index), read, errors=errors):
                pass
            shares = gather_from_workers(args.out, "bad_files", errors.state(),
                                         tag=summary["optimizer_steps"])
            if shares is not None:
                for share in shares[1:]:
                    errors.merge(share)
                path = os.path.join(args.out, "summary.json")
                with open(path) as f:
                    written = json.load(f)
                with open(path, "w") as f:
                    json.dump({**written, **errors.summary(), "own_bad_files": shares[0]}, f)
    np.savez(
        os.path.join(os.path.dirname(os.path.abspath(args.out)), f"final_{args.task}.npz"),
        steps=summary["optimizer_steps"], replicas=replicas,
        **{f"w{i}": keras.ops.convert_to_numpy(w) for i, w in enumerate(model.weights)},
    )


if __name__ == "__main__":
    main()
