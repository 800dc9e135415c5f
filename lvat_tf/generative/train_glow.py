"""Training the LVAT Glow (geosada/LVAT ``glow/main.py``, ``Glow.build_graph_train``).

Loss per batch (upstream): ``-mean_batch(log p(y) + log p(z) + logdet) / (H*W)``
(nats per spatial position, not bits/dim) ``+ 1e-5 * sum(l2_loss(v))`` over
the trainable variables, prior N(0, I) for y and z. Adam with TF1's defaults
(beta1 0.9, beta2 0.999, epsilon 1e-8). Batch 128; data = the dataset's
training images (upstream: its "labeled" tfrecord, all SVHN training images
as committed), no augmentation (upstream's ``is_aug`` only lengthens the
schedule); fresh dequantisation noise on every step.

Schedule (steps x lr, upstream ``main.py``): 1 x 0 (one Adam step with lr 0:
moments move, weights do not), 100 x 1e-4, 500 x 5e-4, 5000 x 1e-4,
[is_aug: 5000 x 1e-4], 5000 x 5e-5, [is_aug: 5000 x 5e-5], 5000 x 1e-4:
15,601 steps, or 25,601 with is_aug (the paper's "15,600 / 25,600
iterations"). A shorter ``num_steps`` scales every segment by the same
factor (at least one step each) — for scaled-down CPU runs.

We also log discrete bits/dim: ``(nll + D * bits * ln 2) / (D ln 2)`` with D
= H*W*C, the NLL of the num_bits-quantised image.
"""
import dataclasses
from typing import List, Tuple

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from lvat_tf.errors import ConfigError
from lvat_tf.data import pipeline
from lvat_tf.generative import trainer
from lvat_tf.generative.glow import Glow
from lvat_tf.generative.train_vae import reconstruction_grid, training_images

L2_WEIGHT = 1e-5
#: Sampling temperature of samples.png (Glow paper practice; upstream sampled at 1.0).
SAMPLE_TEMPERATURE = 0.7


@dataclasses.dataclass(frozen=True)
class GlowConfig(trainer.GenerativeConfig):
    """Attributes mirror LVAT's config_glow.py / main.py (flags in train_glow.py)."""

    dataset: str = "cifar10"
    batch_size: int = 128
    num_steps: int = 0  # 0 = upstream's schedule length (15,601 / 25,601 with is_aug)
    is_aug: bool = True  # upstream glow/main.py default
    num_levels: int = 3
    flow_steps: int = 22
    width: int = 128
    num_bits: int = 5
    l2_weight: float = L2_WEIGHT
    log_every: int = 50  # upstream prints metrics every 50 steps ("one epoch" in the paper)

    def __post_init__(self):
        super().__post_init__()
        for name in ("num_steps", "num_levels", "flow_steps", "width", "num_bits", "log_every"):
            value = getattr(self, name)
            if value < 0 or (value == 0 and name != "num_steps"):
                raise ConfigError(name, f"expected a positive value, got {value}")
        if not 1 <= self.num_bits <= 8:
            raise ConfigError("num_bits", f"expected 1..8, got {self.num_bits}")
        if self.l2_weight < 0:
            raise ConfigError("l2_weight", f"expected >= 0, got {self.l2_weight}")


def upstream_schedule(is_aug: bool) -> List[Tuple[int, float]]:
    """(steps, lr) segments of upstream glow/main.py."""
    segs = [(1, 0.0), (100, 1e-4), (500, 5e-4), (5000, 1e-4)]
    if is_aug:
        segs.append((5000, 1e-4))
    segs.append((5000, 5e-5))
    if is_aug:
        segs.append((5000, 5e-5))
    segs.append((5000, 1e-4))
    return segs


def scaled_schedule(segments, total: int) -> List[Tuple[int, float]]:
    """The segments with their lengths scaled to sum to ``total`` (>= 1 each)."""
    full = sum(n for n, _ in segments)
    if total <= 0 or total == full:
        return list(segments)
    if total < len(segments):
        raise ConfigError("num_steps", f"expected 0 (upstream schedule) or >= "
                          f"{len(segments)} (one step per schedule segment), got {total}")
    lengths = [max(1, int(n * total / full)) for n, _ in segments]
    while sum(lengths) > total:  # the minimum of 1 step overshot: take from the longest
        lengths[int(np.argmax(lengths))] -= 1
    while sum(lengths) < total:  # rounding down undershot: give to the longest
        lengths[int(np.argmax([n for n, _ in segments]))] += 1
    out = [(k, lr) for k, (_, lr) in zip(lengths, segments)]
    return out


