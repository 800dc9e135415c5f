"""The power iteration: known quadratic models, exact vs float64 finite differences, ||r||."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import FIXTURES, shared_path
from lvat_tf.losses import per_sample_l2
from lvat_tf.models import registry
from lvat_tf.regularizers.power_iteration import (power_iteration, scale_to_epsilon,
                                                  xi_resolution_warning)
from lvat_tf.regularizers.vat import virtual_adversarial_perturbation


def _linear_problem(seed=0, batch=3, dim=12, k=5):
    """logits = r A with a known spectrum: H = (1/k) Q diag(s^2) Q^T, top vector Q[:, 0]."""
    rng = np.random.RandomState(seed)
    q, _ = np.linalg.qr(rng.randn(dim, k - 1))
    # Orthonormal basis of the logit directions orthogonal to 1 (softmax ignores 1).
    basis = np.linalg.qr(np.concatenate([np.ones((k, 1)), rng.randn(k, k - 1)], 1))[0][:, 1:]
    s = np.array([3.0, 1.5, 1.0, 0.5])
    a = (q * s) @ basis.T
    return (tf.constant(a.astype(np.float32)), q[:, 0], tf.zeros((batch, k)),
            rng.randn(batch, dim).astype(np.float32))


@pytest.mark.parametrize("mode,xi", [("exact", 0.0), ("finite_difference", 1e-3)])
def test_power_iteration_finds_top_eigenvector_of_known_quadratic(mode, xi):
    a, top, clean, d0 = _linear_problem()
    g = power_iteration(lambda r: tf.matmul(r, a), clean, tf.constant(d0), xi=xi or 1e-6,
                        num_iterations=40, mode=mode).numpy()
    cos = np.abs(g @ top) / np.linalg.norm(g, axis=1)
    assert np.all(cos > 0.999), cos


def test_exact_single_step_equals_hessian_vector_product():
    a, _, clean, d0 = _linear_problem(seed=1)
    g = power_iteration(lambda r: tf.matmul(r, a), clean, tf.constant(d0), mode="exact").numpy()
    k = a.shape[1]
    p = np.full(k, 1.0 / k)
    h = a.numpy() @ (np.diag(p) - np.outer(p, p)) @ a.numpy().T
    v = d0 / np.linalg.norm(d0, axis=1, keepdims=True)
    # KL is a batch mean: each sample's gradient carries a 1/B factor.
    np.testing.assert_allclose(g, (v @ h) / len(d0), rtol=2e-4, atol=1e-7)


def test_gauss_newton_product_equals_forward_over_reverse_at_the_clean_point():
    # VAT's reference is the unperturbed output, so the KL's logit gradient is
    # zero at r = 0 and J^T H_z J d is the full Hessian product; checked on a
    # conv net with batch-mode BN (samples coupled) and a shared dropout mask.
    from lvat_tf.losses import normalize_per_sample
    from lvat_tf.regularizers.power_iteration import (_forward_over_reverse_hvp,
                                                      _gauss_newton_hvp)
    keras.utils.set_random_seed(1)
    clf = registry.build("tiny_cnn", keep_prob_hidden=0.5)
    x = tf.random.normal((6, 16, 16, 3))
    seed = tf.constant([1, 2], tf.int64)
    fwd = lambda r: clf(x + r, bn_mode="batch", dropout_seed=seed)  # noqa: E731
    zeros = [tf.zeros_like(x)]
    tangents = [normalize_per_sample(tf.random.normal(x.shape))]
    gn = _gauss_newton_hvp(fwd, zeros, tangents, False)[0].numpy().reshape(6, -1)
    grads, hv = _forward_over_reverse_hvp(fwd, fwd(0.0), zeros, tangents, False)
    fr = hv[0].numpy().reshape(6, -1)
    assert np.max(np.abs(grads[0].numpy())) < 1e-6  # the gradient at the clean point
    np.testing.assert_allclose(gn, fr, rtol=1e-3, atol=1e-4 * np.abs(fr).max())
    cos = np.sum(gn * fr, 1) / (np.linalg.norm(gn, axis=1) * np.linalg.norm(fr, axis=1))
    assert cos.min() > 0.99999, cos


def test_perturbation_has_norm_epsilon_per_sample_and_lists_are_normalised_per_part():
    keras.utils.set_random_seed(0)
    clf = registry.build("tiny_cnn", keep_prob_hidden=1.0)
    x = tf.random.normal((6, 16, 16, 3))
    fwd = lambda v: clf(v, bn_mode="batch")  # noqa: E731
    for mode in ("finite_difference", "exact"):
        r = virtual_adversarial_perturbation(fwd, x, fwd(x), tf.random.normal(x.shape), 2.5,
                                             xi=1e-2, mode=mode)
        np.testing.assert_allclose(per_sample_l2(r).numpy(), 2.5, rtol=1e-5)
    parts = scale_to_epsilon([tf.random.normal((4, 3)) * 1e-9, tf.random.normal((4, 2, 2)) * 7],
                             1.5)
    for p in parts:
        np.testing.assert_allclose(per_sample_l2(p).numpy(), 1.5, rtol=1e-5)


def test_xi_resolution_warning():
    assert xi_resolution_warning(1e-6, (32, 32, 3), 0.5) is not None
    assert xi_resolution_warning(1e-2, (32, 32, 3), 0.5) is None
    assert "power_iteration=exact" in xi_resolution_warning(1e-6, (28, 28, 1), 0.5)


def test_exact_direction_matches_float64_finite_difference_on_conv_large():
    """The issue's criterion: cosine >= 0.9999 against float64 FD at xi = 1e-5."""
    from lvat_tf.upstream import names

    path = shared_path("fixtures", "upstream", "vat_tf_conv_large.npz")
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    weights = names.classifier_weights(arrays, prefix="w/")
    x32, d = arrays["x"], arrays["d"]

    def build(dtype):
        keras.config.set_dtype_policy(dtype)
        try:
            m = names.conv_large_from_weights(weights, keep_prob_hidden=1.0)
            m(tf.constant(x32, dtype), bn_mode="moving")
            names.load_convnet_weights(m, weights)
        finally:
            keras.config.set_dtype_policy("float32")
        return m

    m32, m64 = build("float32"), build("float64")
    x, x64 = tf.constant(x32), tf.constant(x32, tf.float64)
    f32 = lambda r: m32(x + r, bn_mode="batch")  # noqa: E731
    f64 = lambda r: m64(x64 + r, bn_mode="batch")  # noqa: E731
    g_exact = power_iteration(f32, f32(0.0 * x), tf.constant(d), mode="exact").numpy()
    g_ref = power_iteration(f64, f64(0.0 * x64), tf.constant(d, tf.float64), xi=1e-5,
                            mode="finite_difference").numpy()
    a, b = g_exact.reshape(len(d), -1), g_ref.reshape(len(d), -1)
    cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() >= 0.9999, cos


