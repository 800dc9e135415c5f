"""The LVAT Glow flow (geosada/LVAT ``glow/``; upstream.md B.5), on TFP bijectors.

Layout for an H x W x C image in [0, 1] (32x32x3: y 4x4x24, z 4x4x168)::

    quantise to n_bits (5) + uniform dequantisation noise, shift to [-0.5, 0.5)
    for each of L levels (3):
        squeeze (space-to-depth 2; the factored-out z is squeezed too)
        K steps (22): actnorm -> invertible 1x1 conv (LU) -> affine coupling
        factor out the first half of the channels into z
    y = what is left

The maths of every step is a ``tfp.bijectors`` object built from variables
that Keras layers own (Keras does not track variables held by a bijector):
actnorm = ``Chain([Scale(log_scale), Shift(bias)])``, the squeeze =
``Chain([Reshape, Transpose, Reshape])``, the 1x1 convolution and the coupling
are small custom bijectors (:class:`ChannelMix`, :class:`AffineCoupling`),
and a level is a ``tfb.Chain`` of its steps. Bijectors are rebuilt on every
call, so TFP's result cache never serves a value computed from stale
variables and never short-cuts ``inverse(forward(x))``.

Upstream details kept (they change the numbers):
* coupling ``y2 = (x2 + shift) * exp(clip(log_scale, -15, 15))`` with
  ``shift = h[..., 0::2]``, ``log_scale = h[..., 1::2]``;
* the coupling network is OpenAI's: 3x3 conv with *edge padding* (an extra
  input channel that is 1 on the zero-padded border) -> actnorm (centre, then
  scale ``exp(3 * logs)``) -> ReLU -> 1x1 conv -> actnorm -> ReLU -> zero-
  initialised 3x3 edge-padded conv + bias, times ``exp(3 * logs)``;
  upstream never runs the data-dependent init of those inner actnorms, so
  their ``b``/``logs`` start Glorot-uniform random (kept);
* the 1x1 convolution ``W = P (L*mask + I)(U*mask^T + diag(sign_s e^log_s))``
  is assembled in float64, as upstream; log-det = H*W*sum(log_s);
* the decoder output is ``clip(floor(32 (x + 0.5)) * 8, 0, 255) / 255`` with
  a straight-through floor (upstream overrides Floor's gradient to Identity).

Deliberate deviation: the outer actnorms use the standard one-batch
data-dependent init (output zero mean, unit variance per channel). Upstream
runs 10 damped assign steps per layer whose bias fixed point is not the
zero-mean one (its update adds ``b(1 - w) - w*mean`` to b, so b converges to
``w*m/(1 - 2w)``, not ``-m``); the initial point of training is the only thing
that differs.

Images of another size are padded to 32x32 by the data pipeline (MNIST: 2 px
of black on each side), as for the VAE; the flow itself accepts any H, W
divisible by 2**L.
"""
from typing import List, Tuple

import keras
import numpy as np
import scipy.linalg
import tensorflow as tf
import tensorflow_probability as tfp

from lvat_tf.distribute import replica_random

tfb = tfp.bijectors

LOG_SCALE_CLIP = 15.0
LOGSCALE_FACTOR = 3.0


# ---------------------------------------------------------------------------
# Bijectors
# ---------------------------------------------------------------------------
class ChannelMix(tfb.Bijector):
    """The invertible 1x1 convolution ``y[..., j] = sum_i x[..., i] W[i, j]``.

    Args:
      w, w_inv: (C, C) the kernel and its inverse.
      log_abs_det: scalar log|det W|; the log-det per image is H*W times it.
    """

    def __init__(self, w, w_inv, log_abs_det, name="channel_mix"):
        parameters = dict(locals())
        self._w, self._w_inv, self._log_abs_det = w, w_inv, log_abs_det
        super().__init__(forward_min_event_ndims=3, is_constant_jacobian=True,
                         parameters=parameters, name=name)

    def _forward(self, x):
        return tf.nn.conv2d(x, self._w[None, None], 1, "SAME")

    def _inverse(self, y):
        return tf.nn.conv2d(y, self._w_inv[None, None], 1, "SAME")

    def _forward_log_det_jacobian(self, x):
        hw = tf.cast(tf.shape(x)[-3] * tf.shape(x)[-2], self._log_abs_det.dtype)
        return hw * self._log_abs_det

    def _inverse_log_det_jacobian(self, y):
        return -self._forward_log_det_jacobian(y)


