"""LVAT: VAT in the latent space of a frozen generative model (geosada/LVAT ``vat.py``).

LVAT-VAE: z = Enc_mu(x) (VAE in inference mode); the power iteration runs in z
through x' = Dec(z + d); r = epsilon * normalize(g), ||r|| = epsilon per sample;
loss = KL(stop_gradient(p(y|x)) || p(y|Dec(z + r))). The clean reference is the
classifier on the *original* x, as upstream. The generative weights are
frozen: they are not classifier variables, so the optimizer never sees them,
and the VAE runs with training=False (its BN statistics never move).

LVAT-Glow: (y, z) = Glow(x + dequantisation noise); the power iteration runs
on both parts at once through x' = Dec(y + d_y, z + d_z), each part started
from its own xi-normalised draw, and r_y, r_z are normalised *separately*
(||r_y|| = ||r_z|| = epsilon, joint norm sqrt(2)*epsilon), as upstream. Dec
re-quantises to 5 bits with a straight-through floor, so the direction comes
from that gradient. Upstream's clean unlabeled pass happens to use another
dropout mask than the two perturbed passes (a TF1 seeding side effect of
importing Glow.py, upstream.md B.6); ours share one mask in all three, as for
VAT and LVAT-VAE.
"""
import abc
import contextlib
import dataclasses
import functools

import tensorflow as tf

from lvat_tf.losses import kl_divergence_with_logits
from lvat_tf.regularizers.base import (Regularizer, joint_consistency, joint_forward,
                                       joint_reference_logits)
from lvat_tf.regularizers.power_iteration import power_iteration, scale_to_epsilon
from lvat_tf.distribute import replica_random


#: ``--lvat_reference``: the clean target of the KL. ``input`` = upstream's
#: p(y|x); ``reconstruction`` = p(y|Dec(Enc(x))), under which the term is
#: exactly zero at r = 0 (ours; docs/methods.md "LVAT", docs/results.md "Training dynamics").
REFERENCES = ("input", "reconstruction")

# ``--lvat_bn`` (base.PERTURBED_BN_MODES): with ``batch`` (upstream) the perturbed
# pass is normalised with the statistics of a batch made only of decoded images.
# ``moving`` was measured to collapse (the weights can make the moving-statistics
# function constant while the batch-statistics one, which the labels train, still
# fits them); kept to reproduce that.


def _as(decoded, x):
    """A decode in x's dtype: a bfloat16 decoder's images join float32 inputs (joint BN
    batches, the reference) and enter the classifier like x (exact in float32)."""
    return tf.cast(decoded, x.dtype)


def lvat_vae_perturbation(forward, vae, x, clean_logits, d_init, epsilon, xi=1e-6,
                          num_power_iterations=1, mode="finite_difference", first_order=True,
                          decoder=None):
    """Returns (z, r): the latent code (B, latent) and its perturbation, gradient-stopped.

    ``first_order``: the reference is not Dec(Enc(x))'s output (upstream's
    p(y|x)), so the KL's gradient at r = 0 is part of the direction.
    ``decoder``: the model whose ``decode`` the search runs through (a bfloat16
    copy of ``vae``, ``--generative_dtype``); None: ``vae`` itself. z and r
    stay float32 either way.
    """
    decoder = vae if decoder is None else decoder
    z = tf.stop_gradient(vae.encode(x, training=False)[0])
    g = power_iteration(lambda d: forward(_as(decoder.decode(z + d, training=False), x)),
                        clean_logits, d_init, xi=xi, num_iterations=num_power_iterations, mode=mode,
                        first_order=first_order)
    return z, tf.stop_gradient(scale_to_epsilon(g, epsilon))


