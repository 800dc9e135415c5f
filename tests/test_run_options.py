"""Run-level options: run-directory locks, the consistency ramp-up, warm starts (--init_from),
the input transform and entropy minimisation composed with any method (--entmin)."""
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT, run_script, tiny_config
from lvat_tf import experiments
from lvat_tf.checkpointing import CheckpointError
from lvat_tf.errors import ConfigError
from lvat_tf.files import DirectoryBusy, DirectoryLock
from lvat_tf.models import registry
from lvat_tf.recipes import Recipe
from lvat_tf.regularizers.vat import VAT
from lvat_tf.training import run
from lvat_tf.training.model import SSLModel
from lvat_tf.training.optimizer import UpstreamAdam


# ---------------------------------------------------------------- locks
def test_a_held_directory_is_refused_in_one_line_and_free_again_after_release(tmp_path):
    d = str(tmp_path / "run")
    with DirectoryLock(d, "--log_dir"):
        with pytest.raises(DirectoryBusy) as e:
            DirectoryLock(d, "--log_dir").acquire()
        msg = str(e.value)
        assert msg.startswith(f"--log_dir: {d} is in use by another process (pid {os.getpid()}")
        assert "\n" not in msg
    DirectoryLock(d, "--log_dir").acquire().release()  # released: free again


def test_a_dead_holder_leaves_no_stale_lock(tmp_path):
    d = str(tmp_path / "run")
    code = ("import sys, time; sys.path.insert(0, sys.argv[1]);"
            "from lvat_tf.files import DirectoryLock;"
            "DirectoryLock(sys.argv[2]).acquire(); print('held', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code, ROOT, d], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(DirectoryBusy, match=f"pid {child.pid} "):
            DirectoryLock(d).acquire()
    finally:
        child.kill()
        child.wait()
    DirectoryLock(d).acquire().release()  # the kernel dropped the dead process's lock


def test_a_waiting_lock_blocks_until_the_holder_releases(tmp_path):
    d = str(tmp_path / "gen")
    first = DirectoryLock(d).acquire()
    events = []

    def second():
        with DirectoryLock(d, wait=True, on_wait=lambda who: events.append(("waiting", who))):
            events.append(("acquired", time.time()))

    t = threading.Thread(target=second)
    t.start()
    time.sleep(0.5)
    assert events and events[0][0] == "waiting" and str(os.getpid()) in events[0][1]
    assert len(events) == 1  # still blocked while the first holds it
    released = time.time()
    first.release()
    t.join(10)
    assert events[-1][0] == "acquired" and events[-1][1] >= released


def test_train_refuses_a_run_directory_another_process_holds(tmp_path):
    d = str(tmp_path / "busy")
    os.makedirs(d)
    with DirectoryLock(d, "--log_dir"):
        r = run_script("train.py", "--dataset=synthetic", "--model=tiny_cnn", "--num_epochs=1",
                       "--epoch_decay_start=1", "--num_iter_per_epoch=2",
                       "--num_labeled_examples=20", f"--log_dir={d}")
    assert r.returncode == 1
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith(f"error: --log_dir: {d} is in use by another process"), r.stderr[-500:]
    assert sorted(os.listdir(d)) == [".lock"]  # nothing written into the held directory


# ---------------------------------------------------------------- ramp-up
def _model(rampup, regs):
    keras.utils.set_random_seed(0)
    clf = registry.build("tiny_cnn", keep_prob_hidden=1.0)
    clf(tf.zeros((1, 16, 16, 3)))
    m = SSLModel(clf, regs, seed=3, rampup_steps=rampup)
    m.compile(optimizer=UpstreamAdam(1e-3))
    m.optimizer.build(clf.trainable_variables)
    return m


def _batch():
    rng = np.random.RandomState(0)
    return {"x_l": tf.constant(rng.randn(8, 16, 16, 3).astype(np.float32)),
            "y_l": tf.constant(rng.randint(0, 10, 8)),
            "x_u": tf.constant(rng.randn(16, 16, 16, 3).astype(np.float32))}


@pytest.mark.parametrize("step", [0, 50, 100, 250])
def test_rampup_weights_the_unlabeled_term_by_the_sigmoid_schedule(step):
    m = _model(100, [VAT(epsilon=1.0, xi=1e-2)])
    m.optimizer.iterations.assign(step)
    losses = m.compute_losses(_batch())
    t = min(step / 100, 1.0)
    expected = np.exp(-5 * (1 - t) ** 2)
    np.testing.assert_allclose(float(m.consistency_weight()), expected, rtol=1e-6)
    # total = xe + w * term, and the term itself is what the log shows.
    np.testing.assert_allclose(float(losses.total - losses.xe),
                               expected * float(losses.regularizers["vat_loss"]), rtol=1e-4,
                               atol=1e-6)  # float32 rounding of xe (~2.3) in the difference
    assert float(losses.regularizers["vat_loss"]) > 1e-4


def test_no_rampup_leaves_the_step_as_upstream():
    m = _model(0, [VAT(epsilon=1.0, xi=1e-2)])
    assert m.consistency_weight() is None
    assert "consistency_weight" not in [t.name for t in m.metrics]
    losses = m.compute_losses(_batch())
    np.testing.assert_allclose(float(losses.total),
                               float(losses.xe + losses.regularizers["vat_loss"]), rtol=1e-6)


def test_rampup_is_logged_per_epoch_and_a_bad_value_refused(tmp_path):
    res = run.train_and_evaluate(tiny_config(str(tmp_path / "r"), consistency_rampup=5,
                                             num_epochs=2))
    w = [h["consistency_weight"] for h in res["train_history"]]
    # epoch 1: updates 0..4 of a 5-update ramp; epoch 2: full weight.
    np.testing.assert_allclose(w[0], np.mean([np.exp(-5 * (1 - t / 5) ** 2) for t in range(5)]),
                               rtol=1e-5)
    assert w[1] == pytest.approx(1.0)
    assert "consistency_weight" not in experiments.last_epoch_terms(res)
    with pytest.raises(ConfigError, match="^--consistency_rampup: expected 0"):
        tiny_config(consistency_rampup=-1)


def test_learning_rate_decay_is_applied_per_epoch_and_a_bad_value_refused(tmp_path):
    res = run.train_and_evaluate(tiny_config(str(tmp_path / "r"), learning_rate_decay=0.5,
                                             num_epochs=3, epoch_decay_start=3))
    lrs = [h["learning_rate"] for h in res["train_history"]]
    lr0 = res["config"]["learning_rate"]
    np.testing.assert_allclose(lrs, [lr0, lr0 / 2, lr0 / 4], rtol=1e-6)
    assert [h["beta1"] for h in res["train_history"]] == [0.9] * 3
    assert "learning_rate" not in experiments.last_epoch_terms(res)
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match="^--learning_rate_decay: expected a factor"):
            tiny_config(learning_rate_decay=bad)