class AffineCoupling(tfb.Bijector):
    """``y = [x1, (x2 + shift(x1)) * exp(clip(log_scale(x1), -15, 15))]`` on channels.

    Args:
      shift_and_log_scale_fn: x1 (B, H, W, C/2) -> (shift, log_scale), each (B, H, W, C - C/2).
    """

    def __init__(self, shift_and_log_scale_fn, name="affine_coupling"):
        parameters = dict(locals())
        self._fn = shift_and_log_scale_fn
        super().__init__(forward_min_event_ndims=3, parameters=parameters, name=name)

    def _split(self, x):
        c = x.shape[-1] // 2
        return x[..., :c], x[..., c:]

    def _params(self, x1):
        shift, log_scale = self._fn(x1)
        return shift, tf.clip_by_value(log_scale, -LOG_SCALE_CLIP, LOG_SCALE_CLIP)

    def _forward(self, x):
        x1, x2 = self._split(x)
        shift, log_scale = self._params(x1)
        return tf.concat([x1, (x2 + shift) * tf.exp(log_scale)], axis=-1)

    def _inverse(self, y):
        y1, y2 = self._split(y)
        shift, log_scale = self._params(y1)
        return tf.concat([y1, y2 / tf.exp(log_scale) - shift], axis=-1)

    def _forward_log_det_jacobian(self, x):
        _, log_scale = self._params(self._split(x)[0])
        return tf.reduce_sum(log_scale, axis=[-3, -2, -1])

    def _inverse_log_det_jacobian(self, y):
        _, log_scale = self._params(self._split(y)[0])
        return -tf.reduce_sum(log_scale, axis=[-3, -2, -1])


def squeeze_bijector(height: int, width: int, channels: int) -> tfb.Bijector:
    """Space-to-depth by 2 (``tf.nn.space_to_depth`` channel order) as TFP bijectors."""
    h2, w2 = height // 2, width // 2
    return tfb.Chain([
        tfb.Reshape(event_shape_out=(h2, w2, 4 * channels), event_shape_in=(h2, w2, 2, 2, channels)),
        tfb.Transpose(perm=[0, 2, 1, 3, 4]),
        tfb.Reshape(event_shape_out=(h2, 2, w2, 2, channels), event_shape_in=(height, width, channels)),
    ], name="squeeze")


# ---------------------------------------------------------------------------
# Keras layers that own the variables
# ---------------------------------------------------------------------------
class ActNorm(keras.layers.Layer):
    """Per-channel ``y = (x + bias) * exp(log_scale)`` (upstream ActnormLayer)."""

    def build(self, input_shape):
        c = int(input_shape[-1])
        self.bias = self.add_weight(shape=(1, 1, 1, c), initializer="zeros", name="bias")
        self.log_scale = self.add_weight(shape=(1, 1, 1, c), initializer="zeros",
                                         name="log_scale")

    def bijector(self) -> tfb.Bijector:
        # In the layer's compute dtype: bfloat16 in a decoder copy built under the
        # mixed policy (model_dir.compute_copy), float32 otherwise (a no-op cast).
        dtype = self.compute_dtype
        return tfb.Chain([tfb.Scale(log_scale=tf.cast(self.log_scale, dtype)),
                          tfb.Shift(tf.cast(self.bias, dtype))], name="actnorm")

    def initialize(self, x):
        """Data-dependent init: outputs on ``x`` get zero mean and unit variance per channel."""
        mean, var = tf.nn.moments(x, axes=[0, 1, 2], keepdims=True)
        self.bias.assign(-mean)
        self.log_scale.assign(-tf.math.log(tf.sqrt(var) + 1e-6))


def _orthogonal_lu(c: int, rng: np.random.RandomState):
    """Upstream init: a random orthogonal matrix, then its LU factors (float32)."""
    w = np.linalg.qr(rng.randn(c, c))[0].astype("float32")
    p, l, u = scipy.linalg.lu(w)
    s = np.diag(u)
    return p, l, np.triu(u, k=1), np.sign(s), np.log(np.abs(s))


