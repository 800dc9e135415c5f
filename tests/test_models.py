"""Classifiers and the upstream batch norm."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from lvat_tf.models import registry
from lvat_tf.models.layers import UpstreamBatchNorm, UpstreamVarianceScaling


def _values(layer):
    return [v.numpy().copy() for v in (layer.moving_mean, layer.moving_variance)]


def test_bn_modes_update_only_in_update_mode_with_unbiased_variance():
    bn = UpstreamBatchNorm(decay=0.99)
    x = tf.constant(np.random.RandomState(0).randn(4, 3, 3, 5).astype(np.float32) * 2 + 1)
    bn(x, mode="moving")
    before = _values(bn)
    for mode in ("batch", "moving"):
        bn(x, mode=mode)
        for a, b in zip(before, _values(bn)):
            np.testing.assert_array_equal(a, b)
    out = bn(x, mode="update").numpy()
    xs = x.numpy().reshape(-1, 5)
    n = xs.shape[0]
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.01 * xs.mean(0), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), 0.99 + 0.01 * xs.var(0) * n / (n - 1),
                               rtol=1e-5)
    # Normalisation uses the biased batch variance and eps 1e-6.
    want = (xs - xs.mean(0)) / np.sqrt(xs.var(0) + 1e-6)
    np.testing.assert_allclose(out.reshape(-1, 5), want, rtol=1e-4, atol=1e-5)


def test_bn_batch_and_update_modes_give_identical_outputs():
    bn = UpstreamBatchNorm()
    x = tf.random.normal((8, 6))
    a = bn(x, mode="batch")
    b = bn(x, mode="update")
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ValueError):
        bn(x, mode="train")


def test_upstream_init_stddev():
    w = UpstreamVarianceScaling(seed=3)((3, 3, 64, 128), "float32").numpy()
    fan_in = 3 * 3 * 64
    assert np.max(np.abs(w)) <= 2 * np.sqrt(2.6 / fan_in) + 1e-6  # truncated at 2 std
    # A normal truncated at 2 sigma has std 0.8796 sigma.
    np.testing.assert_allclose(w.std(), 0.8796 * np.sqrt(2.6 / fan_in), rtol=0.02)


@pytest.mark.parametrize("name,shape", [("conv_large", (32, 32, 3)), ("conv_large", (28, 28, 1)),
                                        ("conv_small", (32, 32, 3)), ("mlp", (28, 28, 1)),
                                        ("mlp", (8, 8, 1)), ("tiny_cnn", (16, 16, 3)),
                                        ("tiny_mlp", (8, 8, 1))])
def test_shapes_on_supported_inputs(name, shape):
    m = registry.build(name, top_bn=True)
    m.check_input_shape(shape)
    feats, logits = m(tf.zeros((2,) + shape), bn_mode="moving", return_features=True)
    assert logits.shape == (2, 10)
    assert feats.shape[0] == 2


def test_conv_large_parameter_count_and_layout():
    m = registry.build("conv_large", top_bn=False)
    m(tf.zeros((1, 32, 32, 3)))
    convs = (3 * 3 * 3 * 128 + 2 * 3 * 3 * 128 * 128 + 3 * 3 * 128 * 256 + 2 * 3 * 3 * 256 * 256
             + 3 * 3 * 256 * 512 + 512 * 256 + 256 * 128)
    bn = 2 * (3 * 128 + 3 * 256 + 512 + 256 + 128)
    assert sum(int(np.prod(v.shape)) for v in m.trainable_variables) == convs + bn + 128 * 10 + 10
    assert all(not c.use_bias for c in m.convs)
    assert m.convs[6].padding == "valid" and m.convs[6].kernel_size == (3, 3)


def test_too_small_input_is_refused_clearly():
    m = registry.build("conv_large")
    with pytest.raises(ValueError, match="too small"):
        m.check_input_shape((8, 8, 1))


def test_dropout_masks_follow_the_seed():
    keras.utils.set_random_seed(0)
    m = registry.build("tiny_cnn", keep_prob_hidden=0.5)
    x = tf.random.normal((4, 16, 16, 3))
    s1, s2 = tf.constant([1, 2], tf.int64), tf.constant([1, 3], tf.int64)
    a = m(x, bn_mode="batch", dropout_seed=s1)
    b = m(x, bn_mode="batch", dropout_seed=s1)
    c = m(x, bn_mode="batch", dropout_seed=s2)
    d = m(x, bn_mode="batch")
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert np.max(np.abs(a.numpy() - c.numpy())) > 1e-4
    assert np.max(np.abs(a.numpy() - d.numpy())) > 1e-4  # no seed = no dropout


def test_same_seed_same_initial_weights():
    def init():
        keras.utils.set_random_seed(7)
        m = registry.build("tiny_cnn")
        m(tf.zeros((1, 16, 16, 3)))
        return [v.numpy() for v in m.trainable_variables]
    for a, b in zip(init(), init()):
        np.testing.assert_array_equal(a, b)
