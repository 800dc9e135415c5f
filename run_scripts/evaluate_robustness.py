"""Accuracy under FGSM (L-inf) or L2 gradient attacks over a sweep of epsilons, for finished runs.

    python run_scripts/evaluate_robustness.py --log_dir=runs/mnist_mat --attack=fgsm \
        --epsilons=0,0.05,0.1,0.2 --compare=runs/mnist_vat,runs/mnist_base --output_dir=rob

Writes OUTPUT_DIR/robustness_<attack>.json (per run: epsilons, accuracy) and
OUTPUT_DIR/robustness_<attack>.png (one curve per run). Epsilons are in each
model's input space (docs/methods.md, "MAT"). --embedding also writes
OUTPUT_DIR/embedding_<run>.png for models with a 2-d last hidden layer
(Lenet++; the MAT paper's Fig. 2).
"""

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

def main():
    from lvat_tf import robustness
    from lvat_tf.config import ConfigError

    _common.require(FLAGS, log_dir="a finished run directory")
    try:
        eps = ([float(e) for e in FLAGS.epsilons] if FLAGS.epsilons
               else robustness.DEFAULT_EPSILONS[FLAGS.attack])
    except ValueError:
        raise ConfigError("epsilons", f"expected numbers, got {FLAGS.epsilons}") from None
    if any(e < 0 for e in eps):
        raise ConfigError("epsilons", f"expected non-negative values, got {eps}")
    out_dir = FLAGS.output_dir or FLAGS.log_dir
    try:
        curves = robustness.evaluate_runs([FLAGS.log_dir] + list(FLAGS.compare), FLAGS.attack,
                                          eps, out_dir, FLAGS.num_examples, FLAGS.embedding)
    except ValueError as e:
        raise ConfigError("embedding" if "2-d" in str(e) else "epsilons", str(e)) from None
    for label, c in curves.items():
        print(f"{label}: " + ", ".join(f"eps {e:g}: {100 * a:.2f} %"
                                       for e, a in zip(c["epsilons"], c["accuracy"])))
    print(f"wrote {out_dir}/robustness_{FLAGS.attack}.json and .png")


if __name__ == "__main__":
    app.run(_common.entry_point(main))
