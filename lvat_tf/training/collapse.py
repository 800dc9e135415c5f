"""Collapse detection: a classifier that fits its labels but is flat (or one-class) elsewhere.

Consistency regularisers have a trivial minimum: a function that is constant
around every unlabeled point has zero VAT/LVAT/MAT loss. Measured on MNIST-100
(docs/results.md "Training dynamics"), small epsilon, LVAT's reconstruction gap and
MAT's log smoothness term drove the MLP there: 100 % accuracy on the 100
labeled images, near-uniform or single-class predictions on every other image.
The test error alone does not say *why* a run is bad; these statistics do.

At each periodic evaluation the monitor runs the classifier in inference mode
(moving BN statistics, as the evaluation) on a fixed batch of unlabeled images
and on the labeled set, logs

* ``mean_max_prob``: mean over images of max_k p(k|x);
* ``mean_entropy``: mean prediction entropy in nats, and ``normalized_entropy``
  = mean_entropy / log K (1 = uniform predictions);
* ``class_histogram``: fraction of images predicted as each class,
  ``top_class_fraction`` its maximum and ``effective_classes`` = exp(entropy
  of the histogram) (K for balanced predictions, 1 for a single class);
* ``labeled_accuracy`` on the labeled set,

and flags a collapse when the labeled set is fitted (accuracy >= 0.9) while the
unlabeled predictions are near-uniform (normalized entropy >= 0.5) or
concentrated on few classes (the top class takes >= 50 % of the images, or
fewer than K/3 effective classes; the data sets here have balanced classes), and
a milder failure, ``skewed``: confident predictions on fewer than 0.8 K
effective classes (8 of 10), so that whole classes are absorbed by others;
and the mildest, ``absorbed``: one class (or more) predicted for less than a
quarter of its share of the labels while the rest looks healthy, a single
class taken over by a neighbour. Apart from these, ``unfitted``: the labeled set
is fitted but for one class (or more) that the classifier gets wrong on its own
labeled images too (accuracy < 0.5 on that class, >= 0.9 on the others): an
optimisation failure, which no consistency term causes. Measured on Lenet++ (2-d
embedding, MNIST with all labels, 4,000 updates, session 17): 2 of 9 runs (center
loss seed 2, MAT seed 3) never predicted one class, on labeled and test images
alike (all its test images given to class 1; 10.95 and 10.67 % test error against
1.2-3.0 % for the other seven); the first was reported as ``absorbed`` with causes
that belong to a consistency term, the second was missed (labeled accuracy 0.89,
under the fit threshold).

Thresholds, from the MNIST-100 runs of docs/results.md "Training dynamics" (4,000
updates, the monitor at 2,000 and 4,000): VAT at epsilon 0.3 (72 % test error)
had normalized entropy 0.71 at 800 updates and its top class took 62 % at
1,600; epsilon-2 runs that ended at 12-16 % error had 0.12-0.15 at the end
and 0.56-0.68 at 2,000 updates, when their test accuracy was still ~40 %
(the issue's measurement): they are flagged then, and the record says that
they recovered (``final`` is None); the epsilon-2 run that ended at 59.6 %
error ended at 0.55. The ``skewed`` threshold (session 10, mnist100_4k, the monitor at
2,000 and 4,000 updates): every healthy run — no regulariser, VAT, MAT in both
forms, 12 runs at 5.7-33 % test error — predicted 9.27-9.92 effective classes of
10 (top class 11-18 %), while the LVAT-VAE runs against p(y|x) that ended at
47-78 % error with their labels fitted predicted 4.0-7.4 at the end (top class
23-61 %, confident: mean max-prob 0.67-0.80), which the two rules above missed
in all but one. A perfect classifier on SVHN's unbalanced test classes
would predict 9.2.

The ``absorbed`` threshold (session 13, the monitor's last evaluation of the 52 finished
runs on the AMD EPYC machine: MNIST-100 at 4k and 24k updates, CIFAR-10): every run not
flagged by the rules above, bar one whose labels were not fitted, predicted its rarest
class for >= 4.6 % of the monitoring batch (labels: 10 % per class) - MAT's paper form
at 30-33 % error and VAT runs whose test error sits in one class pair (5-11 %) among
them; VAT + entropy minimisation at 24k updates, seed 3, gave all but 1 % of the test
4s to class 9 (11.2 % error) with 8.67 effective classes - not skewed - and a rarest
class at 0.0 %, and two LVAT-VAE runs at 59 and 65 % error that the older rules missed
had 1.6 and 2.3 %. A quarter of the labels' share (2.5 %) lies between; SVHN's rarest
class holds 61 % of a balanced share, far above it.
"""
import dataclasses
import math
from typing import Dict, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from lvat_tf import files

