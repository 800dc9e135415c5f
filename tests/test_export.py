"""TF-Serving export: in-graph preprocessing, signatures, a fresh-process load, PredictRequest."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import run_script, tiny_config
from lvat_tf.data.preprocessing import Preprocessor, fit_zca, scale
from lvat_tf.export import InGraphPreprocessing
from lvat_tf.trained import load_trained_classifier
from lvat_tf.training import run


@pytest.mark.parametrize("kind", ["vat", "zca", "unit_pad"])
def test_in_graph_preprocessing_equals_numpy_preprocessing(kind):
    rng = np.random.RandomState(0)
    raw = rng.randint(0, 256, (6, 28 if kind == "unit_pad" else 8, 28 if kind == "unit_pad"
                                else 8, 3)).astype(np.uint8)
    if kind == "zca":
        prep = Preprocessor(*fit_zca(scale(rng.randint(0, 256, (200, 8, 8, 3)))))
    elif kind == "unit_pad":
        prep = Preprocessor(scaling="unit", pad_to=32)
    else:
        prep = Preprocessor()
    layer = InGraphPreprocessing(prep, raw.shape[1:])
    np.testing.assert_allclose(layer(tf.constant(raw)).numpy(), prep(raw), rtol=1e-5, atol=2e-5)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    cfg = tiny_config(str(root / "run"), num_epochs=1, epoch_decay_start=0, num_iter_per_epoch=4)
    res = run.train_and_evaluate(cfg, verbose=0)
    return root, res


def _fresh_process(code):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300)
    return p


def test_export_script_serves_what_the_keras_model_predicts(trained_run):
    root, res = trained_run
    p = run_script("export.py", f"--log_dir={root / 'run'}", f"--export_dir={root / 'exp'}")
    assert p.returncode == 0, p.stderr[-2000:]
    meta = json.load(open(root / "exp" / "1" / "assets.extra" / "lvat_tf.json"))
    # The exported weights are the ones test.py scores (BN re-estimated with the run's seed).
    assert abs(meta["test_error"] - res["test_error"]) < 1e-9
    # Raw-moving-statistics export, compared with the Keras model in a fresh process.
    p = run_script("export.py", f"--log_dir={root / 'run'}", f"--export_dir={root / 'exp'}",
                   "--version=2", "--nofinetune_bn")
    assert p.returncode == 0, p.stderr[-2000:]
    cfg, clf, data, _ = load_trained_classifier(str(root / "run"))
    raw = np.random.RandomState(1).randint(0, 256, (5,) + data.spec.image_shape).astype(np.uint8)
    logits = clf(tf.constant(data.preprocessor(raw)), bn_mode="moving").numpy()
    np.save(root / "raw.npy", raw)
    np.save(root / "x.npy", data.preprocessor(raw))
    code = f"""
import numpy as np, tensorflow as tf
m = tf.saved_model.load({str(root / 'exp' / '2')!r})
raw = np.load({str(root / 'raw.npy')!r}); x = np.load({str(root / 'x.npy')!r})
out = m.signatures["serving_default"](images=tf.constant(raw))
lg = m.signatures["logits"](inputs=tf.constant(x))
np.savez({str(root / 'served.npz')!r}, p=out["probabilities"].numpy(), c=out["classes"].numpy(),
         l=lg["logits"].numpy())
"""
    p = _fresh_process(code)
    assert p.returncode == 0, p.stderr[-2000:]
    served = np.load(root / "served.npz")
    np.testing.assert_allclose(served["l"], logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(served["p"], tf.nn.softmax(logits).numpy(), rtol=1e-5, atol=1e-6)
    assert served["c"].dtype == np.int64
    np.testing.assert_array_equal(served["c"], logits.argmax(-1))
    # An existing version is never overwritten.
    p = run_script("export.py", f"--log_dir={root / 'run'}", f"--export_dir={root / 'exp'}",
                   "--version=2")
    assert p.returncode != 0 and "--version" in p.stderr and "Traceback" not in p.stderr


def test_saved_model_cli_wrong_inputs_and_predict_request(trained_run):
    root, _ = trained_run
    path = root / "exp" / "3"
    if not path.exists():
        p = run_script("export.py", f"--log_dir={root / 'run'}", f"--export_dir={root / 'exp'}",
                       "--version=3", "--nofinetune_bn")
        assert p.returncode == 0, p.stderr[-2000:]
    cli = subprocess.run(["saved_model_cli", "show", "--all", "--dir", str(path)],
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr[-2000:]
    for want in ("signature_def['serving_default']", "inputs['images']", "DT_UINT8",
                 "outputs['probabilities']", "outputs['classes']", "DT_INT64",
                 "signature_def['logits']", "outputs['logits']"):
        assert want in cli.stdout, want
    m = tf.saved_model.load(str(path))
    sig = m.signatures["serving_default"]
    shape = tuple(sig.structured_input_signature[1]["images"].shape[1:])
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError), match="uint8"):
        sig(images=tf.zeros((2,) + shape, tf.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"images: expected shape \(N, "):
        sig(images=tf.zeros((2, shape[0] + 1, shape[1], shape[2]), tf.uint8))
    # A TF-Serving PredictRequest built for the signature names carries what it needs.
    from tensorflow_serving.apis import predict_pb2
    raw = np.random.RandomState(2).randint(0, 256, (3,) + shape).astype(np.uint8)
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "lvat"
    req.model_spec.signature_name = "serving_default"
    req.inputs["images"].CopyFrom(tf.make_tensor_proto(raw))
    req.output_filter.extend(["probabilities", "classes"])
    assert set(req.inputs) == set(sig.structured_input_signature[1])
    assert set(req.output_filter) == set(sig.structured_outputs)
    out = sig(**{k: tf.constant(tf.make_ndarray(v)) for k, v in req.inputs.items()})
    assert out["probabilities"].shape == (3, 10) and out["classes"].shape == (3,)
