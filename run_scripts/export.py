"""Export a finished run's classifier as a TF-Serving SavedModel.

    python run_scripts/export.py --log_dir=runs/digits_lvat --export_dir=export/digits [--version=1]

Writes EXPORT_DIR/<version>/ (signatures ``serving_default``: uint8 images ->
probabilities, classes; ``logits``: model-input floats -> logits) and
EXPORT_DIR/<version>/assets.extra/lvat_tf.json (run, checkpoint, test error of
the exported weights). By default the BN statistics are re-estimated first as
vat_tf test.py does (so the served model is the one test.py scores);
--nofinetune_bn exports the checkpoint's moving averages as they are. An
existing version is never overwritten.
"""
import json
import os

import _common  # noqa: F401
from absl import app, flags

flags.DEFINE_string("export_dir", None, "TF-Serving model base path; the SavedModel goes to "
                    "EXPORT_DIR/<version>.")
flags.DEFINE_integer("version", 1, "Model version (a positive integer; TF-Serving loads the "
                     "highest).")
flags.DEFINE_bool("finetune_bn", True, "Re-estimate BN statistics as vat_tf test.py before "
                  "exporting (the run's finetune_iter/finetune_batch_size).")
FLAGS = flags.FLAGS


def main():
    from lvat_tf import config as config_lib
    from lvat_tf import export
    from lvat_tf.data import DataError, registry
    from lvat_tf.data.preprocessing import Preprocessor
    from lvat_tf.trained import load_trained_classifier
    from lvat_tf.training import run

    _common.require(FLAGS, log_dir="the run directory to export",
                    export_dir="the export base directory")
    if FLAGS.version < 1:
        raise config_lib.ConfigError("version", f"expected a positive integer, got "
                                     f"{FLAGS.version}")
    target = os.path.join(FLAGS.export_dir, str(FLAGS.version))
    if os.path.exists(target):
        raise config_lib.ConfigError("version", f"{target} exists; TF-Serving versions are "
                                     "immutable, give a new --version")
    try:
        cfg, clf, data, ckpt = load_trained_classifier(FLAGS.log_dir)
    except DataError as e:
        if FLAGS.finetune_bn:
            raise DataError(f"{e} (BN re-estimation needs the data; --nofinetune_bn "
                            "exports the checkpoint's statistics without data)") from None
        # No data and no re-estimation: export as saved, without a test error.
        cfg, clf, data, ckpt = load_trained_classifier(FLAGS.log_dir, with_data=False)
    if FLAGS.finetune_bn:
        run.finetune_bn(clf, data, cfg, cfg.seed)
    correct, n = (run.evaluate_classifier(clf, data.x_eval, data.y_eval, 500)
                  if data is not None else (None, 0))
    prep = data.preprocessor if data is not None else Preprocessor.load(
        os.path.join(FLAGS.log_dir, "preprocessing.npz"))
    spec = registry.get_spec(cfg.dataset)
    path = export.export_classifier(clf, prep, spec.image_shape, FLAGS.export_dir,
                                    FLAGS.version)
    meta = {"log_dir": os.path.abspath(FLAGS.log_dir), "checkpoint": ckpt,
            "dataset": cfg.dataset, "method": cfg.method, "model": cfg.model,
            "raw_image_shape": list(spec.image_shape),
            "preprocessing": prep.describe(), "bn_finetuned": FLAGS.finetune_bn,
            "test_error": None if correct is None else 100.0 * (1 - correct / n),
            "num_test_examples": n,
            "signatures": {"serving_default": {"inputs": {"images": "uint8 (N,H,W,C)"},
                                               "outputs": {"probabilities": "float32 (N,K)",
                                                           "classes": "int64 (N,)"}},
                           "logits": {"inputs": {"inputs": "float32 model input"},
                                      "outputs": {"logits": "float32 (N,K)"}}}}
    os.makedirs(os.path.join(path, "assets.extra"), exist_ok=True)
    with open(os.path.join(path, "assets.extra", "lvat_tf.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    if correct is None:
        print(f"exported {FLAGS.log_dir} to {path} (no data found: not evaluated, BN "
              "statistics as saved)")
    else:
        print(f"exported {FLAGS.log_dir} to {path} (test error of the exported weights "
              f"{meta['test_error']:.2f} % on {n} images)")


if __name__ == "__main__":
    app.run(_common.entry_point(main))