#: Labeled accuracy from which the labels count as fitted.
FIT_ACCURACY = 0.9
#: A class whose labeled images are classified right less often than this, while the
#: other classes' reach FIT_ACCURACY, counts as unfitted.
UNFITTED_ACCURACY = 0.5
#: Normalized mean entropy from which predictions count as near-uniform.
UNIFORM_ENTROPY = 0.5
#: Share of the top predicted class from which predictions count as one-class.
TOP_CLASS_FRACTION = 0.5
#: Fewer effective classes than num_classes / this count as collapsed onto few classes.
FEW_CLASSES_DIVISOR = 3.0
#: Fewer effective classes than this fraction of num_classes count as skewed.
SKEWED_CLASSES_FRACTION = 0.8
#: A class predicted for less than this fraction of its share of the labels counts as absorbed.
ABSORBED_SHARE_FRACTION = 0.25
#: Unlabeled images in the fixed monitoring batch.
MONITOR_EXAMPLES = 1000


def prediction_stats(probs: np.ndarray) -> Dict[str, object]:
    """Statistics of a batch of predicted distributions.

    Args:
      probs: (N, K) class probabilities.

    Returns:
      dict with mean_max_prob, mean_entropy (nats), normalized_entropy,
      class_histogram (K fractions), top_class_fraction, effective_classes.
    """
    probs = np.asarray(probs, np.float64)
    n, k = probs.shape
    ent = -np.sum(probs * np.log(np.clip(probs, 1e-30, None)), axis=1)
    hist = np.bincount(np.argmax(probs, 1), minlength=k) / float(n)
    nz = hist[hist > 0]
    return {
        "mean_max_prob": float(np.mean(np.max(probs, 1))),
        "mean_entropy": float(np.mean(ent)),
        "normalized_entropy": float(np.mean(ent) / math.log(k)),
        "class_histogram": [float(h) for h in hist],
        "top_class_fraction": float(np.max(hist)),
        "effective_classes": float(np.exp(-np.sum(nz * np.log(nz)))),
    }


def absorbed_classes(stats: Dict[str, object],
                     label_shares: Optional[Sequence[float]] = None) -> List[int]:
    """Classes predicted for < ABSORBED_SHARE_FRACTION of their share of the labels.

    Args:
      stats: :func:`prediction_stats` of the unlabeled monitoring batch.
      label_shares: (K,) each class's fraction of the labeled set; None: 1 / K each.
    """
    hist = np.asarray(stats["class_histogram"])
    shares = (np.full(len(hist), 1.0 / len(hist)) if label_shares is None
              else np.asarray(label_shares, np.float64))
    return [int(c) for c in
            np.flatnonzero((shares > 0) & (hist < ABSORBED_SHARE_FRACTION * shares))]


def labeled_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray,
                           num_classes: int) -> List[Optional[float]]:
    """(K,) accuracy on each class's labeled images (None for a class without labels)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    out = []
    for c in range(num_classes):
        mask = y_true == c
        out.append(float(np.mean(y_pred[mask] == c)) if mask.any() else None)
    return out


def unfitted_classes(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> List[int]:
    """Classes below UNFITTED_ACCURACY on their labeled images while the rest is fitted.

    Args:
      y_true, y_pred: (N,) labels and predicted classes of the labeled set.
      num_classes: K.

    Returns:
      The unfitted classes; empty when there are none, or when the labeled images of
      the other classes are not fitted either (an early epoch: still training).
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    per_class = labeled_class_accuracy(y_true, y_pred, num_classes)
    low = [c for c, a in enumerate(per_class) if a is not None and a < UNFITTED_ACCURACY]
    rest = ~np.isin(y_true, low)
    if not low or not rest.any() or np.mean(y_pred[rest] == y_true[rest]) < FIT_ACCURACY:
        return []
    return low


