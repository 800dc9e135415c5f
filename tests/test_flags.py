"""Flag parity with vat_tf / LVAT, per-dataset defaults, and one-line errors."""
import dataclasses

import pytest
from absl import flags

import flags as lvat_flags
from conftest import run_script
from lvat_tf.config import Config, ConfigError

lvat_flags.define_flags()
FLAGS = flags.FLAGS

#: Every vat_tf flag the issue lists (train_semisup.py, vat.py, cnn.py, layers.py,
#: dataset_utils.py, cifar10.py/svhn.py, test.py).
VAT_TF_FLAGS = ["batch_size", "ul_batch_size", "eval_batch_size", "eval_freq", "num_epochs",
                "epoch_decay_start", "num_iter_per_epoch", "learning_rate", "mom1", "mom2",
                "method", "epsilon", "xi", "num_power_iterations", "keep_prob_hidden",
                "lrelu_a", "top_bn", "bn_stats_decay_factor", "aug_trans", "aug_flip",
                "dataset", "data_dir", "log_dir", "seed", "dataset_seed",
                "num_labeled_examples", "num_valid_examples", "validation",
                "finetune_batch_size", "finetune_iter"]


def _parse(*args):
    FLAGS.unparse_flags()
    FLAGS(["prog", *args])
    return lvat_flags.definitions.flag_values(FLAGS)


def _config(*args, script="train"):
    FLAGS.unparse_flags()
    FLAGS(["prog", *args])
    return lvat_flags.config_from_flags(FLAGS, script)


def test_every_vat_tf_flag_exists_with_upstream_default():
    expected = {
        "batch_size": 32, "ul_batch_size": 128, "eval_freq": 5, "num_epochs": 120,
        "epoch_decay_start": 80, "num_iter_per_epoch": 400, "learning_rate": 0.001, "mom1": 0.9,
        "mom2": 0.5, "method": "vat", "xi": 1e-6, "num_power_iterations": 1,
        "keep_prob_hidden": 0.5, "lrelu_a": 0.1, "top_bn": False, "bn_stats_decay_factor": 0.99,
        "aug_trans": False, "aug_flip": False, "dataset": "cifar10", "log_dir": "", "seed": 1,
        "dataset_seed": 1, "num_valid_examples": 1000, "validation": False,
        "finetune_batch_size": 100, "finetune_iter": 100}
    FLAGS.unparse_flags()
    FLAGS(["prog"])
    for name in VAT_TF_FLAGS:
        assert name in FLAGS, name
    for name, value in expected.items():
        assert FLAGS[name].default == value, name
        assert lvat_flags.UPSTREAM_DEFAULTS[name] == value, name
    # The library's Config has the same defaults.
    defaults = {f.name: f.default for f in dataclasses.fields(Config)}
    for name, value in expected.items():
        if name in defaults:
            assert defaults[name] == value, name
    for name in ("epsilon", "num_labeled_examples", "data_dir", "eval_batch_size"):
        assert FLAGS[name].default is None
        assert "depends" in FLAGS[name].help.lower()


@pytest.mark.parametrize("args,want", [
    ([], dict(dataset="cifar10", num_labeled_examples=4000, epsilon=10.0, data_dir="/tmp/cifar10",
              eval_batch_size=100, model="conv_large")),
    (["--aug_trans", "--aug_flip"], dict(epsilon=8.0)),
    (["--dataset=svhn"], dict(num_labeled_examples=1000, epsilon=2.5, data_dir="/tmp/svhn")),
    (["--dataset=svhn", "--aug_trans"], dict(epsilon=3.5)),
    (["--dataset=mnist"], dict(num_labeled_examples=100, epsilon=5.0, model="mlp")),
    (["--dataset=digits"], dict(num_labeled_examples=100, epsilon=1.5, data_dir=None)),
    (["--dataset=svhn", "--epsilon=0.7", "--num_labeled_examples=500"],
     dict(epsilon=0.7, num_labeled_examples=500)),
    # MAT's lambda1 comes from the method spec's per-dataset table (MAT paper: 0.01 CIFAR-10).
    (["--method=mat"], dict(mat_lambda1=0.01, epsilon=20.0)),
    (["--method=mat", "--dataset=mnist"], dict(mat_lambda1=0.1, epsilon=2.0)),
    (["--method=mat", "--mat_lambda1=0.3"], dict(mat_lambda1=0.3)),
    # bfloat16: the exact direction where the gradient at r = 0 vanishes (the finite
    # difference's H d is lost); LVAT against p(y|x) keeps the finite difference (its
    # direction is that gradient, kept in bfloat16: same cosine, docs/results.md).
    (["--mixed_precision"], dict(power_iteration="exact")),
    (["--mixed_precision", "--method=mat"], dict(power_iteration="exact")),
    (["--mixed_precision", "--method=lvat_vae"], dict(power_iteration="finite_difference")),
    (["--mixed_precision", "--method=lvat_glow"], dict(power_iteration="finite_difference")),
    (["--mixed_precision", "--method=lvat_glow_mat"], dict(power_iteration="finite_difference")),
    (["--mixed_precision", "--method=lvat_vae", "--lvat_reference=reconstruction"],
     dict(power_iteration="exact")),
    (["--method=lvat_vae"], dict(power_iteration="finite_difference")),
    # The labeled subset's draw: the dataset's own scheme unless given.
    (["--dataset=mnist"], dict(label_scheme="balanced")),
    (["--dataset=svhn"], dict(label_scheme="random")),
    (["--dataset=mnist", "--label_scheme=per_class"], dict(label_scheme="per_class")),
])
def test_dataset_dependent_defaults_only_when_not_given(args, want):
    cfg = _config(*args)
    for k, v in want.items():
        assert getattr(cfg, k) == v, k


