"""Building blocks with upstream (vat_tf ``layers.py``) semantics.

* :class:`UpstreamBatchNorm` has the three modes VAT needs, which Keras'
  ``BatchNormalization`` lacks (its ``training=True`` always updates the moving
  statistics, so every perturbed pass of a VAT step would move them).
* :func:`stateless_dropout` draws its mask from an explicit seed, so the
  clean, xi*d and r unlabeled passes of one step can share a mask (as the TF1
  graph does by construction) and a resumed run replays the same masks.
"""
import math
import random

import keras
import tensorflow as tf

from lvat_tf import distribute

#: Batch-norm modes. ``update``: batch statistics and moving-average update
#: (the labeled pass); ``batch``: batch statistics, no update (every unlabeled
#: and perturbed pass); ``moving``: inference with the moving statistics.
BN_MODES = ("update", "batch", "moving")

#: Kernel initializers of the batch-norm classifiers (``--kernel_init``).
#: ``upstream``: vat_tf's truncated normal with stddev sqrt(1.3 * 2 / fan_in)
#: (:class:`UpstreamVarianceScaling`); ``glorot``: Keras' default Glorot uniform,
#: limit sqrt(6 / (fan_in + fan_out)) (what ``../shared/tools/minimal_vat_mlp.py``
#: uses unless told ``INIT=he``).
KERNEL_INITS = ("upstream", "glorot")


@keras.saving.register_keras_serializable("lvat_tf")
class UpstreamVarianceScaling(keras.initializers.Initializer):
    """TF1 ``variance_scaling_initializer(factor=2, FAN_IN, uniform=False)``.

    TF1 draws a normal truncated at two standard deviations with
    stddev = sqrt(1.3 * factor / fan_in) (the 1.3 roughly undoes the
    truncation). Keras' ``VarianceScaling`` uses 0.8796 instead of 1/sqrt(1.3),
    so the port uses its own initializer to keep upstream's scale exactly.
    """

    def __init__(self, factor: float = 2.0, seed=None):
        self.factor = factor
        # One initializer per layer; its seed comes from Python's RNG, which
        # keras.utils.set_random_seed(config.seed) makes reproducible.
        self.seed = seed if seed is not None else random.randint(1, 2**31 - 1)

    def __call__(self, shape, dtype=None):
        fan_in = math.prod(shape[:-1]) if len(shape) > 1 else shape[0]
        stddev = math.sqrt(1.3 * self.factor / fan_in)
        return keras.random.truncated_normal(shape, stddev=stddev, dtype=dtype, seed=self.seed)

    def get_config(self):
        return {"factor": self.factor, "seed": self.seed}


def kernel_initializer(kind: str = "upstream") -> keras.initializers.Initializer:
    """A fresh initializer of one of :data:`KERNEL_INITS`, seeded from Python's RNG.

    One per layer, so that ``keras.utils.set_random_seed`` (``--seed`` or
    ``--init_seed``) makes every layer's draw reproducible for both kinds.
    """
    if kind == "upstream":
        return UpstreamVarianceScaling()
    if kind == "glorot":
        return keras.initializers.GlorotUniform(seed=random.randint(1, 2**31 - 1))
    raise ValueError(f"kernel initializer must be one of {'|'.join(KERNEL_INITS)}, got {kind!r}")


