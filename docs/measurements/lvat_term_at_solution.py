"""LVAT-VAE's term at a good classifier, in the modes training uses (issue 11, session 11).

A finished run on LVAT's inputs (``--input_transform=lvat``, e.g. mnist100_4k's
vat_eps5_lvatin) is the classifier; for test images in batches of the training's unlabeled
batch size, with BN on each batch's own statistics (``batch``, what LVAT's term sees in
training, upstream's mode) and on the moving averages (``moving``, inference): its accuracy on
x, on Dec(Enc(x)) and on x_adv = Dec(Enc(x) + r) for LVAT's own r (upstream's finite
difference against p(y|x), epsilon as given), and the term KL(p(y|x) || p(y|x_adv)) with its
share at r = 0 (the reconstruction gap), and how far x_adv is from x and from Dec(Enc(x)) in
input space (L2 on x / 255: compare VAT's epsilon, the same units up to a shift). A classifier that LVAT's term leaves alone would
classify x_adv about as well as x, with a small term.

  python docs/measurements/lvat_term_at_solution.py RUN_DIR VAE_DIR [EPS] [N] [BATCH]
"""
import sys

import numpy as np
import tensorflow as tf

from lvat_tf.generative import model_dir
from lvat_tf.losses import kl_divergence_with_logits
from lvat_tf.regularizers.lvat import lvat_vae_perturbation
from lvat_tf.trained import load_trained_classifier


def main(run_dir, vae_dir, eps=1.0, n=2000, batch=128):
    cfg, clf, data, _ = load_trained_classifier(run_dir)
    prep = data.preprocessor.describe()
    if prep["scaling"] != "unit":
        raise SystemExit(f"error: {run_dir} was not trained on LVAT's inputs ({prep})")
    vae, _ = model_dir.load(vae_dir)
    rng = np.random.RandomState(0)
    rows = {}
    for mode in ("batch", "moving"):
        acc = {"x": [], "Dec(Enc(x))": [], "x_adv": []}
        kl_adv, kl_rec, d_adv, d_step = [], [], [], []
        for i in range(0, n, batch):
            x = tf.constant(np.asarray(data.x_eval[i:i + batch], np.float32))
            y = np.asarray(data.y_eval[i:i + batch])

            def forward(v, mode=mode):
                return clf(v, bn_mode=mode)

            clean = forward(x)
            z, r = lvat_vae_perturbation(forward, vae, x, clean,
                                         tf.constant(rng.randn(len(y), vae.latent_dim)
                                                     .astype(np.float32)), eps)
            x_rec, x_adv = vae.decode(z, training=False), vae.decode(z + r, training=False)
            rec, adv = forward(x_rec), forward(x_adv)
            d_adv.append(np.linalg.norm(np.reshape(x_adv - x, (len(y), -1)), axis=1))
            d_step.append(np.linalg.norm(np.reshape(x_adv - x_rec, (len(y), -1)), axis=1))
            for k, lg in (("x", clean), ("Dec(Enc(x))", rec), ("x_adv", adv)):
                acc[k].append(np.argmax(lg, 1) == y)
            kl_adv.append(float(kl_divergence_with_logits(clean, adv)))
            kl_rec.append(float(kl_divergence_with_logits(clean, rec)))
        rows[mode] = ({k: float(np.mean(np.concatenate(v))) for k, v in acc.items()},
                      float(np.mean(kl_adv)), float(np.mean(kl_rec)),
                      float(np.mean(np.concatenate(d_adv))), float(np.mean(np.concatenate(d_step))))
    print(f"{run_dir} ({cfg.method}); VAE {vae_dir}; epsilon {eps}; {n} test images in "
          f"batches of {batch}")
    print("| BN | accuracy x | Dec(Enc(x)) | x_adv | KL(p(y|x) || p(y|x_adv)) | at r = 0 | "
          "mean ||x_adv - x|| | mean ||x_adv - Dec(Enc(x))|| |")
    print("|---|---|---|---|---|---|---|---|")
    for mode, (a, kla, klr, da, ds) in rows.items():
        print(f"| {mode} | {a['x']:.3f} | {a['Dec(Enc(x))']:.3f} | {a['x_adv']:.3f} | "
              f"{kla:.3f} | {klr:.3f} | {da:.2f} | {ds:.2f} |")


if __name__ == "__main__":
    a = sys.argv[1:]
    if len(a) < 2:
        raise SystemExit(__doc__)
    main(a[0], a[1], float(a[2]) if len(a) > 2 else 1.0, int(a[3]) if len(a) > 3 else 2000,
         int(a[4]) if len(a) > 4 else 128)
