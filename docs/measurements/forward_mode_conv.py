"""Why TensorFlow's forward mode costs three convolutions per convolution (session 20, issue 15).

One 3x3, 128-channel convolution on 128 x 32 x 32 x 128 activations, kernel a tf.Variable, in
tf.function: the forward, ForwardAccumulator's J t, the two convolutions J t needs (x * W and
t * W), and those two plus a convolution of x with a zero kernel. TensorFlow's forward mode
feeds every input without a tangent (the kernel here) a tensor of zeros and convolves it.
"""
import time, statistics, numpy as np, tensorflow as tf
x0 = tf.constant(np.random.randn(128, 32, 32, 128), tf.float32)
t0 = tf.constant(np.random.randn(128, 32, 32, 128), tf.float32)
W = tf.Variable(np.random.randn(3, 3, 128, 128).astype("float32") * .03)
conv = lambda a, w=None: tf.nn.conv2d(a, W if w is None else w, 1, "SAME")
def jvp(x, t):
    with tf.autodiff.ForwardAccumulator(x, t) as acc:
        y = conv(x)
    return y, acc.jvp(y)
fns = {"fwd": lambda x, t: conv(x), "jvp": jvp, "manual": lambda x, t: (conv(x), conv(t)),
       "manual+zeroW": lambda x, t: (conv(x), conv(t) + conv(x, tf.zeros_like(W)))}
for k, f in fns.items():
    f = tf.function(f); f(x0, t0); ts = []
    for _ in range(7):
        s = time.perf_counter(); tf.nest.map_structure(lambda a: a.numpy(), f(x0, t0)); ts.append(time.perf_counter() - s)
    print(k, round(1000 * statistics.median(ts)), "ms", flush=True)
