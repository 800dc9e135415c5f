"""Loss functions as pure functions of tensors (vat_tf ``layers.py`` semantics).

All reductions are batch means, as upstream. Logits may be float16/bfloat16
under mixed precision: every function computes in float32 at least.
"""
import tensorflow as tf


def _f32(x):
    x = tf.convert_to_tensor(x)
    return x if x.dtype in (tf.float32, tf.float64) else tf.cast(x, tf.float32)


def logsoftmax(logits: tf.Tensor) -> tf.Tensor:
    """Upstream's ``(x - max) - log(sum(exp(x - max)))``; (B, K) -> (B, K)."""
    logits = _f32(logits)
    xdev = logits - tf.reduce_max(logits, axis=1, keepdims=True)
    return xdev - tf.math.log(tf.reduce_sum(tf.exp(xdev), axis=1, keepdims=True))


def cross_entropy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Mean softmax cross-entropy.

    Args:
      logits: (B, K).
      labels: (B,) integer class ids.

    Returns:
      Scalar batch mean.
    """
    logits = _f32(logits)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=logits))


def kl_divergence_with_logits(q_logits: tf.Tensor, p_logits: tf.Tensor) -> tf.Tensor:
    """KL(q || p) from logits, batch mean: upstream ``kl_divergence_with_logit``.

    Args:
      q_logits: (B, K) the reference ("clean") logits. Callers pass
        ``tf.stop_gradient`` of them where upstream does.
      p_logits: (B, K) the perturbed logits.

    Returns:
      Scalar: mean_b sum_k q_k (log q_k - log p_k).
    """
    q_logits, p_logits = _f32(q_logits), _f32(p_logits)
    q = tf.nn.softmax(q_logits)
    qlogq = tf.reduce_sum(q * logsoftmax(q_logits), axis=1)
    qlogp = tf.reduce_sum(q * logsoftmax(p_logits), axis=1)
    return tf.reduce_mean(qlogq - qlogp)


def entropy_from_logits(logits: tf.Tensor) -> tf.Tensor:
    """Mean entropy -sum_k p_k log p_k of softmax(logits); (B, K) -> scalar."""
    logits = _f32(logits)
    p = tf.nn.softmax(logits)
    return -tf.reduce_mean(tf.reduce_sum(p * logsoftmax(logits), axis=1))


def normalize_per_sample(d: tf.Tensor) -> tf.Tensor:
    """Upstream ``get_normalized_vector``: unit L2 norm per sample.

    Two stages, exactly as vat_tf: divide by (1e-12 + max|d|) first, so that
    tiny gradients do not underflow when squared, then by sqrt(1e-6 + sum d^2).
    The result's norm is 1 up to the 1e-6 guard (which matters only for
    all-zero inputs).

    Args:
      d: (B, ...) any rank >= 2.

    Returns:
      Tensor of d's shape and dtype.
    """
    axes = list(range(1, len(d.shape)))
    d = d / (1e-12 + tf.reduce_max(tf.abs(d), axis=axes, keepdims=True))
    return d / tf.sqrt(1e-6 + tf.reduce_sum(tf.square(d), axis=axes, keepdims=True))


def per_sample_l2(x: tf.Tensor) -> tf.Tensor:
    """L2 norm of each sample over all non-batch axes; (B, ...) -> (B,)."""
    axes = list(range(1, len(x.shape)))
    return tf.sqrt(tf.reduce_sum(tf.square(_f32(x)), axis=axes))