@keras.saving.register_keras_serializable("lvat_tf")
class UpstreamBatchNorm(keras.layers.Layer):
    """Batch norm over all axes but the last, with upstream's numerics.

    eps 1e-6 (Keras: 1e-3), decay 0.99, biased batch variance for the
    normalisation but ``n/(n-1)`` times it in the moving average (n = number of
    values averaged per channel), moving mean 0 / variance 1 at start,
    gradients flowing through the batch statistics.

    Input: (B, ..., C). Output: same shape.
    """

    def __init__(self, decay: float = 0.99, epsilon: float = 1e-6, use_affine: bool = True,
                 **kwargs):
        super().__init__(**kwargs)
        self.decay = decay
        self.epsilon = epsilon
        self.use_affine = use_affine

    def build(self, input_shape):
        c = int(input_shape[-1])
        # only_first_replica: updated inside the (replicated) step with the
        # synchronised statistics, equal on every replica (lvat_tf/distribute.py).
        # autocast=False: under mixed precision the layer reads its float32
        # variables as float32 (Keras would hand it bfloat16 copies); the fused
        # op wants float32 scale / offset, and the moving averages must not be
        # rounded to bfloat16 at every update.
        self.moving_mean = self.add_weight(shape=(c,), initializer="zeros", trainable=False,
                                           name="moving_mean", aggregation="only_first_replica",
                                           autocast=False)
        self.moving_variance = self.add_weight(shape=(c,), initializer="ones", trainable=False,
                                               name="moving_variance",
                                               aggregation="only_first_replica", autocast=False)
        if self.use_affine:
            self.gamma = self.add_weight(shape=(c,), initializer="ones", name="gamma",
                                         autocast=False)
            self.beta = self.add_weight(shape=(c,), initializer="zeros", name="beta",
                                        autocast=False)

    def call(self, x, mode: str = "moving"):
        if mode not in BN_MODES:
            raise ValueError(f"batch-norm mode must be one of {BN_MODES}, got {mode!r}")
        axes = list(range(len(x.shape) - 1))
        dtype = x.dtype
        if mode != "moving" and distribute.sync_context() is None and len(x.shape) == 4 \
                and dtype in (tf.bfloat16, tf.float16):
            return self._fused_batch_statistics(x, mode)
        if mode == "moving":
            mean = tf.cast(self.moving_mean, dtype)
            var = tf.cast(self.moving_variance, dtype)
        else:
            # Statistics in float32 at least, even under mixed precision.
            xs = x if dtype in (tf.float32, tf.float64) else tf.cast(x, tf.float32)
            n = tf.cast(tf.reduce_prod(tf.shape(xs)[:-1]), xs.dtype)
            if distribute.sync_context() is None:
                mean, var = tf.nn.moments(xs, axes=axes)
            else:
                # Synchronised BN: the statistics of the global batch, in two
                # passes (mean, then centred squares) as tf.nn.moments.
                s1, n = distribute.all_reduce_sum([tf.reduce_sum(xs, axes), n])
                mean = s1 / n
                (s2,) = distribute.all_reduce_sum(
                    [tf.reduce_sum(tf.square(xs - mean), axes)])
                var = s2 / n
            if mode == "update":
                self._update_moving_averages(mean, var * n / tf.maximum(n - 1.0, 1.0))
            mean, var = tf.cast(mean, dtype), tf.cast(var, dtype)
        return self._affine((x - mean) / tf.sqrt(var + tf.cast(self.epsilon, dtype)))

    def _affine(self, z):
        """gamma * z + beta in z's dtype (z itself without the affine part)."""
        if not self.use_affine:
            return z
        return tf.cast(self.gamma, z.dtype) * z + tf.cast(self.beta, z.dtype)

    def linearize(self, x, dx, mode: str = "batch"):
        """The layer's output and its directional derivative: (y, J dx), J = dy/dx.

        A forward-mode pass for the exact power iteration's Gauss-Newton product
        (lvat_tf/regularizers/power_iteration.py) without TensorFlow's generic
        forward mode, which transposes each op's gradient and feeds every input
        without a tangent, the weights included, a tensor of zeros that it then
        multiplies through (docs/results.md, "The forward-mode pass").

        ``y`` is computed by the same ops as :meth:`call` (so a later reverse pass
        through it is the layer's own gradient). With batch statistics
        (``batch``), per channel, with x_hat = (x - mean) / s and s = sqrt(var + eps),

            J dx = gamma / s * (dx - mean(dx) - x_hat * mean(x_hat * dx)),

        the statistics' own derivatives included; this J is symmetric, so for
        half-precision convolutional activations it is the fused kernel's
        gradient applied to dx (one kernel, as the forward). ``moving``:
        J dx = gamma / sqrt(moving_var + eps) * dx.

        Args:
          x: (B, ..., C) input, in the compute dtype.
          dx: tangent, the shape and dtype of ``x``.
          mode: ``batch`` or ``moving`` (a linearisation never updates the moving
            averages: ``update`` is refused), outside tf.distribute's
            synchronised statistics.

        Returns:
          (y, dy), each the shape and dtype of ``x``.
        """
        if mode not in ("batch", "moving"):
            raise ValueError(f"batch-norm linearize mode must be batch|moving, got {mode!r}")
        if distribute.sync_context() is not None:
            raise ValueError("UpstreamBatchNorm.linearize has no synchronised-statistics form; "
                             "across replicas use reverse-mode products")
        dtype = x.dtype
        stat_dtype = dtype if dtype in (tf.float32, tf.float64) else tf.float32
        if mode == "moving":
            scale = tf.math.rsqrt(tf.cast(self.moving_variance, stat_dtype)
                                  + tf.cast(self.epsilon, stat_dtype))
            if self.use_affine:
                scale = scale * tf.cast(self.gamma, stat_dtype)
            return self.call(x, mode="moving"), dx * tf.cast(scale, dtype)
        if len(x.shape) == 4 and dtype in (tf.bfloat16, tf.float16):
            out = self._fused(x)
            y, r1, r2, r3 = out[0], out[3], out[4], out[5]
            scale = self.gamma.value if self.use_affine else tf.ones((int(x.shape[-1]),),
                                                                     tf.float32)
            dy = tf.raw_ops.FusedBatchNormGradV3(
                y_backprop=dx, x=x, scale=scale, reserve_space_1=r1, reserve_space_2=r2,
                reserve_space_3=r3, epsilon=self.epsilon, data_format="NHWC",
                is_training=True)[0]
            return y, dy
        axes = list(range(len(x.shape) - 1))
        xs = tf.cast(x, stat_dtype)
        # The output as call() computes it (one source of its numerics); the graph
        # optimiser merges the two identical moment computations.
        y = self.call(x, mode="batch")
        mean, var = tf.nn.moments(xs, axes=axes)
        dxs = tf.cast(dx, xs.dtype)
        inv = tf.math.rsqrt(var + tf.cast(self.epsilon, xs.dtype))
        x_hat = (xs - mean) * inv
        dz = (dxs - tf.reduce_mean(dxs, axes) - x_hat * tf.reduce_mean(x_hat * dxs, axes)) * inv
        if self.use_affine:
            dz = tf.cast(self.gamma, dz.dtype) * dz
        return y, tf.cast(dz, dtype)

    def _fused_batch_statistics(self, x, mode):
        """The ``batch`` / ``update`` modes as one fused kernel (FusedBatchNormV3),
        for half-precision inputs (mixed precision) only.

        Same maths as the unfused path (biased batch variance in the
        normalisation, gradients through the statistics, float32 statistics
        for bfloat16 inputs); the op's second output is already the unbiased
        ``n/(n-1)`` variance that upstream's moving average takes. Why: the
        unfused path is about six element-wise passes over every activation
        and as many in the backward pass; on Conv-Large under bfloat16 they
        cost more than the convolutions (docs/results.md, 'bfloat16 where it
        pays'). Why not in float32: with oneDNN on (TensorFlow's CPU default)
        the fused kernel's gradient differs from the exact one by ~1e-3
        relative (1e-2 in one Conv-Large layer; 1e-6 with oneDNN off), which
        breaks the six-step upstream training fixture; in bfloat16 that is
        below the format's resolution (4e-3). The raw op is called because
        ``tf.nn.fused_batch_norm`` raises epsilon to 1.001e-5 (a cuDNN
        limit); upstream's 1e-6 is kept. Not used across replicas (the
        statistics there are the global batch's).

        Convolutional activations only: on (B, C) activations (the MLP),
        reshaped to (B, 1, 1, C), the fused kernel made the bfloat16 VAT step
        about twice as slow (79-97 against 35-41 ms, MLP at 32+128, three
        alternating pairs on an AMX Xeon), so dense layers keep the unfused path.

        Args:
          x: (B, H, W, C).
          mode: ``batch`` or ``update``.

        Returns:
          Same shape and dtype as ``x``.
        """
        y, mean, unbiased = self._fused(x)[:3]
        if mode == "update":
            self._update_moving_averages(mean, unbiased)
        return y

    def _fused(self, x):
        """FusedBatchNormV3 in training mode on (B, H, W, C): its six outputs (y, batch mean,
        unbiased batch variance, the three reserve spaces its gradient kernel takes)."""
        c = int(x.shape[-1])
        if self.use_affine:
            scale, offset = self.gamma.value, self.beta.value
        else:
            scale, offset = tf.ones((c,), tf.float32), tf.zeros((c,), tf.float32)
        empty = tf.constant([], tf.float32)
        return tf.raw_ops.FusedBatchNormV3(
            x=x, scale=scale, offset=offset, mean=empty, variance=empty,
            epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC",
            is_training=True)

    def _update_moving_averages(self, mean, unbiased_var):
        """Upstream's moving averages, m <- decay m + (1 - decay) batch statistic, computed
        in the statistics' dtype (float32 at least) and stored in the variables' (C,)."""
        d = tf.cast(self.decay, mean.dtype)
        for var, stat in ((self.moving_mean, mean), (self.moving_variance, unbiased_var)):
            var.assign(tf.cast(d * tf.cast(var, mean.dtype) + (1 - d) * tf.stop_gradient(stat),
                               var.dtype))

    def get_config(self):
        cfg = super().get_config()
        cfg.update(decay=self.decay, epsilon=self.epsilon, use_affine=self.use_affine)
        return cfg


