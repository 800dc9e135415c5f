"""convert_checkpoint.py on real TF1-format checkpoints written here with the op TF1's Saver runs."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import run_script, shared_path
from lvat_tf.generative import model_dir
from lvat_tf.trained import load_trained_classifier
from lvat_tf.upstream import convert, fixtures


def write_tf1_checkpoint(prefix, arrays, with_adam=True):
    """A TF1 checkpoint holding ``arrays`` under their names (+ Adam state like upstream's).

    Written with the op a TF1 ``Saver`` runs (SaveV2: the same tensor bundle, same names) plus
    the ``checkpoint`` state file Saver keeps beside it; building a TF1 graph whose variables
    are initialised from the arrays, as this helper did first, took ~10 s for the Glow fixture.
    """
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    if with_adam:
        first = next(iter(arrays))
        for slot in ("Adam", "Adam_1"):
            arrays[f"{first}/{slot}"] = np.zeros_like(arrays[first])
        arrays["beta1_power"] = np.float32(0.9)
        arrays["beta2_power"] = np.float32(0.999)
    prefix = str(prefix)
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    names = sorted(arrays)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(arrays[n]) for n in names])
    tf.compat.v1.train.update_checkpoint_state(os.path.dirname(prefix), prefix)
    return prefix


def _fixture(name):
    with np.load(shared_path("fixtures", "upstream", name)) as f:
        return {k: f[k] for k in f.files}


def test_vat_tf_checkpoint_converts_and_reproduces_fixture_logits(tmp_path):
    f = _fixture("vat_tf_conv_large.npz")
    weights = {k[2:]: v for k, v in f.items() if k.startswith("w/")}
    ckpt = write_tf1_checkpoint(tmp_path / "tf1" / "model.ckpt", weights)
    p = run_script("convert_checkpoint.py", "--upstream=vat_tf", f"--checkpoint={ckpt}",
                   "--dataset=synthetic", "--epsilon=3.5", f"--log_dir={tmp_path / 'run'}")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "4 optimizer variables not converted" in p.stdout
    cfg, clf, _, _ = load_trained_classifier(str(tmp_path / "run"))
    assert cfg.top_bn and cfg.method == "vat" and cfg.epsilon == 3.5
    x = tf.constant(f["x"])
    assert fixtures.relative_error(clf(x, bn_mode="moving"), f["ul_logit_eval"]) < 1e-4
    assert fixtures.relative_error(clf(x, bn_mode="batch"), f["ul_logit"]) < 1e-4
    # test.py and export.py accept the converted run.
    p = run_script("test.py", f"--log_dir={tmp_path / 'run'}", "--finetune_iter=1")
    assert p.returncode == 0 and "test error" in p.stdout, p.stderr[-2000:]
    p = run_script("export.py", f"--log_dir={tmp_path / 'run'}",
                   f"--export_dir={tmp_path / 'exp'}", "--nofinetune_bn")
    assert p.returncode == 0, p.stderr[-2000:]
    loaded = tf.saved_model.load(str(tmp_path / "exp" / "1"))
    crop = x[:, :16, :16]  # the run's dataset (synthetic) is 16x16x3
    out = loaded.signatures["logits"](inputs=crop)["logits"]
    assert fixtures.relative_error(out, clf(crop, bn_mode="moving")) < 1e-5


def test_lvat_glow_checkpoint_converts_with_its_generative_model(tmp_path):
    f = _fixture("lvat_glow.npz")
    weights = {k[2:]: v for k, v in f.items() if k.startswith("w/")}
    ckpt = write_tf1_checkpoint(tmp_path / "tf1" / "model.ckpt", weights)
    summary = convert.convert(ckpt, "lvat", "synthetic", str(tmp_path / "run"))
    assert summary["method"] == "lvat_glow" and len(summary["skipped_optimizer_variables"]) == 4
    glow, meta = model_dir.load(str(tmp_path / "run" / "generative"), expect={
        "kind": "glow", "dataset": "synthetic", "image_shape": [32, 32, 3]})
    y, logdet, z = glow.encode(tf.constant(f["x"]), noise=tf.constant(f["u"]))
    for got, key in ((y, "y"), (z, "z"), (logdet, "logdet")):
        assert fixtures.relative_error(got, f[key]) < 1e-4, key
    cfg, clf, _, _ = load_trained_classifier(str(tmp_path / "run"))
    assert cfg.method == "lvat_glow" and not cfg.top_bn
    masks = fixtures.tf1_dropout_masks([(4, 16, 16, 128), (4, 8, 8, 256)], None)
    logits = clf(tf.constant(f["x"]), bn_mode="batch", dropout_masks=masks)
    assert fixtures.relative_error(logits, f["ul_logit"]) < 1e-4
    assert json.load(open(tmp_path / "run" / "converted_from.json"))["upstream"] == "lvat"


def test_lvat_vae_checkpoint_converts(tmp_path):
    f = _fixture("lvat_vae.npz")
    weights = {k[2:]: v for k, v in f.items() if k.startswith("w/")}
    ckpt = write_tf1_checkpoint(tmp_path / "tf1" / "model.ckpt", weights, with_adam=False)
    convert.convert(ckpt, "lvat", "synthetic", str(tmp_path / "run"))
    vae, meta = model_dir.load(str(tmp_path / "run" / "generative"), expect={"kind": "vae"})
    assert meta["architecture"] == {"latent_dim": 128, "widths": [128, 256, 512]}
    mu, _ = vae.encode(tf.constant(f["x"]))
    assert fixtures.relative_error(mu, f["z_mu"]) < 1e-4


def test_bad_checkpoints_are_refused_with_the_names(tmp_path):
    f = _fixture("vat_tf_conv_large.npz")
    weights = {k[2:]: v for k, v in f.items() if k.startswith("w/")}
    extra = dict(weights, **{"CNN/c10_W": np.zeros((1,), np.float32),
                             "something/else": np.zeros((1,), np.float32)})
    ckpt = write_tf1_checkpoint(tmp_path / "a" / "model.ckpt", extra)
    with pytest.raises(convert.ConvertError, match="something/else"):
        convert.convert(ckpt, "vat_tf", "synthetic", str(tmp_path / "r1"))
    missing = {k: v for k, v in weights.items() if k != "CNN/b3_gamma"}
    ckpt = write_tf1_checkpoint(tmp_path / "b" / "model.ckpt", missing)
    p = run_script("convert_checkpoint.py", "--upstream=vat_tf", f"--checkpoint={ckpt}",
                   "--dataset=synthetic", f"--log_dir={tmp_path / 'r2'}")
    assert p.returncode != 0 and "Traceback" not in p.stderr and "b3_gamma" in p.stderr
    p = run_script("convert_checkpoint.py", "--upstream=lvat", f"--checkpoint={ckpt}",
                   "--dataset=synthetic", f"--log_dir={tmp_path / 'r3'}")
    assert p.returncode != 0 and "use --upstream=vat_tf" in p.stderr
    p = run_script("convert_checkpoint.py", "--upstream=vat_tf",
                   f"--checkpoint={tmp_path / 'nothing'}", "--dataset=synthetic",
                   f"--log_dir={tmp_path / 'r4'}")
    assert p.returncode != 0 and "--checkpoint" in p.stderr and "Traceback" not in p.stderr
