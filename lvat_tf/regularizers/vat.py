"""Consistency regularisers on the unlabeled batch: VAT and entropy minimisation.

Both are :class:`~lvat_tf.regularizers.base.Regularizer` subclasses (the
interface, ``forward`` and ``no_record`` are described there).
"""
import contextlib
import dataclasses

import tensorflow as tf

from lvat_tf.losses import entropy_from_logits, kl_divergence_with_logits
from lvat_tf.regularizers.base import (Regularizer, as_forward, joint_consistency,
                                       joint_forward, joint_reference_logits)
from lvat_tf.regularizers.power_iteration import power_iteration, scale_to_epsilon
from lvat_tf import distribute


def virtual_adversarial_perturbation(forward, x, clean_logits, d_init, epsilon, xi=1e-6,
                                     num_power_iterations=1, mode="finite_difference"):
    """r_vadv = epsilon · normalize(power-iterated direction) in input space.

    Args:
      forward: classifier on inputs, (B, ...) -> (B, K); a plain callable or a
        :class:`~lvat_tf.regularizers.base.Forward`, whose ``linearize`` the
        exact mode then uses.
      x: (B, ...) unlabeled inputs.
      clean_logits: (B, K) logits of ``forward(x)``.
      d_init: (B, ...) random normal start.
      epsilon, xi, num_power_iterations, mode: as upstream's flags.

    Returns:
      (B, ...) perturbation with L2 norm epsilon per sample, gradient-stopped.
    """
    forward = as_forward(forward)
    g = power_iteration(lambda d: forward(x + d), clean_logits, d_init, xi=xi,
                        num_iterations=num_power_iterations, mode=mode,
                        linearize=lambda d, t: forward.linearize(x + d, t))
    return tf.stop_gradient(scale_to_epsilon(g, epsilon))


def vat_loss(forward, x, clean_logits, r):
    """KL(stop_gradient(p(y|x)) || p(y|x + r)); gradient only via the perturbed pass."""
    return kl_divergence_with_logits(tf.stop_gradient(clean_logits), forward(x + r))


@dataclasses.dataclass(frozen=True, eq=False)
class VAT(Regularizer):
    """Input-space VAT (vat_tf ``vat.virtual_adversarial_loss``).

    Attributes:
      epsilon, xi, num_power_iterations, power_iteration: the direction search.
      bn: ``batch`` (upstream), ``joint`` or ``moving``
        (:data:`~lvat_tf.regularizers.base.PERTURBED_BN_MODES`): the BN
        statistics of the term's passes. With ``batch`` the perturbed batch is
        normalised with its own statistics, which absorb much of a large
        perturbation (CIFAR-10 at epsilon 10: 0.42 nats with them, 9.15 with the
        moving averages; docs/results.md). ``joint`` normalises x and x + r as
        one batch [x; x + r] (the step's shared clean pass is then not the
        reference); ``moving`` uses the moving averages for the reference, the
        search and the perturbed pass.
    """

    epsilon: float
    xi: float = 1e-6
    num_power_iterations: int = 1
    power_iteration: str = "finite_difference"
    name: str = "vat_loss"
    needs_clean_grad: bool = False
    bn: str = "batch"

    def initial_direction(self, x, seed):
        """The power iteration's random start d (B, ...): N(0, 1), keyed by the step seed."""
        return distribute.replica_random(tf.random.stateless_normal, tf.shape(x), seed, x.dtype)

    def perturbation(self, forward, x, clean_logits, seed):
        """r_vadv (B, ...), ||r|| = epsilon per sample, from :meth:`initial_direction`."""
        return virtual_adversarial_perturbation(
            forward, x, clean_logits, self.initial_direction(x, seed), self.epsilon, self.xi,
            self.num_power_iterations, self.power_iteration)

    def unlabeled_loss(self, forward, x, clean_logits, seed, no_record=contextlib.nullcontext,
                       clean_features=None):
        del clean_features
        if self.bn == "joint":
            with no_record():
                start = joint_reference_logits(forward, x, x)
                r = self.perturbation(joint_forward(forward, x), x, start, seed)
            loss = joint_consistency(forward, x, x + r)
            return loss, {self.name: loss}
        if self.bn == "moving":
            forward = as_forward(forward).with_bn_mode("moving")
            with no_record():
                clean_logits = tf.stop_gradient(forward(x))
        with no_record():
            r = self.perturbation(forward, x, clean_logits, seed)
        loss = vat_loss(forward, x, clean_logits, r)
        return loss, {self.name: loss}


@dataclasses.dataclass(frozen=True, eq=False)
class Entropy(Regularizer):
    """Entropy minimisation on the clean unlabeled pass (vat_tf ``vatent``)."""

    name: str = "ent_loss"
    needs_clean_grad: bool = True

    def unlabeled_loss(self, forward, x, clean_logits, seed, no_record=contextlib.nullcontext,
                       clean_features=None):
        del forward, x, seed, no_record, clean_features
        loss = entropy_from_logits(clean_logits)
        return loss, {self.name: loss}
