"""The power iteration that finds the virtual adversarial direction.

The perturbation space is anything a ``forward(r) -> logits`` callable accepts:
the input (VAT), a VAE latent or Glow's (y, z) (LVAT). ``r`` may be a single
tensor or a list of tensors; each part is normalised per sample on its own
(upstream LVAT-Glow normalises y and z separately).

Two ways to get H·d, H the Hessian of KL(p_clean || p(r)) at r = 0:

* ``finite_difference`` (upstream): the gradient of the KL at r = xi·d.
  At upstream's xi = 1e-6 in float32 the input-space direction is mostly
  rounding noise (x + xi·d equals x in most pixels); this stays the default
  for fidelity and :func:`xi_resolution_warning` says when it bites.
* ``exact``: the Hessian-vector product by autodiff. No xi, well defined in
  float32 and mixed precision. Where the reference is the unperturbed output
  (VAT, MAT) the KL's logit gradient vanishes at r = 0 and H = J^T H_z J
  exactly: one forward-mode pass and one reverse pass
  (:func:`_gauss_newton_hvp`); the forward-mode pass is the caller's
  ``linearize`` when it gives one (the classifier's own, about two forward
  passes; TensorFlow's generic forward mode costs about three on Conv-Large). LVAT (``first_order``) needs the full
  forward-over-reverse product; across tf.distribute replicas a
  reverse-over-reverse one (the all-reduce has no forward-mode rule).
"""
from typing import Callable, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from lvat_tf.losses import kl_divergence_with_logits, normalize_per_sample
from lvat_tf import distribute

Tensors = Union[tf.Tensor, Sequence[tf.Tensor]]
MODES = ("finite_difference", "exact")


def _as_list(t):
    return (list(t), True) if isinstance(t, (list, tuple)) else ([t], False)


def _restore(parts, was_list):
    return parts if was_list else parts[0]