class InvConv1x1(keras.layers.Layer):
    """The LU-parameterised invertible 1x1 convolution (P and sign(s) fixed)."""

    def __init__(self, init_seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.init_seed = init_seed

    def build(self, input_shape):
        c = int(input_shape[-1])
        p, l, u, sign_s, log_s = _orthogonal_lu(c, np.random.RandomState(self.init_seed))

        def weight(name, value, trainable=True):
            return self.add_weight(shape=value.shape, name=name, trainable=trainable,
                                   initializer=keras.initializers.Constant(value))

        self.p_mat = weight("P_mat", p, trainable=False)
        self.l_mat = weight("L_mat", l)
        self.u_mat = weight("U_mat", u)
        self.sign_s = weight("sign_S", sign_s, trainable=False)
        self.log_s = weight("log_S", log_s)

    def kernels(self) -> Tuple[tf.Tensor, tf.Tensor]:
        """(W, W^-1), each (C, C) in the layer's compute dtype, assembled in float64 as upstream."""
        f64 = lambda v: tf.cast(v, tf.float64)  # noqa: E731
        c = self.l_mat.shape[0]
        mask = tf.constant(np.tril(np.ones((c, c)), -1), tf.float64)
        lower = f64(self.l_mat) * mask + tf.eye(c, dtype=tf.float64)
        upper = f64(self.u_mat) * tf.transpose(mask) + tf.linalg.diag(
            f64(self.sign_s) * tf.exp(f64(self.log_s)))
        p = f64(self.p_mat)
        w = tf.matmul(p, tf.matmul(lower, upper))
        w_inv = tf.matmul(tf.linalg.inv(upper), tf.matmul(tf.linalg.inv(lower), tf.linalg.inv(p)))
        return tf.cast(w, self.compute_dtype), tf.cast(w_inv, self.compute_dtype)

    def bijector(self) -> tfb.Bijector:
        w, w_inv = self.kernels()
        return ChannelMix(w, w_inv, tf.reduce_sum(self.log_s))


def edge_pad(x: tf.Tensor) -> tf.Tensor:
    """Zero-pads H and W by 1 and appends a channel that is 1 on the padded border."""
    x = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    h, w = x.shape[1], x.shape[2]
    border = np.ones((1, h, w, 1), np.float32)
    border[:, 1:-1, 1:-1, :] = 0.0
    border = tf.tile(tf.constant(border, x.dtype), [tf.shape(x)[0], 1, 1, 1])
    return tf.concat([x, border], axis=-1)


class CouplingNN(keras.layers.Layer):
    """OpenAI's coupling network; returns (shift, log_scale) for the other half."""

    def __init__(self, width: int = 128, **kwargs):
        super().__init__(**kwargs)
        self.width = width

    def build(self, input_shape):
        c_in = int(input_shape[-1])
        n01 = keras.initializers.RandomNormal(stddev=0.05)
        glorot = keras.initializers.GlorotUniform()

        def w(name, shape, init):
            return self.add_weight(shape=shape, initializer=init, name=name)

        self.l1_w = w("l_1_W", (3, 3, c_in + 1, self.width), n01)
        self.l1_b = w("l_1_actnorm_center_b", (1, 1, 1, self.width), glorot)
        self.l1_logs = w("l_1_actnorm_scale_logs", (1, 1, 1, self.width), glorot)
        self.l2_w = w("l_2_W", (1, 1, self.width, self.width), n01)
        self.l2_b = w("l_2_actnorm_center_b", (1, 1, 1, self.width), glorot)
        self.l2_logs = w("l_2_actnorm_scale_logs", (1, 1, 1, self.width), glorot)
        out = 2 * c_in
        self.last_w = w("l_last_W", (3, 3, self.width + 1, out), "zeros")
        self.last_b = w("l_last_b", (1, 1, 1, out), "zeros")
        self.last_logs = w("l_last_logs", (1, out), "zeros")

    def call(self, x1):
        h = tf.nn.conv2d(edge_pad(x1), self.l1_w, 1, "VALID")
        h = tf.nn.relu((h + self.l1_b) * tf.exp(self.l1_logs * LOGSCALE_FACTOR))
        h = tf.nn.conv2d(h, self.l2_w, 1, "VALID")
        h = tf.nn.relu((h + self.l2_b) * tf.exp(self.l2_logs * LOGSCALE_FACTOR))
        h = tf.nn.conv2d(edge_pad(h), self.last_w, 1, "VALID") + self.last_b
        h = h * tf.exp(self.last_logs * LOGSCALE_FACTOR)
        # The network clips too (upstream clips here and again in the layer).
        return h[..., 0::2], tf.clip_by_value(h[..., 1::2], -LOG_SCALE_CLIP, LOG_SCALE_CLIP)


class GlowStep(keras.layers.Layer):
    """actnorm -> invertible 1x1 conv -> affine coupling."""

    def __init__(self, width: int = 128, init_seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.actnorm = ActNorm(name="actnorm")
        self.invconv = InvConv1x1(init_seed=init_seed, name="invconv")
        self.coupling_nn = CouplingNN(width, name="coupling")

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.actnorm.build(shape)
        self.invconv.build(shape)
        self.coupling_nn.build(shape[:-1] + (shape[-1] // 2,))

    def bijector(self) -> tfb.Bijector:
        return tfb.Chain([AffineCoupling(self.coupling_nn), self.invconv.bijector(),
                          self.actnorm.bijector()], name="glow_step")


# ---------------------------------------------------------------------------
# The flow
# ---------------------------------------------------------------------------
def quantize(x: tf.Tensor, num_bits: int) -> tf.Tensor:
    """[0, 1] images -> bin floors in [-0.5, 0.5) (upstream QuantizeImage without noise)."""
    if num_bits < 8:
        x = tf.floor(255.0 * x / 2.0 ** (8 - num_bits)) / 2.0 ** num_bits
    return x - 0.5


def straight_through_dequantize(x: tf.Tensor, num_bits: int) -> tf.Tensor:
    """Flow output -> [0, 1] image re-quantised to ``num_bits``; gradient of floor = 1."""
    q = (x + 0.5) * 2.0 ** num_bits
    q = q + tf.stop_gradient(tf.floor(q) - q)
    return tf.clip_by_value(q * (256.0 / 2.0 ** num_bits), 0.0, 255.0) / 255.0


@keras.saving.register_keras_serializable("lvat_tf")
class Glow(keras.Model):
    """Multi-scale Glow as upstream LVAT.

    Args:
      image_shape: (H, W, C) of the [0, 1] input; H and W divisible by 2**num_levels.
      num_levels: L (upstream N_FLOW_SCALES = 3).
      num_steps: K steps per level (upstream N_FLOW_STEPS = 22).
      width: hidden channels of the coupling networks (upstream WIDTH_RESNET = 128).
      num_bits: quantisation bits (upstream 5).
      init_seed: seeds the random orthogonal 1x1 convolutions.
    """

    def __init__(self, image_shape=(32, 32, 3), num_levels=3, num_steps=22, width=128,
                 num_bits=5, init_seed=0, **kwargs):
        super().__init__(**kwargs)
        self.image_shape = tuple(int(v) for v in image_shape)
        self.num_levels, self.num_steps = int(num_levels), int(num_steps)
        self.width, self.num_bits, self.init_seed = int(width), int(num_bits), int(init_seed)
        h, w, c = self.image_shape
        if h % 2 ** num_levels or w % 2 ** num_levels:
            raise ValueError(f"Glow with {num_levels} levels needs H and W divisible by "
                             f"{2 ** num_levels}, got {self.image_shape}")
        self.levels: List[List[GlowStep]] = []
        self.level_shapes = []  # (H, W, C) inside each level, after the squeeze
        for lvl in range(num_levels):
            h, w, c = h // 2, w // 2, c * 4
            self.level_shapes.append((h, w, c))
            self.levels.append([GlowStep(width, init_seed=init_seed * 100003 + lvl * 1000 + k,
                                         name=f"scale{lvl + 1}_step{k + 1}")
                                for k in range(num_steps)])
            c = c - c // 2
        self.latent_shapes = ((h, w, c), (h, w, int(np.prod(self.image_shape)) // (h * w) - c))

    @property
    def steps(self) -> List[GlowStep]:
        return [s for level in self.levels for s in level]

    def build(self, input_shape=None):
        for shape, level in zip(self.level_shapes, self.levels):
            for step in level:
                step.build((None,) + shape)
        self.built = True

    def level_bijector(self, lvl: int) -> tfb.Bijector:
        """The K steps of level ``lvl`` as one ``tfb.Chain`` (first step applied first)."""
        return tfb.Chain([s.bijector() for s in reversed(self.levels[lvl])], name=f"level{lvl}")

    # -- encoder -----------------------------------------------------------
    def dequantize(self, x, noise=None, seed=None):
        """x in [0, 1] -> quantised + uniform noise in [0, 1/2**bits) (upstream's encoder input)."""
        q = quantize(x, self.num_bits)
        if noise is None:
            shape, hi = tf.shape(q), 1.0 / 2 ** self.num_bits
            # Stateless draws: for the global batch, sliced per replica (distribute.py).
            noise = (hi * replica_random(tf.random.stateless_uniform, shape, seed)
                     if seed is not None else tf.random.uniform(shape, 0.0, hi))
        return q + noise

    def encode(self, x, noise=None, seed=None, init: bool = False):
        """Forward flow.

        Args:
          x: (B, H, W, C) images in [0, 1].
          noise: optional (B, H, W, C) dequantisation noise in [0, 1/2**bits)
            (upstream draws it anew on every call); else drawn from ``seed``
            (stateless) or the global generator.
          init: run the data-dependent actnorm init on this batch, step by step.

        Returns:
          y (B, h, w, c_y), logdet (B,), z (B, h, w, c_z).
        """
        self._ensure_built()
        v = self.dequantize(x, noise, seed)
        logdet = tf.zeros(tf.shape(v)[:1], v.dtype)
        z = None
        for lvl, (h, w, c) in enumerate(self.level_shapes):
            sq = squeeze_bijector(2 * h, 2 * w, c // 4)
            v = sq.forward(v)
            if z is not None:
                z = tf.nn.space_to_depth(z, 2)
            if init:
                for step in self.levels[lvl]:
                    step.actnorm.initialize(v)
                    b = step.bijector()
                    v, logdet = b.forward(v), logdet + b.forward_log_det_jacobian(v, 3)
            else:
                b = self.level_bijector(lvl)
                v, logdet = b.forward(v), logdet + b.forward_log_det_jacobian(v, 3)
            split = c // 2
            z = v[..., :split] if z is None else tf.concat([z, v[..., :split]], axis=-1)
            v = v[..., split:]
        return v, logdet, z

    # -- decoder -----------------------------------------------------------
    def decode_flow(self, y, z):
        """Inverse flow without the output quantisation: (y, z) -> x in about [-0.5, 0.5].

        Runs in the model's compute dtype: bfloat16 for a copy built under the mixed
        policy (``model_dir.compute_copy``, ``--generative_dtype=bfloat16``), which
        returns bfloat16 images; the latents are cast to it first.
        """
        self._ensure_built()
        y, z = tf.cast(y, self.compute_dtype), tf.cast(z, self.compute_dtype)
        v = y
        for lvl in reversed(range(self.num_levels)):
            h, w, c = self.level_shapes[lvl]
            split = c // 2
            v = tf.concat([z[..., -split:], v], axis=-1)
            z = z[..., :-split]
            v = self.level_bijector(lvl).inverse(v)
            v = squeeze_bijector(2 * h, 2 * w, c // 4).inverse(v)
            if lvl > 0:
                z = tf.nn.depth_to_space(z, 2)
        return v

    def decode(self, y, z):
        """(y, z) -> images in [0, 1] re-quantised to num_bits (straight-through), as upstream."""
        return straight_through_dequantize(self.decode_flow(y, z), self.num_bits)

    # -- density -----------------------------------------------------------
    def log_prob_latents(self, y, z):
        """log N(y; 0, I) + log N(z; 0, I) per example (upstream prior, beta = 1)."""
        def lp(t):
            t = tf.reshape(t, [tf.shape(t)[0], -1])
            d = tf.cast(tf.shape(t)[1], t.dtype)
            return -0.5 * tf.reduce_sum(tf.square(t), 1) - 0.5 * d * np.log(2 * np.pi)
        return lp(y) + lp(z)

    def nll(self, x, noise=None, seed=None):
        """Per-example -log p(v) of the dequantised image v, in nats (B,)."""
        y, logdet, z = self.encode(x, noise, seed)
        return -(self.log_prob_latents(y, z) + logdet)

    def bits_per_dim(self, nll_nats):
        """Discrete bits/dim of num_bits data: (nll + D log 2**bits) / (D log 2)."""
        d = float(np.prod(self.image_shape))
        return (nll_nats + d * self.num_bits * np.log(2.0)) / (d * np.log(2.0))

    def call(self, x, training=False):
        y, _, z = self.encode(x, noise=tf.zeros_like(x) + 0.5 / 2 ** self.num_bits)
        return self.decode(y, z)

    def _ensure_built(self):
        if not self.built:
            self.build((None,) + self.image_shape)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(image_shape=self.image_shape, num_levels=self.num_levels,
                   num_steps=self.num_steps, width=self.width, num_bits=self.num_bits,
                   init_seed=self.init_seed)
        return cfg
