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
        z = (x - mean) / tf.sqrt(var + tf.cast(self.epsilon, dtype))
        if self.use_affine:
            z = tf.cast(self.gamma, dtype) * z + tf.cast(self.beta, dtype)
        return z

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
        c = int(x.shape[-1])
        if self.use_affine:
            scale, offset = self.gamma.value, self.beta.value
        else:
            scale, offset = tf.ones((c,), tf.float32), tf.zeros((c,), tf.float32)
        empty = tf.constant([], tf.float32)
        y, mean, unbiased, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=scale, offset=offset, mean=empty, variance=empty,
            epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC",
            is_training=True)
        if mode == "update":
            self._update_moving_averages(mean, unbiased)
        return y

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