def stateless_dropout(x: tf.Tensor, keep_prob: float, seed: tf.Tensor) -> tf.Tensor:
    """Element-wise inverted dropout (TF1 ``tf.nn.dropout(keep_prob=)``).

    Args:
      x: any shape.
      keep_prob: probability of keeping a unit; kept units are scaled 1/keep_prob.
      seed: int32/int64 shape-(2,) stateless seed. The same seed and shape give
        the same mask.
    """
    if keep_prob >= 1.0:
        return x
    # Drawn for the global batch and sliced per replica under tf.distribute.
    u = distribute.replica_random(tf.random.stateless_uniform, tf.shape(x), seed)
    mask = tf.cast(tf.floor(keep_prob + u), x.dtype)
    return x * mask / tf.cast(keep_prob, x.dtype)


def fold_seed(seed: tf.Tensor, salt: int) -> tf.Tensor:
    """A new shape-(2,) stateless seed derived from ``seed`` and an integer."""
    return tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), salt)


def forward_mode_linearize(fn, x, tangent, **kwargs):
    """(fn(x, **kwargs), its directional derivative along ``tangent``) by TensorFlow's
    forward mode: correct for any ``fn``, but about three forward passes per convolution
    where the explicit passes below cost two (docs/results.md, "The forward-mode pass")."""
    with tf.autodiff.ForwardAccumulator(x, tangent) as acc:
        out = fn(x, **kwargs)
    return out, acc.jvp(out, unconnected_gradients=tf.UnconnectedGradients.ZERO)


