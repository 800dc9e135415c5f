"""Collapse detection: the statistics, the rule, the warning, and a run made to collapse."""
import json

import numpy as np
import pytest
import tensorflow as tf
from absl import logging

from conftest import shared_path
from lvat_tf.training import collapse


def test_prediction_stats_of_uniform_one_class_and_confident_predictions():
    k = 10
    uni = collapse.prediction_stats(np.full((50, k), 1.0 / k))
    assert uni["normalized_entropy"] == pytest.approx(1.0)
    assert uni["mean_max_prob"] == pytest.approx(0.1)
    one = collapse.prediction_stats(np.tile(np.eye(k)[3] * 0.99 + 0.001, (40, 1)))
    assert one["top_class_fraction"] == 1.0 and one["effective_classes"] == pytest.approx(1.0)
    sure = collapse.prediction_stats(np.eye(k)[np.arange(100) % k] * 0.999 + 0.0001)
    assert sure["effective_classes"] == pytest.approx(10.0)
    assert sure["normalized_entropy"] < 0.02 and sure["mean_max_prob"] > 0.99
    assert sum(sure["class_histogram"]) == pytest.approx(1.0)
    # The rule: fitted labels + near-uniform or few-class unlabeled predictions.
    assert collapse.classify(uni, 1.0, k) == "uniform"
    assert collapse.classify(one, 0.95, k) == "few_classes"
    assert collapse.classify(sure, 1.0, k) is None
    assert collapse.classify(uni, 0.5, k) is None  # labels not fitted: not this failure
    # Confident, but whole classes absorbed by others (LVAT-VAE on MNIST-100: 4.2-7.4
    # effective classes, top class 23-54 %): skewed. SVHN's own test classes: healthy.
    skew = collapse.prediction_stats(np.eye(k)[[0] * 40 + [1, 2, 3, 4, 5] * 12] * 0.98 + 0.002)
    assert 5.0 < skew["effective_classes"] < 8.0 and skew["top_class_fraction"] == 0.4
    assert collapse.classify(skew, 1.0, k) == "skewed"
    assert collapse.classify(skew, 0.5, k) is None
    svhn = np.repeat(np.arange(k), [1744, 5099, 4149, 2882, 2523, 2384, 1977, 2019, 1660, 1595])
    svhn_stats = collapse.prediction_stats(np.eye(k)[svhn])
    assert 9.0 < svhn_stats["effective_classes"] < 9.6
    assert collapse.classify(svhn_stats, 1.0, k) is None
    msg = collapse.collapse_message("skewed", skew, 1.0, "lvat_vae", 7)
    assert "skewed onto" in msg and "of 10 effective classes" in msg and "--" in msg


def test_a_class_absorbed_by_a_neighbour_is_flagged_against_the_labels_share():
    # VAT + EntMin on MNIST-100 (session 13): all 4s called 9, the other classes healthy,
    # 8.7 effective classes - not skewed, but one class gone.
    k = 10
    pred = np.repeat(np.arange(k), [100, 110, 100, 100, 0, 100, 100, 100, 100, 190])
    stats = collapse.prediction_stats(np.eye(k)[pred] * 0.98 + 0.002)
    assert 8.0 < stats["effective_classes"] < 9.0 and stats["top_class_fraction"] == 0.19
    assert collapse.absorbed_classes(stats) == [4]
    assert collapse.classify(stats, 1.0, k) == "absorbed"
    assert collapse.classify(stats, 0.5, k) is None  # labels not fitted: not this failure
    msg = collapse.collapse_message("absorbed", stats, 1.0, "vatent", 24000)
    assert "class(es) 4 (0.0 % of the predictions), absorbed by others" in msg
    assert "--seed" in msg and "Collapse at step 24000" in msg
    # Against the labels' shares, not 1/K: a class rare among the labels and rare in the
    # predictions is healthy; the rarest healthy class measured held 4.6 % against 10 %.
    rare = np.repeat(np.arange(k), [110, 110, 110, 110, 20, 110, 110, 110, 110, 100])
    rare_stats = collapse.prediction_stats(np.eye(k)[rare])
    assert collapse.classify(rare_stats, 1.0, k) == "absorbed"  # 2 % against 10 %
    shares = np.full(k, 0.1075)
    shares[4] = 0.0325
    assert collapse.classify(rare_stats, 1.0, k, shares) is None  # 2 % against 3.25 %
    near = np.repeat(np.arange(k), [105, 105, 105, 105, 46, 105, 105, 105, 105, 114])
    assert collapse.classify(collapse.prediction_stats(np.eye(k)[near]), 1.0, k) is None