def power_iteration(forward: Callable[[Tensors], tf.Tensor], clean_logits: tf.Tensor,
                    d_init: Tensors, xi: float = 1e-6, num_iterations: int = 1,
                    mode: str = "finite_difference", first_order: bool = False,
                    linearize: Optional[Callable[[tf.Tensor, tf.Tensor],
                                                 Tuple[tf.Tensor, tf.Tensor]]] = None
                    ) -> Tensors:
    """Runs the power iteration and returns the unnormalised direction.

    Args:
      forward: maps a perturbation (same structure as ``d_init``) to logits
        (B, K); it must add the perturbation to a fixed point itself.
      clean_logits: (B, K) the reference logits (gradient is stopped here).
      d_init: the random start, (B, ...) or a list of such tensors.
      xi: finite-difference scale (``finite_difference`` only).
      num_iterations: power-iteration steps (upstream ``num_power_iterations``).
      mode: ``finite_difference`` or ``exact``.
      first_order: ``exact`` only. When the clean reference is not the
        unperturbed output (LVAT: p(y|x) vs p(y|Dec(Enc(x)))), the KL has a
        non-zero gradient at r = 0 and upstream's finite difference returns
        grad(0) + xi*H*d; with ``first_order`` the exact mode returns that
        same quantity without rounding. For VAT grad(0) is zero in exact
        arithmetic and only rounding noise in float32, so it is left out.
      linearize: ``exact`` only, a single-tensor perturbation: ``(r, t) ->
        (forward(r), J t)`` (J = d forward / d r); used for the Gauss-Newton
        product's forward-mode pass instead of TensorFlow's forward mode.

    Returns:
      The final gradient / Hessian-vector product, same structure as
      ``d_init``, gradient-stopped. Callers normalise it (:func:`scale_to_epsilon`).
    """
    if mode not in MODES:
        raise ValueError(f"power iteration mode must be one of {MODES}, got {mode!r}")
    clean = tf.stop_gradient(clean_logits)
    parts, was_list = _as_list(d_init)
    for _ in range(num_iterations):
        if mode == "finite_difference":
            parts = [xi * normalize_per_sample(p) for p in parts]
            with tf.GradientTape() as tape:
                tape.watch(parts)
                dist = kl_divergence_with_logits(clean, forward(_restore(parts, was_list)))
            parts = [tf.stop_gradient(g) for g in tape.gradient(dist, parts)]
        else:
            tangents = [normalize_per_sample(p) for p in parts]
            zeros = [tf.zeros_like(p) for p in parts]
            if distribute.sync_context() is None and not first_order:
                hvps = _gauss_newton_hvp(forward, zeros, tangents, was_list,
                                         None if was_list else linearize)
            elif distribute.sync_context() is None:
                grads, hvps = _forward_over_reverse_hvp(forward, clean, zeros, tangents, was_list)
            else:
                # Across replicas the synchronised BN statistics couple the
                # samples through an all-reduce, which has a gradient but no
                # forward-mode rule (the JVP silently drops the coupling:
                # cosine 0.57 to the single-device direction, measured). H·d
                # by reverse-over-reverse instead: d/dr <grad KL(r), d>.
                with tf.GradientTape() as outer:
                    outer.watch(zeros)
                    with tf.GradientTape() as tape:
                        tape.watch(zeros)
                        dist = kl_divergence_with_logits(clean, forward(_restore(zeros, was_list)))
                    grads = tape.gradient(dist, zeros)
                    dot = tf.add_n([tf.reduce_sum(g * t) for g, t in zip(grads, tangents)])
                hvps = outer.gradient(dot, zeros, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            if first_order:
                hvps = [g + xi * h for g, h in zip(grads, hvps)]
            parts = [tf.stop_gradient(h) for h in hvps]
    return _restore(parts, was_list)


def _forward_over_reverse_hvp(forward, clean, zeros, tangents, was_list):
    """(grad, H·d) of KL(clean || forward(r)) at r = 0: a tangent pass over the gradient."""
    with tf.autodiff.ForwardAccumulator(zeros, tangents) as acc:
        with tf.GradientTape() as tape:
            tape.watch(zeros)
            dist = kl_divergence_with_logits(clean, forward(_restore(zeros, was_list)))
        grads = tape.gradient(dist, zeros)
    return grads, acc.jvp(grads, unconnected_gradients=tf.UnconnectedGradients.ZERO)


def _gauss_newton_hvp(forward, zeros, tangents, was_list, linearize=None):
    """H·d for H the Hessian at r = 0 of KL(p || softmax(forward(r))) where p = softmax(forward(0)).

    There the KL's gradient with respect to the logits vanishes, so the
    Hessian is exactly J^T H_z J (J = d logits / d r, H_z the KL's Hessian in
    the logits, per sample (diag(q) - q q^T) / B): one forward-mode pass
    (J d), a K x K product in float32, one reverse pass (J^T u). About one
    forward pass more than a finite difference, against forward-over-reverse's
    tangent pass through the whole backward pass (measured on Conv-Large,
    32+128 images: 1.76x the finite-difference step the other way). J d comes
    from ``linearize`` (one tensor) when given, else from TensorFlow's forward mode.
    """
    with tf.GradientTape() as tape:
        tape.watch(zeros)
        if linearize is not None:
            logits, jd = linearize(zeros[0], tangents[0])
        else:
            with tf.autodiff.ForwardAccumulator(zeros, tangents) as acc:
                logits = forward(_restore(zeros, was_list))
            jd = acc.jvp(logits, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    q = tf.nn.softmax(tf.cast(logits, tf.float32))
    v = tf.cast(jd, tf.float32)
    b = tf.cast(tf.shape(q)[0], tf.float32)
    u = (q * v - q * tf.reduce_sum(q * v, axis=-1, keepdims=True)) / b
    return tape.gradient(logits, zeros, output_gradients=tf.cast(tf.stop_gradient(u), logits.dtype),
                         unconnected_gradients=tf.UnconnectedGradients.ZERO)


def scale_to_epsilon(g: Tensors, epsilon: float) -> Tensors:
    """r = epsilon · normalize(g), per part; ``||r_part|| = epsilon`` per sample."""
    parts, was_list = _as_list(g)
    return _restore([epsilon * normalize_per_sample(p) for p in parts], was_list)


def xi_resolution_warning(xi: float, sample_shape, input_abs_max: float) -> Union[str, None]:
    """Says when xi·d vanishes below float32 resolution of the inputs.

    A unit-norm direction over D values has entries of typical size
    1/sqrt(D); when xi/sqrt(D) is below the float32 spacing of the inputs'
    magnitude, x + xi·d rounds back to x in most entries and the
    finite-difference direction is noise.

    Returns:
      A one-line warning, or None when xi is large enough.
    """
    dim = int(np.prod(sample_shape))
    typical = xi / np.sqrt(dim)
    ulp = float(np.spacing(np.float32(input_abs_max)))
    if typical < ulp:
        return (f"--xi={xi:g}: xi*d has entries of about {typical:.2g}, below the float32 "
                f"resolution {ulp:.2g} of inputs of magnitude {input_abs_max:g}; the "
                "finite-difference VAT direction is dominated by rounding "
                "(use --power_iteration=exact for a well-defined direction)")
    return None