# Forward passes with a tangent (``dh``), for Classifier.linearize: each returns
# (output, its directional derivative), or (output, None) when ``dh`` is None, in
# which case the output is computed by exactly the ops of the plain forward pass.

def dual_batch_norm(bn: "UpstreamBatchNorm", h, dh, mode):
    """(bn(h, mode), J dh); see :meth:`UpstreamBatchNorm.linearize`."""
    if dh is None:
        return bn(h, mode=mode), None
    return bn.linearize(h, dh, mode)


def dual_leaky_relu(h, dh, alpha):
    """(leaky_relu(h), dh * (1 where h > 0 else alpha)): TensorFlow's own derivative
    (its gradient kernel, so the choice at h = 0 matches the reverse pass)."""
    y = tf.nn.leaky_relu(h, alpha=alpha)
    if dh is None:
        return y, None
    return y, tf.raw_ops.LeakyReluGrad(gradients=dh, features=h, alpha=alpha)


def dual_relu(h, dh):
    """(relu(h), dh where h > 0 else 0), TensorFlow's derivative as :func:`dual_leaky_relu`."""
    y = tf.nn.relu(h)
    if dh is None:
        return y, None
    return y, tf.raw_ops.ReluGrad(gradients=dh, features=h)


def dual_max_pool(h, dh, size: int = 2, padding: str = "SAME"):
    """(size x size / size max-pool of h, dh taken where each window's maximum is).

    The tangent is ``MaxPoolGradGrad``, the kernel TensorFlow's own forward mode
    uses for this op, so ties are broken as in the reverse pass."""
    y = tf.nn.max_pool2d(h, size, size, padding=padding)
    if dh is None:
        return y, None
    window = [1, size, size, 1]
    return y, tf.raw_ops.MaxPoolGradGrad(orig_input=h, orig_output=y, grad=dh, ksize=window,
                                         strides=window, padding=padding)


def dense_tangent(layer: keras.layers.Dense, dh):
    """J dh of a Dense layer: dh @ kernel in dh's dtype (the bias has no derivative).

    Args:
      layer: a built Dense layer.
      dh: (B, D_in) tangent in the compute dtype; None passes through.
    """
    if dh is None:
        return None
    return tf.matmul(dh, tf.cast(layer.kernel, dh.dtype))