@pytest.mark.parametrize("name", ["tiny_cnn", "tiny_mlp"])
def test_exact_direction_with_the_classifiers_linearization_equals_forward_mode(name):
    """VAT's exact direction through the training step's forward (the classifier's own
    tangent pass) and through a plain callable (TensorFlow's forward mode): the same."""
    from lvat_tf.training.model import ClassifierForward

    keras.utils.set_random_seed(2)
    clf = registry.build(name, keep_prob_hidden=0.5)
    x = tf.random.normal((6, 12, 12, 3) if name == "tiny_cnn" else (6, 6, 6, 1))
    seed = tf.constant([5, 6], tf.int64)
    forward = ClassifierForward(clf, seed)
    plain = lambda v: clf(v, bn_mode="batch", dropout_seed=seed)  # noqa: E731
    d = tf.random.normal(x.shape)
    clean = plain(x)
    for bn in ("batch", "moving"):
        fwd = forward if bn == "batch" else forward.with_bn_mode("moving")
        ref = plain if bn == "batch" else (
            lambda v: clf(v, bn_mode="moving", dropout_seed=seed))  # noqa: E731
        g = virtual_adversarial_perturbation(fwd, x, clean, d, 1.0, mode="exact").numpy()
        want = virtual_adversarial_perturbation(ref, x, clean, d, 1.0, mode="exact").numpy()
        a, b = g.reshape(6, -1), want.reshape(6, -1)
        cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        assert cos.min() > 0.99999, (bn, cos)


def test_forward_is_abstract_and_wraps_plain_callables():
    from lvat_tf.regularizers.base import Forward, FunctionForward, as_forward

    with pytest.raises(TypeError):
        Forward()
    fn = lambda v, **kw: v * 2.0  # noqa: E731
    fwd = as_forward(fn)
    assert isinstance(fwd, FunctionForward) and as_forward(fwd) is fwd
    x, t = tf.ones((2, 3)), tf.fill((2, 3), 0.5)
    y, jt = fwd.linearize(x, t)
    np.testing.assert_array_equal(y.numpy(), 2.0)
    np.testing.assert_array_equal(jt.numpy(), 1.0)  # J = 2 I
