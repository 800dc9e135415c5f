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
import dataclasses

from lvat_tf.regularizers.lvat import _LatentVAT
from lvat_tf.regularizers.mat import MAT


@dataclasses.dataclass(frozen=True, eq=False)
class LatentMAT(MAT):
    """MAT whose adversarial input comes from ``latent`` (an LVAT-VAE or LVAT-Glow searcher).

    Attributes (beyond MAT's):
      latent: the :class:`~lvat_tf.regularizers.lvat._LatentVAT` whose
        ``adversarial_input`` runs the latent power iteration and decodes x_adv;
        its epsilon / xi / power-iteration settings are the ones used.
    """

    latent: _LatentVAT = None

    def adversarial_input(self, forward, x, clean_logits, clean_features, clean_joint, seed):
        """Dec(latent(x) + r) from the latent searcher, run on MAT's joint KL."""
        del clean_logits, clean_features
        return self.latent.adversarial_input(self.joint_forward(forward), x, clean_joint, seed)