def classify(stats: Dict[str, object], labeled_accuracy: float, num_classes: int,
             label_shares: Optional[Sequence[float]] = None,
             unfitted: Sequence[int] = ()) -> Optional[str]:
    """"unfitted", "uniform", "few_classes", "skewed", "absorbed" or None (no collapse).

    Args:
      stats: :func:`prediction_stats` of the unlabeled monitoring batch.
      labeled_accuracy: accuracy on the labeled set.
      num_classes: K.
      label_shares: (K,) each class's fraction of the labels (for ``absorbed``);
        None: balanced.
      unfitted: :func:`unfitted_classes` of the labeled set (checked first: a class
        missing on its own labels is not a consistency collapse).
    """
    if unfitted:
        return "unfitted"
    if labeled_accuracy < FIT_ACCURACY:
        return None
    if stats["normalized_entropy"] >= UNIFORM_ENTROPY:
        return "uniform"
    if (stats["top_class_fraction"] >= TOP_CLASS_FRACTION
            or stats["effective_classes"] < num_classes / FEW_CLASSES_DIVISOR):
        return "few_classes"
    if stats["effective_classes"] < SKEWED_CLASSES_FRACTION * num_classes:
        return "skewed"
    if absorbed_classes(stats, label_shares):
        return "absorbed"
    return None


#: Likely causes per method family, each naming the flag to change.
_CAUSES = {
    "vat": ("--epsilon too small for the data's scale (a flat function with spikes on the "
            "labels makes VAT's term ~0; MNIST-100 trained reliably at 5.0, collapsed at 0.3)",
            "--xi below float32 resolution makes the direction rounding noise: use "
            "--power_iteration=exact",
            "no batch norm on the logits: try --top_bn"),
    "lvat": ("LVAT's reconstruction gap: with the upstream reference p(y|x) the term is "
             "KL(p(y|x) || p(y|Dec(Enc(x)))) > 0 already at r = 0 and is minimised by flat "
             "predictions: try --lvat_reference=reconstruction",
             "--epsilon against the latent's scale (docs/methods.md 'LVAT'; a recipe's quality.json has the per-dimension std of z)",
             "on MNIST-100 no LVAT setting measured trained (LVAT-VAE: --epsilon 1, 3 and "
             "10, --lvat_reference=reconstruction, --lvat_bn=joint, --consistency_rampup, "
             "--entmin, and even warm-started from a VAT solution its term flattened the "
             "predictions; LVAT-Glow: --epsilon 1 and 1.5; docs/results.md 'Why LVAT-VAE "
             "fails on MNIST-100'): there use --method=vat"),
    "mat": ("the paper's log smoothness term (min at S = 0, reached by constant predictions): "
            "use --mat_smoothness=plain (the default)",
            "the information term is unbounded as features shrink: keep --mat_min_variance > 0 "
            "(default 1.0; the paper's form is 0)"),
    "other": ("the labeled set is memorised; check the learning rate and the regulariser "
              "weights",),
    # A class the classifier does not fit even on its labels.
    "unfitted": ("an optimisation failure, not the consistency term: the class is wrong "
                 "on its own labeled images too (on Lenet++'s 2-d embedding at 4,000 "
                 "updates 2 of 9 runs, with and without a regulariser term on unlabeled "
                 "images, lost one class this way; docs/results.md 'Lenet++ with seeds'): "
                 "train longer (--num_epochs) or compare --seed values",),
    # A single class taken over by a neighbour: no flag is known to prevent it.
    "absorbed": ("a dense part of the data carries a neighbouring class's label and the "
                 "consistency term defends it like a right one; on MNIST-100 which class "
                 "goes is decided early by the seed, not by a flag measured so far "
                 "(--method=vatent locked one in; docs/results.md 'Where the bad seeds' "
                 "error sits'): compare --seed values before reading the error",),
}


