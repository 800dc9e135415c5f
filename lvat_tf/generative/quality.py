"""How good a trained generative model is, in the terms LVAT's analysis uses.

The LVAT paper (Sec. 7, Fig. 8) ties LVAT's result to the reconstruction
error ||x - Dec(Enc(x))||_2 (VAE blurs CIFAR-10, Glow does not), and reports
the training losses of Fig. 3 (VAE: Eq. 12; Glow: -log p(x) per pixel). This
module measures both on held-out images, plus the latent's scale that
epsilon_lvat is relative to (per-sample ||z||_2, per-dimension std).

Dec(Enc(x)) is the clean image LVAT's x_adv perturbs: the VAE decodes the
posterior mean; the Glow encodes the 5-bit dequantised x and decodes
re-quantised to 5 bits (lvat_tf.regularizers.lvat, ``reconstruction``).
"""
from typing import Dict

import numpy as np
import tensorflow as tf

from lvat_tf.generative.vae import bernoulli_nll

#: Histogram bins of ||x - Dec(Enc(x))||_2 (images in [0, 1]).
NUM_BINS = 30


def _stats(values: np.ndarray) -> Dict:
    counts, edges = np.histogram(values, bins=NUM_BINS)
    return {"mean": float(np.mean(values)), "std": float(np.std(values)),
            "median": float(np.median(values)), "p90": float(np.percentile(values, 90)),
            "max": float(np.max(values)),
            "histogram": {"edges": [float(e) for e in edges], "counts": counts.tolist()}}


def evaluate(model, kind: str, x: np.ndarray, batch_size: int = 100, seed: int = 0) -> Dict:
    """Quality figures of a frozen VAE or Glow on images ``x``.

    Args:
      model: a trained :class:`~lvat_tf.generative.vae.VAE` or
        :class:`~lvat_tf.generative.glow.Glow`.
      kind: "vae" or "glow".
      x: (N, H, W, C) float images in [0, 1] (the model's preprocessing).
      batch_size: images per forward pass.
      seed: the Glow's dequantisation noise (stateless).

    Returns:
      {"num_images", "reconstruction_l2": stats with a histogram,
       "latent_norm": stats of per-sample ||z||_2 (Glow: y and z together),
       "latent_dim", "latent_std_per_dim": mean over dimensions of the std over
       images, and "vae_reconstruction_nats" (Bernoulli NLL of Dec(mu), summed
       over pixels, the reconstruction part of Eq. 12) or "glow_bits_per_dim"
       (discrete, 5-bit data)}.
    """
    if kind not in ("vae", "glow"):
        raise ValueError(f"unknown generative model kind {kind!r}; expected vae|glow")
    rec_l2, lat, extra = [], [], []
    for i in range(0, len(x), batch_size):
        xb = tf.constant(x[i:i + batch_size], tf.float32)
        if kind == "vae":
            mu, _ = model.encode(xb, training=False)
            xr = model.decode(mu, training=False)
            nll = bernoulli_nll(xb, xr)
            latent = mu
        else:
            s = tf.constant([seed, i], tf.int64)
            y, logdet, z = model.encode(xb, seed=s)
            xr = model.decode(y, z)
            nll = model.bits_per_dim(-(model.log_prob_latents(y, z) + logdet))
            latent = tf.concat([tf.reshape(y, [tf.shape(y)[0], -1]),
                                tf.reshape(z, [tf.shape(z)[0], -1])], axis=1)
        rec_l2.append(tf.norm(tf.reshape(xb - xr, [tf.shape(xb)[0], -1]), axis=1).numpy())
        lat.append(latent.numpy())
        extra.append(nll.numpy())
    lat = np.concatenate(lat)
    out = {"num_images": int(len(x)),
           "reconstruction_l2": _stats(np.concatenate(rec_l2)),
           "latent_norm": _stats(np.linalg.norm(lat, axis=1)),
           "latent_dim": int(lat.shape[1]),
           "latent_std_per_dim": float(np.mean(np.std(lat, axis=0)))}
    key = "vae_reconstruction_nats" if kind == "vae" else "glow_bits_per_dim"
    out[key] = float(np.mean(np.concatenate(extra)))
    return out
