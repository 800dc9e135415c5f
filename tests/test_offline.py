"""Offline in seconds, every broken file a one-line error, conversion without the dataset."""
import gzip
import os
import pickle
import struct
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import run_script, shared_path, tiny_config
from lvat_tf import checkpointing
from lvat_tf.data import DataError, network, raw, registry
from lvat_tf.data.preprocessing import Preprocessor, apply_zca
from lvat_tf.generative import model_dir
from lvat_tf.training import run
from test_convert import write_tf1_checkpoint


def _offline(spec_name):
    spec = registry.get_spec(spec_name)
    hosts = network.DOWNLOAD_HOSTS[spec.tfds_name]
    if network.first_reachable(hosts, timeout=1.0) is not None:
        pytest.skip(f"this machine reaches {hosts}: the offline path cannot be tested here")
    return spec


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "svhn", "cifar10"])
def test_no_network_fails_within_seconds_for_every_dataset(tmp_path, name):
    spec = _offline(name)
    t0 = time.monotonic()
    with pytest.raises(DataError) as e:
        registry.load_arrays(spec, str(tmp_path / "empty"), tfds_download=True)
    took = time.monotonic() - t0
    msg = str(e.value)
    assert took < 30, f"{took:.1f} s: tfds retried downloads"  # generous: the probe is 3 s
    assert "\n" not in msg and msg.startswith("--data_dir:") and "no network" in msg
    assert spec.raw_files.split(",")[0].split(" ")[0] in msg  # names the files expected


@pytest.mark.parametrize("script,args", [
    ("train.py", ["--dataset=mnist", "--data_dir={d}", "--log_dir={o}"]),
    ("train_vae.py", ["--dataset=svhn", "--data_dir={d}", "--log_dir={o}"]),
    ("train_glow.py", ["--data_set=CIFAR10", "--data_dir={d}", "--log_dir={o}"]),
    ("reproduce.py", ["--recipe=mnist100_4k", "--variants=baseline", "--data_dir={d}",
                      "--output_dir={o}"]),
])
def test_scripts_fail_fast_offline_and_write_nothing(tmp_path, script, args):
    _offline("mnist")
    d, o = tmp_path / "nowhere", tmp_path / "out"
    t0 = time.monotonic()
    p = run_script(script, *[a.format(d=d, o=o) for a in args], timeout=120)
    took = time.monotonic() - t0
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr[-1500:]
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "no network" in last, last
    assert took < 60, f"{took:.1f} s"  # TF import + a 3-s probe; minutes before the fix
    assert not o.exists(), sorted(os.listdir(o))


# --------------------------------------------------------------------------
# Broken raw files: one line naming the file and what is wrong.
# --------------------------------------------------------------------------
def _idx(path, dims, body=None, magic=(0, 0, 8)):
    body = bytes(int(np.prod(dims))) if body is None else body
    head = bytes(magic) + bytes([len(dims)]) + struct.pack(">" + "I" * len(dims), *dims)
    with gzip.open(path, "wb") as f:
        f.write(head + body)


def _mnist_dir(tmp_path, broken=None):
    """A complete tiny MNIST-format directory; ``broken`` rewrites one file."""
    d = tmp_path / "mnist"
    d.mkdir(exist_ok=True)
    _idx(d / raw.MNIST_FILES[0], (20, 28, 28))
    _idx(d / raw.MNIST_FILES[1], (20,), bytes(range(10)) * 2)
    _idx(d / raw.MNIST_FILES[2], (10, 28, 28))
    _idx(d / raw.MNIST_FILES[3], (10,), bytes(range(10)))
    if broken:
        name, writer = broken
        writer(d / name)
    return d


def _raw_header(path, data):
    with gzip.open(path, "wb") as f:
        f.write(data)


IDX_CASES = {
    "truncated header": (raw.MNIST_FILES[0], lambda p: _raw_header(p, bytes([0, 0, 8, 3, 0, 0, 0, 20, 0]))),
    "truncated body": (raw.MNIST_FILES[0], lambda p: _idx(p, (20, 28, 28), bytes(100))),
    "wrong magic": (raw.MNIST_FILES[1], lambda p: _idx(p, (20,), bytes(20), magic=(1, 2, 3))),
    "wrong dimensions": (raw.MNIST_FILES[0], lambda p: _idx(p, (20, 784))),
    "count mismatch": (raw.MNIST_FILES[1], lambda p: _idx(p, (19,), bytes(19))),
    "not gzip": (raw.MNIST_FILES[2], lambda p: p.write_bytes(b"hello, not gzip")),
}
IDX_WHAT = {"truncated header": "truncated IDX header", "truncated body": "holds 100 bytes",
            "wrong magic": "bad magic", "wrong dimensions": "2 dimensions",
            "count mismatch": "19 labels for 20 images", "not gzip": "cannot read IDX"}