def likely_causes(method: str, kind: Optional[str] = None) -> tuple:
    """The causes the warning names for ``method`` (each with the flag to change)."""
    if kind in ("absorbed", "unfitted"):
        return _CAUSES[kind]
    if method in ("vat", "vatent"):
        return _CAUSES["vat"]
    if method.startswith("lvat"):
        return _CAUSES["lvat"]
    if method == "mat":
        return _CAUSES["mat"]
    return _CAUSES["other"]


def collapse_message(kind: str, stats: Dict[str, object], labeled_accuracy: float,
                     method: str, step: int,
                     label_shares: Optional[Sequence[float]] = None) -> str:
    """The one warning line of a detected collapse.

    For ``unfitted``, ``stats`` also holds ``labeled_class_accuracy`` (K values).
    """
    k = len(stats["class_histogram"])
    hist = stats["class_histogram"]
    if kind == "unfitted":
        acc = stats["labeled_class_accuracy"]
        low = [c for c, a in enumerate(acc) if a is not None and a < UNFITTED_ACCURACY]
        return (f"Collapse at step {step}: labeled accuracy {100 * labeled_accuracy:.0f} %, "
                "every class fitted but " + ", ".join(
                    f"class {c} ({100 * acc[c]:.0f} % of its labeled images right, "
                    f"{100 * hist[c]:.1f} % of the unlabeled predictions)" for c in low)
                + f". Likely causes for --method={method}: "
                + "; ".join(likely_causes(method, kind)))
    what = ("near-uniform" if kind == "uniform" else
            f"concentrated on {stats['effective_classes']:.1f} effective classes" if
            kind == "few_classes" else
            f"skewed onto {stats['effective_classes']:.1f} of {k} effective classes" if
            kind == "skewed" else
            "healthy but for class(es) " + ", ".join(
                f"{c} ({100 * hist[c]:.1f} % of the predictions)"
                for c in absorbed_classes(stats, label_shares))
            + ", absorbed by others")
    return (f"Collapse at step {step}: labeled accuracy {100 * labeled_accuracy:.0f} % but "
            f"unlabeled predictions {what} (mean max-prob {stats['mean_max_prob']:.2f}, "
            f"normalized entropy {stats['normalized_entropy']:.2f}, top class "
            f"{100 * stats['top_class_fraction']:.0f} %). Likely causes for --method={method}: "
            + "; ".join(likely_causes(method, kind)))


@dataclasses.dataclass
class CollapseRecord:
    """What results.json records (``collapse``).

    ``detected``/``kind``/``step``/``epoch``/``message``: the first collapse
    (warned once); ``final``: the kind at the last evaluation (None: the run
    ended outside a collapse, e.g. recovered).
    """

    detected: bool = False
    kind: Optional[str] = None
    step: Optional[int] = None
    epoch: Optional[int] = None
    message: Optional[str] = None
    final: Optional[str] = None
    history: List[dict] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def monitor_batch(x_unlabeled: np.ndarray, seed: int, num: int = MONITOR_EXAMPLES) -> np.ndarray:
    """A fixed subset of the unlabeled images (the same at every evaluation and on resume)."""
    n = len(x_unlabeled)
    if num >= n:
        return x_unlabeled
    idx = np.sort(np.random.RandomState(seed + 7919).permutation(n)[:num])
    return x_unlabeled[idx]


