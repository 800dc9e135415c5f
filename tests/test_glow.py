"""Glow: the maths of the flow, the upstream fixture, training (resume, NaN guard), LVAT-Glow."""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import run_script, shared_path, tiny_config, train_generative_on_digits
from lvat_tf.generative import model_dir, trainer
from lvat_tf.generative.glow import (ActNorm, AffineCoupling, Glow, squeeze_bijector,
                                     straight_through_dequantize)
from lvat_tf.generative.train_glow import (GlowConfig, scaled_schedule, train_glow,
                                           upstream_schedule)
from lvat_tf.losses import per_sample_l2
from lvat_tf.models import registry
from lvat_tf.regularizers.lvat import LVATGlow, lvat_glow_perturbation
from lvat_tf.training import run
from lvat_tf.training.model import SSLModel
from lvat_tf.training.optimizer import UpstreamAdam


def _tiny_glow(shape=(8, 8, 1), levels=2, steps=2, width=8, jitter=0.05, seed=0):
    """A small Glow whose zero-initialised parts are jittered so that every layer acts."""
    keras.utils.set_random_seed(seed)
    glow = Glow(image_shape=shape, num_levels=levels, num_steps=steps, width=width)
    glow.build()
    rng = np.random.RandomState(seed)
    for v in glow.trainable_variables:
        v.assign(v + jitter * rng.randn(*v.shape).astype(np.float32))
    return glow


