"""One training run of `test_resume.py`, in its own process so it can be SIGKILLed.

`python resume_run.py OUT [KILL_AT_STEP]`: trains a tiny SP-ViT for 3 epochs
of 6 steps on a deterministic stream (`fit`'s stream form), with a backup
every 4 batches and an EMA; with KILL_AT_STEP the process SIGKILLs itself
after that optimizer step (a hard crash, no cleanup). A finished run writes
OUT/final.npz: every model weight and the optimizer's step count.
"""

import os
import signal
import sys

import keras
import numpy as np

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()

import keras_spvit
from keras_spvit.training import fit, get_recipe

out = sys.argv[1]
kill_at = int(sys.argv[2]) if len(sys.argv) > 2 else None
EPOCHS, STEPS, BATCH = 3, 6, 8

keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
images = rng.uniform(size=(STEPS * BATCH + 5, 16, 16, 3)).astype("float32")
labels = rng.integers(0, 4, len(images)).astype("int32")


def stream(epoch, batch):
    """Epoch `e`'s order depends only on `e`: the position addresses the data."""
    import tensorflow as tf

    def one_epoch(e):
        order = tf.argsort(tf.random.stateless_uniform([len(images)], tf.stack([e, 1000])))
        return tf.data.Dataset.from_tensor_slices(
            (tf.gather(images, order), tf.gather(labels, order))
        ).batch(BATCH, drop_remainder=True)

    return tf.data.Dataset.range(epoch, EPOCHS).flat_map(one_epoch).skip(batch)


class Kill(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


model = keras_spvit.SPViT(
    num_classes=4, image_shape=(16, 16, 3), embed_dim=16, depth=2, num_heads=2,
    spatial_prior_blocks=1, stem="patch", patch_size=4, drop_path_rate=float(os.environ.get("DROP", 0.2)),
)
recipe = get_recipe("digits", ema_momentum=float(os.environ.get("EMA", 0.9)) or None, warmup_epochs=1)
summary = fit(
    model, stream, recipe=recipe, batch_size=BATCH, out_dir=out, epochs=EPOCHS,
    steps_per_epoch=STEPS, save_freq=4, verbose=0,
    # JAX runs eagerly op by op only after compiling every primitive (~2 min here):
    # one compiled step is faster. TensorFlow and torch: faster without XLA here.
    jit_compile=keras.backend.backend() == "jax",
    callbacks=[Kill()] if kill_at else [],
)
np.savez(
    os.path.join(out, "final.npz"),
    steps=summary["optimizer_steps"], resumed_at=summary["resumed_at_step"],
    **{f"w{i}": keras.ops.convert_to_numpy(w) for i, w in enumerate(model.weights)},
)