class _Lookup:
    """Labeled images (first pixel = label / 10) get confident logits; others uniform."""

    def __call__(self, x, bn_mode="moving"):
        v = x[:, 0, 0, 0]
        cls = tf.cast(tf.round(v * 10), tf.int32)
        onehot = tf.one_hot(tf.clip_by_value(cls, 0, 9), 10) * 20.0
        return tf.where((v >= 0)[:, None], onehot, tf.zeros_like(onehot))


class _FakeModel:
    def __init__(self):
        self.optimizer = type("O", (), {"iterations": tf.Variable(0, dtype=tf.int64)})()


@pytest.mark.parametrize("method,flag", [("vat", "--epsilon"), ("lvat_vae", "--lvat_reference"),
                                         ("mat", "--mat_smoothness")])
def test_monitor_warns_once_naming_the_flag_and_records(tmp_path, method, flag):
    y = np.arange(20) % 10
    x_l = np.zeros((20, 4, 4, 1), np.float32)
    x_l[:, 0, 0, 0] = y / 10.0
    x_u = -np.ones((30, 4, 4, 1), np.float32)
    path = tmp_path / "collapse.json"
    mon = collapse.CollapseMonitor(_Lookup(), x_u, x_l, y, method, eval_freq=1, num_epochs=3,
                                   save_path=str(path))
    fake = _FakeModel()
    mon.set_model(fake)
    warnings = []
    orig = logging.warning
    logging.warning = lambda msg, *a: warnings.append(msg % a if a else msg)
    try:
        for epoch in range(3):
            fake.optimizer.iterations.assign(10 * (epoch + 1))
            mon.on_epoch_end(epoch)
    finally:
        logging.warning = orig
    assert len(warnings) == 1 and flag in warnings[0] and "Collapse at step 10" in warnings[0]
    rec = json.loads(path.read_text())
    assert rec["detected"] and rec["kind"] == "uniform" and rec["step"] == 10
    assert rec["final"] == "uniform"
    assert len(rec["history"]) == 3 and rec["history"][0]["labeled_accuracy"] == 1.0
    assert rec["history"][2]["normalized_entropy"] == pytest.approx(1.0)


def test_a_run_made_to_collapse_is_detected_and_recorded(tmp_path):
    """MNIST-100, VAT at epsilon 0.3 (docs/results.md 'Training dynamics'): fits the 100 labels,
    near-uniform elsewhere. 800 updates suffice (normalized unlabeled entropy 0.46 after 400,
    0.71 after 800; the threshold is 0.5)."""
    from lvat_tf.config import make_config
    from lvat_tf.training import run

    data_dir = shared_path("data", "mnist")
    cfg = make_config(dataset="mnist", data_dir=data_dir, model="mlp", method="vat",
                      epsilon=0.3, num_labeled_examples=100, num_epochs=2, epoch_decay_start=2,
                      num_iter_per_epoch=400, eval_freq=1, log_dir=str(tmp_path / "run"),
                      finetune_iter=5, num_eval_examples=1000)
    res = run.train_and_evaluate(cfg, verbose=0)
    rec = res["collapse"]
    assert rec["detected"] and rec["final"] is not None, rec["history"]
    assert "--epsilon" in rec["message"] and rec["history"][-1]["labeled_accuracy"] >= 0.9
    assert json.load(open(tmp_path / "run" / "results.json"))["collapse"]["detected"]