@dataclasses.dataclass(frozen=True, eq=False)
class _LatentVAT(Regularizer, abc.ABC):
    """VAT in a frozen generative model's latent space; subclasses find x_adv.

    Attributes:
      model: the frozen generative model (VAE or Glow); it encodes.
      decoder: the model that decodes (the direction search, x_adv, the
        reconstruction): a copy of ``model`` computing in bfloat16
        (``--generative_dtype=bfloat16``), or None for ``model`` itself.
      reference: ``input`` (upstream: KL(p(y|x) || p(y|x_adv)), non-zero at
        r = 0 by the reconstruction gap) or ``reconstruction``
        (KL(p(y|Dec(Enc(x))) || p(y|x_adv)), zero at r = 0).
      bn: ``batch`` (upstream), ``joint`` or ``moving`` (base.PERTURBED_BN_MODES): the
        BN statistics of the term's reference, direction-search and perturbed
        passes; with ``joint`` and ``moving`` the step's shared clean pass is
        not the reference: the reference is recomputed beside each perturbed
        input (``joint``: halves of one batch; with dropout the two halves
        draw independent masks) or with the moving averages.
    """

    model: object
    epsilon: float
    xi: float = 1e-6
    num_power_iterations: int = 1
    power_iteration: str = "finite_difference"
    name: str = "lvat_loss"
    needs_clean_grad: bool = False
    reference: str = "input"
    bn: str = "batch"
    decoder: object = None

    @property
    def decoding_model(self):
        """The model whose ``decode`` makes x_adv and the reconstruction."""
        return self.decoder if self.decoder is not None else self.model

    @abc.abstractmethod
    def adversarial_input(self, forward, x, clean_logits, seed):
        """x_adv = Dec(latent(x) + r), (B, H, W, C); each generative model defines it."""

    @abc.abstractmethod
    def reconstruction(self, x, seed):
        """Dec(Enc(x)), (B, H, W, C), with the latent point adversarial_input perturbs."""

    @property
    def first_order(self) -> bool:
        """Whether the KL has a gradient at r = 0 (the reference is not Dec(Enc(x))'s output)."""
        return self.reference == "input"

    def unlabeled_loss(self, forward, x, clean_logits, seed, no_record=contextlib.nullcontext,
                       clean_features=None):
        del clean_features
        if self.bn == "joint":
            return self._joint_loss(forward, x, seed, no_record)
        if self.bn == "moving":
            forward = functools.partial(forward, bn_mode="moving")
        with no_record():
            if self.reference == "input" and self.bn == "moving":
                clean_logits = tf.stop_gradient(forward(x))
            if self.reference == "reconstruction":
                clean_logits = tf.stop_gradient(forward(self.reconstruction(x, seed)))
            x_adv = tf.stop_gradient(self.adversarial_input(forward, x, clean_logits, seed))
        loss = kl_divergence_with_logits(tf.stop_gradient(clean_logits), forward(x_adv))
        return loss, {self.name: loss}

    def _joint_loss(self, forward, x, seed, no_record):
        """``bn="joint"``: reference and perturbed inputs normalised together in one batch."""
        with no_record():
            x_rec = tf.stop_gradient(self.reconstruction(x, seed))
            ref_in = x if self.reference == "input" else x_rec
            # The direction's reference: the reference input's logits beside r = 0's input.
            start = joint_reference_logits(forward, ref_in, x_rec)
            x_adv = tf.stop_gradient(self.adversarial_input(joint_forward(forward, ref_in), x,
                                                            start, seed))
        loss = joint_consistency(forward, ref_in, x_adv)
        return loss, {self.name: loss}


class LVATVAE(_LatentVAT):
    """The LVAT-VAE regulariser; ``model`` is a frozen :class:`VAE`."""

    def adversarial_input(self, forward, x, clean_logits, seed):
        d = replica_random(tf.random.stateless_normal, [tf.shape(x)[0], self.model.latent_dim],
                           seed, x.dtype)
        z, r = lvat_vae_perturbation(forward, self.model, x, clean_logits, d, self.epsilon,
                                     self.xi, self.num_power_iterations, self.power_iteration,
                                     first_order=self.first_order, decoder=self.decoder)
        return _as(self.decoding_model.decode(z + r, training=False), x)

    def reconstruction(self, x, seed):
        del seed  # z = Enc_mu(x): deterministic
        z = self.model.encode(x, training=False)[0]
        return _as(self.decoding_model.decode(z, training=False), x)


def lvat_glow_perturbation(forward, glow, x, clean_logits, d_init, epsilon, xi=1e-6,
                           num_power_iterations=1, mode="finite_difference", noise=None,
                           seed=None, first_order=True, decoder=None):
    """Returns ((y, z), [r_y, r_z]), all gradient-stopped (float32).

    Args:
      forward: images (B, H, W, C) in [0, 1] -> logits (B, K).
      glow: a frozen :class:`lvat_tf.generative.glow.Glow`.
      x: (B, H, W, C) images in [0, 1].
      d_init: [d_y, d_z], raw draws of the latents' shapes.
      noise / seed: the encoder's dequantisation noise, or a stateless seed for it.
      decoder: the flow whose ``decode`` the search runs through (a bfloat16 copy of
        ``glow``, ``--generative_dtype``); None: ``glow``. The encoder (and its
        log-det) stay ``glow``'s.
    """
    decoder = glow if decoder is None else decoder
    y, _, z = glow.encode(x, noise=noise, seed=seed)
    y, z = tf.stop_gradient(y), tf.stop_gradient(z)
    g = power_iteration(lambda d: forward(_as(decoder.decode(y + d[0], z + d[1]), x)),
                        clean_logits, list(d_init), xi=xi, num_iterations=num_power_iterations,
                        mode=mode, first_order=first_order)
    r = [tf.stop_gradient(t) for t in scale_to_epsilon(g, epsilon)]
    return (y, z), r


class LVATGlow(_LatentVAT):
    """The LVAT-Glow regulariser; ``model`` is a frozen :class:`Glow`."""

    def adversarial_input(self, forward, x, clean_logits, seed):
        b = tf.shape(x)[0]
        (hy, wy, cy), (hz, wz, cz) = self.model.latent_shapes
        fold = tf.random.experimental.stateless_fold_in
        d = [replica_random(tf.random.stateless_normal, [b, hy, wy, cy], fold(seed, 1), x.dtype),
             replica_random(tf.random.stateless_normal, [b, hz, wz, cz], fold(seed, 2), x.dtype)]
        (y, z), (r_y, r_z) = lvat_glow_perturbation(
            forward, self.model, x, clean_logits, d, self.epsilon, self.xi,
            self.num_power_iterations, self.power_iteration, seed=fold(seed, 3),
            first_order=self.first_order, decoder=self.decoder)
        return _as(self.decoding_model.decode(y + r_y, z + r_z), x)

    def reconstruction(self, x, seed):
        # The same dequantisation noise as adversarial_input's encoding: Dec(y, z)
        # is then the 5-bit image of x that x_adv perturbs (not x itself).
        y, _, z = self.model.encode(x, seed=tf.random.experimental.stateless_fold_in(seed, 3))
        return _as(self.decoding_model.decode(y, z), x)
