"""LVAT's decoder in bfloat16 (issue 15 item 3, ``--generative_dtype``): does it keep the
direction and the loss? Usage:

  python docs/measurements/generative_bf16.py RUN_DIR [NUM_EXAMPLES] [TIMING_STEPS] [GEN_DIR]

RUN_DIR: a finished LVAT-VAE / LVAT-Glow run; GEN_DIR: its generative model (default: the
run's --generative_model_dir, or RUN_DIR/generative). On the first NUM_EXAMPLES test images
(one batch, default 128), with the run's classifier in bfloat16 (as ``--mixed_precision``
trains it; weights copied from the float32 checkpoint), the same start directions, BN on each batch's statistics (as
the term's passes in training) and no dropout, it compares the run's LVAT search decoding in
float32 (``--generative_dtype=float32``) and in bfloat16 (a ``compute_copy`` of the model):
cosine of the directions r, the term KL(p(y|x) || p(y|x_adv)) per image, and how far apart the
two x_adv are against what r moves the image (||x_adv - Dec(Enc(x))||). For scale it also
gives the float32 classifier's direction against the bfloat16 classifier's (both decoding
in float32): what ``--mixed_precision`` already changes. Then the median time of
TIMING_STEPS (default 5) decoder passes with their input gradient (batch NUM_EXAMPLES) in each
dtype.
"""
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from lvat_tf.generative import model_dir as model_dir_lib
from lvat_tf.models import registry
from lvat_tf.precision import MIXED_POLICY, dtype_policy
from lvat_tf.regularizers.lvat import lvat_glow_perturbation, lvat_vae_perturbation
from lvat_tf.regularizers.mat import per_sample_kl
from lvat_tf.trained import load_trained_classifier
from lvat_tf.training.run import generative_model_for


def flat(parts):
    parts = parts if isinstance(parts, (list, tuple)) else [parts]
    return np.concatenate([np.reshape(np.asarray(p, np.float64), (p.shape[0], -1))
                           for p in parts], axis=1)


def cosine(a, b):
    a, b = flat(a), flat(b)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def l2(t):
    return np.sqrt((np.reshape(np.asarray(t, np.float64), (t.shape[0], -1)) ** 2).sum(1))


