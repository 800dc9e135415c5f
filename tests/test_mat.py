"""MAT and center loss: the Gaussian-mixture maths, the perturbation, runs and checkpoints."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.stats import multivariate_normal

from conftest import tiny_config
from lvat_tf.losses import kl_divergence_with_logits, per_sample_l2
from lvat_tf.models import registry
from lvat_tf.regularizers.mat import (RIDGE, GaussianMixture, center_loss, information,
                                      joint_logits, mat_perturbation, per_sample_kl)
from lvat_tf.training import run


def _batch(seed=0, n=24, d=3, m=4):
    rng = np.random.RandomState(seed)
    return rng.randn(n, d).astype(np.float32), rng.randint(0, m, n)


def test_gmm_update_equals_the_closed_form():
    z, y = _batch()
    gmm = GaussianMixture(4, 3, "full", alpha=0.8, beta=0.7)
    gmm.update(tf.constant(z), tf.constant(y))
    z2, y2 = _batch(1)
    gmm.update(tf.constant(z2), tf.constant(y2))
    for c in range(4):
        a, b = z[y == c], z2[y2 == c]
        s_a = (a - a.mean(0)).T @ (a - a.mean(0)) / len(a)
        s_b = (b - b.mean(0)).T @ (b - b.mean(0)) / len(b)
        mean = 0.7 * a.mean(0) + 0.3 * b.mean(0)
        cov = 0.8 * (0.8 * np.eye(3) + 0.2 * s_a) + 0.2 * s_b
        np.testing.assert_allclose(gmm.means.numpy()[c], mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(gmm.covs.numpy()[c], cov, rtol=1e-5, atol=1e-6)
    # A class absent from a batch keeps its statistics.
    before = gmm.means.numpy().copy()
    gmm.update(tf.constant(z[y == 0]), tf.constant(y[y == 0]))
    np.testing.assert_array_equal(gmm.means.numpy()[1:], before[1:])


def test_log_prob_matches_scipy_and_posterior_sums_to_one():
    z, y = _batch(2)
    for cov in ("full", "diagonal"):
        gmm = GaussianMixture(4, 3, cov, alpha=0.5, beta=0.5)
        gmm.update(tf.constant(z), tf.constant(y))
        lp = gmm.log_prob(tf.constant(z)).numpy()
        covs = gmm.conditioned_covariance().numpy()
        for c in range(4):
            sigma = covs[c] if cov == "full" else np.diag(covs[c])
            ref = multivariate_normal(gmm.means.numpy()[c], sigma).logpdf(z)
            np.testing.assert_allclose(lp[:, c], ref, rtol=1e-4, atol=1e-4)
        q = tf.nn.softmax(gmm.posterior_logits(tf.constant(z))).numpy()
        np.testing.assert_allclose(q.sum(1), 1.0, rtol=1e-6)
    # Conditioning: a rank-deficient class scatter still gives a positive-definite covariance.
    gmm = GaussianMixture(2, 3, "full", alpha=0.0, beta=0.0)
    gmm.update(tf.constant(np.ones((4, 3), np.float32)), tf.constant([0, 0, 1, 1]))
    assert np.all(np.isfinite(gmm.log_prob(tf.constant(z)).numpy()))
    assert np.allclose(np.diag(gmm.conditioned_covariance().numpy()[0]), 1e-6)
    assert RIDGE > 0


def test_information_with_identity_covariance_is_center_loss():
    z, y = _batch(3, d=5)
    gmm = GaussianMixture(4, 5, "identity", beta=0.0)
    gmm.update(tf.constant(z), tf.constant(y))
    info = float(information(gmm, tf.constant(z), tf.constant(y)))
    center = float(center_loss(gmm.means, tf.constant(z), tf.constant(y)))
    assert info == pytest.approx(-center - 0.5 * 5 * math.log(2 * math.pi), rel=1e-5)


def test_smoothness_is_a_kl_zero_at_itself_and_additive_over_the_product():
    rng = np.random.RandomState(0)
    p, q = tf.constant(rng.randn(6, 10), tf.float32), tf.constant(rng.randn(6, 4), tf.float32)
    p2, q2 = tf.constant(rng.randn(6, 10), tf.float32), tf.constant(rng.randn(6, 4), tf.float32)
    a, b = joint_logits(p, q), joint_logits(p2, q2)
    np.testing.assert_allclose(per_sample_kl(a, a).numpy(), 0.0, atol=1e-6)
    assert np.all(per_sample_kl(a, b).numpy() >= 0)
    # KL of the product = L_KL + M_KL (what lets the VAT power iteration run on S).
    np.testing.assert_allclose(float(kl_divergence_with_logits(a, b)),
                               float(kl_divergence_with_logits(p, p2)
                                     + kl_divergence_with_logits(q, q2)), rtol=1e-5)


def test_log_smoothness_is_finite_where_rounding_makes_s_negative():
    from lvat_tf.regularizers.mat import smoothness_term
    # KL(a || a) of near-one-hot logits rounds to about -1e-7 in float32 at
    # times; log of it was NaN (MNIST-100 MAT diverged at step 71).
    s = tf.constant([-1.2e-7, 0.0, 0.5])
    term = float(smoothness_term(s, "log"))
    np.testing.assert_allclose(term, (2 * np.log(1e-8) + np.log(0.5 + 1e-8)) / 3, rtol=1e-6)
    with tf.GradientTape() as tape:
        tape.watch(s)
        t = smoothness_term(s, "log")
    assert np.all(np.isfinite(tape.gradient(t, s).numpy()))
    np.testing.assert_allclose(float(smoothness_term(s, "plain")), (0.5 - 1.2e-7) / 3, rtol=1e-6)


def test_mat_perturbation_has_norm_sigma():
    keras.utils.set_random_seed(0)
    clf = registry.build("tiny_cnn", keep_prob_hidden=1.0)
    x = tf.random.uniform((5, 16, 16, 3))
    feats, logits = clf(x, bn_mode="batch", return_features=True)
    gmm = GaussianMixture(10, int(feats.shape[-1]), "full")
    gmm.update(feats, tf.constant([0, 1, 2, 1, 0]))

    def fwd(v, features=False):
        return clf(v, bn_mode="batch", return_features=features)

    for mode in ("finite_difference", "exact"):
        _, r = mat_perturbation(fwd, gmm, x, logits, feats, tf.random.normal(x.shape), 2.0,
                                xi=1e-2, mode=mode)
        np.testing.assert_allclose(per_sample_l2(r).numpy(), 2.0, rtol=1e-5)


def test_lenet_pp_has_a_2d_embedding():
    m = registry.build("lenet_pp")
    feats, logits = m(tf.zeros((2, 28, 28, 1)), return_features=True)
    assert feats.shape == (2, 2) and logits.shape == (2, 10)


@pytest.mark.parametrize("method", ["mat", "center_loss"])
def test_runs_train_and_checkpoint_the_mixture(tmp_path, method):
    cfg = tiny_config(str(tmp_path / method), method=method, num_epochs=1, epoch_decay_start=0,
                      num_iter_per_epoch=4, mat_smoothness="plain")
    res = run.train_and_evaluate(cfg, verbose=0)
    assert res["num_iterations"] == 4 and np.isfinite(res["test_error"])
    ckpt = tf.train.latest_checkpoint(str(tmp_path / method / "checkpoints"))
    names = [n for n, _ in tf.train.list_variables(ckpt)]
    assert any(n.startswith("regularizers/") and "means" in n for n in names)
    means = [tf.train.load_variable(ckpt, n) for n in names
             if n.startswith("regularizers/") and "means" in n and "OPTIMIZER" not in n][0]
    assert np.abs(means).sum() > 0  # the mixture was updated from labeled features


def test_attack_norms():
    from lvat_tf.robustness import attack_perturbation
    keras.utils.set_random_seed(1)
    clf = registry.build("tiny_cnn", keep_prob_hidden=1.0)
    x = tf.random.uniform((4, 16, 16, 3))
    y = tf.constant([0, 1, 2, 3])
    clf(x)
    r = attack_perturbation(clf, x, y, 0.1, "fgsm")
    np.testing.assert_allclose(tf.reduce_max(tf.abs(r), axis=[1, 2, 3]).numpy(), 0.1, rtol=1e-6)
    r = attack_perturbation(clf, x, y, 2.0, "l2")
    np.testing.assert_allclose(per_sample_l2(r).numpy(), 2.0, rtol=1e-5)


def test_evaluate_robustness_script_and_embedding(tmp_path):
    from conftest import run_script
    cfg = tiny_config(str(tmp_path / "run"), method="center_loss", model="tiny_lenet_pp",
                      num_epochs=2, epoch_decay_start=2, num_iter_per_epoch=20)
    run.train_and_evaluate(cfg, verbose=0)
    p = run_script("evaluate_robustness.py", f"--log_dir={tmp_path / 'run'}", "--attack=l2",
                   "--epsilons=0,1,4", "--embedding", f"--output_dir={tmp_path / 'out'}")
    assert p.returncode == 0, p.stderr[-2000:]
    res = __import__("json").load(open(tmp_path / "out" / "robustness_l2.json"))
    acc = list(res["runs"].values())[0]["accuracy"]
    assert acc[1] <= acc[0] and acc[2] <= acc[0]  # attacks never help a trained model
    for name in ("robustness_l2.png", "embedding_run.png"):
        img = tf.io.decode_png(tf.io.read_file(str(tmp_path / "out" / name)))
        assert img.shape[0] > 100 and img.shape[1] > 100
    p = run_script("evaluate_robustness.py", f"--log_dir={tmp_path / 'run'}",
                   "--epsilons=a,b", f"--output_dir={tmp_path / 'out'}")
    assert p.returncode != 0 and "--epsilons" in p.stderr and "Traceback" not in p.stderr


def test_variance_floor_bounds_the_information_term():
    # Without a floor, features that shrink (covariances following them) make
    # log N(f | mu, Sigma) grow without limit; with --mat_min_variance v0 it is
    # at most -D/2 log(2 pi v0).
    from lvat_tf.regularizers.mat import GaussianMixture, information
    rng = np.random.RandomState(0)
    y = tf.constant(np.repeat(np.arange(3), 8))
    for cov in ("full", "diagonal"):
        values = {}
        for v0 in (0.0, 1.0):
            gmm = GaussianMixture(3, 2, covariance=cov, alpha=0.0, beta=0.0, min_variance=v0)
            out = []
            for scale in (1.0, 1e-2, 1e-4):
                z = tf.constant(scale * rng.randn(24, 2), tf.float32)
                gmm.update(z, y)
                out.append(float(information(gmm, z, y)))
            values[v0] = out
        assert values[0.0][2] > values[0.0][0] + 10  # unbounded without the floor
        assert max(values[1.0]) <= -np.log(2 * np.pi * 1.0) + 1e-5
