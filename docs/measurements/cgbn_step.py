"""Float32 VAT step with a hand-written BN gradient (tf.custom_gradient, statistics recomputed in
the gradient so higher derivatives stay right), against the library's BN, same process (issue 15)."""
import json, os, sys
import tensorflow as tf
from lvat_tf import benchmark
from lvat_tf.models import layers as L

variant = sys.argv[1]
if variant == "cgbn":
    orig = L.UpstreamBatchNorm.call
    def cg(self, x, mode="moving"):
        if mode == "moving" or x.dtype != tf.float32 or len(x.shape) != 4:
            return orig(self, x, mode)
        eps = self.epsilon
        @tf.custom_gradient
        def bn(x, gamma, beta):
            mean, var = tf.nn.moments(x, axes=[0, 1, 2])
            y = (x - mean) * (tf.math.rsqrt(var + eps) * gamma) + beta
            def grad(dy):
                m, v = tf.nn.moments(x, axes=[0, 1, 2])
                inv = tf.math.rsqrt(v + eps)
                xhat = (x - m) * inv
                n = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
                dbeta = tf.reduce_sum(dy, [0, 1, 2])
                dgamma = tf.reduce_sum(dy * xhat, [0, 1, 2])
                dx = (gamma * inv / n) * (n * dy - dbeta - xhat * dgamma)
                return dx, dgamma, dbeta
            return y, grad
        if mode == "update":
            return orig(self, x, mode)
        return bn(x, self.gamma.value, self.beta.value)
    L.UpstreamBatchNorm.call = cg
up = benchmark.time_upstream_step(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "perf", "vat_tf_train_step.meta"), steps=3, warmup=1)
row = benchmark.benchmark_method("vat", "conv_large", "cifar10", 32, 128, steps=3, warmup=1)
print(variant, "upstream", round(up["ms_per_step"]), "vat", round(row["ms_per_step"]),
      "ratio", round(row["ms_per_step"] / up["ms_per_step"], 3), flush=True)