def main(run_dir, n=128, timing_steps=5, gen_dir=None):
    cfg, clf32, data, _ = load_trained_classifier(run_dir)
    shape = tuple(data.image_shape)
    with dtype_policy(MIXED_POLICY):
        clf16 = registry.build_from_config(cfg, data.spec.num_classes)
        clf16(tf.zeros((2,) + shape), bn_mode="moving")
    for a, b in zip(clf16.variables, clf32.variables):
        a.assign(b)
    kind = "vae" if cfg.method.startswith("lvat_vae") else "glow"
    if gen_dir:
        cfg = cfg.replace(generative_model_dir=gen_dir)
    gen = generative_model_for(cfg, data, kind)
    gen16 = model_dir_lib.compute_copy(gen, shape, MIXED_POLICY)
    x = tf.constant(data.x_eval[:n], tf.float32)
    # The Glow encoder's dequantisation noise, the same in every row.
    noise_draw = np.random.RandomState(0).uniform(0, 1.0 / 2 ** 5, (n,) + shape)

    def search(clf, decoder, rng_state):
        """The run's LVAT search with ``clf`` decoding through ``decoder``: (r, x_adv, x_rec, KL)."""
        def forward(v):
            return clf(v, bn_mode="batch")
        clean = tf.cast(forward(x), tf.float32)
        if kind == "vae":
            d = tf.constant(rng_state.normal(size=(n, gen.latent_dim)), tf.float32)
            z, r = lvat_vae_perturbation(forward, gen, x, clean, d, cfg.epsilon, cfg.xi,
                                         cfg.num_power_iterations, cfg.power_iteration,
                                         first_order=cfg.lvat_reference == "input",
                                         decoder=decoder)
            x_rec = gen.decode(z, training=False)
            x_adv = tf.cast(decoder.decode(z + r, training=False), tf.float32)
        else:
            (hy, wy, cy), (hz, wz, cz) = gen.latent_shapes
            d = [tf.constant(rng_state.normal(size=(n, hy, wy, cy)), tf.float32),
                 tf.constant(rng_state.normal(size=(n, hz, wz, cz)), tf.float32)]
            noise = tf.constant(noise_draw, tf.float32)
            (y, z), r = lvat_glow_perturbation(forward, gen, x, clean, d, cfg.epsilon, cfg.xi,
                                               cfg.num_power_iterations, cfg.power_iteration,
                                               noise=noise,
                                               first_order=cfg.lvat_reference == "input",
                                               decoder=decoder)
            x_rec = gen.decode(y, z)
            x_adv = tf.cast(decoder.decode(y + r[0], z + r[1]), tf.float32)
        kl = per_sample_kl(clean, tf.cast(forward(x_adv), tf.float32)).numpy()
        return r, x_adv.numpy(), x_rec.numpy(), kl

    out = {}
    for name, clf, dec in (("bf16 classifier, float32 decoder", clf16, gen),
                           ("bf16 classifier, bf16 decoder", clf16, gen16),
                           ("float32 classifier, float32 decoder", clf32, gen)):
        # The same start directions in every row.
        out[name] = search(clf, dec, np.random.RandomState(1))
    ref_name = "bf16 classifier, float32 decoder"
    r_ref, xadv_ref, xrec_ref, kl_ref = out[ref_name]
    print(f"{run_dir} ({cfg.method}, epsilon {cfg.epsilon}, {cfg.power_iteration}), "
          f"{n} test images; against '{ref_name}':")
    moved = l2(xadv_ref - xrec_ref).mean()
    print(f"  ||x_adv - Dec(Enc(x))|| (what r moves the image): mean {moved:.4f}")
    print(f"  term KL(p(y|x) || p(y|x_adv)) there: mean {kl_ref.mean():.5f}")
    for name, (r, xadv, _, kl) in out.items():
        if name == ref_name:
            continue
        c = cosine(r, r_ref)
        rel = np.abs(kl - kl_ref).mean() / kl_ref.mean()
        print(f"  {name:36s} cosine of r: mean {c.mean():.4f} min {c.min():.4f}; "
              f"||x_adv - x_adv_ref|| mean {l2(xadv - xadv_ref).mean():.4f}; "
              f"pixels changed {np.mean(np.abs(xadv - xadv_ref) > 1e-6):.4f}; "
              f"term mean {kl.mean():.5f} (mean |diff| / mean {rel:.4f})")

    # Decoder pass + its input gradient, as in the direction search.
    def timed(decoder):
        if kind == "vae":
            lat = [tf.random.normal((n, gen.latent_dim))]
            dec = lambda v: decoder.decode(v[0], training=False)  # noqa: E731
        else:
            (hy, wy, cy), (hz, wz, cz) = gen.latent_shapes
            lat = [tf.random.normal((n, hy, wy, cy)), tf.random.normal((n, hz, wz, cz))]
            dec = lambda v: decoder.decode(v[0], v[1])  # noqa: E731

        @tf.function
        def step(v):
            with tf.GradientTape() as tape:
                tape.watch(v)
                s = tf.reduce_sum(tf.cast(dec(v), tf.float32) ** 2)
            return tape.gradient(s, v)
        step(lat)
        times = []
        for _ in range(timing_steps):
            t = time.perf_counter()
            tf.nest.map_structure(lambda g: g.numpy(), step(lat))
            times.append(time.perf_counter() - t)
        return 1000 * float(np.median(times))

    if timing_steps > 0:
        t32, t16 = timed(gen), timed(gen16)
        print(f"  decoder + input gradient, batch {n}: float32 {t32:.1f} ms, bfloat16 "
              f"{t16:.1f} ms ({t16 / t32:.2f}x)")


if __name__ == "__main__":
    keras.utils.set_random_seed(0)
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 128,
         int(sys.argv[3]) if len(sys.argv) > 3 else 5, sys.argv[4] if len(sys.argv) > 4 else None)
