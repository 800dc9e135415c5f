"""Which non-conv op makes the bfloat16 Conv-Large forward slow? (issue 15) Ablation timing."""
import os, statistics, sys, time
import numpy as np, tensorflow as tf, keras
from lvat_tf.config import make_config
from lvat_tf.models import registry as model_registry, layers as L, classifiers as C
from lvat_tf.training.run import dtype_policy

B, REPS = int(sys.argv[1]), int(sys.argv[2])
variant = sys.argv[3]
policy = sys.argv[4]
if "nobn" in variant:
    L.UpstreamBatchNorm.call = lambda self, x, mode="moving": x
if "foldbn" in variant:
    orig_call = L.UpstreamBatchNorm.call
    def fold(self, x, mode="moving"):
        if mode == "moving":
            return orig_call(self, x, mode)
        dtype = x.dtype
        xs = x if dtype == tf.float32 else tf.cast(x, tf.float32)
        mean, var = tf.nn.moments(xs, axes=[0, 1, 2])
        inv = tf.math.rsqrt(var + self.epsilon) * self.gamma.value
        shift = self.beta.value - mean * inv
        return x * tf.cast(inv, dtype) + tf.cast(shift, dtype)
    L.UpstreamBatchNorm.call = fold
if "cgbn" in variant:
    orig_call2 = L.UpstreamBatchNorm.call
    def cg(self, x, mode="moving"):
        if mode == "moving" or x.dtype != tf.float32:
            return orig_call2(self, x, mode)
        eps = self.epsilon
        @tf.custom_gradient
        def bn(x, gamma, beta):
            mean, var = tf.nn.moments(x, axes=[0, 1, 2])
            inv = tf.math.rsqrt(var + eps)
            xhat = (x - mean) * inv
            y = xhat * gamma + beta
            def grad(dy):
                n = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
                dbeta = tf.reduce_sum(dy, [0, 1, 2])
                dgamma = tf.reduce_sum(dy * xhat, [0, 1, 2])
                dx = (gamma * inv / n) * (n * dy - dbeta - xhat * dgamma)
                return dx, dgamma, dbeta
            return y, grad
        return bn(x, self.gamma.value, self.beta.value)
    L.UpstreamBatchNorm.call = cg
if "nolrelu" in variant:
    tf.nn.leaky_relu = lambda h, alpha=0.2: h
if "nodrop" in variant:
    C.stateless_dropout = lambda h, k, s: h
if "nopool" in variant:
    tf.nn.max_pool2d = lambda h, k, s, padding: h[:, ::2, ::2, :]
cfg = make_config(dataset="cifar10", model="conv_large", method="vat")
x = tf.constant(np.random.RandomState(0).uniform(-.5, .5, (B, 32, 32, 3)), tf.float32)
seed = tf.constant([0, 1], tf.int64)
with dtype_policy(policy):
    keras.utils.set_random_seed(0)
    clf = model_registry.build_from_config(cfg, 10)
    clf(tf.zeros((2, 32, 32, 3)), bn_mode="moving")
    f = tf.function(lambda: clf(x, bn_mode="batch", dropout_seed=seed), autograph=False)
    def vjp():
        with tf.GradientTape() as t:
            t.watch(x); l = clf(x, bn_mode="batch", dropout_seed=seed)
        return t.gradient(l, x, output_gradients=tf.ones_like(l))
    g = tf.function(vjp, autograph=False)
    out = []
    for fn in (f, g):
        fn().numpy()
        ts = []
        for _ in range(REPS):
            t = time.perf_counter(); fn().numpy(); ts.append(time.perf_counter() - t)
        out.append(round(1000 * statistics.median(ts)))
print(f"{policy:15s} {variant:30s} fwd {out[0]:6d} ms  fwd+vjp {out[1]:6d} ms", flush=True)
