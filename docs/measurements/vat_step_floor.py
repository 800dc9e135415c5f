"""How fast can a float32 Conv-Large VAT step be on this CPU? (issue 15, session 10)

Times, on 128 CIFAR-shaped images, the forward pass, the gradient with respect to the input
perturbation d only (the power iteration's backward pass), and the gradient with respect to d
and every weight; counts the convolutions' and the dense layer's FLOPs from their shapes; and
compares the VAT step's necessary work (labeled 32 forward + backward with weight gradients;
unlabeled 128: clean forward, forward at x + xi d with the input gradient only, adversarial
forward + backward with weight gradients) with the rate the forward pass reaches. (A TF matmul
"peak" is no ceiling here: oneDNN's convolutions ran faster than a 2048^2 matmul on the same
cores, and the matmul figure moved from 110 to 200 GFLOP/s between runs.) If the input-only
gradient costs less than the full one, TensorFlow pruned the filter gradients that the power
iteration never uses. Usage:

  python docs/measurements/vat_step_floor.py [REPEATS]
"""
import sys
import time

import numpy as np
import tensorflow as tf

from lvat_tf.models import registry


def forward_gflop_per_image(model, image_shape):
    """Multiply-adds x 2 of every Conv2D and Dense layer for one image, from their shapes."""
    h, w = image_shape[:2]
    total, c_in = 0.0, image_shape[2]
    for i, conv in enumerate(model.convs):
        k, c_out = conv.kernel.shape[0], conv.kernel.shape[3]
        if conv.padding == "valid":
            h, w = h - k + 1, w - k + 1
        total += 2.0 * h * w * k * k * c_in * c_out
        c_in = c_out
        if i + 1 in (3, 6):  # the two 2x2/2 max-pools after each stage
            h, w = (h + 1) // 2, (w + 1) // 2
    total += 2.0 * c_in * model.fc.kernel.shape[1]
    return total / 1e9


def main(repeats=3):
    model = registry.build("conv_large", num_classes=10)
    rng = np.random.RandomState(0)
    x = tf.constant(rng.randn(128, 32, 32, 3).astype(np.float32))
    d = tf.constant(rng.randn(128, 32, 32, 3).astype(np.float32) * 1e-3)
    model(x, training=True)

    @tf.function
    def forward():
        return tf.reduce_sum(model(x + d, training=True))

    @tf.function
    def grad_input_only():
        with tf.GradientTape() as tape:
            tape.watch(d)
            y = tf.reduce_sum(model(x + d, training=True) ** 2)
        return tape.gradient(y, d)

    @tf.function
    def grad_input_and_weights():
        with tf.GradientTape() as tape:
            tape.watch(d)
            y = tf.reduce_sum(model(x + d, training=True) ** 2)
        g = tape.gradient(y, [d] + model.trainable_variables)
        return g[0], tf.add_n([tf.reduce_sum(v) for v in g[1:]])

    fns = (forward, grad_input_only, grad_input_and_weights)
    for f in fns:
        f()
    times = {f.__name__: [] for f in fns}
    for _ in range(repeats):  # interleaved, so that a drift of the VM's speed hits all three
        for f in fns:
            t0 = time.perf_counter()
            tf.nest.map_structure(lambda a: a.numpy(), f())
            times[f.__name__].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    fwd = forward_gflop_per_image(model, (32, 32, 3))
    rate = 128 * fwd / med["forward"]
    for k, v in times.items():
        print(f"{k:24s} " + " ".join(f"{1000 * s:6.0f}" for s in v) + " ms")
    print(f"forward: {fwd:.3f} GFLOP/image; 128 images at {rate:.0f} GFLOP/s")
    # Units of one image's forward pass: a backward pass with weight gradients costs 2, an
    # input-only backward 1.
    needed = (32 * 3 + 128 * (1 + 2 + 3)) * fwd
    print(f"VAT step (32 + 128), necessary work {needed:.0f} GFLOP: {1000 * needed / rate:.0f} ms "
          f"if every pass ran at the forward pass's rate")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
