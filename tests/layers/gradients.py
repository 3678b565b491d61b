"""Gradient checks shared by the hand-written kernels' tests (TensorFlow, JAX)."""

import numpy as np

from tests.conftest import BACKEND, to_numpy


def value_and_grads(fn, args, cotangent, compiled):
    """`fn(*args)` (first output if several) and the gradients of
    `sum(out * cotangent)` with respect to every argument."""
    if BACKEND == "jax":
        import jax

        def loss(*args):
            out = fn(*args)
            out = out[0] if isinstance(out, tuple) else out
            return (out * cotangent).sum(), out

        grad_fn = jax.grad(loss, tuple(range(len(args))), has_aux=True)
        if compiled:
            grad_fn = jax.jit(grad_fn)
        grads, out = grad_fn(*args)
        return to_numpy(out), [to_numpy(g) for g in grads]
    import tensorflow as tf

    def run(*args):
        with tf.GradientTape() as tape:
            tape.watch(args)
            out = fn(*args)
            out = out[0] if isinstance(out, tuple) else out
            loss = tf.reduce_sum(out * cotangent)
        return out, tape.gradient(loss, list(args))

    if compiled:
        run = tf.function(run, jit_compile=True)
    out, grads = run(*[tf.constant(a) for a in args])
    return to_numpy(out), [to_numpy(g) for g in grads]


def assert_same(result, expected):
    (out, grads), (ref_out, ref_grads) = result, expected
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5 * np.abs(ref_out).max())
    assert len(grads) == len(ref_grads)
    for g, ref in zip(grads, ref_grads):
        np.testing.assert_allclose(g, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
