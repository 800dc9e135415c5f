"""MAT: manifold adversarial training (Zhang, Huang, Zhu, Liu; no public code) and center loss.

The classifier's last hidden layer f(x) is modelled by a Gaussian mixture with
one component per class, means mu_j and covariances Sigma_j estimated from the
labeled batch's features by moving averages (Algorithm 1, lines 10-13), a
uniform prior over components. From it:

* information regulariser I = mean_i log N(f(x_i) | mu_{y_i}, Sigma_{y_i})
  on the labeled batch (Eq. 8); with identity covariance it is center loss up
  to a constant (Proposition III.1), ``--method=center_loss``;
* manifold smoothness M_KL(x) = KL(q(.|f(x)) || q(.|f(x + r))), q(c|z) the
  mixture's posterior over components (the paper's coordinates u_1..u_M,
  normalised); output smoothness L_KL as in VAT; S = L_KL + M_KL;
* r maximises S by the power iteration (xi, sigma = ``--epsilon``). S is one
  KL: that between the product distributions p(y|x) x q(c|f(x)), whose
  logits are the outer sums logit_y + logit_c, so the VAT power iteration
  (both modes) runs on it unchanged;
* objective (Eq. 13): CE + lambda1 * smoothness - lambda2 * I, the smoothness
  term being the paper's mean_i log S_i (``--mat_smoothness=log``) or the
  plain mean_i S_i (``plain``).

Choices where the paper is silent or ambiguous (docs/methods.md, "MAT"):
* Algorithm 1 averages ``X^T X / N``; we average the *centred* class scatter
  (a covariance, not a second moment), and a class seen for the first time
  starts from its batch mean and ``alpha * I + (1 - alpha) * scatter``.
* Conditioning: the covariance used is ``Sigma + (ridge * tr(Sigma)/D + 1e-6 + v0) I``
  (full), ``max(var, ridge * mean(var) + 1e-6 + v0)`` (diagonal); ridge = 1e-2,
  v0 = ``--mat_min_variance`` (the paper: 0; the run default 1.0, the only
  setting measured to train here, see docs/results.md for why a floor is needed).
* log S_i uses ``log(max(S_i, 0) + 1e-8)``: S_i is 0 where the perturbation
  changes nothing (e.g. an untrained mixture), and rounding makes it slightly
  negative there.
* The mixture statistics use the labeled batch's features of the step,
  gradient-stopped, after the parameter update (Algorithm 1 line 10).
"""
import contextlib
import dataclasses
import math

import keras
import tensorflow as tf

from lvat_tf.losses import kl_divergence_with_logits, logsoftmax
from lvat_tf.regularizers.base import Regularizer
from lvat_tf.regularizers.power_iteration import power_iteration, scale_to_epsilon
from lvat_tf import distribute

COVARIANCES = ("full", "diagonal", "identity")
SMOOTHNESS = ("log", "plain")
RIDGE = 1e-2


