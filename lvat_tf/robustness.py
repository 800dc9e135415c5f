"""Adversarial-robustness evaluation (MAT paper, Section IV): accuracy under gradient attacks.

* ``fgsm``: r = eps * sign(grad_x CE) (L-inf norm eps);
* ``l2``: r = eps * grad_x CE / ||grad_x CE||_2 per example (L2 norm eps), the
  fast gradient method with an L2 budget.

Epsilons are in the classifier's input space (after the run's scaling, and
ZCA for CIFAR-10): vat_tf inputs span [-0.5, 0.5], LVAT inputs [0, 1]. The
adversarial inputs are not clipped to a pixel range (ZCA space has none);
docs/results.md says so next to the numbers. BN in inference mode, no dropout.
"""
import json
import os
from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from lvat_tf.losses import cross_entropy
from lvat_tf.trained import load_trained_classifier

ATTACKS = ("fgsm", "l2")

# Default sweeps. L2: the MAT paper's MNIST/SVHN sweep 0..8 step 1. FGSM: the
# paper's L-inf numbers are on 0..255 pixels in effect; our inputs span 1.0,
# so the sweep stops at 0.3 (MNIST accuracy is near zero beyond it).
DEFAULT_EPSILONS = {"l2": [float(e) for e in range(9)],
                    "fgsm": [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]}


def attack_perturbation(classifier, x, y, eps: float, attack: str):
    """The attack's perturbation for a batch: (B, ...) with the attack's norm = eps."""
    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {ATTACKS}, got {attack!r}")
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = cross_entropy(classifier(x, bn_mode="moving"), y)
    g = tape.gradient(loss, x)
    if attack == "fgsm":
        return eps * tf.sign(g)
    axes = list(range(1, len(x.shape)))
    norm = tf.sqrt(tf.reduce_sum(tf.square(g), axis=axes, keepdims=True))
    return eps * g / tf.maximum(norm, 1e-12)


def accuracy_under_attack(classifier, x: np.ndarray, y: np.ndarray, epsilons: Sequence[float],
                          attack: str, batch_size: int = 500) -> List[float]:
    """Accuracy (fraction) on (x, y) for each epsilon (eps 0 = clean accuracy)."""

    @tf.function(autograph=False)
    def correct(xb, yb, eps):
        r = attack_perturbation(classifier, xb, yb, eps, attack)
        pred = tf.argmax(classifier(xb + r, bn_mode="moving"), -1, output_type=tf.int32)
        return tf.reduce_sum(tf.cast(tf.equal(pred, tf.cast(yb, tf.int32)), tf.int32))

    out = []
    for eps in epsilons:
        c = 0
        for i in range(0, len(x), batch_size):
            c += int(correct(tf.constant(x[i:i + batch_size]), tf.constant(y[i:i + batch_size]),
                             tf.constant(float(eps))))
        out.append(c / len(x))
    return out


def plot_curves(curves: Dict[str, dict], path: str, attack: str) -> None:
    """Accuracy-vs-epsilon curves of several runs in one PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    for label, c in curves.items():
        ax.plot(c["epsilons"], [100 * a for a in c["accuracy"]], marker="o", label=label)
    ax.set_xlabel(f"epsilon ({'L-inf, FGSM' if attack == 'fgsm' else 'L2'}; input space)")
    ax.set_ylabel("test accuracy under attack (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def plot_embedding(features: np.ndarray, labels: np.ndarray, path: str, title: str = "") -> None:
    """Scatter of 2-d features coloured by class (the MAT paper's Fig. 2)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if features.shape[1] != 2:
        raise ValueError(f"the embedding plot needs 2-d features, the model has "
                         f"{features.shape[1]} (use --model=lenet_pp)")
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    sc = ax.scatter(features[:, 0], features[:, 1], c=labels, cmap="tab10", s=2, alpha=0.6)
    ax.legend(*sc.legend_elements(), fontsize=6, markerscale=0.6, loc="best")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def evaluate_runs(log_dirs: Sequence[str], attack: str, epsilons: Sequence[float], out_dir: str,
                  num_examples: int = 0, embedding: bool = False, labels=None) -> Dict[str, dict]:
    """Accuracy-under-attack curves of finished runs, written as JSON + one overlay PNG.

    Args:
      log_dirs: finished run directories (train.py ``--log_dir``).
      attack: "fgsm" or "l2".
      epsilons: the sweep (input space; 0 = clean accuracy).
      out_dir: receives ``robustness_<attack>.json`` / ``.png`` and, with
        ``embedding``, ``embedding_<run>.png`` for models with 2-d features.
      num_examples: test examples used (0 = all).
      embedding: also plot each run's 2-d test-set embedding (Lenet++).
      labels: optional curve labels, one per run (default "<dir name> (<method>)").

    Returns:
      {label: {"log_dir", "method", "model", "epsilons", "accuracy", "num_examples"}}.

    Raises:
      ValueError: unknown attack, negative epsilon, or (embedding) features not 2-d.
    """
    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {ATTACKS}, got {attack!r}")
    if any(e < 0 for e in epsilons):
        raise ValueError(f"epsilons must be non-negative, got {list(epsilons)}")
    os.makedirs(out_dir, exist_ok=True)
    curves = {}
    for i, d in enumerate(log_dirs):
        cfg, clf, data, _ = load_trained_classifier(d)
        x, y = data.x_eval, data.y_eval
        if num_examples:
            x, y = x[:num_examples], y[:num_examples]
        acc = accuracy_under_attack(clf, x, y, epsilons, attack)
        name = os.path.basename(os.path.normpath(d))
        label = labels[i] if labels else f"{name} ({cfg.method})"
        curves[label] = {"log_dir": d, "method": cfg.method, "model": cfg.model,
                         "epsilons": list(epsilons), "accuracy": acc, "num_examples": len(y)}
        logging.info("%s %s: %s", label, attack,
                     ", ".join(f"eps {e:g}: {100 * a:.2f} %" for e, a in zip(epsilons, acc)))
        if embedding:
            feats = np.concatenate([clf(tf.constant(x[j:j + 500]), bn_mode="moving",
                                        return_features=True)[0].numpy()
                                    for j in range(0, len(x), 500)])
            plot_embedding(feats, y, os.path.join(out_dir, f"embedding_{name}.png"), label)
    with open(os.path.join(out_dir, f"robustness_{attack}.json"), "w") as f:
        json.dump({"attack": attack, "runs": curves}, f, indent=2)
    plot_curves(curves, os.path.join(out_dir, f"robustness_{attack}.png"), attack)
    return curves
