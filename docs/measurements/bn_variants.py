"""Batch-norm variants the measurements swap into UpstreamBatchNorm.call (issue 15, session 8)."""
import tensorflow as tf

from lvat_tf.models import layers as L


def install_custom_gradient_bn(recompute: bool):
    """float32 4-D `batch` mode with a hand-written gradient (tf.custom_gradient).

    recompute=False captures the forward statistics (fast, but outer tapes cannot see them:
    wrong second derivatives); recompute=True recomputes them inside the gradient.
    """
    orig = L.UpstreamBatchNorm.call

    def call(self, x, mode="moving"):
        if mode != "batch" or x.dtype != tf.float32 or len(x.shape) != 4:
            return orig(self, x, mode)
        eps = self.epsilon

        @tf.custom_gradient
        def bn(x, gamma, beta):
            mean, var = tf.nn.moments(x, axes=[0, 1, 2])
            inv = tf.math.rsqrt(var + eps)
            xhat = (x - mean) * inv

            def grad(dy):
                xh, iv = xhat, inv
                if recompute:
                    m, v = tf.nn.moments(x, axes=[0, 1, 2])
                    iv = tf.math.rsqrt(v + eps)
                    xh = (x - m) * iv
                n = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
                dbeta = tf.reduce_sum(dy, [0, 1, 2])
                dgamma = tf.reduce_sum(dy * xh, [0, 1, 2])
                return (gamma * iv / n) * (n * dy - dbeta - xh * dgamma), dgamma, dbeta
            return xhat * gamma + beta, grad
        return bn(x, self.gamma.value, self.beta.value)
    L.UpstreamBatchNorm.call = call


def install_folded_bn():
    """`batch` / `update` statistics folded into one scale and shift per channel (autodiff)."""
    orig = L.UpstreamBatchNorm.call

    def call(self, x, mode="moving"):
        if mode != "batch":
            return orig(self, x, mode)
        dtype = x.dtype
        xs = x if dtype == tf.float32 else tf.cast(x, tf.float32)
        mean, var = tf.nn.moments(xs, axes=[0, 1, 2])
        inv = tf.math.rsqrt(var + self.epsilon) * self.gamma.value
        shift = self.beta.value - mean * inv
        return x * tf.cast(inv, dtype) + tf.cast(shift, dtype)
    L.UpstreamBatchNorm.call = call