def test_test_script_eval_batch_default():
    assert _config(script="test").eval_batch_size == 500


def test_lvat_spellings():
    v = _parse("--data_set=SVHN", "--data__dir=/x", "--log__dir=/y", "--is_aug")
    assert (v["dataset"], v["data_dir"], v["log_dir"], v["aug_trans"], v["aug_flip"]) == \
        ("svhn", "/x", "/y", True, False)
    v = _parse("--data_set=CIFAR10", "--is_aug")
    assert v["aug_trans"] and v["aug_flip"]
    v = _parse("--is_aug_trans", "--is_aug_flip")
    assert v["aug_trans"] and v["aug_flip"]
    assert _parse("--method=lvat", "--ae_type=VAE")["method"] == "lvat_vae"
    assert _parse("--method=lvat", "--ae_type=Glow")["method"] == "lvat_glow"
    with pytest.raises(ConfigError, match="--ae_type"):
        _parse("--method=lvat", "--ae_type=DAE")


@pytest.mark.parametrize("args,flag", [
    (["--dataset=imagenet"], "--dataset"),
    (["--method=mixmatch"], "--method"),
    (["--epsilon=-1"], "--epsilon"),
    (["--dataset=digits", "--num_labeled_examples=5000"], "--num_labeled_examples"),
    (["--dataset=digits", "--num_labeled_examples=55"], "--num_labeled_examples"),
    (["--dataset=svhn", "--label_scheme=per_class", "--num_labeled_examples=1005"],
     "--num_labeled_examples"),
    (["--keep_prob_hidden=0"], "--keep_prob_hidden"),
    (["--num_epochs=10", "--epoch_decay_start=20"], "--epoch_decay_start"),
    (["--dataset=digits", "--model=conv_large"], "--model"),
    (["--dataset=digits", "--model=lenet_pp", "--kernel_init=glorot"], "--kernel_init"),
    (["--dataset=mnist", "--data_dir=/nonexistent/mnist", "--notfds_download"], "--data_dir"),
])
def test_bad_input_gives_one_line_error_and_nonzero_exit(tmp_path, args, flag):
    extra = [] if flag == "--epoch_decay_start" else ["--num_epochs=1", "--epoch_decay_start=0"]
    p = run_script("train.py", *args, *extra, f"--log_dir={tmp_path / 'run'}", timeout=120)
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    last = [l for l in p.stderr.strip().splitlines() if l.startswith("error:")]
    assert len(last) == 1 and flag in last[0], p.stderr[-1500:]


def test_library_rejects_an_unknown_label_scheme():
    # The flag is an enum (absl rejects other values); the library checks its own callers.
    from lvat_tf.config import make_config
    with pytest.raises(ConfigError, match="--label_scheme.*stratified"):
        make_config(dataset="mnist", label_scheme="stratified")


def test_digits_gets_a_demo_budget_when_the_flags_are_not_given():
    cfg = _config("--dataset=digits", "--method=lvat_glow")
    assert (cfg.num_epochs, cfg.epoch_decay_start, cfg.num_iter_per_epoch) == (5, 5, 300)
    cfg = _config("--dataset=digits", "--num_epochs=8", "--num_iter_per_epoch=100")
    assert (cfg.num_epochs, cfg.epoch_decay_start, cfg.num_iter_per_epoch) == (8, 5, 100)
    # Upstream's datasets keep upstream's budget, and --helpfull keeps its defaults.
    cfg = _config("--dataset=mnist")
    assert (cfg.num_epochs, cfg.epoch_decay_start, cfg.num_iter_per_epoch) == (120, 80, 400)
    assert FLAGS["num_epochs"].default == 120 and "digits" in FLAGS["num_epochs"].help
