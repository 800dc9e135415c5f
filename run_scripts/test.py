"""Evaluate a finished run as vat_tf test.py: BN re-estimation, then the whole test set.

    python run_scripts/test.py --log_dir=runs/digits_vat [--finetune_iter=100]

Reads the run's config.json, preprocessing and latest checkpoint; flags given
here override only evaluation settings (eval_batch_size, finetune_*,
data_dir). Writes LOG_DIR/test_results.json.
"""
import json
import os

import _common  # noqa: F401
from absl import app, flags

import flags as lvat_flags

lvat_flags.define_flags("test")
FLAGS = flags.FLAGS


def main():
    from lvat_tf.trained import load_trained_classifier
    from lvat_tf.training import run

    _common.require(FLAGS, log_dir="the run directory to evaluate")
    overrides = {"eval_batch_size": FLAGS.eval_batch_size or 500,
                 "finetune_batch_size": FLAGS.finetune_batch_size,
                 "finetune_iter": FLAGS.finetune_iter}
    if FLAGS["data_dir"].present:
        overrides["data_dir"] = FLAGS.data_dir
    cfg, clf, data, ckpt = load_trained_classifier(FLAGS.log_dir, **overrides)
    res = run.final_evaluation(clf, data, cfg)
    res.update({"checkpoint": ckpt, "finetune_iter": cfg.finetune_iter,
                "finetune_batch_size": cfg.finetune_batch_size})
    with open(os.path.join(FLAGS.log_dir, "test_results.json"), "w") as f:
        json.dump(res, f, indent=2, sort_keys=True)
    print(f"num_test_examples {res['num_test_examples']} num_correct_examples "
          f"{res['num_correct']} accuracy {res['test_accuracy']:.4f}")
    print(f"test error: {res['test_error']:.2f} %")


if __name__ == "__main__":
    app.run(_common.entry_point(main))
