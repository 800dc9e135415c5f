"""Adversarial-robustness evaluation (MAT paper, Section IV): accuracy under gradient attacks.

* ``fgsm``: r = eps * sign(grad_x CE) (L-inf norm eps);
* ``l2``: r = eps * grad_x CE / ||grad_x CE||_2 per example (L2 norm eps), the
  fast gradient method with an L2 budget.

Epsilons are in the classifier's input space (after the run's scaling, and
ZCA for CIFAR-10): vat_tf inputs span [-0.5, 0.5], LVAT inputs [0, 1]. The
adversarial inputs are not clipped to a pixel range (ZCA space has none);
the README says so next to the numbers. BN in inference mode, no dropout.
"""
import os
from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf

from lvat_tf.losses import cross_entropy

ATTACKS = ("fgsm", "l2")


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

    @tf.function
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
