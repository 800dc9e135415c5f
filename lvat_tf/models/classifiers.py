"""Classifiers: Conv-Large (vat_tf ``cnn.py``), Conv-Small, the MNIST MLP, tiny test nets.

Every classifier is called as ``model(x, bn_mode=..., dropout_seed=...)``:

* ``bn_mode``: one of :data:`layers.BN_MODES`; when ``None`` it follows
  ``training`` (``update`` when training, ``moving`` otherwise).
* ``dropout_seed``: shape-(2,) stateless seed; dropout is active iff it is
  given (and keep_prob < 1). Passing the same seed to several calls gives them
  the same masks, as upstream's TF1 graph does for the unlabeled passes.
* ``dropout_masks``: (Conv nets) explicit multiplicative masks, one per
  stage, already scaled by 1/keep_prob; they replace the stateless draw. The
  upstream checker uses them to replay masks drawn by TF1's own ops.
* ``return_features=True`` returns ``(features, logits)``, the features being
  the last hidden layer (Conv nets: the pooled (B, C) vector; MLP: the last
  hidden layer), for MAT and analysis.
"""
import keras
import tensorflow as tf

from lvat_tf.models.layers import (UpstreamBatchNorm, dense_tangent, dual_batch_norm,
                                   dual_leaky_relu, dual_max_pool, dual_relu, fold_seed,
                                   forward_mode_linearize, kernel_initializer,
                                   stateless_dropout)


class Classifier(keras.Model):
    """Shared call plumbing; subclasses implement ``_forward``."""

    num_classes: int

    def call(self, x, training=False, bn_mode=None, dropout_seed=None, return_features=False,
             dropout_masks=None):
        if bn_mode is None:
            bn_mode = "update" if training else "moving"
        feats, logits = self._forward(x, bn_mode, dropout_seed, dropout_masks)
        return (feats, logits) if return_features else logits

    def check_input_shape(self, shape):
        """Raises ValueError when an image shape (H, W, C) cannot go through."""

    def linearize(self, x, tangent, bn_mode="batch", dropout_seed=None, dropout_masks=None):
        """The logits and their directional derivative at ``x`` along ``tangent``.

        For the exact power iteration's Gauss-Newton product (J d, J = d logits /
        d x). This default is TensorFlow's forward mode over :meth:`call`; the
        batch-norm nets override it with an explicit pass that costs about two
        forward passes where TensorFlow's costs three on Conv-Large
        (docs/results.md, "The forward-mode pass").

        Args:
          x: (B, ...) inputs.
          tangent: the direction, the shape of ``x``.
          bn_mode: ``batch`` or ``moving`` (a linearisation never updates BN).
          dropout_seed, dropout_masks: as :meth:`call`.

        Returns:
          (logits (B, K), J tangent (B, K)), both in the compute dtype.
        """
        return forward_mode_linearize(self, x, tangent, bn_mode=bn_mode,
                                      dropout_seed=dropout_seed, dropout_masks=dropout_masks)


def inference_function(classifier, image_shape):
    """``x -> logits`` in inference mode (moving BN statistics, no dropout) as one graph.

    Every inference consumer of a run (the periodic evaluation, the collapse monitor, the
    final evaluation before and after BN re-estimation) shares it: the batch dimension is
    left open, so the last, shorter batch needs no second graph. Traced once instead of once
    per consumer and batch size, which was a large part of a short run's fixed cost.

    Args:
      classifier: a :class:`Classifier`.
      image_shape: (H, W, C) of the float32 inputs.

    Returns:
      A ``tf.function`` taking (B, H, W, C) float32 and returning (B, num_classes) logits in
      the classifier's compute dtype.
    """
    spec = tf.TensorSpec((None,) + tuple(int(d) for d in image_shape), tf.float32)
    return tf.function(lambda x: classifier(x, bn_mode="moving"), input_signature=[spec],
                       autograph=False)


