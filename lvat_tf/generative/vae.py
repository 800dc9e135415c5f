"""The LVAT VAE (LVAT paper Table 2; geosada/LVAT ``vae/VAE.py``).

Encoder (input in [0, 1], 32x32xC): three 2x2 stride-2 VALID convs
128-256-512 (bias init 0.1), each + BN (eps 1e-3, momentum 0.99); ReLU,
ReLU, tanh; flatten; dense to 2*latent (mu, log-sigma); log-sigma clipped to
[1e-8, 50] as upstream (so sigma >= 1 — an upstream quirk kept for fidelity).

Decoder: dense latent->512 with leaky ReLU (0.1) -> reshape 4x4x32 -> three
2x2 stride-2 transposed convs 512-256-128 (+ BN + ReLU) -> 1x1 conv to C
channels with sigmoid.

LVAT uses the posterior mean and both halves in inference mode (moving BN
statistics). Images of another size are padded to 32x32 by the data
pipeline (MNIST: 2 px of black on each side).
"""
import keras
import tensorflow as tf

LOGSIGMA_CLIP = (1e-8, 50.0)


@keras.saving.register_keras_serializable("lvat_tf")

def bernoulli_nll(x, x_rec):
    """Per-image Bernoulli negative log-likelihood in nats (B,): LVAT's reconstruction term.

    Args: x (B, H, W, C) images in [0, 1]; x_rec (B, H, W, C) decoder means in (0, 1).
    """
    return -tf.reduce_sum(x * tf.math.log(x_rec + 1e-8) + (1 - x) * tf.math.log(1 - x_rec + 1e-8),
                          axis=[1, 2, 3])

class VAE(keras.Model):
    """Args:
      latent_dim: size of z (upstream Z_SIZE = 128).
      channels: image channels (3 for SVHN/CIFAR-10, 1 for MNIST).
      widths: encoder conv widths (decoder mirrors them).
    """

    def __init__(self, latent_dim=128, channels=3, widths=(128, 256, 512), **kwargs):
        super().__init__(**kwargs)
        self.latent_dim, self.channels, self.widths = latent_dim, channels, tuple(widths)
        glorot, b01 = "glorot_uniform", keras.initializers.Constant(0.1)

        def bn(name):
            return keras.layers.BatchNormalization(epsilon=1e-3, momentum=0.99, name=name)

        self.e_convs = [keras.layers.Conv2D(w, 2, strides=2, padding="valid",
                                            kernel_initializer=glorot, bias_initializer=b01,
                                            name=f"e_{i + 1}_1") for i, w in enumerate(widths)]
        self.e_bns = [bn(f"e_{i + 1}") for i in range(len(widths))]
        self.top_of_encoder = keras.layers.Dense(2 * latent_dim, kernel_initializer=glorot,
                                                 name="top_of_encoder")
        self.top_of_decoder = keras.layers.Dense(512, kernel_initializer=glorot,
                                                 name="top_of_decoder")
        dec_widths = tuple(reversed(widths))
        self.d_convs = [keras.layers.Conv2DTranspose(w, 2, strides=2, padding="same",
                                                     kernel_initializer=glorot,
                                                     bias_initializer=b01,
                                                     name=f"d_{i + 1}_{i + 1}")
                        for i, w in enumerate(dec_widths)]
        self.d_bns = [bn(f"d_{i + 1}") for i in range(len(dec_widths))]
        n = len(dec_widths) + 1
        self.d_out = keras.layers.Conv2D(channels, 1, kernel_initializer=glorot,
                                         bias_initializer=b01, name=f"d_{n}_{n}")

    def encode(self, x, training=False):
        """x (B, 32, 32, C) in [0, 1] -> (mu, logsigma), each (B, latent)."""
        h = x
        acts = [tf.nn.relu] * (len(self.e_convs) - 1) + [tf.tanh]
        for conv, bn, act in zip(self.e_convs, self.e_bns, acts):
            h = act(bn(conv(h), training=training))
        h = self.top_of_encoder(tf.reshape(h, [tf.shape(h)[0], -1]))
        mu, logsigma = h[:, :self.latent_dim], h[:, self.latent_dim:]
        return mu, tf.clip_by_value(logsigma, *LOGSIGMA_CLIP)

    def decode(self, z, training=False):
        """z (B, latent) -> images (B, 32, 32, C) in (0, 1)."""
        h = self.top_of_decoder(z)
        h = tf.maximum(h, 0.1 * h)
        h = tf.reshape(h, [tf.shape(z)[0], 4, 4, 32])
        for conv, bn in zip(self.d_convs, self.d_bns):
            h = tf.nn.relu(bn(conv(h), training=training))
        return tf.sigmoid(self.d_out(h))

    def call(self, x, training=False):
        mu, _ = self.encode(x, training=training)
        return self.decode(mu, training=training)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(latent_dim=self.latent_dim, channels=self.channels, widths=self.widths)
        return cfg
