"""The LVAT VAE against upstream's golden values (encoder mean, decoder), and its shapes."""
import numpy as np
import tensorflow as tf

from conftest import shared_path
from lvat_tf.generative.vae import VAE
from lvat_tf.upstream import names


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


def test_vae_reproduces_upstream_encoder_mean_and_decoder():
    path = shared_path("fixtures", "upstream", "lvat_vae.npz")
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    vae = VAE(latent_dim=128, channels=3)
    x = tf.constant(arrays["x"])
    vae(x)
    names.assign_strict(names.vae_assignments(vae), names.vae_weights(arrays, "w/"), "VAE")
    mu, logsigma = vae.encode(x)
    assert _rel(mu, arrays["z_mu"]) < 1e-4
    assert float(tf.reduce_min(logsigma)) >= np.float32(1e-8)  # upstream clip
    assert _rel(vae.decode(mu), arrays["x_rec"]) < 1e-4
    # Dec(mu + r) with upstream's own r gives upstream's x_adv.
    assert _rel(vae.decode(mu + arrays["r_adv"]), arrays["x_adv"]) < 1e-4


def test_vae_strict_weight_names():
    path = shared_path("fixtures", "upstream", "lvat_vae.npz")
    with np.load(path) as f:
        w = names.vae_weights({k: f[k] for k in f.files}, "w/")
    vae = VAE(latent_dim=128, channels=3)
    vae(tf.zeros((1, 32, 32, 3)))
    bad = dict(w)
    del bad["d_2/gamma"]
    try:
        names.assign_strict(names.vae_assignments(vae), bad, "VAE")
    except names.UpstreamWeightsError as e:
        assert "d_2/gamma" in str(e)
    else:
        raise AssertionError("missing variable not reported")


def test_vae_shapes_grayscale():
    vae = VAE(latent_dim=16, channels=1, widths=(8, 16, 32))
    x = tf.random.uniform((2, 32, 32, 1))
    mu, _ = vae.encode(x)
    out = vae.decode(mu)
    assert mu.shape == (2, 16) and out.shape == (2, 32, 32, 1)
    assert float(tf.reduce_min(out)) >= 0.0 and float(tf.reduce_max(out)) <= 1.0