# ---------------------------------------------------------------- warm start
def _weights(results_dir):
    from lvat_tf.trained import load_trained_classifier

    _, clf, _, _ = load_trained_classifier(results_dir, with_data=False)
    return {v.path: v.numpy() for v in clf.variables}


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A finished tiny run to warm-start from."""
    src = str(tmp_path_factory.mktemp("warm") / "src")
    run.train_and_evaluate(tiny_config(src, num_epochs=1))
    return src


def _prep(run_dir):
    from lvat_tf.data.preprocessing import Preprocessor

    return Preprocessor.load(os.path.join(run_dir, "preprocessing.npz")).describe()


def test_warm_start_takes_every_classifier_variable_and_resume_keeps_the_run_own(source_run,
                                                                                  tmp_path):
    src = source_run
    clf = registry.build("tiny_cnn")
    clf(tf.zeros((1, 16, 16, 3)))
    path = run.warm_start(clf, src, _prep(src))
    assert path.startswith(os.path.join(src, "checkpoints", "ckpt-"))
    theirs = _weights(src)
    mine = {v.path: v.numpy() for v in clf.variables}
    assert set(mine) == set(theirs) and any("moving" in k for k in mine)
    for k in mine:
        np.testing.assert_array_equal(mine[k], theirs[k])

    # A run started from it trains its own budget, counted from update 0 (fresh Adam).
    dst = str(tmp_path / "dst")
    res = run.train_and_evaluate(tiny_config(dst, num_epochs=1, init_from=src))
    assert res["num_iterations"] == 5
    assert res["config"]["init_from"] == src
    after = _weights(dst)
    assert any(np.max(np.abs(after[k] - theirs[k])) > 0 for k in after)  # it trained
    # Called again it resumes its own checkpoint (nothing left to train), not the source's.
    run.train_and_evaluate(tiny_config(dst, num_epochs=1, init_from=src))
    for k, v in _weights(dst).items():
        np.testing.assert_array_equal(v, after[k])


def test_warm_start_refuses_another_architecture_an_empty_dir_and_other_inputs(source_run,
                                                                              tmp_path):
    src = source_run
    topbn = str(tmp_path / "topbn")
    with pytest.raises(CheckpointError, match="^--init_from: cannot restore .*not bound"):
        run.train_and_evaluate(tiny_config(topbn, num_epochs=1, init_from=src, top_bn=True))
    # That start stopped before its first checkpoint: the directory takes corrected flags.
    run.train_and_evaluate(tiny_config(topbn, num_epochs=1, top_bn=True))
    # A source that does not exist or was trained on other inputs is refused before
    # anything is written.
    for bad, kw, err in ((str(tmp_path / "missing"), {}, CheckpointError),
                         (src, {"input_transform": "lvat"}, ConfigError)):
        d = tmp_path / ("never_" + str(len(kw)))
        with pytest.raises(err, match="^--init_from: "):
            run.train_and_evaluate(tiny_config(str(d), num_epochs=1, init_from=bad, **kw))
        assert not d.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="holds no checkpoint in checkpoints/"):
        run.init_checkpoint_path(str(empty))
    with pytest.raises(CheckpointError, match="neither a run directory nor a checkpoint prefix"):
        run.init_checkpoint_path(str(tmp_path / "missing"))
    clf = registry.build("tiny_cnn")
    clf(tf.zeros((1, 16, 16, 3)))
    with pytest.raises(ConfigError, match="^--init_from: .* was trained on other inputs"):
        run.warm_start(clf, src, dict(_prep(src), zca=not _prep(src)["zca"]))


def test_recipe_variant_reference_resolves_to_the_finished_run_of_the_same_seed(tmp_path):
    out = str(tmp_path)
    names = ["vat", "lvat_from_vat"]
    with pytest.raises(experiments.ExperimentError, match="no variant 'nope'"):
        experiments.resolve_init_from("variant:nope", out, names, 2, 1, single=False)
    with pytest.raises(experiments.ExperimentError, match="not a finished run; run "
                                                         "--variants=vat"):
        experiments.resolve_init_from("variant:vat", out, names, 2, 1, single=False)
    d = os.path.join(out, "vat", "seed2-data1")
    os.makedirs(d)
    with open(os.path.join(d, "results.json"), "w") as f:
        json.dump({}, f)
    assert experiments.resolve_init_from("variant:vat", out, names, 2, 1, single=False) == d
    assert experiments.resolve_init_from("/a/run", out, names, 2, 1, single=False) == "/a/run"
    assert experiments.resolve_init_from(None, out, names, 2, 1, single=False) is None


def test_a_recipe_warm_starts_each_seed_from_its_own_source_run(tmp_path):
    recipe = Recipe(name="warm", description="warm start", base=dict(
        dataset="synthetic", model="tiny_cnn", batch_size=8, ul_batch_size=16, num_epochs=1,
        epoch_decay_start=1, num_iter_per_epoch=3, eval_freq=1, eval_batch_size=50,
        finetune_iter=1, finetune_batch_size=8, num_labeled_examples=20, epsilon=1.0),
        variants=(("vat", dict(method="vat")),
                  ("baseline_from_vat", dict(method="baseline", init_from="variant:vat"))))
    _, summary = experiments.run_recipe(recipe, str(tmp_path), num_seeds=2, attacks=[])
    for seed in (1, 2):
        cfg = json.load(open(tmp_path / "warm" / "baseline_from_vat" / f"seed{seed}-data1" /
                             "config.json"))
        assert cfg["init_from"] == str(tmp_path / "warm" / "vat" / f"seed{seed}-data1")
    assert {r["variant"] for r in summary["rows"]} == {"vat", "baseline_from_vat"}


# ---------------------------------------------------------------- input transform
def test_input_transform_gives_any_method_either_transform_and_refuses_vat_for_lvat(tmp_path):
    from lvat_tf.regularizers import methods

    assert methods.input_needs("vat", True, "lvat") == methods.input_needs("lvat_vae", True)
    assert methods.input_needs("lvat_vae", True, "method") == methods.input_needs("lvat_vae")
    assert methods.input_needs("baseline", False, "vat") == methods.input_needs("vat", False)
    with pytest.raises(ConfigError, match="^--input_transform: --method=lvat_vae perturbs"):
        tiny_config(method="lvat_vae", input_transform="vat")
    with pytest.raises(ConfigError, match="^--input_transform: expected method|vat|lvat"):
        tiny_config(input_transform="zca")
    # VAT on LVAT's inputs: x / 255, the 16x16 test images zero-padded to 32x32.
    d = str(tmp_path / "vat_lvatin")
    res = run.train_and_evaluate(tiny_config(d, num_epochs=1, input_transform="lvat"))
    assert _prep(d) == {"scaling": "unit", "pad_to": 32, "zca": False}
    assert res["num_iterations"] == 5


# ---------------------------------------------------------------- entmin
def test_entmin_composes_with_any_unlabeled_method_and_vat_plus_it_is_vatent():
    from lvat_tf.regularizers import methods
    from lvat_tf.regularizers.vat import Entropy

    vatent = methods.build_regularizers(tiny_config(method="vatent"))
    vat_ent = methods.build_regularizers(tiny_config(method="vat", entmin=True))
    assert [type(r) for r in vatent] == [type(r) for r in vat_ent] == [VAT, Entropy]
    assert dataclasses.asdict(vatent[0]) == dataclasses.asdict(vat_ent[0])  # same settings
    # The two methods' steps are the same computation.
    a, b = _model(0, vatent), _model(0, vat_ent)
    la, lb = a.compute_losses(_batch()), b.compute_losses(_batch())
    assert float(la.total) == float(lb.total)
    assert la.regularizers.keys() == lb.regularizers.keys() == {"vat_loss", "ent_loss"}
    with pytest.raises(ConfigError, match="^--entmin: --method=vatent already"):
        tiny_config(method="vatent", entmin=True)
    with pytest.raises(ConfigError, match="^--entmin: --method=baseline trains on no unlabeled"):
        tiny_config(method="baseline", entmin=True)


def test_init_seed_draws_only_the_initial_weights(tmp_path):
    from lvat_tf.data import registry as data_registry

    spec = data_registry.get_spec("synthetic")
    shape = tuple(spec.image_shape)

    def weights(**kw):
        cfg = tiny_config(**kw)
        keras.utils.set_random_seed(cfg.seed)  # as train_and_evaluate does first
        return [v.numpy() for v in run.initial_classifier(cfg, spec, shape).weights]

    w1, w2 = weights(seed=1), weights(seed=2)
    assert not all(np.array_equal(a, b) for a, b in zip(w1, w2))
    for a, b in zip(weights(seed=2, init_seed=1), w1):
        np.testing.assert_array_equal(a, b)
    # End to end: init_seed = seed is the default run, step for step; another init_seed
    # with the same seed (same batches, dropout, directions) ends elsewhere.
    runs = {name: run.train_and_evaluate(tiny_config(str(tmp_path / name), **kw), verbose=0)
            for name, kw in (("default", {}), ("same", {"init_seed": 1}),
                             ("other", {"init_seed": 7}))}
    assert [h["loss"] for h in runs["same"]["train_history"]] == \
        [h["loss"] for h in runs["default"]["train_history"]]
    assert runs["same"]["config"]["init_seed"] == 1
    assert runs["other"]["train_history"][0]["loss"] != runs["default"]["train_history"][0]["loss"]
    with pytest.raises(ConfigError, match=r"^--init_seed: expected a seed in \[0, 2\^32\)"):
        tiny_config(init_seed=-1)
