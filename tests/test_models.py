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


def _op_types(layer, x, mode):
    fn = tf.function(lambda t: layer(t, mode=mode), autograph=False)
    return {op.type for op in fn.get_concrete_function(x).graph.get_operations()}


@pytest.mark.parametrize("shape", [(4, 3, 3, 5), (16, 5)])
def test_bn_in_bfloat16_has_the_float32_maths_and_fuses_conv_activations(shape):
    """Under mixed precision the batch statistics of (B, H, W, C) activations come from
    FusedBatchNormV3 (speed, docs/results.md); (B, C) ones stay unfused (the fused kernel on
    them, reshaped to (B, 1, 1, C), halved the MLP's speed). Either way: the same outputs,
    float32 moving averages (not re-rounded to bfloat16 at each update), gradients and
    tangents as the float32 layer on the same rounded inputs."""
    rng = np.random.RandomState(1)
    x = tf.constant(rng.randn(*shape).astype(np.float32) * 2 + 1)
    xb = tf.cast(tf.cast(x, tf.bfloat16), tf.float32)  # what the bfloat16 layer sees
    bf, ref = UpstreamBatchNorm(dtype="mixed_bfloat16"), UpstreamBatchNorm()
    for layer in (bf, ref):
        layer(xb, mode="moving")
        layer.gamma.assign(rng.uniform(0.5, 2, shape[-1]).astype(np.float32))
        layer.beta.assign(np.linspace(-1, 1, shape[-1]).astype(np.float32))
    g, b = bf.gamma.numpy(), bf.beta.numpy()
    ref.gamma.assign(g)
    ref.beta.assign(b)
    assert ("FusedBatchNormV3" in _op_types(bf, xb, "update")) == (len(shape) == 4)
    # float32 keeps the unfused kernel: the fused one's gradient is ~1e-3 off with oneDNN.
    assert "FusedBatchNormV3" not in _op_types(ref, xb, "update")
    for _ in range(20):
        out, want = bf(xb, mode="update"), ref(xb, mode="update")
    assert out.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(out, tf.float32).numpy(), want.numpy(), rtol=2e-2,
                               atol=2e-2)
    # Twenty updates of the moving averages: float32 throughout (bfloat16 reads of the
    # averages would be off by ~1e-3).
    np.testing.assert_allclose(bf.moving_mean.numpy(), ref.moving_mean.numpy(), rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(bf.moving_variance.numpy(), ref.moving_variance.numpy(),
                               rtol=1e-5)
    before = _values(bf)
    bf(xb, mode="batch")
    for a, c in zip(before, _values(bf)):
        np.testing.assert_array_equal(a, c)

    w = tf.constant(rng.randn(*shape).astype(np.float32))
    d = tf.constant(rng.randn(*shape).astype(np.float32))

    def grads_and_tangent(layer):
        with tf.GradientTape() as tape:
            tape.watch(xb)
            loss = tf.reduce_sum(tf.cast(layer(xb, mode="batch"), tf.float32) * w)
        gx, gg, gb = tape.gradient(loss, [xb, layer.gamma, layer.beta])
        with tf.autodiff.ForwardAccumulator(xb, d) as acc:
            y = tf.cast(layer(xb, mode="batch"), tf.float32)
        return [t.numpy() for t in (gx, gg, gb, acc.jvp(y))]

    for got, exp in zip(grads_and_tangent(bf), grads_and_tangent(ref)):
        assert np.abs(got - exp).max() <= 2e-2 * np.abs(exp).max()


def test_upstream_init_stddev():
    w = UpstreamVarianceScaling(seed=3)((3, 3, 64, 128), "float32").numpy()
    fan_in = 3 * 3 * 64
    assert np.max(np.abs(w)) <= 2 * np.sqrt(2.6 / fan_in) + 1e-6  # truncated at 2 std
    # A normal truncated at 2 sigma has std 0.8796 sigma.
    np.testing.assert_allclose(w.std(), 0.8796 * np.sqrt(2.6 / fan_in), rtol=0.02)


@pytest.mark.parametrize("name", ["mlp", "conv_small"])
def test_kernel_init_glorot_draws_glorot_uniform_kernels_reproducibly(name):
    def init(kind, seed=5):
        keras.utils.set_random_seed(seed)
        m = registry.build(name, kernel_init=kind)
        m(tf.zeros((1, 28, 28, 1) if name == "mlp" else (1, 32, 32, 3)))
        return m

    m = init("glorot")
    assert m.get_config()["kernel_init"] == "glorot"
    kernels = [v.numpy() for v in m.trainable_variables if "kernel" in v.path]
    assert len(kernels) == (5 if name == "mlp" else 10)
    for w in kernels:
        receptive = int(np.prod(w.shape[:-2])) if w.ndim > 2 else 1
        fan_in, fan_out = w.shape[-2] * receptive, w.shape[-1] * receptive
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        assert np.abs(w).max() <= limit + 1e-7
        np.testing.assert_allclose(w.std(), limit / np.sqrt(3.0), rtol=0.05 if w.size > 5000 else 0.3)
    # Same seed, same draw; the upstream kind is the default and a different draw.
    for a, b in zip(kernels, [v.numpy() for v in init("glorot").trainable_variables
                              if "kernel" in v.path]):
        np.testing.assert_array_equal(a, b)
    up = [v.numpy() for v in init("upstream").trainable_variables if "kernel" in v.path]
    keras.utils.set_random_seed(5)
    default = registry.build(name)
    default(tf.zeros((1, 28, 28, 1) if name == "mlp" else (1, 32, 32, 3)))
    for a, b in zip(up, [v.numpy() for v in default.trainable_variables if "kernel" in v.path]):
        np.testing.assert_array_equal(a, b)
    assert up[0].std() > 1.2 * kernels[0].std()  # He-scale (2.6 / fan_in) vs Glorot
    with pytest.raises(ValueError, match="kernel initializer"):
        registry.build(name, kernel_init="he")


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


@pytest.mark.parametrize("shape", [(3, 2, 2, 3), (6, 4)])
@pytest.mark.parametrize("mode", ["batch", "moving"])
@pytest.mark.parametrize("affine", [True, False])
def test_bn_linearize_is_the_jacobian_times_the_tangent(shape, mode, affine):
    """(y, J dx) with J the full Jacobian (batch statistics couple the samples), in float64;
    y is call()'s output to the bit and the moving averages stay untouched."""
    rng = np.random.RandomState(2)
    bn = UpstreamBatchNorm(use_affine=affine, dtype="float64")
    x = tf.constant(rng.randn(*shape) * 2 + 1)
    dx = tf.constant(rng.randn(*shape))
    bn(x, mode="moving")
    bn.moving_mean.assign(rng.randn(shape[-1]))
    bn.moving_variance.assign(rng.uniform(0.5, 2, shape[-1]))
    if affine:
        bn.gamma.assign(rng.uniform(0.5, 2, shape[-1]))
        bn.beta.assign(rng.randn(shape[-1]))
    before = _values(bn)
    y, dy = bn.linearize(x, dx, mode)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y_ref = bn(x, mode=mode)
    jac = tape.jacobian(y_ref, x).numpy().reshape(x.shape.num_elements(), -1)
    np.testing.assert_array_equal(y.numpy(), y_ref.numpy())
    np.testing.assert_allclose(dy.numpy().ravel(), jac @ dx.numpy().ravel(), rtol=1e-9,
                               atol=1e-12)
    for a, b in zip(before, _values(bn)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="batch\\|moving"):
        bn.linearize(x, dx, "update")


def test_bn_linearize_in_bfloat16_is_the_fused_gradient_kernel_on_conv_activations():
    """Under mixed precision the batch-mode tangent of (B, H, W, C) activations is one
    FusedBatchNormGradV3 (J is symmetric, so the gradient kernel applied to dx is J dx), and
    agrees with the float32 layer's on the same rounded inputs."""
    rng = np.random.RandomState(3)
    x = tf.cast(tf.constant(rng.randn(8, 4, 4, 5).astype(np.float32) * 2 + 1), tf.bfloat16)
    dx = tf.cast(tf.constant(rng.randn(8, 4, 4, 5).astype(np.float32)), tf.bfloat16)
    bf, ref = UpstreamBatchNorm(dtype="mixed_bfloat16"), UpstreamBatchNorm()
    for layer in (bf, ref):
        layer(tf.cast(x, tf.float32), mode="moving")
        layer.gamma.assign(np.linspace(0.5, 2, 5).astype(np.float32))
    fn = tf.function(lambda a, b: bf.linearize(a, b, "batch"), autograph=False)
    ops = {op.type for op in fn.get_concrete_function(x, dx).graph.get_operations()}
    assert {"FusedBatchNormV3", "FusedBatchNormGradV3"} <= ops
    y, dy = bf.linearize(x, dx, "batch")
    np.testing.assert_array_equal(y.numpy(), bf(x, mode="batch").numpy())
    _, want = ref.linearize(tf.cast(x, tf.float32), tf.cast(dx, tf.float32), "batch")
    assert dy.dtype == tf.bfloat16
    assert np.abs(tf.cast(dy, tf.float32).numpy() - want.numpy()).max() <= \
        2e-2 * np.abs(want.numpy()).max()


def _linearize_model(name):
    kwargs = {"keep_prob_hidden": 0.5}
    if name.endswith("+top_bn"):
        name, kwargs["top_bn"] = name[:-len("+top_bn")], True
    model = registry.build(name, **kwargs)
    return model


@pytest.mark.parametrize("name,shape", [("tiny_cnn", (12, 12, 3)), ("tiny_cnn+top_bn", (12, 12, 3)),
                                        ("tiny_mlp", (6, 6, 1)), ("tiny_mlp+top_bn", (6, 6, 1)),
                                        ("tiny_lenet_pp", (16, 16, 1))])
@pytest.mark.parametrize("bn_mode", ["batch", "moving"])
def test_classifier_linearize_equals_tensorflow_forward_mode(name, shape, bn_mode):
    """The explicit tangent pass (Conv nets, MLP) and the default (Lenet++) against
    TensorFlow's forward mode over call(): the same logits to the bit, the same J d, with the
    dropout mask from the seed and from explicit masks."""
    keras.utils.set_random_seed(4)
    model = _linearize_model(name)
    rng = np.random.RandomState(5)
    x = tf.constant(rng.randn(6, *shape).astype(np.float32))
    d = tf.constant(rng.randn(6, *shape).astype(np.float32))
    model(x, bn_mode="moving")
    seed = tf.constant([3, 4], tf.int64)
    calls = [dict(dropout_seed=seed)]
    if name.startswith("tiny_cnn"):
        masks = [tf.constant((rng.rand(6, 6, 6, 8) < 0.5) * 2.0, tf.float32),
                 tf.constant((rng.rand(6, 3, 3, 16) < 0.5) * 2.0, tf.float32)]
        calls.append(dict(dropout_masks=masks))
    for kw in calls:
        logits, jd = model.linearize(x, d, bn_mode=bn_mode, **kw)
        with tf.autodiff.ForwardAccumulator(x, d) as acc:
            ref = model(x, bn_mode=bn_mode, **kw)
        want = acc.jvp(ref).numpy()
        np.testing.assert_array_equal(logits.numpy(), ref.numpy())
        np.testing.assert_allclose(jd.numpy(), want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_conv_net_linearize_runs_each_convolution_twice_not_three_times():
    """The point of the explicit pass: TensorFlow's forward mode also convolves the input
    with a zero tangent of every kernel (a third convolution per layer, measured on
    Conv-Large: 3.2x a forward pass against 2.0x); the explicit graph has exactly one
    convolution of the activations and one of the tangent per layer."""
    keras.utils.set_random_seed(0)
    model = registry.build("tiny_cnn")
    x = tf.zeros((2, 12, 12, 3))
    model(x, bn_mode="moving")
    fn = tf.function(lambda a, t: model.linearize(a, t), autograph=False)
    ops = [op.type for op in fn.get_concrete_function(x, x).graph.get_operations()]
    assert sum(t == "Conv2D" for t in ops) == 2 * len(model.convs)
    assert not any("Call" in t for t in ops)  # no per-op forward-mode functions
