"""The train step, the optimizer schedule, runs end to end, resume and the NaN guard."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT, run_python, run_script, tiny_config
from lvat_tf import experiments
from lvat_tf.models import registry
from lvat_tf.regularizers import methods
from lvat_tf.regularizers.vat import VAT
from lvat_tf.training import run
from lvat_tf.training.model import SSLModel
from lvat_tf.training.optimizer import UpstreamAdam, upstream_schedule
from lvat_tf.regularizers.base import Regularizer


def _ssl_model(regs, seed=0, keep_prob=0.5, bn_decay=0.99):
    keras.utils.set_random_seed(seed)
    clf = registry.build("tiny_cnn", keep_prob_hidden=keep_prob, bn_decay=bn_decay)
    clf(tf.zeros((1, 16, 16, 3)))
    m = SSLModel(clf, regs, seed=3)
    m.compile(optimizer=UpstreamAdam(1e-3))
    m.optimizer.build(clf.trainable_variables)
    return m


def _batch(seed=0):
    rng = np.random.RandomState(seed)
    return {"x_l": tf.constant(rng.randn(8, 16, 16, 3).astype(np.float32)),
            "y_l": tf.constant(rng.randint(0, 10, 8)),
            "x_u": tf.constant(rng.randn(16, 16, 16, 3).astype(np.float32))}


def _bn_stats(clf):
    return [v.numpy().copy() for v in clf.non_trainable_variables]


def test_bn_statistics_come_from_the_labeled_pass_only():
    data = _batch()
    vat = _ssl_model([VAT(epsilon=2.0, xi=1e-2)])
    base = _ssl_model([])
    before = _bn_stats(vat.classifier)
    vat.train_step(data)
    base.train_step(data)
    # The same labeled pass => the same moving statistics, whatever the
    # regulariser's extra (perturbed) passes did; and they did change.
    for a, b, c in zip(_bn_stats(vat.classifier), _bn_stats(base.classifier), before):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert any(np.max(np.abs(a - c)) > 0 for a, c in zip(_bn_stats(vat.classifier), before))
    w_vat = vat.classifier.trainable_variables[0].numpy()
    w_base = base.classifier.trainable_variables[0].numpy()
    assert np.max(np.abs(w_vat - w_base)) > 0  # the VAT term did change the update


@pytest.mark.parametrize("power_iteration", ["finite_difference", "exact"])
def test_bn_decay_changes_the_moving_statistics_but_not_the_trained_weights(power_iteration):
    # Issue 11 item 4 lists BN decay among what might decide VAT's basin. With upstream's
    # BN modes no training pass reads the moving statistics (labeled pass: batch
    # statistics + update; clean and perturbed unlabeled passes: batch statistics), so
    # the decay cannot change the trajectory, only the inference-time statistics.
    runs = []
    for decay in (0.99, 0.5):
        m = _ssl_model([VAT(epsilon=2.0, power_iteration=power_iteration)], bn_decay=decay)
        for i in range(3):
            m.train_step(_batch(i))
        runs.append(m.classifier)
    for a, b in zip(runs[0].trainable_variables, runs[1].trainable_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert any(np.max(np.abs(a.numpy() - b.numpy())) > 1e-3
               for a, b in zip(runs[0].non_trainable_variables, runs[1].non_trainable_variables))


def test_unlabeled_passes_share_one_dropout_mask_and_labeled_pass_another():
    m = _ssl_model([VAT(epsilon=2.0, xi=1e-2)])
    calls = []
    orig = m.classifier.call

    def spy(x, training=False, bn_mode=None, dropout_seed=None, return_features=False):
        calls.append((bn_mode, None if dropout_seed is None else tuple(dropout_seed.numpy())))
        return orig(x, training=training, bn_mode=bn_mode, dropout_seed=dropout_seed,
                    return_features=return_features)

    m.classifier.call = spy
    m.compute_losses(_batch())
    modes = [c[0] for c in calls]
    assert modes == ["update", "batch", "batch", "batch"]  # labeled, clean, xi*d, r
    assert len({c[1] for c in calls[1:]}) == 1
    assert calls[0][1] != calls[1][1]


def test_same_seed_same_weights_after_steps():
    def train():
        m = _ssl_model([VAT(epsilon=2.0, xi=1e-2)], seed=5)
        for i in range(3):
            m.train_step(_batch(i))
        return [v.numpy() for v in m.classifier.variables]
    for a, b in zip(train(), train()):
        np.testing.assert_array_equal(a, b)


def test_upstream_schedule_and_adam_beta1_accumulator():
    assert upstream_schedule(0, 1e-3, 120, 80, 0.9, 0.5) == (1e-3, 0.9)
    assert upstream_schedule(79, 1e-3, 120, 80, 0.9, 0.5) == (1e-3, 0.9)
    assert upstream_schedule(80, 1e-3, 120, 80, 0.9, 0.5) == (1e-3, 0.5)
    # --learning_rate_decay: lr0 * rate**epoch, on top of the linear decay.
    assert upstream_schedule(0, 2e-3, 60, 60, 0.9, 0.5, 0.9) == (2e-3, 0.9)
    lr, b1 = upstream_schedule(3, 2e-3, 60, 60, 0.9, 0.5, 0.9)
    assert lr == pytest.approx(2e-3 * 0.9 ** 3) and b1 == 0.9
    lr, b1 = upstream_schedule(50, 1e-3, 60, 40, 0.9, 0.5, 0.9)
    assert lr == pytest.approx(1e-3 * 10 / 20 * 0.9 ** 50) and b1 == 0.5
    lr, b1 = upstream_schedule(119, 1e-3, 120, 80, 0.9, 0.5)
    assert b1 == 0.5 and abs(lr - 1e-3 / 40) < 1e-12
    # Adam against TF1's ApplyAdam with a beta1 switch after two steps: beta1_power
    # is created with the initial beta1, step t's bias correction uses it *before*
    # the step, and it is multiplied by step t's beta1 after (the semantics that
    # reproduce upstream's own six steps, vat_tf_train.npz; the earlier reference
    # here multiplied first).
    v = keras.Variable(np.array([1.0, -2.0], np.float32))
    opt = UpstreamAdam(learning_rate=0.1, beta_1=0.9)
    opt.build([v])
    m = s = np.zeros(2)
    b1p, x = 0.9, v.numpy().astype(np.float64)
    for t, beta1 in enumerate([0.9, 0.9, 0.5, 0.5], start=1):
        opt.set_beta_1(beta1)
        g = np.array([0.3, -0.7]) * t
        opt.apply([tf.constant(g, tf.float32)], [v])
        m = beta1 * m + (1 - beta1) * g
        s = 0.999 * s + 0.001 * g * g
        lr_t = 0.1 * np.sqrt(1 - 0.999 ** t) / (1 - b1p)
        x = x - lr_t * m / (np.sqrt(s) + 1e-8)
        b1p *= beta1
    # rtol 5e-5: 1 - 0.999^t in float32 (as TF1 computes it) is off by 1.3e-5 relative
    # at t = 1 (0.999 is not a float32), 6e-6 in lr_t after the square root.
    np.testing.assert_allclose(v.numpy(), x, rtol=5e-5)
    assert float(opt.beta_1_power.numpy()) == pytest.approx(0.9 * 0.9 * 0.9 * 0.5 * 0.5)


def test_short_real_training_run_learns_digits(tmp_path):
    """A real dataset (sklearn digits, 100 labels): VAT reaches a low test error."""
    from lvat_tf.config import make_config

    cfg = make_config(dataset="digits", method="vat", num_epochs=4, epoch_decay_start=3,
                      num_iter_per_epoch=150, eval_freq=2, log_dir=str(tmp_path / "run"))
    res = run.train_and_evaluate(cfg, verbose=0)
    saved = json.load(open(tmp_path / "run" / "results.json"))
    for k in ("test_error", "test_accuracy", "method", "dataset", "num_labeled_examples",
              "num_iterations", "seed", "config"):
        assert k in saved
    assert saved["num_iterations"] == 600 and saved["method"] == "vat"
    assert res["test_error"] < 20.0, res["test_error"]  # chance is 90 %
    # test.py on the finished run: same protocol, same seed => the same error.
    p = run_script("test.py", f"--log_dir={tmp_path / 'run'}", "--eval_batch_size=100")
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"test error: {res['test_error']:.2f} %" in p.stdout
    assert os.path.isdir(tmp_path / "run" / "tb" / "train")
    assert any(f.startswith("events") for f in os.listdir(tmp_path / "run" / "tb" / "train"))


@dataclasses.dataclass(frozen=True, eq=False)
class _NaNAfter(Regularizer):
    """Test-only regulariser: a NaN loss from a given step on."""

    step: int
    name: str = "nan_loss"
    needs_clean_grad: bool = False
    model: list = dataclasses.field(default_factory=list)

    def unlabeled_loss(self, forward, x, clean_logits, seed, no_record=None,
                       clean_features=None):
        it = tf.cast(self.model[0].optimizer.iterations, tf.float32)
        bad = tf.where(it >= self.step, tf.constant(np.nan, tf.float32), 0.0)
        return bad + 0.0 * tf.reduce_sum(forward(x)), {}


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    holder = []
    methods.register(methods.MethodSpec("nan_test", lambda cfg, ctx: [_NaNAfter(7, model=holder)],
                                        "test only"))
    orig_init = SSLModel.__init__

    def init(self, *a, **k):
        orig_init(self, *a, **k)
        holder.append(self)

    monkeypatch.setattr(SSLModel, "__init__", init)
    cfg = tiny_config(str(tmp_path / "nan"), method="nan_test", num_epochs=3)
    with pytest.raises(run.TrainingDiverged, match="non-finite loss at step"):
        run.train_and_evaluate(cfg, verbose=0)
    ckpts = tf.train.get_checkpoint_state(str(tmp_path / "nan" / "checkpoints"))
    assert ckpts.model_checkpoint_path.endswith("ckpt-1")
    reader = tf.train.load_checkpoint(ckpts.model_checkpoint_path)
    for name in reader.get_variable_to_shape_map():
        val = reader.get_tensor(name)
        if np.issubdtype(np.asarray(val).dtype, np.floating):
            assert np.all(np.isfinite(val)), name
    assert not os.path.exists(tmp_path / "nan" / "results.json")


def _train_cmd(log_dir, epochs=4, steps=60):
    return [sys.executable, os.path.join(ROOT, "run_scripts", "train.py"), "--dataset=synthetic",
            "--model=tiny_cnn", "--method=vat", "--batch_size=8", "--ul_batch_size=16",
            f"--num_epochs={epochs}", "--epoch_decay_start=2", f"--num_iter_per_epoch={steps}",
            "--eval_freq=2", "--num_labeled_examples=20", "--epsilon=1.0", "--finetune_iter=2",
            f"--log_dir={log_dir}"]


def _ckpt_values(log_dir):
    path = tf.train.latest_checkpoint(os.path.join(log_dir, "checkpoints"))
    reader = tf.train.load_checkpoint(path)
    return path, {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()
                  if "save_counter" not in n}


def test_resume_after_sigkill_gives_the_uninterrupted_weights(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    # The uninterrupted run and the resumption are processes forked from the test fork server
    # (conftest.run_python); the run that is killed is a fresh interpreter, so the SIGKILL hits
    # a real process of its own.
    p = run_python(*_train_cmd(full)[1:], env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    proc = subprocess.Popen(_train_cmd(cut), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(os.path.join(cut, "checkpoints", "ckpt-1.index")):
            time.sleep(0.3)  # into epoch 2
            break
        time.sleep(0.02)
    assert proc.poll() is None, "run ended before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(cut, "results.json"))
    p = run_python(*_train_cmd(cut)[1:], env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "Resuming from" in p.stderr
    path_a, a = _ckpt_values(full)
    path_b, b = _ckpt_values(cut)
    assert path_a.endswith("ckpt-4") and path_b.endswith("ckpt-4")
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    ra = json.load(open(os.path.join(full, "results.json")))
    rb = json.load(open(os.path.join(cut, "results.json")))
    assert ra["test_error"] == rb["test_error"]


def test_reproduce_script_tabulates_a_recipe(tmp_path):
    p = run_script("reproduce.py", "--recipe=digits100", "--variants=baseline,vat",
                   "--num_epochs=1", "--epoch_decay_start=0", "--num_iter_per_epoch=30",
                   f"--output_dir={tmp_path}")
    assert p.returncode == 0, p.stderr[-2000:]
    summary = json.load(open(tmp_path / "digits100" / "summary.json"))
    assert [r["variant"] for r in summary["rows"]] == ["baseline", "vat"]
    assert all(0 <= r["test_error"] <= 100 and r["num_iterations"] == 30
               for r in summary["rows"])
    assert "| vat | vat |" in p.stdout
    # A later call running one variant keeps the other's row, and evaluates robustness.
    p = run_script("reproduce.py", "--recipe=digits100", "--variants=vat",
                   "--num_epochs=1", "--epoch_decay_start=0", "--num_iter_per_epoch=30",
                   "--robustness=l2", "--robustness_examples=60", f"--output_dir={tmp_path}")
    assert p.returncode == 0, p.stderr[-2000:]
    summary = json.load(open(tmp_path / "digits100" / "summary.json"))
    assert [r["variant"] for r in summary["rows"]] == ["baseline", "vat"]
    curves = summary["robustness"]["l2"]
    assert set(curves) == {"baseline", "vat"}
    for c in curves.values():
        assert c["num_examples"] == 60 and c["epsilons"][0] == 0
        assert all(a <= c["accuracy"][0] + 1e-9 for a in c["accuracy"])
    assert (tmp_path / "digits100" / "robustness_l2.png").stat().st_size > 1000
    assert "under L2 fast gradient attack" in p.stdout
    # The finished vat run was only evaluated again: it keeps its training time.
    res = json.load(open(tmp_path / "digits100" / "vat" / "results.json"))
    assert res["train_seconds_this_session"] == 0 and res["train_seconds_total"] > 0
    p = run_script("reproduce.py", "--recipe=digits100", "--robustness=pgd",
                   f"--output_dir={tmp_path}")
    assert p.returncode != 0 and "--robustness" in p.stderr
    p = run_script("reproduce.py", "--recipe=nope", f"--output_dir={tmp_path}")
    assert p.returncode != 0 and "--recipe" in p.stderr


def test_validation_mode_evaluates_on_the_validation_split(tmp_path):
    cfg = tiny_config(str(tmp_path / "val"), validation=True, num_valid_examples=50,
                      num_epochs=1, epoch_decay_start=0)
    res = run.train_and_evaluate(cfg, verbose=0)
    assert res["evaluated_on"] == "validation" and res["num_test_examples"] == 50


def test_jit_compiled_step_matches_the_graph_step():
    """--jit_compile: the same baseline step with XLA (no randomness involved)."""
    import keras
    from tensorflow.python.framework import config as tf_config

    from lvat_tf.training import run as run_lib

    was = tf_config.is_op_determinism_enabled()
    run_lib.set_determinism(True)  # XLA refuses TF op determinism (MaxPool gradient)
    try:
        _jit_vs_graph(keras)
    finally:
        if was:
            tf.config.experimental.enable_op_determinism()


def _jit_vs_graph(keras):
    from lvat_tf.models import registry
    from lvat_tf.regularizers.vat import VAT
    from lvat_tf.training.model import SSLModel
    from lvat_tf.training.optimizer import UpstreamAdam

    rng = np.random.RandomState(0)
    data = {"x_l": tf.constant(rng.uniform(-.5, .5, (8, 16, 16, 3)), tf.float32),
            "y_l": tf.constant(rng.randint(0, 10, 8)),
            "x_u": tf.constant(rng.uniform(-.5, .5, (16, 16, 16, 3)), tf.float32)}
    weights = []
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        clf = registry.build("tiny_cnn", keep_prob_hidden=1.0)
        clf(tf.zeros((1, 16, 16, 3)))
        m = SSLModel(clf, [], seed=0)
        m.compile(optimizer=UpstreamAdam(1e-3), jit_compile=jit)
        m.optimizer.build(clf.trainable_variables)
        tf.function(m.train_step, jit_compile=jit or None)(data)
        weights.append([v.numpy() for v in clf.variables])
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # A VAT step compiles and runs too (XLA may pick another stateless RNG
    # algorithm, so its direction is not compared bit for bit).
    m = SSLModel(clf, [VAT(epsilon=1.0, xi=1e-2)], seed=0)
    m.compile(optimizer=UpstreamAdam(1e-3), jit_compile=True)
    m.optimizer.build(clf.trainable_variables)
    out = tf.function(m.train_step, jit_compile=True)(data)
    assert np.isfinite(float(out["vat_loss"]))


def test_second_run_of_a_process_saves_resumable_optimizer_keys(tmp_path):
    # Keras uniquifies optimizer names per process ("upstream_adam_1"); the
    # name prefixes the checkpoint keys, so it is fixed, and a checkpoint saved
    # under another name is still restored under the name it holds.
    import tensorflow as tf

    from lvat_tf.training.run import _checkpoint_optimizer_name
    for name in ("a", "b"):
        run.train_and_evaluate(tiny_config(str(tmp_path / name), num_epochs=1,
                                           epoch_decay_start=0), verbose=0)
    latest = tf.train.latest_checkpoint(str(tmp_path / "b" / "checkpoints"))
    keys = [k for k, _ in tf.train.list_variables(latest) if k.startswith("optimizer/")]
    assert keys and all(k.startswith("optimizer/upstream_adam.S") for k in keys)
    assert _checkpoint_optimizer_name(latest) == "upstream_adam"
    assert _checkpoint_optimizer_name(None) == "upstream_adam"
    # A run saved under "upstream_adam_1" (before the fix) resumes: continue it.
    old = tiny_config(str(tmp_path / "old"))
    from lvat_tf.training import optimizer as opt_lib
    orig = opt_lib.UpstreamAdam.__init__

    def renamed(self, *a, **kw):
        kw["name"] = "upstream_adam_1"
        orig(self, *a, **kw)

    opt_lib.UpstreamAdam.__init__ = renamed
    try:
        run.train_and_evaluate(old, verbose=0)
    finally:
        opt_lib.UpstreamAdam.__init__ = orig
    ckpt_dir = str(tmp_path / "old" / "checkpoints")
    assert _checkpoint_optimizer_name(tf.train.latest_checkpoint(ckpt_dir)) == "upstream_adam_1"
    first = json.load(open(tmp_path / "old" / "train_history.json"))
    assert [h["epoch"] for h in first] == [1, 2] and all(h["vat_loss"] >= 0 for h in first)
    # Roll the run back to its first epoch, as if killed there, and resume it.
    os.remove(tmp_path / "old" / "results.json")
    tf.compat.v1.train.update_checkpoint_state(ckpt_dir, os.path.join(ckpt_dir, "ckpt-1"))
    res = run.train_and_evaluate(old, verbose=0)
    assert res["num_iterations"] == 2 * old.num_iter_per_epoch
    # The per-epoch training logs continue: epoch 1 as recorded, epoch 2 re-run.
    assert [h["epoch"] for h in res["train_history"]] == [1, 2]
    assert res["train_history"][0] == first[0]
    # ... and so does the fit time: epoch 1's earlier seconds + this session's whole fit
    # (which also holds what follows epoch 2's record, so it is not below that record).
    assert res["train_seconds_total"] == pytest.approx(
        first[0]["fit_seconds"] + res["train_seconds_this_session"], abs=0.11)
    assert res["train_seconds_total"] >= res["train_history"][1]["fit_seconds"] > \
        first[0]["fit_seconds"] > 0
    assert res["train_history"][1]["step"] == 2 * old.num_iter_per_epoch
    assert experiments.last_epoch_terms(res) == {"vat_loss": round(
        res["train_history"][1]["vat_loss"], 4)}
    # A finished run whose history predates fit_seconds (an older version wrote it) is
    # re-evaluated without error and keeps the training time its results.json recorded.
    hist_path = tmp_path / "old" / "train_history.json"
    hist_path.write_text(json.dumps([{k: v for k, v in h.items() if k != "fit_seconds"}
                                     for h in json.loads(hist_path.read_text())]))
    again = run.train_and_evaluate(old, verbose=0)
    assert again["train_seconds_total"] == res["train_seconds_total"]
    assert again["train_seconds_this_session"] < 1.0


def test_mixed_precision_run_trains_in_bfloat16_and_restores_the_policy(tmp_path):
    import keras
    import tensorflow as tf

    cfg = tiny_config(str(tmp_path / "mp"), mixed_precision=True, num_epochs=1,
                      epoch_decay_start=0)
    assert cfg.power_iteration == "exact"  # finite differences vanish in bfloat16
    res = run.train_and_evaluate(cfg, verbose=0)
    assert res["mixed_precision"] and np.isfinite(res["periodic_eval"][-1]["loss"])
    assert keras.config.dtype_policy().name == "float32"  # restored for what follows
    latest = tf.train.latest_checkpoint(str(tmp_path / "mp" / "checkpoints"))
    dtypes = {tf.train.load_variable(latest, k).dtype for k, _ in tf.train.list_variables(latest)
              if k.startswith("classifier/")}
    assert dtypes == {np.dtype("float32")}  # float32 master weights
    # The classifier of the run computes in bfloat16 when rebuilt under the policy.
    from lvat_tf.precision import mixed_precision_policy
    from lvat_tf.models import registry as model_registry
    with mixed_precision_policy(True):
        clf = model_registry.build_from_config(cfg, 10)
        logits = clf(tf.zeros((2, 32, 32, 3)), bn_mode="moving")
    assert logits.dtype == tf.bfloat16
    from lvat_tf.losses import kl_divergence_with_logits
    assert kl_divergence_with_logits(logits, logits).dtype == tf.float32


def test_fields_a_method_does_not_read_do_not_block_its_resume(tmp_path):
    d = str(tmp_path / "r")
    cfg = tiny_config(d, num_epochs=1, epoch_decay_start=1, mat_min_variance=0.0,
                      lvat_reference="reconstruction")
    run.train_and_evaluate(cfg, verbose=0)
    # A VAT run resumes under other MAT / LVAT settings (e.g. changed defaults) ...
    run.train_and_evaluate(cfg.replace(mat_min_variance=1.0, lvat_reference="input"), verbose=0)
    # ... but not under another VAT setting.
    with pytest.raises(run.RunDirError, match="--epsilon"):
        run.train_and_evaluate(cfg.replace(epsilon=2.0), verbose=0)
    m = str(tmp_path / "m")
    cfg = tiny_config(m, method="mat", num_epochs=1, epoch_decay_start=1, mat_min_variance=0.0)
    run.train_and_evaluate(cfg, verbose=0)
    with pytest.raises(run.RunDirError, match="--mat_min_variance"):
        run.train_and_evaluate(cfg.replace(mat_min_variance=1.0), verbose=0)