def test_monitor_flags_an_absorbed_class_from_the_labeled_sets_shares(tmp_path):
    y = np.arange(20) % 10
    x_l = np.zeros((20, 4, 4, 1), np.float32)
    x_l[:, 0, 0, 0] = y / 10.0
    u = np.array([c for c in range(10) if c != 4] * 11 + [9] * 11)  # the 4s called 9
    x_u = np.zeros((len(u), 4, 4, 1), np.float32)
    x_u[:, 0, 0, 0] = u / 10.0
    mon = collapse.CollapseMonitor(_Lookup(), x_u, x_l, y, "vat", eval_freq=1, num_epochs=1,
                                   save_path=str(tmp_path / "collapse.json"))
    fake = _FakeModel()
    mon.set_model(fake)
    fake.optimizer.iterations.assign(5)
    mon.on_epoch_end(0)
    np.testing.assert_allclose(mon.label_shares, np.full(10, 0.1))
    rec = json.loads((tmp_path / "collapse.json").read_text())
    assert rec["kind"] == "absorbed" and rec["final"] == "absorbed"
    assert "class(es) 4 (0.0 % of the predictions)" in rec["message"]


def test_a_class_wrong_on_its_own_labels_is_unfitted_not_a_consistency_collapse():
    # Lenet++ (session 17): every class fitted but one, whose labeled images all go to 1.
    k = 10
    y = np.repeat(np.arange(k), 10)
    pred = np.where(y == 0, 1, y)
    pred[15] = 3  # one more mistake elsewhere: the rest stays fitted (89/90)
    assert collapse.unfitted_classes(y, pred, k) == [0]
    acc = collapse.labeled_class_accuracy(y, pred, k)
    assert acc[0] == 0.0 and acc[1] == pytest.approx(0.9) and acc[2] == 1.0
    # An early epoch (the other classes not fitted yet) is training, not a failure.
    early = np.where(np.arange(len(y)) % 10 < 6, y, (y + 1) % k)  # 60 % right in each class
    early[y == 0] = 1
    assert collapse.unfitted_classes(y, early, k) == []
    # Several classes lost while the others are fitted is the same failure.
    assert collapse.unfitted_classes(y, np.where(y < 6, y, 0), k) == [6, 7, 8, 9]
    assert collapse.unfitted_classes(y, y, k) == []
    # Checked before the fit threshold: labeled accuracy 0.89 is still flagged.
    u = np.repeat(np.arange(k), [0, 200, 100, 100, 100, 100, 100, 100, 100, 100])
    stats = collapse.prediction_stats(np.eye(k)[u])
    assert collapse.classify(stats, 0.89, k) is None
    assert collapse.classify(stats, 0.89, k, unfitted=[0]) == "unfitted"
    stats["labeled_class_accuracy"] = acc
    msg = collapse.collapse_message("unfitted", stats, 0.89, "center_loss", 4000)
    assert "class 0 (0 % of its labeled images right, 0.0 % of the unlabeled predictions)" in msg
    assert "optimisation failure" in msg and "--num_epochs" in msg
    # A class absent from the labels has no accuracy and is never unfitted.
    assert collapse.labeled_class_accuracy(y[y != 5], pred[y != 5], k)[5] is None


def test_monitor_flags_a_class_missing_on_its_labels_as_unfitted(tmp_path):
    y = np.arange(20) % 10
    x_l = np.zeros((20, 4, 4, 1), np.float32)
    x_l[:, 0, 0, 0] = np.where(y == 4, 9, y) / 10.0  # the labeled 4s look like 9s
    u = np.array([c for c in range(10) if c != 4] * 11 + [9] * 11)
    x_u = np.zeros((len(u), 4, 4, 1), np.float32)
    x_u[:, 0, 0, 0] = u / 10.0
    mon = collapse.CollapseMonitor(_Lookup(), x_u, x_l, y, "center_loss", eval_freq=1,
                                   num_epochs=1, save_path=str(tmp_path / "collapse.json"))
    fake = _FakeModel()
    mon.set_model(fake)
    mon.on_epoch_end(0)
    rec = json.loads((tmp_path / "collapse.json").read_text())
    assert rec["kind"] == "unfitted" and rec["final"] == "unfitted"
    assert rec["history"][0]["labeled_class_accuracy"][4] == 0.0
    assert "class 4 (0 % of its labeled images right" in rec["message"]
