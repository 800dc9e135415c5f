"""Accuracy under FGSM (L-inf) or L2 gradient attacks over a sweep of epsilons, for finished runs.

    python run_scripts/evaluate_robustness.py --log_dir=runs/mnist_mat --attack=fgsm \
        --epsilons=0,0.05,0.1,0.2 --compare=runs/mnist_vat,runs/mnist_base --output_dir=rob

Writes OUTPUT_DIR/robustness_<attack>.json (per run: epsilons, accuracy) and
OUTPUT_DIR/robustness_<attack>.png (one curve per run). Epsilons are in each
model's input space (README, "MAT"). --embedding also writes
OUTPUT_DIR/embedding_<run>.png for models with a 2-d last hidden layer
(Lenet++; the MAT paper's Fig. 2).
"""
import json
import os

import _common  # noqa: F401
from absl import app, flags

flags.DEFINE_enum("attack", "fgsm", ["fgsm", "l2"], "Attack: FGSM (L-inf) or L2 gradient.")
flags.DEFINE_list("epsilons", None, "Epsilons (input space). Default: the MAT paper's sweep, "
                  "0..8 step 1 (l2), or 0..0.3 step 0.05 (fgsm: inputs span 1.0).")
flags.DEFINE_list("compare", [], "More finished runs to evaluate and overlay.")
flags.DEFINE_integer("num_examples", 0, "Test examples used (0 = all).")
flags.DEFINE_string("output_dir", None, "Where the JSON and PNGs go (default: LOG_DIR).")
flags.DEFINE_bool("embedding", False, "Also plot the 2-d embedding of each run's test set.")
FLAGS = flags.FLAGS

_DEFAULT = {"l2": [float(e) for e in range(9)], "fgsm": [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]}


def main(argv):
    _common.no_positional_args(argv)
    import numpy as np
    import tensorflow as tf

    from lvat_tf import robustness
    from lvat_tf.config import ConfigError
    from lvat_tf.training import run

    curves = {}
    try:
        if not FLAGS.log_dir:
            raise ConfigError("log_dir", "a finished run directory is required")
        try:
            eps = [float(e) for e in FLAGS.epsilons] if FLAGS.epsilons else _DEFAULT[FLAGS.attack]
        except ValueError:
            raise ConfigError("epsilons", f"expected numbers, got {FLAGS.epsilons}") from None
        if any(e < 0 for e in eps):
            raise ConfigError("epsilons", f"expected non-negative values, got {eps}")
        out_dir = FLAGS.output_dir or FLAGS.log_dir
        os.makedirs(out_dir, exist_ok=True)
        for d in [FLAGS.log_dir] + list(FLAGS.compare):
            cfg, clf, data, _ = run.load_trained_classifier(d)
            x, y = data.x_eval, data.y_eval
            if FLAGS.num_examples:
                x, y = x[:FLAGS.num_examples], y[:FLAGS.num_examples]
            acc = robustness.accuracy_under_attack(clf, x, y, eps, FLAGS.attack)
            label = f"{os.path.basename(os.path.normpath(d))} ({cfg.method})"
            curves[label] = {"log_dir": d, "method": cfg.method, "model": cfg.model,
                             "epsilons": eps, "accuracy": acc, "num_examples": len(y)}
            print(f"{label}: " + ", ".join(f"eps {e:g}: {100 * a:.2f} %" for e, a in zip(eps, acc)))
            if FLAGS.embedding:
                feats = np.concatenate([clf(tf.constant(x[i:i + 500]), bn_mode="moving",
                                            return_features=True)[0].numpy()
                                        for i in range(0, len(x), 500)])
                path = os.path.join(out_dir, f"embedding_{os.path.basename(os.path.normpath(d))}.png")
                try:
                    robustness.plot_embedding(feats, y, path, label)
                except ValueError as e:
                    raise ConfigError("embedding", str(e)) from None
    except _common.user_errors() as e:
        _common.fail(str(e))
    with open(os.path.join(out_dir, f"robustness_{FLAGS.attack}.json"), "w") as f:
        json.dump({"attack": FLAGS.attack, "runs": curves}, f, indent=2)
    robustness.plot_curves(curves, os.path.join(out_dir, f"robustness_{FLAGS.attack}.png"),
                           FLAGS.attack)
    print(f"wrote {out_dir}/robustness_{FLAGS.attack}.json and .png")


if __name__ == "__main__":
    app.run(main)
