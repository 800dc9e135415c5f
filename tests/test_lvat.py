"""LVAT-VAE: latent perturbation norms, frozen generative weights, model directories, runs."""
import json
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import run_script, tiny_config, train_generative_on_digits
from lvat_tf.generative import model_dir
from lvat_tf.generative.vae import VAE
from lvat_tf.losses import per_sample_l2
from lvat_tf.models import registry
from lvat_tf.regularizers.lvat import LVATVAE, lvat_vae_perturbation
from lvat_tf.training import run
from lvat_tf.training.model import SSLModel
from lvat_tf.training.optimizer import UpstreamAdam


def _tiny_vae(channels=3):
    keras.utils.set_random_seed(0)
    vae = VAE(latent_dim=8, channels=channels, widths=(8, 16, 32))
    vae(tf.zeros((1, 32, 32, channels)))
    vae.trainable = False
    return vae


def _tiny_setup(n, seed=None):
    """(frozen VAE, dropout-free tiny CNN, n random images, the CNN in BN batch mode)."""
    vae = _tiny_vae()
    if seed is not None:
        keras.utils.set_random_seed(seed)
    clf = registry.build("tiny_cnn", keep_prob_hidden=1.0)
    return vae, clf, tf.random.uniform((n, 32, 32, 3)), lambda v: clf(v, bn_mode="batch")


def test_latent_perturbation_has_norm_epsilon_in_both_modes():
    vae, clf, x, fwd = _tiny_setup(5)
    for mode in ("finite_difference", "exact"):
        z, r = lvat_vae_perturbation(fwd, vae, x, fwd(x), tf.random.normal((5, 8)), 1.5,
                                     xi=1e-6, mode=mode)
        assert z.shape == (5, 8)
        np.testing.assert_allclose(per_sample_l2(r).numpy(), 1.5, rtol=1e-5)


def test_exact_first_order_direction_matches_finite_difference():
    """LVAT's KL is first order at r = 0 (reconstruction error): FD is stable there."""
    vae, clf, x, fwd = _tiny_setup(4, seed=1)
    d = tf.random.normal((4, 8))
    _, r_fd = lvat_vae_perturbation(fwd, vae, x, fwd(x), d, 1.0, xi=1e-6)
    _, r_ex = lvat_vae_perturbation(fwd, vae, x, fwd(x), d, 1.0, xi=1e-6, mode="exact")
    cos = np.sum(r_fd.numpy() * r_ex.numpy(), 1) / 1.0
    assert cos.min() > 0.999, cos


