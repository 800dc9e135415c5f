"""Shared test fixtures: paths to ../shared, small configs, subprocess helpers."""
import os
import subprocess
import sys

import pytest

import lvat_tf  # noqa: F401  (sets KERAS_BACKEND before keras is imported)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("LVAT_SHARED", os.path.join(os.path.dirname(ROOT), "shared"))
FIXTURES = os.path.join(SHARED, "fixtures", "upstream")
MNIST_DIR = os.path.join(SHARED, "data", "mnist")


def shared_path(*parts):
    """A path under ../shared, or skip the test with the reason when it is absent."""
    path = os.path.join(SHARED, *parts)
    if not os.path.exists(path):
        pytest.skip(f"needs ../shared ({path} is absent; CI always has it)")
    return path


def run_script(name, *args, timeout=600, env=None):
    """Runs run_scripts/<name> in a fresh process; returns CompletedProcess."""
    e = dict(os.environ)
    e.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    e["CUDA_VISIBLE_DEVICES"] = ""
    if env:
        e.update(env)
    return subprocess.run([sys.executable, os.path.join(ROOT, "run_scripts", name), *args],
                          capture_output=True, text=True, timeout=timeout, env=e, cwd=ROOT)


def tiny_config(log_dir="", **kw):
    """A fast config on the synthetic test dataset."""
    from lvat_tf.config import make_config

    base = dict(dataset="synthetic", model="tiny_cnn", method="vat", batch_size=8,
                ul_batch_size=16, num_epochs=2, epoch_decay_start=1, num_iter_per_epoch=5,
                eval_freq=1, eval_batch_size=50, finetune_iter=2, finetune_batch_size=8,
                num_labeled_examples=20, log_dir=log_dir, epsilon=1.0)
    base.update(kw)
    return make_config(**base)
