"""LVAT: VAT in the latent space of a frozen generative model (geosada/LVAT ``vat.py``).

LVAT-VAE: z = Enc_mu(x) (VAE in inference mode); the power iteration runs in z
through x' = Dec(z + d); r = epsilon * normalize(g), ||r|| = epsilon per sample;
loss = KL(stop_gradient(p(y|x)) || p(y|Dec(z + r))). The clean reference is the
classifier on the *original* x, as upstream. The generative weights are
frozen: they are not classifier variables, so the optimizer never sees them,
and the VAE runs with training=False (its BN statistics never move).
"""
import contextlib
import dataclasses

import tensorflow as tf

from lvat_tf.losses import kl_divergence_with_logits
from lvat_tf.regularizers.power_iteration import power_iteration, scale_to_epsilon


def lvat_vae_perturbation(forward, vae, x, clean_logits, d_init, epsilon, xi=1e-6,
                          num_power_iterations=1, mode="finite_difference"):
    """Returns (z, r): the latent code (B, latent) and its perturbation, gradient-stopped."""
    z = tf.stop_gradient(vae.encode(x, training=False)[0])
    g = power_iteration(lambda d: forward(vae.decode(z + d, training=False)), clean_logits,
                        d_init, xi=xi, num_iterations=num_power_iterations, mode=mode,
                        first_order=True)
    return z, tf.stop_gradient(scale_to_epsilon(g, epsilon))


@dataclasses.dataclass(frozen=True, eq=False)
class LVATVAE:
    """The LVAT-VAE regulariser; ``vae`` is a frozen :class:`VAE`."""

    vae: object
    epsilon: float
    xi: float = 1e-6
    num_power_iterations: int = 1
    power_iteration: str = "finite_difference"
    name: str = "lvat_loss"
    needs_clean_grad: bool = False

    def __call__(self, forward, x, clean_logits, seed, no_record=contextlib.nullcontext):
        with no_record():
            d = tf.random.stateless_normal([tf.shape(x)[0], self.vae.latent_dim], seed=seed,
                                           dtype=x.dtype)
            z, r = lvat_vae_perturbation(forward, self.vae, x, clean_logits, d, self.epsilon,
                                         self.xi, self.num_power_iterations,
                                         self.power_iteration)
            x_adv = tf.stop_gradient(self.vae.decode(z + r, training=False))
        loss = kl_divergence_with_logits(tf.stop_gradient(clean_logits), forward(x_adv))
        return loss, {self.name: loss}