@keras.saving.register_keras_serializable("lvat_tf")
class ConvNet(Classifier):
    """The vat_tf Conv-Large family (Conv-Small and a tiny net are narrower copies).

    Layout (vat_tf ``cnn.py``): for each stage, 3x3 SAME convs (no bias) each
    followed by BN and leaky ReLU; after each stage a 2x2/2 SAME max-pool and
    dropout; then a 3x3 VALID conv, two 1x1 convs (each + BN + lReLU), global
    average pooling, a dense layer with bias to the logits, and optionally BN
    on the logits (``top_bn``). Kernels drawn by ``kernel_init`` (one of
    :data:`layers.KERNEL_INITS`; ``upstream`` = vat_tf's).

    Input (B, H, W, C) with H, W >= 4 * 3 after the two pools' rounding (e.g.
    32x32x3, 28x28x1). Output logits (B, num_classes).
    """

    def __init__(self, stage_widths=((128, 128, 128), (256, 256, 256)),
                 top_widths=(512, 256, 128), num_classes=10, keep_prob_hidden=0.5,
                 lrelu_a=0.1, top_bn=False, bn_decay=0.99, kernel_init="upstream", **kwargs):
        super().__init__(**kwargs)
        self.kernel_init = kernel_init
        self.stage_widths = tuple(tuple(s) for s in stage_widths)
        self.top_widths = tuple(top_widths)
        self.num_classes = num_classes
        self.keep_prob_hidden = keep_prob_hidden
        self.lrelu_a = lrelu_a
        self.use_top_bn = top_bn
        self.bn_decay = bn_decay
        self.convs, self.bns = [], []
        widths = [w for s in self.stage_widths for w in s] + list(self.top_widths)
        n_stage = sum(len(s) for s in self.stage_widths)
        for i, w in enumerate(widths):
            if i < n_stage:
                k, pad = 3, "same"
            elif i == n_stage:
                k, pad = 3, "valid"
            else:
                k, pad = 1, "valid"
            self.convs.append(keras.layers.Conv2D(w, k, padding=pad, use_bias=False,
                                                  kernel_initializer=kernel_initializer(kernel_init),
                                                  name=f"c{i + 1}"))
            self.bns.append(UpstreamBatchNorm(decay=bn_decay, name=f"b{i + 1}"))
        self.fc = keras.layers.Dense(num_classes, kernel_initializer=kernel_initializer(kernel_init),
                                     bias_initializer="zeros", name="fc")
        self.top_bn = UpstreamBatchNorm(decay=bn_decay, name="bfc") if top_bn else None

    def check_input_shape(self, shape):
        h, w = int(shape[0]), int(shape[1])
        for _ in self.stage_widths:
            h, w = -(-h // 2), -(-w // 2)
        if h < 3 or w < 3:
            raise ValueError(f"images of shape {tuple(shape)} are too small for {self.name}: "
                             f"after {len(self.stage_widths)} max-pools they are {h}x{w}, the "
                             "3x3 VALID conv needs at least 3x3")

    def _forward(self, x, bn_mode, dropout_seed, dropout_masks=None):
        feats, logits, _ = self._dual_forward(x, None, bn_mode, dropout_seed, dropout_masks)
        return feats, logits

    def linearize(self, x, tangent, bn_mode="batch", dropout_seed=None, dropout_masks=None):
        _, logits, dlogits = self._dual_forward(x, tangent, bn_mode, dropout_seed, dropout_masks)
        return logits, dlogits

    def _dual_forward(self, x, dx, bn_mode, dropout_seed, dropout_masks):
        """(features, logits, J dx): the forward pass, with the tangent when ``dx`` is given
        (None: exactly the plain forward pass, and None for J dx)."""
        h, dh = x, dx
        i = 0
        for s, stage in enumerate(self.stage_widths):
            for _ in stage:
                h, dh = self._conv_block(i, h, dh, bn_mode)
                i += 1
            h, dh = dual_max_pool(h, dh)
            if dropout_masks is not None:
                h, dh = h * dropout_masks[s], (None if dh is None else dh * dropout_masks[s])
            elif dropout_seed is not None:
                # The same seed and shape draw the same mask for the tangent.
                seed = fold_seed(dropout_seed, s)
                h = stateless_dropout(h, self.keep_prob_hidden, seed)
                dh = None if dh is None else stateless_dropout(dh, self.keep_prob_hidden, seed)
        for _ in self.top_widths:
            h, dh = self._conv_block(i, h, dh, bn_mode)
            i += 1
        feats = tf.reduce_mean(h, axis=[1, 2])
        logits = self.fc(feats)
        dlogits = None if dh is None else dense_tangent(self.fc, tf.reduce_mean(dh, axis=[1, 2]))
        if self.top_bn is not None:
            logits, dlogits = dual_batch_norm(self.top_bn, logits, dlogits, bn_mode)
        return feats, logits, dlogits

    def _conv_block(self, i, h, dh, bn_mode):
        """conv i (no bias, so it is its own derivative) -> BN -> leaky ReLU, with the tangent."""
        h = self.convs[i](h)
        dh = None if dh is None else self.convs[i](dh)
        h, dh = dual_batch_norm(self.bns[i], h, dh, bn_mode)
        return dual_leaky_relu(h, dh, self.lrelu_a)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(stage_widths=self.stage_widths, top_widths=self.top_widths,
                   num_classes=self.num_classes, keep_prob_hidden=self.keep_prob_hidden,
                   lrelu_a=self.lrelu_a, top_bn=self.use_top_bn, bn_decay=self.bn_decay,
                   kernel_init=self.kernel_init)
        return cfg


@keras.saving.register_keras_serializable("lvat_tf")
class MLP(Classifier):
    """The VAT paper's MNIST MLP: dense (no bias) -> BN -> ReLU per hidden layer.

    Default widths 1200-600-300-150 then a dense layer with bias to the logits
    (optional BN on the logits with ``top_bn``). Input (B, ...) is flattened, so
    any image size works. No dropout (the VAT MLP has none); ``dropout_seed``
    is accepted and ignored. Kernels drawn by ``kernel_init`` (vat_tf has no
    MLP; ``upstream`` is its conv initializer, ``glorot`` Keras' default).
    """

    def __init__(self, hidden=(1200, 600, 300, 150), num_classes=10, top_bn=False,
                 bn_decay=0.99, kernel_init="upstream", **kwargs):
        super().__init__(**kwargs)
        self.kernel_init = kernel_init
        self.hidden = tuple(hidden)
        self.num_classes = num_classes
        self.use_top_bn = top_bn
        self.bn_decay = bn_decay
        self.denses = [keras.layers.Dense(w, use_bias=False,
                                          kernel_initializer=kernel_initializer(kernel_init),
                                          name=f"l{i + 1}") for i, w in enumerate(self.hidden)]
        self.bns = [UpstreamBatchNorm(decay=bn_decay, name=f"b{i + 1}")
                    for i in range(len(self.hidden))]
        self.fc = keras.layers.Dense(num_classes, kernel_initializer=kernel_initializer(kernel_init),
                                     name="fc")
        self.top_bn = UpstreamBatchNorm(decay=bn_decay, name="bfc") if top_bn else None

    def _forward(self, x, bn_mode, dropout_seed, dropout_masks=None):
        feats, logits, _ = self._dual_forward(x, None, bn_mode)
        return feats, logits

    def linearize(self, x, tangent, bn_mode="batch", dropout_seed=None, dropout_masks=None):
        _, logits, dlogits = self._dual_forward(x, tangent, bn_mode)
        return logits, dlogits

    def _dual_forward(self, x, dx, bn_mode):
        """(last hidden layer, logits, J dx); ``dx`` None: the plain forward pass."""
        h = tf.reshape(x, [tf.shape(x)[0], -1])
        dh = None if dx is None else tf.reshape(dx, [tf.shape(dx)[0], -1])
        for dense, bn in zip(self.denses, self.bns):
            # The hidden Dense layers have no bias: each is its own derivative.
            h, dh = dense(h), (None if dh is None else dense(dh))
            h, dh = dual_batch_norm(bn, h, dh, bn_mode)
            h, dh = dual_relu(h, dh)
        logits, dlogits = self.fc(h), dense_tangent(self.fc, dh)
        if self.top_bn is not None:
            logits, dlogits = dual_batch_norm(self.top_bn, logits, dlogits, bn_mode)
        return h, logits, dlogits

    def get_config(self):
        cfg = super().get_config()
        cfg.update(hidden=self.hidden, num_classes=self.num_classes, top_bn=self.use_top_bn,
                   bn_decay=self.bn_decay, kernel_init=self.kernel_init)
        return cfg


@keras.saving.register_keras_serializable("lvat_tf")
class LeNetPP(Classifier):
    """Lenet++ of the center-loss paper (Wen et al., 2016), as used by the MAT paper.

    Three stages of two 5x5 convs (SAME, with bias) + PReLU, each followed by a
    2x2 max-pool (stride 2): widths 32, 64, 128; flatten; a dense layer to a
    ``embedding_dim``-d embedding (2 for the paper's Fig. 2 plots) with PReLU;
    a dense layer to the logits. No batch norm and no dropout (``bn_mode`` and
    ``dropout_seed`` are accepted and ignored). Features = the embedding.
    """

    def __init__(self, widths=(32, 64, 128), embedding_dim=2, num_classes=10, **kwargs):
        super().__init__(**kwargs)
        self.widths, self.embedding_dim = tuple(widths), int(embedding_dim)
        self.num_classes = num_classes
        self.convs = [keras.layers.Conv2D(w, 5, padding="same", name=f"conv{s + 1}_{k + 1}")
                      for s, w in enumerate(self.widths) for k in range(2)]
        self.prelus = [keras.layers.PReLU(shared_axes=[1, 2], name=f"prelu{s + 1}_{k + 1}")
                       for s in range(len(self.widths)) for k in range(2)]
        self.embed = keras.layers.Dense(self.embedding_dim, name="embedding")
        self.embed_prelu = keras.layers.PReLU(name="prelu_embedding")
        self.fc = keras.layers.Dense(num_classes, name="fc")

    def _forward(self, x, bn_mode, dropout_seed, dropout_masks=None):
        h = x
        for i, (conv, act) in enumerate(zip(self.convs, self.prelus)):
            h = act(conv(h))
            if i % 2 == 1:
                h = tf.nn.max_pool2d(h, 2, 2, padding="VALID")
        feats = self.embed_prelu(self.embed(tf.reshape(h, [tf.shape(h)[0], -1])))
        return feats, self.fc(feats)

    def check_input_shape(self, shape):
        h, w = shape[:2]
        for _ in self.widths:
            h, w = h // 2, w // 2
        if h < 1 or w < 1:
            raise ValueError(f"images of shape {tuple(shape)} are too small for Lenet++ "
                             f"({len(self.widths)} 2x2 max-pools)")

    def get_config(self):
        cfg = super().get_config()
        cfg.update(widths=self.widths, embedding_dim=self.embedding_dim,
                   num_classes=self.num_classes)
        return cfg
