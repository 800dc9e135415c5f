"""tf.distribute: a run on R replicas computes what one device computes on the same global batch.

Each run is a fresh process (tests/helpers/train_and_dump.py, forked by
conftest.run_python before TensorFlow's runtime starts): logical CPU devices
and multi-worker strategies must be set up before it does.
The exact power iteration is used: at upstream's xi = 1e-6 the
finite-difference direction is float32 rounding noise on any device count
(docs/distributed.md).
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, run_python, run_script

HELPER = os.path.join(ROOT, "tests", "helpers", "train_and_dump.py")


def _env(**extra):
    e = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    e.update(extra)
    return e


def _train(log_dir, strategy, n_cpu, method, steps=3, env=None, wait=True):
    cmd = [sys.executable, HELPER, str(log_dir), strategy, str(n_cpu), method, str(steps)]
    if not wait:
        return subprocess.Popen(cmd, env=_env(**(env or {})), cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    p = run_python(HELPER, *cmd[2:], env=_env(**(env or {})))
    assert p.returncode == 0, p.stderr[-3000:]
    return _result(p.stdout)


def _result(stdout):
    line = [l for l in stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def _assert_same_variables(a_path, b_path, atol=1e-5):
    a, b = np.load(a_path), np.load(b_path)
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        np.testing.assert_allclose(a[k], b[k], atol=atol, rtol=0, err_msg=k)


@pytest.fixture(scope="module")
def single_device(tmp_path_factory):
    """Default-strategy reference runs, one per method."""
    root = tmp_path_factory.mktemp("single")
    return {m: (root / m, _train(root / m, "default", 1, m)) for m in ("vat", "mat")}


@pytest.mark.parametrize("method", ["vat", "mat"])
def test_mirrored_two_replicas_equal_one_device(tmp_path, single_device, method):
    # Dropout on (tiny_cnn keeps 0.5), synchronised BN, MAT's mixture all-reduced.
    ref_dir, ref = single_device[method]
    res = _train(tmp_path / "m", "mirrored", 2, method)
    assert res["replicas"] == 2 and ref["replicas"] == 1
    for a, b in zip(ref["periodic_eval"], res["periodic_eval"]):
        assert a["step"] == b["step"] == 3
        assert abs(a["xe_loss"] - b["xe_loss"]) < 1e-5
    _assert_same_variables(ref_dir / "vars.npz", tmp_path / "m" / "vars.npz")


def test_two_workers_on_loopback_agree_with_each_other_and_one_device(tmp_path, single_device):
    ports = []
    for _ in range(2):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        ports.append(s.getsockname()[1])
        s.close()
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    run_dir = tmp_path / "run"
    procs = []
    for i in range(2):
        env = {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
               "DUMP_TO": str(tmp_path / f"worker{i}.npz"),
               "CKPT_DIR": str(run_dir / "checkpoints") if i == 0 else
               str(run_dir / "workers" / "1" / "checkpoints")}
        procs.append(_train(run_dir, "multi_worker_mirrored", 1, "vat", env=env, wait=False))
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    r0, r1 = _result(outs[0][0]), _result(outs[1][0])
    assert r0["replicas"] == r1["replicas"] == 2
    _assert_same_variables(tmp_path / "worker0.npz", tmp_path / "worker1.npz", atol=0)
    _assert_same_variables(single_device["vat"][0] / "vars.npz", tmp_path / "worker0.npz")
    # Only the chief writes the run directory's results.
    res = json.load(open(run_dir / "results.json"))
    assert res["distribution"] == {"strategy": "multi_worker_mirrored", "replicas": 2}
    assert not (run_dir / "workers" / "1" / "results.json").exists()


def test_bad_distribution_settings_are_one_line_errors(tmp_path):
    base = ["--dataset=synthetic", "--model=tiny_cnn", "--num_epochs=1", "--epoch_decay_start=0",
            "--num_iter_per_epoch=2", "--num_labeled_examples=20", "--batch_size=8",
            "--ul_batch_size=16"]
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    p = run_python(os.path.join(ROOT, "run_scripts", "train.py"), *base,
                   f"--log_dir={tmp_path / 'a'}", "--distribution_strategy=multi_worker_mirrored",
                   env=dict(env, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES=""), timeout=300)
    assert p.returncode == 1 and "TF_CONFIG" in p.stderr.strip().splitlines()[-1]
    p = run_script("train.py", *base, f"--log_dir={tmp_path / 'b'}",
                   "--distribution_strategy=multi_worker_mirrored",
                   env={"TF_CONFIG": "{not json"})
    assert p.returncode == 1 and "TF_CONFIG: expected JSON" in p.stderr
    p = run_script("train.py", *base, "--batch_size=5", f"--log_dir={tmp_path / 'c'}",
                   "--distribution_strategy=mirrored", "--num_cpu_devices=2")
    assert p.returncode == 1 and "--batch_size=5: expected a multiple of the 2 replicas" in p.stderr
    p = run_script("train.py", *base, f"--log_dir={tmp_path / 'd'}", "--distribution_strategy=x")
    assert p.returncode != 0 and "distribution_strategy" in p.stderr


def test_num_cpu_devices_after_tensorflow_started_is_refused():
    import tensorflow as tf

    from lvat_tf import distribute
    tf.constant(1.0) + 1.0  # TF is running in this process
    with pytest.raises(distribute.DistributionError, match="--num_cpu_devices=3"):
        distribute.configure_cpu_devices(3)
    distribute.configure_cpu_devices(1)  # no-op


def test_replica_random_on_one_device_is_the_plain_draw():
    import tensorflow as tf

    from lvat_tf import distribute
    seed = tf.constant([3, 4], tf.int64)
    a = distribute.replica_random(tf.random.stateless_normal, [5, 2], seed)
    np.testing.assert_array_equal(a.numpy(), tf.random.stateless_normal([5, 2], seed).numpy())