def lr_at_step(segments, step: int) -> float:
    for n, lr in segments:
        if step < n:
            return lr
        step -= n
    return segments[-1][1]


def glow_loss(glow: Glow, x, seed, l2_weight: float = L2_WEIGHT):
    """(total, loss per pixel, l2, bits/dim) for a batch x (B, H, W, C) in [0, 1]."""
    nll = glow.nll(x, seed=seed)
    h, w, _ = glow.image_shape
    per_pixel = tf.reduce_mean(nll) / float(h * w)
    l2 = l2_weight * tf.add_n([tf.nn.l2_loss(v) for v in glow.trainable_variables])
    return per_pixel + l2, per_pixel, l2, tf.reduce_mean(glow.bits_per_dim(nll))


def train_glow(cfg: GlowConfig, verbose: bool = True):
    """Trains a Glow on the dataset's training images and saves it to cfg.model_dir.

    Resumes from ``cfg.model_dir/checkpoints``; a diverged run raises
    GenerativeModelError and writes nothing.
    """
    keras.utils.set_random_seed(cfg.seed)
    x_all, x_test, prep = training_images(cfg.dataset, cfg.data_dir, cfg.tfds_download)
    shape = x_all.shape[1:]
    glow = Glow(image_shape=shape, num_levels=cfg.num_levels, num_steps=cfg.flow_steps,
                width=cfg.width, num_bits=cfg.num_bits, init_seed=cfg.seed)
    glow.build()
    opt = keras.optimizers.Adam(1e-4, epsilon=1e-8)
    opt.build(glow.trainable_variables)
    segments = scaled_schedule(upstream_schedule(cfg.is_aug), cfg.num_steps)
    total = sum(n for n, _ in segments)
    xt = tf.constant(x_all)
    base = pipeline.stream_seed(cfg.seed, 31)
    n, b = len(x_all), cfg.batch_size
    fold = tf.random.experimental.stateless_fold_in

    def batch(t):
        idx = pipeline.shuffled_indices(t * b + tf.range(b, dtype=tf.int64), n, base)
        return tf.gather(xt, idx)

    @tf.function(autograph=False)
    def step(t):
        x = batch(t)
        with tf.GradientTape() as tape:
            loss, per_pixel, l2, bpd = glow_loss(glow, x, fold(base, t + (1 << 40)),
                                                 cfg.l2_weight)
        grads = tape.gradient(loss, glow.trainable_variables)
        opt.apply(grads, glow.trainable_variables)
        return {"loss": loss, "loss_per_pixel": per_pixel, "l2_loss": l2, "bits_per_dim": bpd}

    @tf.function(autograph=False)
    def test_nll(x, seed):
        return tf.reduce_mean(glow.bits_per_dim(glow.nll(x, seed=seed)))

    def evaluate():
        xs = x_test[:256]
        return {"bits_per_dim": float(np.mean([float(test_nll(xs[i:i + 128], [cfg.seed, i]))
                                               for i in range(0, len(xs), 128)]))}

    def init_actnorm():
        # Data-dependent actnorm init on the first training batch (module docstring).
        glow.encode(batch(tf.constant(0, tf.int64)), seed=fold(base, 1 << 41), init=True)

    def images():
        xs = tf.constant(x_test[:20])
        y, _, z = glow.encode(xs, seed=[cfg.seed, 5])
        (hy, wy, cy), (hz, wz, cz) = glow.latent_shapes
        t = SAMPLE_TEMPERATURE
        ys = t * tf.random.stateless_normal((50, hy, wy, cy), [cfg.seed, 8])
        zs = t * tf.random.stateless_normal((50, hz, wz, cz), [cfg.seed, 9])
        return {"reconstructions.png": reconstruction_grid(x_test[:20], glow.decode(y, z), 20),
                "samples.png": glow.decode(ys, zs).numpy()}

    meta = {"kind": "glow", "dataset": cfg.dataset, "image_shape": list(shape),
            "preprocessing": prep.describe(),
            "architecture": {"num_levels": cfg.num_levels, "num_steps": cfg.flow_steps,
                             "width": cfg.width, "num_bits": cfg.num_bits,
                             "init_seed": cfg.seed},
            "training": dict(dataclasses.asdict(cfg), schedule=segments)}
    logging.info("Glow on %s: %d images, L=%d K=%d width %d, %d steps (schedule %s)",
                 cfg.dataset, n, cfg.num_levels, cfg.flow_steps, cfg.width, total, segments)
    meta = trainer.run(glow, opt, step, lambda t: lr_at_step(segments, t), total,
                       cfg.log_every, cfg.model_dir, meta, evaluate=evaluate, images=images,
                       before_first_step=init_actnorm, verbose=verbose)
    return glow, meta