@pytest.mark.parametrize("case", sorted(IDX_CASES))
def test_broken_idx_file_is_one_line_naming_it(tmp_path, case):
    name, writer = IDX_CASES[case]
    d = _mnist_dir(tmp_path, (name, writer))
    with pytest.raises(DataError) as e:
        registry.load_arrays(registry.get_spec("mnist"), str(d))
    msg = str(e.value)
    assert "\n" not in msg and IDX_WHAT[case] in msg, msg
    assert name in msg or (case == "count mismatch" and raw.MNIST_FILES[1] in msg), msg


def test_truncated_idx_through_train_py_is_one_line_and_writes_no_run_dir(tmp_path):
    d = _mnist_dir(tmp_path, IDX_CASES["truncated header"])
    out = tmp_path / "run"
    p = run_script("train.py", "--dataset=mnist", f"--data_dir={d}", f"--log_dir={out}")
    last = p.stderr.strip().splitlines()[-1]
    assert p.returncode == 1 and "Traceback" not in p.stderr and "struct.error" not in p.stderr
    assert last.startswith("error:") and "truncated IDX header" in last and raw.MNIST_FILES[0] in last
    assert not out.exists()


def _savemat(path, **arrays):
    from scipy import io as sio
    sio.savemat(str(path), arrays)


SVHN_CASES = {
    "not a .mat": (lambda p: p.write_bytes(b"garbage" * 10), "cannot read SVHN .mat"),
    "missing X": (lambda p: _savemat(p, y=np.ones((3, 1))), "no variable X"),
    "missing y": (lambda p: _savemat(p, X=np.zeros((32, 32, 3, 3), np.uint8)), "no variable y"),
    "wrong shape": (lambda p: _savemat(p, X=np.zeros((28, 28, 3, 3), np.uint8),
                                       y=np.ones((3, 1))), "expected (32, 32, 3, N)"),
    "count mismatch": (lambda p: _savemat(p, X=np.zeros((32, 32, 3, 3), np.uint8),
                                          y=np.ones((2, 1))), "2 labels for 3 images"),
    "labels outside 1..10": (lambda p: _savemat(p, X=np.zeros((32, 32, 3, 3), np.uint8),
                                                y=np.array([[1], [11], [3]])), "outside 1..10"),
}


