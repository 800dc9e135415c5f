"""MAT with the perturbation found in a generative model's latent space (LVAT x MAT; ours).

``--method=lvat_vae_mat`` / ``lvat_glow_mat``: MAT's output + manifold
smoothness S_i = KL(joint(x_i) || joint(x_adv,i)) (joint = the classifier's
p(y|x) times the Gaussian mixture's posterior over its features, MAT Eq. 9),
with x_adv = Dec(latent(x) + r) found by LVAT's power iteration on S in the
latent space (||r|| = epsilon per part, as LVAT), and MAT's information term
on the labeled batch. Neither paper has this combination: it is here to show
that a regulariser composes from the existing parts (README "Adding a method").
The clean target is the joint at x itself (LVAT's ``input`` reference).
"""
import contextlib
import dataclasses

import tensorflow as tf

from lvat_tf.regularizers.lvat import _LatentVAT
from lvat_tf.regularizers.mat import MAT, joint_logits, per_sample_kl, smoothness_term


@dataclasses.dataclass(frozen=True, eq=False)
class LatentMAT(MAT):
    """MAT whose adversarial input comes from ``latent`` (an LVAT-VAE or LVAT-Glow searcher).

    Attributes (beyond MAT's):
      latent: the :class:`~lvat_tf.regularizers.lvat._LatentVAT` whose
        ``adversarial_input`` runs the latent power iteration and decodes x_adv;
        its epsilon / xi / power-iteration settings are the ones used.
    """

    latent: _LatentVAT = None

    def unlabeled_loss(self, forward, x, clean_logits, seed, no_record=contextlib.nullcontext,
                       clean_features=None):
        if self.lambda1 == 0:
            return tf.constant(0.0), {self.name: tf.constant(0.0)}

        def joint_forward(images):  # (B, H, W, C) -> joint logits (B, K*M)
            f, lg = forward(images, features=True)
            return joint_logits(lg, self.gmm.posterior_logits(f))

        with no_record():
            if clean_features is None:
                clean_features, clean_logits = forward(x, features=True)
            clean = tf.stop_gradient(joint_logits(clean_logits,
                                                  self.gmm.posterior_logits(clean_features)))
            x_adv = tf.stop_gradient(self.latent.adversarial_input(joint_forward, x, clean,
                                                                   seed))
        s = per_sample_kl(clean, joint_forward(x_adv))  # L_KL + M_KL at the latent x_adv
        loss = self.lambda1 * smoothness_term(s, self.smoothness)
        return loss, {self.name: loss, "smoothness": tf.reduce_mean(s)}
