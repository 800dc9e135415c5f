"""Training the LVAT VAE (geosada/LVAT ``vae/build_AE.py``).

Loss per batch: Bernoulli reconstruction summed over pixels (decoder applied
to a posterior *sample*, BN in training mode) + 0.1 * max(0, KL), with
KL = 0.5 * sum(mu^2 + sigma^2 - 2 log sigma) - latent/2, both batch means.
Adam(lr, beta1 = 0.5); every gradient tensor clipped to norm 5; lr x 0.97
every 2 epochs after epoch 2. Upstream trains on the labeled tfrecord of its
scripts (all SVHN training images as committed); we train on the whole
training set of the dataset (labels unused), with optional pad-2 translation.
"""
import dataclasses
import keras
import numpy as np
import tensorflow as tf
from absl import logging

from lvat_tf.data import pipeline, registry
from lvat_tf.data.preprocessing import Preprocessor
from lvat_tf.errors import ConfigError
from lvat_tf.generative import trainer
from lvat_tf.generative.vae import VAE, bernoulli_nll

KL_WEIGHT = 0.1
CLIP_NORM = 5.0


@dataclasses.dataclass(frozen=True)
class VAEConfig(trainer.GenerativeConfig):
    """Attributes mirror LVAT's vae/config.py constants (flags in train_vae.py)."""

    num_epochs: int = 300
    learning_rate: float = 2e-4
    latent_dim: int = 128
    widths: tuple = (128, 256, 512)
    aug_trans: bool = True
    max_iter_per_epoch: int = 0  # 0 = a full pass (N / batch); >0 caps it (scaled runs)

    def __post_init__(self):
        super().__post_init__()
        widths = tuple(self.widths)
        if len(widths) != 3 or min(widths) <= 0:
            raise ConfigError("widths", f"expected three positive widths, got {widths}")
        object.__setattr__(self, "widths", widths)
        for name in ("num_epochs", "latent_dim", "learning_rate"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, f"expected a positive value, got {getattr(self, name)}")
        if self.max_iter_per_epoch < 0:
            raise ConfigError("max_iter_per_epoch", f"expected >= 0 (0 = a full pass), got "
                              f"{self.max_iter_per_epoch}")


def vae_losses(vae, x, seed):
    """(total, reconstruction, kl) for a batch x (B, 32, 32, C) in [0, 1]."""
    mu, logsigma = vae.encode(x, training=True)
    eps = tf.random.stateless_truncated_normal(tf.shape(mu), seed=seed)
    z = mu + tf.exp(logsigma) * eps
    xr = vae.decode(z, training=True)
    rec = tf.reduce_mean(bernoulli_nll(x, xr))
    kl = 0.5 * tf.reduce_sum(tf.square(mu) + tf.exp(2 * logsigma) - 2 * logsigma, axis=1) \
        - 0.5 * vae.latent_dim
    kl = tf.reduce_mean(tf.maximum(0.0, kl))
    return rec + KL_WEIGHT * kl, rec, kl


def lr_at_epoch(epoch: int, lr0: float) -> float:
    """Upstream: after epoch 2, x0.97 every 2 epochs (epochs 4, 6, 8, ...; 1-based)."""
    e = epoch + 1
    return lr0 * 0.97 ** max(0, (e - 2) // 2) if e > 2 else lr0


def training_images(dataset, data_dir, tfds_download=True):
    """(train images, 1000 test images, preprocessor) of a generative model.

    Images in [0, 1] (LVAT's scaling), zero-padded to 32x32 when smaller; shared
    by the VAE and Glow trainers and the quality report (lvat_tf.experiments).
    """
    spec = registry.get_spec(dataset)
    x_tr, _, x_te, _ = registry.load_arrays(spec, data_dir, tfds_download)
    pad = 32 if max(spec.image_shape[:2]) < 32 else None
    prep = Preprocessor(scaling="unit", pad_to=pad)
    return prep(x_tr), prep(x_te[:1000]), prep


def reconstruction_grid(x, x_rec, n=10):
    """Rows of originals over rows of reconstructions, ``n`` per row."""
    x, x_rec = np.asarray(x[:n]), np.asarray(x_rec[:n])
    return np.concatenate([x, x_rec], 0)


def train_vae(cfg: VAEConfig, verbose: bool = True):
    """Trains a VAE on the dataset's training images and saves it to cfg.model_dir.

    Resumes from ``cfg.model_dir/checkpoints`` when a previous run was cut
    off; a diverged run raises GenerativeModelError and writes nothing.
    """
    keras.utils.set_random_seed(cfg.seed)
    x_all, x_test, prep = training_images(cfg.dataset, cfg.data_dir, cfg.tfds_download)
    shape = x_all.shape[1:]
    vae = VAE(cfg.latent_dim, shape[-1], cfg.widths)
    vae(tf.zeros((1,) + shape))
    opt = keras.optimizers.Adam(cfg.learning_rate, beta_1=0.5)
    opt.build(vae.trainable_variables)
    xt = tf.constant(x_all)
    base = pipeline.stream_seed(cfg.seed, 21)
    n, b = len(x_all), cfg.batch_size
    steps = n // b if not cfg.max_iter_per_epoch else min(n // b, cfg.max_iter_per_epoch)

    @tf.function(autograph=False)
    def step(t):
        idx = pipeline.shuffled_indices(t * b + tf.range(b, dtype=tf.int64), n, base)
        x = pipeline.augment(tf.gather(xt, idx), tf.random.experimental.stateless_fold_in(
            base, t), cfg.aug_trans, False)
        with tf.GradientTape() as tape:
            loss, rec, kl = vae_losses(vae, x, tf.random.experimental.stateless_fold_in(
                base, t + (1 << 40)))
        grads = tape.gradient(loss, vae.trainable_variables)
        grads = [tf.clip_by_norm(g, CLIP_NORM) for g in grads]
        opt.apply(grads, vae.trainable_variables)
        return {"loss": loss, "rec": rec, "kl": kl}

    @tf.function(autograph=False)
    def test_rec(x):
        mu, _ = vae.encode(x)
        xr = vae.decode(mu)
        return tf.reduce_mean(bernoulli_nll(x, xr))

    def evaluate():
        return {"rec": float(np.mean([float(test_rec(x_test[i:i + 100]))
                                      for i in range(0, len(x_test), 100)]))}

    def images():
        mu, _ = vae.encode(tf.constant(x_test[:20]))
        samples = vae.decode(tf.random.stateless_normal((50, cfg.latent_dim), [cfg.seed, 7]))
        return {"reconstructions.png": reconstruction_grid(x_test[:20], vae.decode(mu), 20),
                "samples.png": samples.numpy()}

    meta = {"kind": "vae", "dataset": cfg.dataset, "image_shape": list(shape),
            "preprocessing": prep.describe(),
            "architecture": {"latent_dim": cfg.latent_dim, "widths": list(cfg.widths)},
            "training": dataclasses.asdict(cfg)}
    logging.info("VAE on %s: %d images, %d epochs x %d steps", cfg.dataset, n, cfg.num_epochs,
                 steps)
    meta = trainer.run(vae, opt, step, lambda t: lr_at_epoch(t // steps, cfg.learning_rate),
                       cfg.num_epochs * steps, steps, cfg.model_dir, meta, evaluate=evaluate,
                       images=images, verbose=verbose)
    return vae, meta