@pytest.mark.parametrize("case", sorted(SVHN_CASES))
def test_broken_svhn_mat_is_one_line_naming_it(tmp_path, case):
    writer, what = SVHN_CASES[case]
    good = dict(X=np.zeros((32, 32, 3, 4), np.uint8), y=np.array([[1], [2], [10], [4]]))
    _savemat(tmp_path / raw.SVHN_FILES[0], **good)
    writer(tmp_path / raw.SVHN_FILES[1])
    with pytest.raises(DataError) as e:
        raw.load_svhn_dir(str(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg and what in msg and raw.SVHN_FILES[1] in msg, msg


def _cifar_batch(n=4, data=None, labels=None):
    d = {b"data": np.zeros((n, 3072), np.uint8) if data is None else data,
         b"labels": list(range(n)) if labels is None else labels}
    return pickle.dumps(d)


CIFAR_CASES = {
    "truncated": (lambda: _cifar_batch()[:50], "not a CIFAR-10 python batch"),
    "not a pickle": (lambda: b"\x00\x01 plain bytes", "not a CIFAR-10 python batch"),
    "wrong keys": (lambda: pickle.dumps({b"images": 1}), "expected keys b'data'"),
    "wrong shape": (lambda: _cifar_batch(data=np.zeros((4, 1024), np.uint8)),
                    "expected (N, 3072)"),
    "count mismatch": (lambda: _cifar_batch(labels=[1, 2]), "2 labels for 4 images"),
}


@pytest.mark.parametrize("case", sorted(CIFAR_CASES))
def test_broken_cifar10_batch_is_one_line_naming_it(tmp_path, case):
    make, what = CIFAR_CASES[case]
    d = tmp_path / raw.CIFAR10_DIR
    d.mkdir()
    for i in range(1, 6):
        (d / f"data_batch_{i}").write_bytes(_cifar_batch())
    (d / "data_batch_3").write_bytes(make())
    (d / "test_batch").write_bytes(_cifar_batch())
    with pytest.raises(DataError) as e:
        raw.load_cifar10_dir(str(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg and what in msg and "data_batch_3" in msg, msg


def test_truncated_cifar10_tarball_is_one_line(tmp_path):
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for n in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            blob = _cifar_batch()
            info = tarfile.TarInfo(f"{raw.CIFAR10_DIR}/{n}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    (tmp_path / raw.CIFAR10_TAR).write_bytes(buf.getvalue()[:len(buf.getvalue()) // 2])
    with pytest.raises(DataError) as e:
        raw.load_cifar10_dir(str(tmp_path))
    assert "\n" not in str(e.value) and raw.CIFAR10_TAR in str(e.value)


# --------------------------------------------------------------------------
# Broken run-directory files.
# --------------------------------------------------------------------------
def test_corrupt_or_newer_preprocessing_npz(tmp_path):
    p = tmp_path / "preprocessing.npz"
    p.write_bytes(b"PK\x03\x04 broken zip")
    with pytest.raises(DataError, match="cannot read the run's preprocessing state"):
        Preprocessor.load(str(p))
    np.savez(p, kind="scale", scaling="vat", pad_to=0, format_version=99)
    with pytest.raises(DataError, match="newer lvat_tf.*format 99"):
        Preprocessor.load(str(p))
    Preprocessor(scaling="unit").save(str(p))
    assert Preprocessor.load(str(p)).scaling == "unit"


def test_corrupt_or_newer_generative_json(tmp_path):
    from lvat_tf.generative.vae import VAE
    vae = VAE(latent_dim=4, channels=1, widths=(4, 4, 4))
    vae(tf.zeros((1, 32, 32, 1)))
    model_dir.save(str(tmp_path), vae, {"kind": "vae", "image_shape": [32, 32, 1],
                                        "architecture": {"latent_dim": 4, "widths": [4, 4, 4]}})
    model_dir.load(str(tmp_path))
    meta = tmp_path / model_dir.META
    good = meta.read_text()
    meta.write_text(good[:30])
    with pytest.raises(model_dir.GenerativeModelError, match="not valid JSON"):
        model_dir.load(str(tmp_path))
    meta.write_text(good.replace('"format_version": 1', '"format_version": 7'))
    with pytest.raises(model_dir.GenerativeModelError, match="newer lvat_tf"):
        model_dir.load(str(tmp_path))


@pytest.fixture(scope="module")
def finished_tiny_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny") / "run"
    run.train_and_evaluate(tiny_config(str(d), num_epochs=2, epoch_decay_start=2), verbose=0)
    return d


@pytest.mark.parametrize("damage", ["missing data file", "truncated data file",
                                    "corrupt state file"])
def test_half_written_checkpoint_is_one_line_and_nothing_lost(tmp_path, finished_tiny_run,
                                                             damage):
    import shutil
    d = tmp_path / "run"
    shutil.copytree(finished_tiny_run, d)
    ck = d / "checkpoints"
    data = sorted(ck.glob("ckpt-2.data-*"))[0]
    if damage == "missing data file":
        data.unlink()
    elif damage == "truncated data file":
        data.write_bytes(data.read_bytes()[:20])
    else:
        (ck / "checkpoint").write_text("model_checkpoint_path: {{{ broken")
    before = sorted(p.name for p in ck.iterdir())
    cfg = tiny_config(str(d), num_epochs=2, epoch_decay_start=2)
    with pytest.raises(checkpointing.CheckpointError) as e:
        run.train_and_evaluate(cfg, verbose=0)
    assert "\n" not in str(e.value) and str(ck) in str(e.value)
    # Nothing was deleted or overwritten: the earlier checkpoint is still there.
    assert sorted(p.name for p in ck.iterdir()) == before and (ck / "ckpt-1.index").exists()


# --------------------------------------------------------------------------
# Conversion needs data only where the preprocessing does.
# --------------------------------------------------------------------------
def _vat_tf_weights():
    with np.load(shared_path("fixtures", "upstream", "vat_tf_conv_large.npz")) as f:
        return {k[2:]: f[k] for k in f.files if k.startswith("w/")}


def test_svhn_checkpoint_converts_and_exports_without_data_or_network(tmp_path):
    ckpt = write_tf1_checkpoint(tmp_path / "tf1" / "model.ckpt", _vat_tf_weights())
    out = tmp_path / "run"
    t0 = time.monotonic()
    p = run_script("convert_checkpoint.py", "--upstream=vat_tf", f"--checkpoint={ckpt}",
                   "--dataset=svhn", f"--log_dir={out}", "--notfds_download")
    assert p.returncode == 0, p.stderr[-2000:]
    assert Preprocessor.load(str(out / "preprocessing.npz")).describe() == {
        "scaling": "vat", "pad_to": None, "zca": False}
    # Export with BN re-estimation needs the data, and says which flag skips it.
    p = run_script("export.py", f"--log_dir={out}", f"--export_dir={tmp_path / 'exp'}")
    last = p.stderr.strip().splitlines()[-1]
    assert p.returncode == 1 and "--nofinetune_bn" in last and "Traceback" not in p.stderr
    p = run_script("export.py", f"--log_dir={out}", f"--export_dir={tmp_path / 'exp'}",
                   "--nofinetune_bn")
    assert p.returncode == 0 and "not evaluated" in p.stdout, p.stderr[-2000:]
    assert (tmp_path / "exp" / "1" / "saved_model.pb").exists()
    assert time.monotonic() - t0 < 180


def test_cifar10_conversion_takes_the_zca_from_a_file_or_says_what_it_needs(tmp_path):
    ckpt = write_tf1_checkpoint(tmp_path / "tf1" / "model.ckpt", _vat_tf_weights())
    p = run_script("convert_checkpoint.py", "--upstream=vat_tf", f"--checkpoint={ckpt}",
                   "--dataset=cifar10", f"--log_dir={tmp_path / 'a'}")
    last = p.stderr.strip().splitlines()[-1]
    assert p.returncode == 1 and "--data_dir" in last and "--preprocessing_from" in last
    assert not (tmp_path / "a").exists()
    # Upstream's arrays (CHW-flattened, as vat_tf's cifar10.py saves them).
    rng = np.random.RandomState(0)
    mean_chw = rng.normal(size=3072).astype(np.float32)
    comp_chw = (np.eye(3072) + 0.01 * rng.normal(size=(3072, 3072))).astype(np.float32)
    up = tmp_path / "zca.npz"
    np.savez(up, mean=mean_chw, components=comp_chw)
    p = run_script("convert_checkpoint.py", "--upstream=vat_tf", f"--checkpoint={ckpt}",
                   "--dataset=cifar10", f"--log_dir={tmp_path / 'b'}",
                   f"--preprocessing_from={up}")
    assert p.returncode == 0, p.stderr[-2000:]
    prep = Preprocessor.load(str(tmp_path / "b" / "preprocessing.npz"))
    x = rng.uniform(-0.5, 0.5, size=(2, 32, 32, 3)).astype(np.float32)
    ours = apply_zca(x, prep.zca_mean, prep.zca_w)
    flat_chw = x.transpose(0, 3, 1, 2).reshape(2, -1)
    theirs = ((flat_chw - mean_chw) @ comp_chw.T).reshape(2, 3, 32, 32).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    # A run's own preprocessing.npz works too.
    p = run_script("convert_checkpoint.py", "--upstream=vat_tf", f"--checkpoint={ckpt}",
                   "--dataset=cifar10", f"--log_dir={tmp_path / 'c'}",
                   f"--preprocessing_from={tmp_path / 'b' / 'preprocessing.npz'}")
    assert p.returncode == 0, p.stderr[-2000:]


def test_latest_checkpoint_with_a_relative_run_directory(tmp_path, finished_tiny_run,
                                                         monkeypatch):
    import shutil
    shutil.copytree(finished_tiny_run, tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    path = checkpointing.latest_checkpoint(os.path.join("run", "checkpoints"))
    assert path == os.path.join("run", "checkpoints", "ckpt-2")
    # ... and a finished run in a relative directory is evaluated again, not refused.
    res = run.train_and_evaluate(tiny_config("run", num_epochs=2, epoch_decay_start=2),
                                 verbose=0)
    assert res["train_seconds_this_session"] == 0