def _flow_only(glow, v):
    """The flow without quantisation: (B, H, W, C) -> concat of flattened (y, z), and logdet."""
    logdet, z = 0.0, None
    for lvl, (h, w, c) in enumerate(glow.level_shapes):
        v = squeeze_bijector(2 * h, 2 * w, c // 4).forward(v)
        if z is not None:
            z = tf.nn.space_to_depth(z, 2)
        b = glow.level_bijector(lvl)
        v, logdet = b.forward(v), logdet + b.forward_log_det_jacobian(v, 3)
        z = v[..., :c // 2] if z is None else tf.concat([z, v[..., :c // 2]], -1)
        v = v[..., c // 2:]
    flat = tf.concat([tf.reshape(v, [tf.shape(v)[0], -1]), tf.reshape(z, [tf.shape(z)[0], -1])],
                     1)
    return flat, logdet


def test_latent_shapes_match_upstream_for_32x32x3():
    glow = Glow(image_shape=(32, 32, 3), num_levels=3, num_steps=1, width=4)
    assert glow.latent_shapes == ((4, 4, 24), (4, 4, 168))  # upstream.md B.5
    y, logdet, z = glow.encode(tf.random.uniform((2, 32, 32, 3)))
    assert y.shape == (2, 4, 4, 24) and z.shape == (2, 4, 4, 168) and logdet.shape == (2,)


def test_squeeze_bijector_is_space_to_depth_and_invertible():
    x = tf.random.normal((2, 8, 6, 3))
    sq = squeeze_bijector(8, 6, 3)
    np.testing.assert_array_equal(sq.forward(x).numpy(), tf.nn.space_to_depth(x, 2).numpy())
    np.testing.assert_array_equal(squeeze_bijector(8, 6, 3).inverse(
        tf.nn.space_to_depth(x, 2)).numpy(), x.numpy())


def test_inverse_of_forward_is_identity():
    glow = _tiny_glow()
    x = tf.random.uniform((3, 8, 8, 1))
    noise = tf.random.uniform((3, 8, 8, 1), 0, 1 / 32)
    y, _, z = glow.encode(x, noise=noise)
    # Fresh tensors: TFP caches by tensor identity (environment.md).
    back = glow.decode_flow(tf.identity(y), tf.identity(z))
    np.testing.assert_allclose(back.numpy(), glow.dequantize(x, noise).numpy(), atol=1e-4)
    # Through the 5-bit output quantisation the image comes back exactly.
    xq = tf.floor(x * 255 / 8) * 8 / 255
    np.testing.assert_allclose(glow.decode(y, z).numpy(), xq.numpy(), atol=1e-6)


def test_logdet_equals_log_abs_det_of_the_jacobian():
    glow = _tiny_glow()
    k = tf.constant(np.random.RandomState(0).randint(0, 32, (1, 8, 8, 1)), tf.float32)
    v = k / 32 - 0.5  # a 5-bit image in flow space: encode() maps (8k + 4)/255 here exactly
    flat_v = tf.reshape(v, [-1])
    with tf.GradientTape() as tape:
        tape.watch(flat_v)
        out, logdet = _flow_only(glow, tf.reshape(flat_v, (1, 8, 8, 1)))
        out = tf.reshape(out, [-1])
    jac = tape.jacobian(out, flat_v).numpy().astype(np.float64)
    _, expected = np.linalg.slogdet(jac)
    assert abs(float(logdet[0]) - expected) < 1e-3 * max(1.0, abs(expected)), (logdet, expected)
    # encode() adds nothing to the log-det beyond the flow (quantisation is volume-free).
    _, ld_enc, _ = glow.encode((8 * k + 4) / 255, noise=tf.zeros_like(v))
    np.testing.assert_allclose(float(ld_enc[0]), float(logdet[0]), rtol=1e-5)


def test_actnorm_data_dependent_init_gives_zero_mean_unit_variance():
    act = ActNorm()
    x = 3.0 + 2.5 * tf.random.normal((16, 4, 4, 5))
    act.build(x.shape)
    act.initialize(x)
    y = act.bijector().forward(x)
    mean, var = tf.nn.moments(y, axes=[0, 1, 2])
    np.testing.assert_allclose(mean.numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(var.numpy(), 1.0, rtol=1e-4)
    # And inside a flow: every step's actnorm output is normalised on the init batch.
    glow = Glow(image_shape=(8, 8, 1), num_levels=2, num_steps=2, width=8)
    glow.encode(tf.random.uniform((32, 8, 8, 1)), seed=[1, 2], init=True)
    assert float(tf.reduce_max(tf.abs(glow.levels[1][1].actnorm.log_scale))) > 0


def test_coupling_log_scale_is_clipped_at_15():
    def fn(x1):
        return tf.zeros_like(x1), 100.0 * tf.ones_like(x1)   # far beyond the clip

    b = AffineCoupling(fn)
    x = tf.ones((1, 2, 2, 4))
    y = b.forward(x)
    np.testing.assert_allclose(y[..., 2:].numpy(), np.exp(15.0), rtol=1e-6)
    np.testing.assert_allclose(b.forward_log_det_jacobian(x, 3).numpy(), [15.0 * 8], rtol=1e-6)
    np.testing.assert_allclose(AffineCoupling(fn).inverse(tf.identity(y)).numpy(), x.numpy(),
                               rtol=1e-6)


def test_straight_through_quantisation_gradient():
    x = tf.constant([[-0.7, -0.2, 0.1, 0.45, 0.7]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = straight_through_dequantize(x, 5)
    g = tape.gradient(out, x).numpy()[0]
    # clipped below 0 and above 1: zero gradient; inside: 32 * 8 / 255.
    np.testing.assert_allclose(g, [0.0, 256 / 255, 256 / 255, 256 / 255, 0.0], rtol=1e-6)
    assert set(np.round(out.numpy()[0] * 255).astype(int)) <= set(range(0, 256, 8)) | {255}


def test_glow_reproduces_upstream_fixture():
    path = shared_path("fixtures", "upstream", "lvat_glow.npz")
    from lvat_tf.upstream.fixtures import check_fixture
    kind, out, checks = check_fixture(path)
    assert kind == "lvat_glow"
    by_name = {c.name: c for c in checks}
    assert all(c.ok for c in checks), "\n".join(map(str, checks))
    for key in ("y rel. error", "z rel. error", "logdet rel. error", "r_y min cosine",
                "r_z min cosine", "lvat_loss rel. error", "loss_at_r_given rel. error",
                "x_adv pixels differing", "ul_logit rel. error"):
        assert key in by_name
    assert "dropout ON" in out["note"]


def test_lvat_vae_fixture_fully_reproduced():
    path = shared_path("fixtures", "upstream", "lvat_vae.npz")
    from lvat_tf.upstream.fixtures import check_fixture
    kind, out, checks = check_fixture(path)
    assert kind == "lvat_vae" and len(checks) == 8
    assert all(c.ok for c in checks), "\n".join(map(str, checks))


def test_lvat_glow_parts_have_norm_epsilon_and_generative_weights_stay_frozen():
    glow = _tiny_glow(shape=(32, 32, 1), levels=3, steps=1, width=4)
    glow.trainable = False
    clf = registry.build("tiny_cnn", keep_prob_hidden=1.0)
    x = tf.random.uniform((4, 32, 32, 1))
    fwd = lambda v: clf(v, bn_mode="batch")  # noqa: E731
    (hy, wy, cy), (hz, wz, cz) = glow.latent_shapes
    d = [tf.random.normal((4, hy, wy, cy)), tf.random.normal((4, hz, wz, cz))]
    for mode in ("finite_difference", "exact"):
        (y, z), (r_y, r_z) = lvat_glow_perturbation(fwd, glow, x, fwd(x), d, 1.5, mode=mode,
                                                    seed=[3, 4])
        np.testing.assert_allclose(per_sample_l2(r_y).numpy(), 1.5, rtol=1e-5)
        np.testing.assert_allclose(per_sample_l2(r_z).numpy(), 1.5, rtol=1e-5)
    before = [v.numpy().copy() for v in glow.variables]
    model = SSLModel(clf, [LVATGlow(glow, epsilon=1.0)], seed=0)
    model.compile(optimizer=UpstreamAdam(1e-3))
    model.optimizer.build(clf.trainable_variables)
    data = {"x_l": x, "y_l": tf.constant([0, 1, 2, 3]), "x_u": tf.random.uniform((8, 32, 32, 1))}
    with tf.GradientTape() as tape:
        step = model.compute_losses(data, tape)
        total, losses = step.total, step.regularizers
    assert float(losses["lvat_loss"]) > 0
    assert all(g is None for g in tape.gradient(total, glow.variables))
    model.train_step(data)
    for a, b in zip(before, glow.variables):
        np.testing.assert_array_equal(a, b.numpy())


def test_upstream_schedule_and_scaling():
    assert sum(n for n, _ in upstream_schedule(False)) == 15601
    assert sum(n for n, _ in upstream_schedule(True)) == 25601
    for total in (8, 9, 30, 1500):
        s = scaled_schedule(upstream_schedule(True), total)
        assert sum(n for n, _ in s) == total and min(n for n, _ in s) >= 1
        assert [lr for _, lr in s] == [lr for _, lr in upstream_schedule(True)]


def _glow_cfg(tmp_path, name, **kw):
    base = dict(dataset="synthetic", model_dir=str(tmp_path / name), num_steps=8, batch_size=8,
                num_levels=2, flow_steps=1, width=4, log_every=2, seed=3)
    base.update(kw)
    return GlowConfig(**base)


def test_glow_training_resumes_bit_identically(tmp_path, monkeypatch):
    tf.config.experimental.enable_op_determinism()
    ref, _ = train_glow(_glow_cfg(tmp_path, "ref"), verbose=False)
    # A run that dies after step 5 (its last checkpoint is at step 4) ...
    real_run = trainer.run

    class Kill(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == 5:
                raise KeyboardInterrupt("killed")

    def dying_run(*a, **k):
        return real_run(*a, callbacks=[Kill()], **k)

    monkeypatch.setattr(trainer, "run", dying_run)
    with pytest.raises(KeyboardInterrupt):
        train_glow(_glow_cfg(tmp_path, "cut"), verbose=False)
    assert not os.path.exists(tmp_path / "cut" / "generative.json")
    monkeypatch.setattr(trainer, "run", real_run)
    # ... and is run again: it resumes at step 4 and ends where the uninterrupted run ended.
    resumed, meta = train_glow(_glow_cfg(tmp_path, "cut"), verbose=False)
    for a, b in zip(ref.variables, resumed.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert [h["step"] for h in meta["training"]["history"]] == [2, 4, 6, 8]
    for name in ("reconstructions.png", "samples.png"):
        png = tf.io.decode_png(tf.io.read_file(str(tmp_path / "cut" / name)))
        assert png.shape[0] > 8 and png.shape[1] > 8
    assert os.listdir(tmp_path / "cut" / "tb")
    # Other settings in the same directory are refused, not mixed in.
    with pytest.raises(model_dir.GenerativeModelError, match="other settings"):
        train_glow(_glow_cfg(tmp_path, "cut", width=8), verbose=False)


def test_glow_training_nan_guard_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real_run = trainer.run

    def nan_run(model, optimizer, train_step, *a, **k):
        def step(t):  # traced by Keras fit: the NaN is chosen in the graph
            out = train_step(t)
            return dict(out, loss=tf.where(t == 3, tf.constant(np.nan), out["loss"]))
        return real_run(model, optimizer, step, *a, **k)

    monkeypatch.setattr(trainer, "run", nan_run)
    with pytest.raises(model_dir.GenerativeModelError, match="diverged at step 4"):
        train_glow(_glow_cfg(tmp_path, "nan"), verbose=False)
    assert not os.path.exists(tmp_path / "nan" / "generative.json")
    ckpts = tf.train.get_checkpoint_state(str(tmp_path / "nan" / "checkpoints"))
    assert ckpts.model_checkpoint_path.endswith("ckpt-2")


def test_glow_model_dir_roundtrip(tmp_path):
    glow, _ = train_glow(_glow_cfg(tmp_path, "g", num_steps=8), verbose=False)
    loaded, meta = model_dir.load(str(tmp_path / "g"), expect={"kind": "glow"})
    x = tf.random.uniform((2,) + tuple(meta["image_shape"]))
    noise = tf.random.uniform(x.shape, 0, 1 / 32)
    for a, b in zip(glow.encode(x, noise=noise), loaded.encode(x, noise=noise)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-6)
    assert not loaded.trainable


def test_lvat_glow_run_trains_its_glow_first_and_refuses_a_vae_dir(tmp_path):
    cfg = tiny_config(str(tmp_path / "run"), method="lvat_glow", glow_train_steps=8,
                      num_epochs=1, epoch_decay_start=0, num_iter_per_epoch=3)
    res = run.train_and_evaluate(cfg, verbose=0)
    meta = json.load(open(tmp_path / "run" / "generative" / "generative.json"))
    assert meta["kind"] == "glow" and meta["image_shape"] == [32, 32, 3]
    assert meta["architecture"]["num_steps"] == 2 and res["num_iterations"] == 3
    # An LVAT-VAE run cannot use that Glow directory.
    p = run_script("train.py", "--dataset=synthetic", "--model=tiny_cnn", "--method=lvat_vae",
                   f"--generative_model_dir={tmp_path / 'run' / 'generative'}", "--num_epochs=1",
                   "--epoch_decay_start=0", "--num_iter_per_epoch=2",
                   "--num_labeled_examples=20", f"--log_dir={tmp_path / 'run2'}")
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert "kind='glow'" in p.stderr


def test_train_glow_script_on_real_digits(tmp_path):
    p, _, hist = train_generative_on_digits("train_glow.py", tmp_path / "glow", "--num_steps=24",
                                            "--flow_steps=2", "--width=16", "--batch_size=32",
                                            "--log_every=8")
    assert hist[-1]["loss_per_pixel"] < hist[0]["loss_per_pixel"]
    assert "test bits/dim" in p.stdout
    bad = run_script("train_glow.py", "--dataset=digits", "--num_steps=3",
                     f"--log_dir={tmp_path / 'bad'}")
    assert bad.returncode != 0 and "--num_steps" in bad.stderr and "Traceback" not in bad.stderr
