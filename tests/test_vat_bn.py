"""--vat_bn: the batch-norm statistics of VAT's own passes (batch = upstream, joint, moving)."""
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_config
from lvat_tf.losses import kl_divergence_with_logits, per_sample_l2
from lvat_tf.models import registry
from lvat_tf.regularizers import methods
from lvat_tf.regularizers.base import joint_forward, joint_reference_logits
from lvat_tf.regularizers.vat import VAT, vat_loss

SEED = tf.constant([4, 2], tf.int64)


def _setup(n=6, seed=3):
    """A dropout-free tiny CNN with moving averages away from their start, n images, forward."""
    keras.utils.set_random_seed(seed)
    clf = registry.build("tiny_cnn", keep_prob_hidden=1.0)
    for _ in range(3):
        clf(tf.random.uniform((16, 32, 32, 3)), bn_mode="update")

    def forward(v, features=False, bn_mode="batch"):
        return clf(v, bn_mode=bn_mode, return_features=features)

    return clf, tf.random.uniform((n, 32, 32, 3)), forward


def _stats(clf):
    return [v.numpy().copy() for v in clf.non_trainable_variables]


@pytest.mark.parametrize("mode", ["finite_difference", "exact"])
def test_batch_mode_is_upstreams_term(mode):
    clf, x, fwd = _setup()
    reg = VAT(epsilon=2.0, power_iteration=mode)
    assert reg.bn == "batch"
    clean = fwd(x)
    r = reg.perturbation(fwd, x, clean, SEED)
    np.testing.assert_allclose(per_sample_l2(r).numpy(), 2.0, rtol=1e-5)
    assert float(reg(fwd, x, clean, SEED)[0]) == pytest.approx(
        float(vat_loss(fwd, x, clean, r)), rel=1e-6)


@pytest.mark.parametrize("mode", ["finite_difference", "exact"])
def test_joint_mode_normalises_x_and_x_plus_r_as_one_batch(mode):
    clf, x, fwd = _setup()
    before = _stats(clf)
    reg = VAT(epsilon=2.0, power_iteration=mode, bn="joint")
    loss = float(reg(fwd, x, tf.zeros((6, 10)), SEED)[0])  # the shared clean pass is unused
    r = reg.perturbation(joint_forward(fwd, x), x, joint_reference_logits(fwd, x, x), SEED)
    np.testing.assert_allclose(per_sample_l2(r).numpy(), 2.0, rtol=1e-5)
    both = fwd(tf.concat([x, x + r], 0))
    assert loss == pytest.approx(float(kl_divergence_with_logits(both[:6], both[6:])), rel=1e-5)
    # Not upstream's term: there x + r has its own batch statistics.
    assert abs(float(VAT(epsilon=2.0, power_iteration=mode)(fwd, x, fwd(x), SEED)[0])
               - loss) > 1e-6
    # At epsilon 0 both halves are the same images under the same statistics.
    assert abs(float(VAT(epsilon=0.0, power_iteration=mode, bn="joint")(
        fwd, x, fwd(x), SEED)[0])) < 1e-6
    for a, b in zip(before, clf.non_trainable_variables):
        np.testing.assert_array_equal(a, b.numpy())


def test_moving_mode_is_one_fixed_function_of_each_sample():
    clf, x, fwd = _setup()
    before = _stats(clf)
    reg = VAT(epsilon=2.0, power_iteration="exact", bn="moving")
    loss = float(reg(fwd, x, fwd(x), SEED)[0])
    assert float(reg(fwd, x, tf.zeros((6, 10)), SEED)[0]) == pytest.approx(loss, rel=1e-6)

    def moving(v):
        return fwd(v, bn_mode="moving")

    r = reg.perturbation(moving, x, moving(x), SEED)
    assert loss == pytest.approx(float(kl_divergence_with_logits(moving(x), moving(x + r))),
                                 rel=1e-5)
    # Per sample: the first three directions alone or in the batch of six (the start d is
    # drawn per batch shape, so the same d is given to both).
    from lvat_tf.regularizers.vat import virtual_adversarial_perturbation
    d = tf.random.stateless_normal(x.shape, seed=[1, 2])
    r6 = virtual_adversarial_perturbation(moving, x, moving(x), d, 2.0, mode="exact")
    r3 = virtual_adversarial_perturbation(moving, x[:3], moving(x[:3]), d[:3], 2.0,
                                          mode="exact")
    assert float(tf.reduce_max(tf.abs(r6[:3] - r3))) < 1e-4
    for a, b in zip(before, clf.non_trainable_variables):
        np.testing.assert_array_equal(a, b.numpy())


def test_vat_bn_flag_reaches_vat_and_vatent_and_a_bad_value_is_refused():
    for method in ("vat", "vatent"):
        cfg = tiny_config("", method=method, vat_bn="joint")
        regs = methods.build_regularizers(cfg, None)
        assert regs[0].bn == "joint"
    assert methods.build_regularizers(tiny_config("", method="vat"), None)[0].bn == "batch"
    with pytest.raises(Exception, match=re.escape("--vat_bn: expected batch|joint|moving")):
        tiny_config("", vat_bn="update")


def test_a_joint_vat_run_trains_end_to_end(tmp_path):
    from lvat_tf.training import run
    res = run.train_and_evaluate(tiny_config(str(tmp_path / "r"), vat_bn="joint"), verbose=0)
    assert res["config"]["vat_bn"] == "joint" and 0 <= res["test_error"] <= 100
    assert all(np.isfinite(h["vat_loss"]) and h["vat_loss"] >= 0 for h in res["train_history"])
