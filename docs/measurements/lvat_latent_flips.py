"""Does a latent step of norm epsilon change the class? (issue 11 item 5, session 10)

A good classifier (a finished VAT run, used as an oracle) judges the frozen VAE's decodes: its
accuracy on x, on Dec(Enc(x)) and on Dec(Enc(x) + r), and how often its prediction flips between
Dec(Enc(x)) and Dec(Enc(x) + r), for r adversarial to the oracle (LVAT's own search: upstream's
finite difference against p(y|x)) and for r random, at several epsilon. If a step that LVAT asks
the classifier to be invariant to flips a good classifier's label, LVAT's term pulls the
classes together. The oracle's run may use another input scaling and size (VAT: (x - 127.5)/255
on 28x28; the VAE: [0, 1] zero-padded to 32x32): images are converted between the two. Usage:

  python docs/measurements/lvat_latent_flips.py ORACLE_RUN_DIR VAE_DIR [N] [EPS,EPS,...]
"""
import sys

import numpy as np
import tensorflow as tf

from lvat_tf.generative import model_dir
from lvat_tf.losses import kl_divergence_with_logits
from lvat_tf.regularizers.lvat import lvat_vae_perturbation
from lvat_tf.regularizers.power_iteration import scale_to_epsilon
from lvat_tf.trained import load_trained_classifier


def main(oracle_dir, vae_dir, n=1000, epsilons=(0.5, 1.0, 3.0)):
    cfg, clf, data, _ = load_trained_classifier(oracle_dir)
    vae, _ = model_dir.load(vae_dir)
    x_o = np.asarray(data.x_eval[:n], np.float32)
    y = np.asarray(data.y_eval[:n])
    if cfg.dataset not in ("mnist", "fashion_mnist") or x_o.shape[1:] != (28, 28, 1):
        raise SystemExit(f"error: {oracle_dir}: expected an MNIST run on 28x28 inputs")
    offset = 0.5  # the oracle's (x - 127.5) / 255 = x01 - 0.5
    x01 = tf.constant(np.pad(x_o + offset, ((0, 0), (2, 2), (2, 2), (0, 0))))

    def oracle(img01):  # (B, 32, 32, 1) in [0, 1] -> logits
        return clf(img01[:, 2:30, 2:30, :] - offset, bn_mode="moving")

    def accuracy(logits):
        return float(np.mean(np.argmax(logits, 1) == y))

    clean = oracle(x01)
    z = vae.encode(x01, training=False)[0]
    rec = oracle(vae.decode(z, training=False))
    rec_pred = np.argmax(rec, 1)
    print(f"{n} test images; oracle {oracle_dir} ({cfg.method}); ||z|| mean "
          f"{float(tf.reduce_mean(tf.norm(z, axis=1))):.2f}")
    print(f"oracle accuracy: x {accuracy(clean):.3f}, Dec(Enc(x)) {accuracy(rec):.3f}; "
          f"KL(p(y|x) || p(y|Dec(Enc(x)))) {float(kl_divergence_with_logits(clean, rec)):.3f}")
    print("| epsilon | r | accuracy on Dec(z + r) | flips vs Dec(z) | KL(p(y|x) || p(y|Dec(z + r))) |")
    print("|---|---|---|---|---|")
    rng = np.random.RandomState(0)
    for eps in epsilons:
        d = tf.constant(rng.randn(n, vae.latent_dim).astype(np.float32))
        _, r_adv = lvat_vae_perturbation(oracle, vae, x01, clean, d, eps)
        r_rand = scale_to_epsilon(tf.constant(rng.randn(n, vae.latent_dim).astype(np.float32)),
                                  eps)
        for name, r in (("adversarial", r_adv), ("random", r_rand)):
            logits = oracle(vae.decode(z + r, training=False))
            flips = float(np.mean(np.argmax(logits, 1) != rec_pred))
            print(f"| {eps} | {name} | {accuracy(logits):.3f} | {flips:.3f} | "
                  f"{float(kl_divergence_with_logits(clean, logits)):.3f} |")


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) < 2:
        raise SystemExit(__doc__)
    main(args[0], args[1], int(args[2]) if len(args) > 2 else 1000,
         tuple(float(e) for e in args[3].split(",")) if len(args) > 3 else (0.5, 1.0, 3.0))
