"""The collapse monitor's rules applied now to finished runs (their last checkpoint).

A run's collapse.json holds what the monitor said during training, under the rules of that
time. This re-measures each finished run's final weights exactly as the monitor did at the
last evaluation (inference mode, moving BN statistics, the same fixed monitoring batch and
labeled set) and prints the kind under today's rules, e.g. ``unfitted`` (session 17) for a
class the classifier gets wrong on its own labels.

  python docs/measurements/recheck_collapse.py RUN_DIR [RUN_DIR ...]
"""
import sys

from lvat_tf.models import classifiers
from lvat_tf.trained import load_trained_classifier
from lvat_tf.training import collapse


def recheck(run_dir):
    """(kind or None, stats) of the run's last checkpoint under the current rules."""
    cfg, clf, data, _ = load_trained_classifier(run_dir)
    logits_fn = classifiers.inference_function(clf, data.image_shape)
    mon = collapse.CollapseMonitor(logits_fn, collapse.monitor_batch(data.x_unlabeled, cfg.seed),
                                   data.x_labeled, data.y_labeled, cfg.method, cfg.eval_freq,
                                   cfg.num_epochs, batch_size=cfg.eval_batch_size)
    stats, kind = mon.measure()
    return kind, stats


def main(run_dirs):
    for d in run_dirs:
        kind, stats = recheck(d)
        worst = min(range(len(stats["labeled_class_accuracy"])),
                    key=lambda c: stats["labeled_class_accuracy"][c] if
                    stats["labeled_class_accuracy"][c] is not None else 2.0)
        print(f"{d}: {kind or 'no collapse'}; labeled accuracy "
              f"{stats['labeled_accuracy']:.3f}, worst class {worst} "
              f"{stats['labeled_class_accuracy'][worst]:.2f}; effective classes "
              f"{stats['effective_classes']:.2f}, rarest class "
              f"{100 * min(stats['class_histogram']):.1f} %")


if __name__ == "__main__":
    main(sys.argv[1:])