class CollapseMonitor(keras.callbacks.Callback):
    """Logs the statistics above at each evaluation and warns once on a collapse.

    Args:
      classifier: ``x -> logits`` in inference mode (the run passes
        :func:`lvat_tf.models.classifiers.inference_function`; a classifier called with its
        default ``bn_mode="moving"`` works too).
      x_unlabeled: (N, H, W, C) the fixed monitoring batch.
      x_labeled, y_labeled: the labeled set (at most 1,000 images are used).
      method: ``--method``, for the warning's causes.
      eval_freq, num_epochs: evaluate on PeriodicEval's epochs.
      writer: TensorBoard writer (scalars ``collapse/*``, histogram of predicted classes).
      batch_size: inference batch.
      record: a CollapseRecord to fill (one kept across a resumed run's sessions).
      save_path: where the record is written (atomically) after each measurement,
        so that a resumed run keeps its history; None: not written.
    """

    def __init__(self, classifier, x_unlabeled, x_labeled, y_labeled, method, eval_freq,
                 num_epochs, writer=None, batch_size=500, record=None, save_path=None):
        super().__init__()
        self.classifier = classifier
        self.x_u = x_unlabeled
        self.x_l, self.y_l = x_labeled[:1000], y_labeled[:1000]
        # Each class's share of the labels, what "absorbed" compares with (vat_tf's
        # sampling draws the labels balanced; a data set without that need not be).
        self.label_shares = None
        self.method, self.eval_freq, self.num_epochs = method, eval_freq, num_epochs
        self.writer, self.batch_size = writer, batch_size
        self.record = record or CollapseRecord()
        self.save_path = save_path

    def _probs(self, x):
        return np.concatenate([
            tf.nn.softmax(tf.cast(self.classifier(tf.constant(x[i:i + self.batch_size])),
                                  tf.float32)).numpy()
            for i in range(0, len(x), self.batch_size)])

    def measure(self):
        """(stats dict incl. labeled_accuracy, kind or None) for the current weights."""
        stats = prediction_stats(self._probs(self.x_u))
        pred_l = np.argmax(self._probs(self.x_l), 1)
        acc = float(np.mean(pred_l == self.y_l))
        stats["labeled_accuracy"] = acc
        k = len(stats["class_histogram"])
        stats["labeled_class_accuracy"] = labeled_class_accuracy(self.y_l, pred_l, k)
        if self.label_shares is None:
            self.label_shares = np.bincount(np.asarray(self.y_l), minlength=k) / len(self.y_l)
        return stats, classify(stats, acc, k, self.label_shares,
                               unfitted_classes(self.y_l, pred_l, k))

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.eval_freq and epoch + 1 != self.num_epochs:
            return
        step = int(self.model.optimizer.iterations.numpy())
        stats, kind = self.measure()
        self.record.history.append({"epoch": epoch + 1, "step": step, "collapsed": kind, **stats})
        self.record.final = kind
        logging.info("Epoch %d unlabeled: mean max-prob %.3f, normalized entropy %.3f, "
                     "effective classes %.2f, top class %.0f %%; labeled accuracy %.3f",
                     epoch + 1, stats["mean_max_prob"], stats["normalized_entropy"],
                     stats["effective_classes"], 100 * stats["top_class_fraction"],
                     stats["labeled_accuracy"])
        if self.writer is not None:
            with self.writer.as_default():
                for key in ("mean_max_prob", "mean_entropy", "normalized_entropy",
                            "top_class_fraction", "effective_classes", "labeled_accuracy"):
                    tf.summary.scalar(f"collapse/{key}", stats[key], step=step)
                tf.summary.scalar("collapse/detected", float(kind is not None), step=step)
                hist = np.asarray(stats["class_histogram"])
                tf.summary.histogram("collapse/predicted_class",
                                     np.repeat(np.arange(len(hist)),
                                               np.round(hist * 1000).astype(int)), step=step)
            self.writer.flush()
        if kind is not None and not self.record.detected:
            msg = collapse_message(kind, stats, stats["labeled_accuracy"], self.method, step,
                                   self.label_shares)
            self.record.detected, self.record.kind = True, kind
            self.record.step, self.record.epoch, self.record.message = step, epoch + 1, msg
            logging.warning(msg)
        if self.save_path:
            files.write_json_atomic(self.save_path, self.record.to_dict(), indent=1,
                                    sort_keys=False)
