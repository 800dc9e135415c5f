"""Train a classifier with VAT / VAT+Ent / baseline (vat_tf train_semisup.py).

    python run_scripts/train.py --dataset=digits --method=vat --log_dir=runs/digits_vat
"""
import json

import _common  # noqa: F401  (import path)
from absl import app, flags

import flags as lvat_flags

lvat_flags.define_flags("train")
FLAGS = flags.FLAGS


def main():
    from lvat_tf.training import run

    cfg = lvat_flags.config_from_flags(FLAGS, "train")
    results = run.train_and_evaluate(cfg)
    summary = {k: results[k] for k in ("dataset", "method", "model", "num_labeled_examples",
                                       "num_iterations", "test_error")}
    print(json.dumps(summary))
    print(f"test error: {results['test_error']:.2f} %")


if __name__ == "__main__":
    app.run(_common.entry_point(main))