@pytest.mark.parametrize("bn", ["batch", "joint", "moving"])
def test_train_step_leaves_generative_weights_and_classifier_bn_alone(bn):
    vae = _tiny_vae()
    before_vae = [v.numpy().copy() for v in vae.variables]
    keras.utils.set_random_seed(2)
    clf = registry.build("tiny_cnn", keep_prob_hidden=0.5)
    clf(tf.zeros((1, 32, 32, 3)))
    model = SSLModel(clf, [LVATVAE(vae, epsilon=1.0, bn=bn)], seed=0)
    model.compile(optimizer=UpstreamAdam(1e-3))
    model.optimizer.build(clf.trainable_variables)
    rng = np.random.RandomState(0)
    data = {"x_l": tf.constant(rng.uniform(size=(8, 32, 32, 3)), tf.float32),
            "y_l": tf.constant(rng.randint(0, 10, 8)),
            "x_u": tf.constant(rng.uniform(size=(16, 32, 32, 3)), tf.float32)}
    model.train_step(data)
    for a, b in zip(before_vae, vae.variables):
        np.testing.assert_array_equal(a, b.numpy())
    # Only the labeled pass moves the classifier's BN statistics: the same
    # step without the regulariser gives the same statistics.
    keras.utils.set_random_seed(2)
    clf2 = registry.build("tiny_cnn", keep_prob_hidden=0.5)
    clf2(tf.zeros((1, 32, 32, 3)))
    base = SSLModel(clf2, [], seed=0)
    base.compile(optimizer=UpstreamAdam(1e-3))
    base.optimizer.build(clf2.trainable_variables)
    base.train_step(data)
    for a, b in zip(clf.non_trainable_variables, clf2.non_trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
    # No gradient path from the loss to any generative variable.
    with tf.GradientTape() as tape:
        step = model.compute_losses(data, tape)
        total, losses = step.total, step.regularizers
    assert "lvat_loss" in losses and float(losses["lvat_loss"]) >= 0
    assert all(g is None for g in tape.gradient(total, vae.variables))


def _save_tiny(path, dataset="synthetic", shape=(32, 32, 3)):
    vae = _tiny_vae(shape[-1])
    model_dir.save(str(path), vae, {
        "kind": "vae", "dataset": dataset, "image_shape": list(shape),
        "preprocessing": {"scaling": "unit", "pad_to": 32, "zca": False},
        "architecture": {"latent_dim": 8, "widths": [8, 16, 32]}})
    return vae


def test_model_dir_roundtrip_and_mismatch_refused(tmp_path):
    vae = _save_tiny(tmp_path / "g")
    loaded, meta = model_dir.load(str(tmp_path / "g"), expect={"dataset": "synthetic"})
    x = tf.random.uniform((2, 32, 32, 3))
    np.testing.assert_allclose(loaded(x).numpy(), vae(x).numpy(), rtol=1e-6)
    assert not loaded.trainable
    with pytest.raises(model_dir.GenerativeModelError, match="dataset='synthetic'"):
        model_dir.load(str(tmp_path / "g"), expect={"dataset": "mnist"})
    os.symlink(tmp_path / "g", tmp_path / "link")
    with pytest.raises(model_dir.GenerativeModelError, match="symbolic link"):
        model_dir.load(str(tmp_path / "link"))
    with pytest.raises(model_dir.GenerativeModelError, match="holds no"):
        model_dir.load(str(tmp_path))


def test_lvat_run_with_a_given_model_dir_and_a_wrong_one(tmp_path, monkeypatch):
    _save_tiny(tmp_path / "g")
    cfg = tiny_config(str(tmp_path / "run"), method="lvat_vae",
                      generative_model_dir=str(tmp_path / "g"), num_epochs=1,
                      epoch_decay_start=0)
    res = run.train_and_evaluate(cfg, verbose=0)
    assert res["method"] == "lvat_vae" and 0 <= res["test_error"] <= 100
    # The same run under --mixed_precision with bfloat16 decodes (--generative_dtype): the
    # run builds the bfloat16 copy and trains through it.
    made = []

    def spy(model, shape, dtype, original=model_dir.decoder_for):
        made.append(original(model, shape, dtype))
        return made[-1]

    monkeypatch.setattr(run.model_dir_lib, "decoder_for", spy)
    res = run.train_and_evaluate(cfg.replace(log_dir=str(tmp_path / "run_bf16"),
                                             mixed_precision=True, generative_dtype="bfloat16"),
                                 verbose=0)
    assert res["mixed_precision"] and 0 <= res["test_error"] <= 100
    assert len(made) == 1 and made[0].compute_dtype == "bfloat16"
    saved = json.load(open(tmp_path / "run_bf16" / "config.json"))
    assert saved["generative_dtype"] == "bfloat16"
    _save_tiny(tmp_path / "g_mnist", dataset="mnist", shape=(32, 32, 1))
    p = run_script("train.py", "--dataset=synthetic", "--model=tiny_cnn", "--method=lvat_vae",
                   f"--generative_model_dir={tmp_path / 'g_mnist'}", "--num_epochs=1",
                   "--epoch_decay_start=0", "--num_iter_per_epoch=2",
                   "--num_labeled_examples=20", f"--log_dir={tmp_path / 'run2'}")
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert "--generative_model_dir" in p.stderr and "dataset='mnist'" in p.stderr


def test_train_vae_script_and_vae_loss_decreases_on_real_digits(tmp_path):
    p, _, hist = train_generative_on_digits("train_vae.py", tmp_path / "vae", "--num_epochs=2",
                                            "--max_iter_per_epoch=15")
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert "test reconstruction" in p.stdout


def test_lvat_run_without_model_dir_trains_the_vae_first(tmp_path):
    cfg = tiny_config(str(tmp_path / "run"), method="lvat_vae", vae_num_epochs=1, num_epochs=1,
                      epoch_decay_start=0, num_iter_per_epoch=3)
    res = run.train_and_evaluate(cfg, verbose=0)
    meta = json.load(open(tmp_path / "run" / "generative" / "generative.json"))
    assert meta["kind"] == "vae" and meta["architecture"]["widths"] == [8, 16, 32]
    assert meta["image_shape"] == [32, 32, 3]  # 16x16 synthetic padded to 32
    assert res["num_iterations"] == 3


def test_reconstruction_reference_makes_the_term_vanish_at_r_zero():
    """--lvat_reference: upstream's p(y|x) leaves KL(p(y|x) || p(y|Dec(Enc(x)))) at r = 0."""
    vae, clf, x, fwd = _tiny_setup(6, seed=3)
    seed = tf.constant([4, 5], tf.int64)
    gap = float(LVATVAE(vae, epsilon=0.0)(fwd, x, fwd(x), seed)[0])
    assert gap > 1e-4  # the reconstruction gap, paid even without a perturbation
    for mode in ("finite_difference", "exact"):
        rec = LVATVAE(vae, epsilon=0.0, reference="reconstruction", power_iteration=mode)
        assert not rec.first_order and LVATVAE(vae, epsilon=1.0).first_order
        assert abs(float(rec(fwd, x, fwd(x), seed)[0])) < 1e-6
        # With epsilon > 0 it measures only the perturbation's effect, ||r|| = epsilon.
        rec = LVATVAE(vae, epsilon=1.5, reference="reconstruction", power_iteration=mode)
        loss = float(rec(fwd, x, fwd(x), seed)[0])
        assert loss > 0
        ref = fwd(rec.reconstruction(x, seed))
        _, r = lvat_vae_perturbation(fwd, vae, x, ref, tf.random.normal((6, 8)), 1.5,
                                     mode=mode, first_order=False)
        np.testing.assert_allclose(per_sample_l2(r).numpy(), 1.5, rtol=1e-5)


def test_lvat_reference_flag_reaches_the_regulariser(tmp_path):
    cfg = tiny_config(str(tmp_path / "r"), method="lvat_vae", lvat_reference="reconstruction")
    from lvat_tf.regularizers import methods
    (reg,) = methods.build_regularizers(cfg, _tiny_vae())
    assert reg.reference == "reconstruction" and reg.bn == "batch"
    with pytest.raises(Exception, match="--lvat_reference"):
        tiny_config("", method="lvat_vae", lvat_reference="output")
    (reg,) = methods.build_regularizers(cfg.replace(lvat_bn="moving"), _tiny_vae())
    assert reg.bn == "moving"
    with pytest.raises(Exception, match=re.escape("--lvat_bn: expected batch|joint|moving")):
        tiny_config("", method="lvat_vae", lvat_bn="update")


def test_moving_bn_term_is_one_fixed_function_of_each_sample():
    """--lvat_bn=moving: the reference, the direction and x_adv's pass all use the BN moving
    averages (no update), so each sample's term is independent of the rest of its batch;
    with upstream's batch statistics it is not."""
    vae, clf, x, _ = _tiny_setup(6, seed=5)
    for _ in range(3):  # moving averages away from their (0, 1) start
        clf(tf.random.uniform((16, 32, 32, 3)), bn_mode="update")

    def forward(v, features=False, bn_mode="batch"):
        return clf(v, bn_mode=bn_mode, return_features=features)

    stats = [v.numpy().copy() for v in clf.non_trainable_variables]
    seed = tf.constant([7, 8], tf.int64)
    reg = LVATVAE(vae, epsilon=1.5, bn="moving", power_iteration="exact")
    loss = float(reg(forward, x, forward(x), seed)[0])
    # The step's shared clean pass (batch statistics) is not its reference.
    assert float(reg(forward, x, tf.zeros((6, 10)), seed)[0]) == pytest.approx(loss, rel=1e-6)
    moving = lambda v: forward(v, bn_mode="moving")  # noqa: E731
    x_adv = reg.adversarial_input(moving, x, moving(x), seed)
    from lvat_tf.losses import kl_divergence_with_logits
    assert float(kl_divergence_with_logits(moving(x), moving(x_adv))) == pytest.approx(
        loss, rel=1e-5)
    for a, b in zip(stats, clf.non_trainable_variables):
        np.testing.assert_array_equal(a, b.numpy())
    # Per sample: the first three samples' directions, alone or in the batch of six.
    d = tf.random.stateless_normal((6, 8), seed=[1, 2])
    batch = lambda v: forward(v)  # noqa: E731
    for fwd, independent in ((moving, True), (batch, False)):
        _, r6 = lvat_vae_perturbation(fwd, vae, x, fwd(x), d, 1.5, mode="exact")
        _, r3 = lvat_vae_perturbation(fwd, vae, x[:3], fwd(x[:3]), d[:3], 1.5, mode="exact")
        gap = float(tf.reduce_max(tf.abs(r6[:3] - r3)))
        assert (gap < 1e-4) if independent else (gap > 1e-3), (independent, gap)


def test_joint_bn_normalises_reference_and_perturbed_inputs_as_one_batch():
    """--lvat_bn=joint: the term is KL between the two halves of one pass over [ref; x_adv];
    with the reconstruction as reference it is exactly zero at r = 0."""
    vae, clf, x, fwd = _tiny_setup(6, seed=6)
    seed = tf.constant([3, 9], tf.int64)
    stats = [v.numpy().copy() for v in clf.non_trainable_variables]
    for mode in ("finite_difference", "exact"):
        reg = LVATVAE(vae, epsilon=1.5, bn="joint", power_iteration=mode)
        # The step's shared clean pass is not used.
        loss = float(reg(fwd, x, tf.zeros((6, 10)), seed)[0])
        assert loss > 0
        x_rec = reg.reconstruction(x, seed)
        perturbed = lambda v: fwd(tf.concat([x, v], 0))[6:]  # noqa: E731
        x_adv = reg.adversarial_input(perturbed, x, fwd(tf.concat([x, x_rec], 0))[:6], seed)
        assert np.all(per_sample_l2(x_adv - x_rec).numpy() > 0)
        both = fwd(tf.concat([x, x_adv], 0))
        from lvat_tf.losses import kl_divergence_with_logits
        assert float(kl_divergence_with_logits(both[:6], both[6:])) == pytest.approx(
            loss, rel=1e-5)
        # Not the upstream term: there x_adv's pass has its own batch statistics.
        assert abs(float(LVATVAE(vae, epsilon=1.5, power_iteration=mode)(
            fwd, x, fwd(x), seed)[0]) - loss) > 1e-6
        rec = LVATVAE(vae, epsilon=0.0, bn="joint", reference="reconstruction",
                      power_iteration=mode)
        assert abs(float(rec(fwd, x, fwd(x), seed)[0])) < 1e-6
    for a, b in zip(stats, clf.non_trainable_variables):
        np.testing.assert_array_equal(a, b.numpy())


# --- --generative_dtype: LVAT's decodes in bfloat16 (issue 15 item 3) -------------------------


def _mixed_tiny_cnn():
    """tiny_cnn under the mixed bfloat16 policy (what --mixed_precision trains)."""
    from lvat_tf.precision import mixed_precision_policy

    with mixed_precision_policy(True):
        keras.utils.set_random_seed(3)
        clf = registry.build("tiny_cnn", keep_prob_hidden=1.0)
        clf(tf.zeros((2, 32, 32, 3)), bn_mode="moving")
    return clf


def test_compute_copy_decodes_in_bfloat16_with_the_same_float32_weights():
    from lvat_tf.precision import MIXED_POLICY

    vae = _tiny_vae()
    copy = model_dir.compute_copy(vae, (32, 32, 3), MIXED_POLICY)
    assert copy.compute_dtype == "bfloat16" and vae.compute_dtype == "float32"
    assert [v.dtype for v in copy.weights] == [v.dtype for v in vae.weights]
    for a, b in zip(copy.weights, vae.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not copy.trainable
    z = tf.random.stateless_normal((6, 8), [0, 1])
    x32, x16 = vae.decode(z), copy.decode(z)
    assert x16.dtype == tf.bfloat16
    # bfloat16 keeps 8 bits of mantissa: images in (0, 1) agree to a few 1e-3, not exactly.
    diff = np.abs(x32.numpy() - x16.numpy().astype(np.float32))
    assert 0 < diff.max() < 2e-2, diff.max()
    assert model_dir.decoder_for(vae, (32, 32, 3), "float32") is None
    with pytest.raises(ValueError, match="--generative_dtype"):
        model_dir.decoder_for(vae, (32, 32, 3), "float16")


def test_glow_decodes_in_bfloat16_under_a_copy_and_the_original_is_unchanged():
    from lvat_tf.generative.glow import Glow
    from lvat_tf.precision import MIXED_POLICY

    keras.utils.set_random_seed(0)
    glow = Glow(image_shape=(8, 8, 3), num_levels=2, num_steps=2, width=8)
    x = tf.random.stateless_uniform((4, 8, 8, 3), [0, 2])
    glow.encode(x, init=True)
    y, _, z = glow.encode(x, seed=[1, 2])
    before = glow.decode_flow(y, z).numpy()
    copy = model_dir.compute_copy(glow, (8, 8, 3), MIXED_POLICY)
    flow16 = copy.decode_flow(y, z)
    assert flow16.dtype == tf.bfloat16
    err = np.abs(flow16.numpy().astype(np.float32) - before).max()
    assert 0 < err < 5e-2, err
    # The float32 flow still inverts its encoder exactly (the casts are no-ops there).
    np.testing.assert_allclose(glow.decode_flow(y, z).numpy(), before, atol=0)


def test_lvat_vae_with_a_bfloat16_decoder_decodes_with_it_at_norm_epsilon():
    from lvat_tf.precision import MIXED_POLICY

    vae = _tiny_vae()
    clf = _mixed_tiny_cnn()
    x = tf.random.stateless_uniform((8, 32, 32, 3), [0, 4])
    fwd = lambda v: clf(v, bn_mode="batch")  # noqa: E731
    clean = tf.cast(fwd(x), tf.float32)
    d = tf.random.stateless_normal((8, 8), [0, 5])
    copy = model_dir.compute_copy(vae, (32, 32, 3), MIXED_POLICY)
    calls = []

    class Recording:
        def decode(self, z, training=False):
            calls.append(z.shape)
            return copy.decode(z, training=training)

    _, r32 = lvat_vae_perturbation(fwd, vae, x, clean, d, 1.0)
    _, r16 = lvat_vae_perturbation(fwd, vae, x, clean, d, 1.0, decoder=Recording())
    assert calls and r16.dtype == tf.float32
    np.testing.assert_allclose(per_sample_l2(r16).numpy(), 1.0, rtol=1e-5)
    # How close the two directions are is a property of trained models (on random ones the
    # first-order term is as small as the rounding): docs/measurements/generative_bf16.py.
    assert not np.allclose(r32.numpy(), r16.numpy())
    # The regulariser decodes x_adv with it too, and hands float32 images on.
    reg = LVATVAE(vae, epsilon=1.0, decoder=Recording())
    n = len(calls)
    loss, _ = reg.unlabeled_loss(fwd, x, clean, tf.constant([1, 2], tf.int64))
    assert len(calls) > n and np.isfinite(loss.numpy())
    x_adv = reg.adversarial_input(fwd, x, clean, tf.constant([1, 2], tf.int64))
    assert x_adv.dtype == tf.float32


def test_generative_dtype_flag_is_checked_and_reaches_the_regulariser(tmp_path):
    from lvat_tf.config import ConfigError, make_config

    cfg = make_config(dataset="digits", method="lvat_vae", mixed_precision=True,
                      generative_dtype="bfloat16")
    assert cfg.generative_dtype == "bfloat16"
    assert make_config(dataset="digits", method="lvat_vae",
                       mixed_precision=True).generative_dtype == "float32"
    for bad, words in ((dict(method="lvat_glow", mixed_precision=True), "Glow"),
                       (dict(method="vat", mixed_precision=True), "no generative model"),
                       (dict(method="lvat_vae"), "--mixed_precision"),
                       (dict(method="lvat_vae", mixed_precision=True, generative_dtype="f16"),
                        "float32|bfloat16")):
        bad.setdefault("generative_dtype", "bfloat16")
        with pytest.raises(ConfigError, match=re.escape("generative_dtype")) as e:
            make_config(dataset="digits", **bad)
        assert words in str(e.value), (bad, str(e.value))
    vae = _tiny_vae()
    copy = model_dir.decoder_for(vae, (32, 32, 3), cfg.generative_dtype)
    from lvat_tf.regularizers import methods

    (reg,) = methods.build_regularizers(cfg, vae, generative_decoder=copy)
    assert reg.decoder is copy and reg.decoding_model is copy and reg.model is vae
    (reg,) = methods.build_regularizers(cfg.replace(generative_dtype="float32"), vae)
    assert reg.decoder is None and reg.decoding_model is vae
    p = run_script("train.py", "--dataset=digits", "--method=lvat_glow", "--mixed_precision",
                   "--generative_dtype=bfloat16", f"--log_dir={tmp_path / 'r'}")
    assert p.returncode != 0 and "--generative_dtype" in p.stderr
    assert not (tmp_path / "r").exists()
