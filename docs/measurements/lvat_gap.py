"""How much of LVAT's perturbation is the generative model's reconstruction gap (issue 12).

For a finished LVAT run: per test image, ||x - Dec(Enc(x))|| (the gap), ||x_adv - Dec(Enc(x))||
(what the latent perturbation r adds), and the consistency cost at the reconstruction alone,
KL(p(y|x) || p(y|Dec(Enc(x)))), beside the cost at x_adv. Usage:
  python docs/measurements/lvat_gap.py RUN_DIR [NUM_EXAMPLES]
"""
import sys

import numpy as np
import tensorflow as tf

from lvat_tf.analysis import run_perturbations
from lvat_tf.regularizers.mat import per_sample_kl
from lvat_tf.trained import load_trained_classifier


def main(run_dir, n=500):
    out = run_perturbations(run_dir, num_examples=n)
    _, clf, _, _ = load_trained_classifier(run_dir)

    def logits(v):
        return clf(tf.constant(v), bn_mode="moving")

    clean = logits(out["x"])
    l2 = lambda a: np.sqrt((a.reshape(len(a), -1) ** 2).sum(1))  # noqa: E731
    rows = {
        "||x - Dec(Enc(x))||": l2(out["x"] - out["x_rec"]),
        "||x_adv - Dec(Enc(x))|| (what r adds)": l2(out["x_adv"] - out["x_rec"]),
        "||x - x_adv||": out["dist"],
        "KL at Dec(Enc(x)) (r = 0)": per_sample_kl(clean, logits(out["x_rec"])).numpy(),
        "KL at x_adv": out["cost"],
    }
    print(f"{out['label']}, {n} test images: mean / median / p90")
    for k, v in rows.items():
        print(f"  {k:40s} {v.mean():8.4f} {np.median(v):8.4f} {np.percentile(v, 90):8.4f}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 500)