class GaussianMixture(keras.layers.Layer):
    """Per-class Gaussian mixture over features, updated by moving averages.

    Args:
      num_components: M (the number of classes).
      dim: D, the feature size.
      covariance: ``full`` (M, D, D), ``diagonal`` (M, D) or ``identity``.
      alpha: moving-average decay of the covariances (Algorithm 1 line 12).
      beta: moving-average decay of the means (line 13).
    """

    def __init__(self, num_components: int, dim: int, covariance: str = "full",
                 alpha: float = 0.9, beta: float = 0.9, min_variance: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        # Absolute variance floor (--mat_min_variance): with covariances that
        # follow the features, log N(f | mu, Sigma) grows without bound as the
        # features shrink; the floor bounds the information term.
        self.min_variance = float(min_variance)
        if covariance not in COVARIANCES:
            raise ValueError(f"covariance must be one of {COVARIANCES}, got {covariance!r}")
        self.m, self.d, self.covariance = int(num_components), int(dim), covariance
        self.alpha, self.beta = float(alpha), float(beta)
        self.means = self.add_weight(shape=(self.m, self.d), initializer="zeros",
                                     trainable=False, name="means", aggregation="only_first_replica")
        cov_shape = {"full": (self.m, self.d, self.d), "diagonal": (self.m, self.d),
                     "identity": (self.m, self.d)}[covariance]
        init = (keras.initializers.Constant(tf.eye(self.d, batch_shape=[self.m]).numpy())
                if covariance == "full" else "ones")
        self.covs = self.add_weight(shape=cov_shape, initializer=init, trainable=False,
                                    name="covariances", aggregation="only_first_replica")
        self.seen = self.add_weight(shape=(self.m,), initializer="zeros", trainable=False,
                                    name="seen", aggregation="only_first_replica")

    # -- statistics -----------------------------------------------------------
    def batch_statistics(self, z, y):
        """(counts (M,), class means (M, D), class scatters) of a labeled batch.

        Under tf.distribute the sums are all-reduced (two passes: counts and
        sums, then centred scatters), so every replica gets the statistics of
        the global batch.
        """
        z = tf.cast(z, self.means.dtype)  # bfloat16 features under mixed precision
        onehot = tf.one_hot(tf.cast(y, tf.int32), self.m, dtype=z.dtype)
        counts, sums = distribute.all_reduce_sum([tf.reduce_sum(onehot, 0),
                                                  tf.matmul(onehot, z, transpose_a=True)])
        safe = tf.maximum(counts, 1.0)
        means = sums / safe[:, None]
        diff = z - tf.gather(means, tf.cast(y, tf.int32))
        if self.covariance == "full":
            (scatter,) = distribute.all_reduce_sum([tf.einsum("bm,bd,be->mde", onehot, diff, diff)])
            scatter = scatter / safe[:, None, None]
        else:
            (scatter,) = distribute.all_reduce_sum([tf.matmul(onehot, tf.square(diff),
                                                              transpose_a=True)])
            scatter = scatter / safe[:, None]
        return counts, means, scatter

    def update(self, z, y):
        """One moving-average step from a labeled batch (features gradient-stopped)."""
        cov_ident = self.covariance == "identity"
        z = tf.stop_gradient(z)
        counts, means, scatter = self.batch_statistics(z, y)
        present = counts > 0
        first = tf.logical_and(present, self.seen < 0.5)
        mean_new = tf.where(first[:, None], means,
                            self.beta * self.means + (1 - self.beta) * means)
        self.means.assign(tf.where(present[:, None], mean_new, self.means))
        if not cov_ident:
            eye = (tf.eye(self.d, batch_shape=[self.m]) if self.covariance == "full"
                   else tf.ones((self.m, self.d)))
            start = self.alpha * eye + (1 - self.alpha) * scatter
            moved = self.alpha * self.covs + (1 - self.alpha) * scatter
            cov_new = tf.where(self._expand(first), start, moved)
            self.covs.assign(tf.where(self._expand(present), cov_new, self.covs))
        self.seen.assign(tf.where(present, tf.ones_like(self.seen), self.seen))

    def _expand(self, mask):
        return mask[:, None, None] if self.covariance == "full" else mask[:, None]

    def conditioned_covariance(self):
        """The covariance actually used (see module docstring), per component."""
        if self.covariance == "full":
            tr = tf.linalg.trace(self.covs) / self.d
            jitter = RIDGE * tr + 1e-6 + self.min_variance
            return self.covs + jitter[:, None, None] * tf.eye(self.d, batch_shape=[self.m])
        if self.covariance == "diagonal":
            floor = (RIDGE * tf.reduce_mean(self.covs, axis=1, keepdims=True) + 1e-6
                     + self.min_variance)
            return tf.maximum(self.covs, floor)
        return tf.ones((self.m, self.d))

    # -- densities ------------------------------------------------------------
    def log_prob(self, z):
        """log N(z | mu_j, Sigma_j) for every component: (B, D) -> (B, M).

        The mixture is float32 (its Cholesky factors and log-determinants need
        it); bfloat16 features (mixed precision) are cast up.
        """
        z = tf.cast(z, self.means.dtype)
        diff = z[:, None, :] - self.means[None]  # (B, M, D)
        log2pi = self.d * math.log(2 * math.pi)
        if self.covariance == "full":
            chol = tf.linalg.cholesky(self.conditioned_covariance())  # (M, D, D)
            # One solve per component for the whole batch: L_m^-1 (z - mu_m)^T,
            # (M, D, B); broadcasting L over the batch cost B x M x D x D.
            sol = tf.linalg.triangular_solve(chol, tf.transpose(diff, [1, 2, 0]), lower=True)
            maha = tf.transpose(tf.reduce_sum(tf.square(sol), 1))  # (B, M)
            logdet = 2.0 * tf.reduce_sum(tf.math.log(tf.linalg.diag_part(chol)), -1)
        else:
            var = self.conditioned_covariance()
            maha = tf.reduce_sum(tf.square(diff) / var[None], -1)
            logdet = tf.reduce_sum(tf.math.log(var), -1)
        return -0.5 * (maha + logdet[None] + log2pi)

    def posterior_logits(self, z):
        """Logits of q(c|z) (uniform prior): log N(z|mu_c, Sigma_c), (B, M)."""
        return self.log_prob(z)


def information(gmm: GaussianMixture, z, y):
    """I = mean_i log N(z_i | mu_{y_i}, Sigma_{y_i}) (Eq. 8, as a batch mean)."""
    lp = gmm.log_prob(z)
    return tf.reduce_mean(tf.gather(lp, tf.cast(y, tf.int32), batch_dims=1))


def center_loss(means, z, y):
    """Center loss (Wen et al.): 0.5 * mean_i ||z_i - c_{y_i}||^2."""
    z = tf.cast(z, means.dtype)
    return 0.5 * tf.reduce_mean(tf.reduce_sum(
        tf.square(z - tf.gather(means, tf.cast(y, tf.int32))), -1))


def joint_logits(logits, mixture_logits):
    """Logits of p(y) x q(c) as (B, K*M): KL of these = KL(p) + KL(q)."""
    b = tf.shape(logits)[0]
    logits = tf.cast(logits, mixture_logits.dtype)  # float32, also under mixed precision
    out = logsoftmax(logits)[:, :, None] + logsoftmax(mixture_logits)[:, None, :]
    return tf.reshape(out, [b, -1])


def per_sample_kl(q_logits, p_logits):
    """KL(q || p) per example from logits, (B,)."""
    q = tf.nn.softmax(q_logits)
    return tf.reduce_sum(q * (logsoftmax(q_logits) - logsoftmax(p_logits)), 1)


def smoothness_term(s, form="log"):
    """The smoothness term of Eq. 13 from per-sample S (B,): mean log S or mean S.

    S is a KL and >= 0 in exact arithmetic, but float32 rounding makes it
    slightly negative (about -1e-7) where the perturbation changes nothing, and
    log of that is NaN (MNIST-100 MAT diverged at step 71 before this): the log
    form uses log(max(S, 0) + 1e-8).
    """
    if form == "log":
        return tf.reduce_mean(tf.math.log(tf.maximum(s, 0.0) + 1e-8))
    return tf.reduce_mean(s)


def mat_perturbation(forward, gmm, x, clean_logits, clean_features, d_init, epsilon, xi=1e-6,
                     num_power_iterations=1, mode="finite_difference"):
    """(clean joint logits (B, K*M), r (B, ...)): r maximises S = L_KL + M_KL, ||r|| = epsilon.

    Args:
      forward: ``forward(x, features=True) -> (features, logits)``.
      gmm: the :class:`GaussianMixture`.
      x: (B, ...) inputs; clean_logits (B, K), clean_features (B, D) at x.
      d_init: the random start, x's shape.
    """
    clean = tf.stop_gradient(joint_logits(clean_logits, gmm.posterior_logits(clean_features)))

    def joint(r):
        f, lg = forward(x + r, features=True)
        return joint_logits(lg, gmm.posterior_logits(f))

    g = power_iteration(joint, clean, d_init, xi=xi, num_iterations=num_power_iterations,
                        mode=mode)
    return clean, tf.stop_gradient(scale_to_epsilon(g, epsilon))


@dataclasses.dataclass(frozen=True, eq=False)
class MAT(Regularizer):
    """The MAT regulariser (and, with ``lambda1 = 0`` and identity covariance, center loss).

    ``forward(x, features=True)`` must return (features, logits); the labeled
    pass's features reach :meth:`labeled_loss` and :meth:`update_state`.
    """

    gmm: GaussianMixture
    epsilon: float
    lambda1: float = 0.1
    lambda2: float = 0.1
    smoothness: str = "log"
    xi: float = 1e-6
    num_power_iterations: int = 1
    power_iteration: str = "finite_difference"
    name: str = "mat_loss"
    needs_clean_grad: bool = False
    needs_features: bool = True
    has_labeled_term: bool = True

    @property
    def uses_unlabeled(self):
        return self.lambda1 > 0

    @property
    def variables(self):
        return list(self.gmm.variables)

    def labeled_loss(self, feats_l, y_l):
        """-lambda2 * I on the labeled batch (center loss for identity covariance)."""
        if self.lambda2 == 0:
            return tf.constant(0.0)
        if self.gmm.covariance == "identity":
            # = -I up to the constant D/2 log(2 pi): Proposition III.1.
            return self.lambda2 * center_loss(self.gmm.means, feats_l, y_l)
        return -self.lambda2 * information(self.gmm, feats_l, y_l)

    def update_state(self, feats_l, y_l):
        self.gmm.update(feats_l, y_l)

    def joint_forward(self, forward):
        """images (B, ...) -> joint logits (B, K*M) of the classifier and the mixture."""
        def joint(images):
            f, lg = forward(images, features=True)
            return joint_logits(lg, self.gmm.posterior_logits(f))
        return joint

    def adversarial_input(self, forward, x, clean_logits, clean_features, clean_joint, seed):
        """x + r with r maximising S in input space, ||r|| = epsilon (subclasses move the search).

        Args: the clean pass's logits (B, K), features (B, D) and joint logits (B, K*M).
        """
        del clean_joint  # mat_perturbation forms it from the logits and features
        d = distribute.replica_random(tf.random.stateless_normal, tf.shape(x), seed, x.dtype)
        _, r = mat_perturbation(forward, self.gmm, x, clean_logits, clean_features, d,
                                self.epsilon, self.xi, self.num_power_iterations,
                                self.power_iteration)
        return x + r

    def unlabeled_loss(self, forward, x, clean_logits, seed, no_record=contextlib.nullcontext,
                       clean_features=None):
        if self.lambda1 == 0:
            return tf.constant(0.0), {self.name: tf.constant(0.0)}
        with no_record():
            if clean_features is None:
                clean_features, clean_logits = forward(x, features=True)
            clean = tf.stop_gradient(joint_logits(clean_logits,
                                                  self.gmm.posterior_logits(clean_features)))
            x_adv = tf.stop_gradient(self.adversarial_input(forward, x, clean_logits,
                                                            clean_features, clean, seed))
        s = per_sample_kl(clean, self.joint_forward(forward)(x_adv))  # L_KL + M_KL
        loss = self.lambda1 * smoothness_term(s, self.smoothness)
        return loss, {self.name: loss, "smoothness": tf.reduce_mean(s)}
