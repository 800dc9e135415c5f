"""Which classes do LVAT runs merge, and are they the ones the VAE's latent space puts close?
(issue 11, session 11)

For every finished run directory given: the test set's confusion matrix after vat_tf's BN
re-estimation (what results.json reports), and the classes it merged (a true class whose
images go mostly (> 50 %) to one other predicted class). For the VAE: each class's mean
latent code (Enc_mu of the test images) and, per class pair, the distance between the two
means over the pooled within-class spread (a separation in standard deviations). If the merged
pairs are the closest ones, LVAT's term pulls together what its generative model puts close.

  python docs/measurements/class_merging.py VAE_DIR RUN_DIR [RUN_DIR ...]
"""
import itertools
import sys

import numpy as np
import tensorflow as tf

from lvat_tf.generative import model_dir
from lvat_tf.trained import load_trained_classifier
from lvat_tf.training import run


def confusion(run_dir):
    """(K, K) counts, rows = true class, after BN re-estimation; and the test images used."""
    cfg, clf, data, _ = load_trained_classifier(run_dir)
    run.finetune_bn(clf, data, cfg, cfg.seed)
    logits_fn = tf.function(lambda x: clf(x, bn_mode="moving"), autograph=False)
    preds = np.concatenate([np.argmax(logits_fn(tf.constant(data.x_eval[i:i + 500])), 1)
                            for i in range(0, len(data.x_eval), 500)])
    k = data.spec.num_classes
    m = np.zeros((k, k), np.int64)
    np.add.at(m, (np.asarray(data.y_eval), preds), 1)
    return m, data


def merges(m, share=0.5):
    """[(true class, predicted class, share)] where most of a class goes to another one."""
    rows = m / np.maximum(m.sum(1, keepdims=True), 1)
    return [(c, int(np.argmax(r)), float(r.max())) for c, r in enumerate(rows)
            if int(np.argmax(r)) != c and r.max() > share]


def latent_separation(vae, x01, y, k):
    """(K, K) distance between class-mean latent codes over the pooled within-class std."""
    z = np.concatenate([vae.encode(tf.constant(x01[i:i + 500]), training=False)[0].numpy()
                        for i in range(0, len(x01), 500)])
    means = np.stack([z[y == c].mean(0) for c in range(k)])
    within = np.sqrt(np.mean([np.mean(np.sum((z[y == c] - means[c]) ** 2, 1)) for c in range(k)]))
    d = np.linalg.norm(means[:, None] - means[None], axis=-1)
    return d / within


def main(vae_dir, run_dirs):
    vae, _ = model_dir.load(vae_dir)
    pair_count = {}
    data = None
    for rd in run_dirs:
        m, data = confusion(rd)
        err = 100.0 * (1 - np.trace(m) / m.sum())
        found = merges(m)
        print(f"{rd}: test error {err:.2f} %; merged (true -> predicted, share): "
              + (", ".join(f"{a}->{b} {s:.0%}" for a, b, s in found) or "none"))
        for a, b, _ in found:
            key = tuple(sorted((a, b)))
            pair_count[key] = pair_count.get(key, 0) + 1
    if data.preprocessor.describe().get("scaling") != "unit":
        raise SystemExit("error: the runs must use LVAT's inputs (x / 255) to be encoded")
    k = data.spec.num_classes
    sep = latent_separation(vae, np.asarray(data.x_eval, np.float32), np.asarray(data.y_eval), k)
    pairs = sorted(itertools.combinations(range(k), 2), key=lambda p: sep[p])
    rank = {p: i + 1 for i, p in enumerate(pairs)}
    print(f"\nclass-pair latent separation (class-mean distance / within-class rms radius), "
          f"{len(pairs)} pairs, closest first:")
    print("| pair | separation | rank | runs that merged it |")
    print("|---|---|---|---|")
    for p in pairs[:10]:
        print(f"| {p[0]}-{p[1]} | {sep[p]:.3f} | {rank[p]} | {pair_count.get(p, 0)} |")
    merged = [p for p in pair_count]
    if merged:
        ranks = [rank[p] for p in merged]
        print(f"\nmerged pairs: {len(merged)} distinct over {len(run_dirs)} runs; their "
              f"separation ranks {sorted(ranks)} (median {np.median(ranks):.0f} of {len(pairs)}; "
              f"a random pair's median rank would be {(len(pairs) + 1) / 2:.0f})")
        hits = sum(pair_count[p] for p in merged if rank[p] <= 10)
        print(f"merges among the 10 closest pairs: {hits} of {sum(pair_count.values())}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2:])
