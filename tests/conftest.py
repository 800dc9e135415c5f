"""Shared test fixtures: paths to ../shared, small configs, subprocess helpers."""
import atexit
import json
import os
import subprocess
import sys
import tempfile
import warnings

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


_SERVER = None


def _forkserver():
    """The session's fork server (tests/helpers/forkserver.py), started on first use;
    None (with a warning) when it cannot fork safely."""
    global _SERVER
    if _SERVER is None or (_SERVER is not False and _SERVER.poll() is not None):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
                   CUDA_VISIBLE_DEVICES="")
        server = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "tests", "helpers", "forkserver.py")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, env=env, cwd=ROOT)
        hello = json.loads(server.stdout.readline() or "{}")
        if hello.get("ready") is not True:
            warnings.warn(f"tests/helpers/forkserver.py: {hello.get('why', 'did not start')}; "
                          "CLI tests start fresh interpreters")
            server.kill()
            _SERVER = False
        else:
            atexit.register(server.kill)
            _SERVER = server
    return _SERVER or None


def run_python(path, *args, timeout=600, env=None):
    """Runs the Python file ``path`` with ``args`` as its own process, with exactly the
    environment ``env`` (default: this one); returns a CompletedProcess.

    The process is forked from a server that has TensorFlow imported already
    (tests/helpers/forkserver.py says why that keeps the process boundary);
    LVAT_TEST_FORKSERVER=0 runs a fresh interpreter instead.
    """
    e = dict(os.environ) if env is None else dict(env)
    argv = [sys.executable, path, *args]
    server = _forkserver() if os.environ.get("LVAT_TEST_FORKSERVER", "1") != "0" else None
    if server is None:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=e,
                              cwd=ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        out, err = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
        server.stdin.write(json.dumps({"script": path, "args": list(args), "env": e,
                                       "cwd": ROOT, "timeout": timeout, "out": out,
                                       "err": err}) + "\n")
        server.stdin.flush()
        rc = json.loads(server.stdout.readline())["rc"]
        with open(out) as f_out, open(err) as f_err:
            stdout, stderr = f_out.read(), f_err.read()
    if rc == -9:
        raise subprocess.TimeoutExpired(argv, timeout, output=stdout, stderr=stderr)
    return subprocess.CompletedProcess(argv, rc, stdout, stderr)


def run_script(name, *args, timeout=600, env=None):
    """Runs run_scripts/<name> as its own process (:func:`run_python`), on the CPU, with
    ``env`` added to this environment; returns a CompletedProcess."""
    e = dict(os.environ)
    e.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    e["CUDA_VISIBLE_DEVICES"] = ""
    if env:
        e.update(env)
    return run_python(os.path.join(ROOT, "run_scripts", name), *args, timeout=timeout, env=e)


def train_generative_on_digits(script, model_dir, *args):
    """Runs train_vae.py / train_glow.py on the embedded digits; checks what every
    generative model directory of them holds; returns (process, meta, history)."""
    p = run_script(script, "--dataset=digits", *args, f"--log_dir={model_dir}")
    assert p.returncode == 0, p.stderr[-2000:]
    with open(os.path.join(model_dir, "generative.json")) as f:
        meta = json.load(f)
    assert meta["dataset"] == "digits" and meta["image_shape"] == [32, 32, 1]
    assert meta["preprocessing"] == {"scaling": "unit", "pad_to": 32, "zca": False}
    return p, meta, meta["training"]["history"]


def tiny_config(log_dir="", **kw):
    """A fast config on the synthetic test dataset."""
    from lvat_tf.config import make_config

    base = dict(dataset="synthetic", model="tiny_cnn", method="vat", batch_size=8,
                ul_batch_size=16, num_epochs=2, epoch_decay_start=1, num_iter_per_epoch=5,
                eval_freq=1, eval_batch_size=50, finetune_iter=2, finetune_batch_size=8,
                num_labeled_examples=20, log_dir=log_dir, epsilon=1.0)
    base.update(kw)
    return make_config(**base)


#: Test files in decreasing measured duration (LVAT_TEST_TIMES profile, session 7): with the
#: suite spread over workers one file at a time (.ci/run: xdist --dist loadfile), starting the
#: long files first keeps one long file from running alone at the end. Files not named keep
#: their order after these.
HEAVY_FIRST = ("test_training.py", "test_glow.py", "test_recipe_generative.py",
               "test_distribute.py", "test_train_fixture.py", "test_benchmark.py",
               "test_collapse.py", "test_convert.py", "test_lvat.py",
               "test_regularizer_interface.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(os.path.basename(str(item.fspath)), len(rank)))


def pytest_runtest_logreport(report):
    """LVAT_TEST_TIMES=FILE appends each test's phase times as they finish (profiling the suite)."""
    path = os.environ.get("LVAT_TEST_TIMES")
    if path:
        with open(path, "a") as f:
            f.write(f"{report.duration:9.2f} {report.when:8s} {report.outcome:7s} {report.nodeid}\n")
