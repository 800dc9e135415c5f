"""Preprocessed arrays and the deterministic, resumable tf.data streams.

Every training batch is a pure function of (seed, step): the labeled and
unlabeled streams are infinite sequences of epochs, each a stateless
permutation (``RandomIndexShuffle`` keyed by seed, stream and epoch), and the
augmentation of step t is keyed by (seed, t). So a run restarted at step t
sees exactly the batches an uninterrupted run would — what makes resume
bit-exact — and the two streams stay independent as upstream's two queues.
"""
import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf
from absl import logging

from lvat_tf.data import DataError, registry
from lvat_tf.data.preprocessing import Preprocessor
from lvat_tf.data.ssl import Split, make_split

# Stream ids folded into the run seed.
_LABELED, _UNLABELED, _AUG_L, _AUG_U, _FINETUNE = 1, 2, 3, 4, 5


@dataclasses.dataclass(frozen=True)
class InputNeeds:
    """What a run's method asks of the input transform, resolved once by the caller.

    The data layer knows no methods: ``lvat_tf.regularizers.methods.input_needs``
    builds this from the method spec and --zca.

    Attributes:
      scaling: "vat" ((x - 127.5) / 255, vat_tf) or "unit" (x / 255, LVAT).
      generative: LVAT: images smaller than 32x32 are zero-padded to 32x32
        (the generative models' input size).
      zca: False = no ZCA even where vat_tf whitens (--nozca).
    """

    scaling: str = "vat"
    generative: bool = False
    zca: bool = True


@dataclasses.dataclass
class SSLData:
    """Arrays in model-input space (float32 NHWC) for one run.

    Attributes:
      spec: the dataset spec.
      preprocessor: the fitted input transform (scaling, ZCA).
      split: indices of labeled / unlabeled / validation examples.
      x_labeled, y_labeled: the labeled training set.
      x_unlabeled: the unlabeled set (all training images minus validation).
      x_eval, y_eval: what periodic evaluation uses (test, or validation).
      x_test, y_test: the test set.
    """

    spec: registry.DatasetSpec
    preprocessor: Preprocessor
    split: Split
    x_labeled: np.ndarray
    y_labeled: np.ndarray
    x_unlabeled: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def image_shape(self):
        return tuple(self.x_labeled.shape[1:])

    @property
    def input_abs_max(self) -> float:
        return float(np.max(np.abs(self.x_labeled)))


def load_ssl_data(cfg, preprocessor: Optional[Preprocessor] = None,
                  needs: InputNeeds = InputNeeds()) -> SSLData:
    """Loads, preprocesses and splits the dataset named in ``cfg``.

    Args:
      cfg: a :class:`lvat_tf.config.Config`.
      preprocessor: a saved transform to reuse (evaluation of a finished run);
        when None it is made from ``needs`` (ZCA fitted on the training images
        for CIFAR-10 with vat scaling).
      needs: the method's input needs (default: vat_tf's VAT-type input).
    """
    spec = registry.get_spec(cfg.dataset)
    x_tr, y_tr, x_te, y_te = registry.load_arrays(spec, cfg.data_dir, cfg.tfds_download)
    try:
        # A config saved before --label_scheme existed has None: the dataset's scheme.
        split = make_split(y_tr, cfg.num_labeled_examples, spec.num_classes,
                           cfg.label_scheme or spec.label_scheme,
                           spec.validation_scheme, cfg.dataset_seed, cfg.validation,
                           cfg.num_valid_examples)
    except ValueError as e:
        raise DataError(f"--num_labeled_examples={cfg.num_labeled_examples}: {e} "
                        f"({cfg.dataset} has {len(y_tr)} training images)") from None
    if preprocessor is None:
        preprocessor = make_preprocessor(spec, needs, x_tr)
    x_all = preprocessor(x_tr)
    x_test = preprocessor(x_te)
    if cfg.validation:
        x_eval, y_eval = x_all[split.validation], y_tr[split.validation]
    else:
        x_eval, y_eval = x_test, y_te
    logging.info("%s: %d labeled, %d unlabeled, %d eval (%s), %d test; image %s", spec.name,
                 len(split.labeled), len(split.unlabeled), len(y_eval),
                 "validation" if cfg.validation else "test", len(y_te), x_all.shape[1:])
    x_unl = x_all if len(split.unlabeled) == len(x_all) else x_all[split.unlabeled]
    return SSLData(spec, preprocessor, split, x_all[split.labeled], y_tr[split.labeled], x_unl,
                   x_eval, y_eval, x_test, y_te)


def make_preprocessor(spec, needs: InputNeeds, x_train: Optional[np.ndarray] = None
                      ) -> Preprocessor:
    """The input transform of a run: the method's scaling, LVAT's padding, CIFAR-10's ZCA.

    Only vat_tf's CIFAR-10 preprocessing (ZCA) depends on the data; every
    other transform is fixed by the dataset and the method, so ``x_train`` may
    be None for them (checkpoint conversion without the data).

    Args:
      spec: the dataset's DatasetSpec.
      needs: the method's :class:`InputNeeds`.
      x_train: (N, H, W, C) uint8 training images, or None.

    Raises:
      DataError: ZCA is needed and ``x_train`` is None.
    """
    pad = 32 if needs.generative and max(spec.image_shape[:2]) < 32 else None
    fitted = needs_fitted_preprocessing(spec, needs)
    if fitted and x_train is None:
        raise DataError(f"--data_dir: {spec.name}'s ZCA whitening is fitted on the training "
                        "images; give --data_dir or --preprocessing_from")
    if not fitted:
        return Preprocessor(scaling=needs.scaling, pad_to=pad)
    return Preprocessor.fit(x_train, True, needs.scaling, pad)


def needs_fitted_preprocessing(spec, needs: InputNeeds) -> bool:
    """Whether the run's transform is fitted on data (vat_tf's CIFAR-10 ZCA, unless --nozca)."""
    return needs.zca and bool(spec.zca) and needs.scaling == "vat"


def model_input_shape(spec, preprocessor: Preprocessor):
    """(H, W, C) the classifier sees: the raw shape, padded when the transform pads."""
    h, w, c = spec.image_shape
    return (preprocessor.pad_to, preprocessor.pad_to, c) if preprocessor.pad_to else (h, w, c)


def stream_seed(seed: int, stream: int) -> tf.Tensor:
    """Shape-(2,) int64 stateless seed for one stream of a run."""
    return tf.random.experimental.stateless_fold_in(tf.constant([seed, 0], tf.int64), stream)


def shuffled_indices(positions: tf.Tensor, n: int, seed: tf.Tensor) -> tf.Tensor:
    """Index of the example at global stream positions (epoch = pos // n).

    Each epoch is a different stateless permutation of range(n).
    """
    positions = tf.cast(positions, tf.int64)
    epoch = positions // n
    b = tf.shape(positions)[0]
    seed = tf.cast(seed, tf.int64)
    seeds = tf.concat([tf.tile(seed[None, :], [b, 1]), epoch[:, None]], axis=1)
    return tf.raw_ops.RandomIndexShuffle(index=positions % n, seed=seeds,
                                         max_index=tf.fill([b], tf.constant(n - 1, tf.int64)))


def augment(x: tf.Tensor, seed: tf.Tensor, trans: bool, flip: bool) -> tf.Tensor:
    """vat_tf ``transform``: zero-pad 2 + random 32x32 crop; random h-flip (p = 0.5).

    Zero padding happens in model-input space (after scaling/ZCA), as upstream.
    Vectorised over the batch; per-example randomness from the stateless seed.

    Args:
      x: (B, H, W, C) float.
      seed: shape-(2,) stateless seed.
    """
    if trans:
        b, h, w = tf.shape(x)[0], x.shape[1], x.shape[2]
        off = tf.random.stateless_uniform([b, 2], seed=seed, minval=0, maxval=5, dtype=tf.int32)
        xp = tf.pad(x, [[0, 0], [2, 2], [2, 2], [0, 0]])
        xp = tf.gather(xp, off[:, 0:1] + tf.range(h)[None, :], axis=1, batch_dims=1)
        x = tf.gather(xp, off[:, 1:2] + tf.range(w)[None, :], axis=2, batch_dims=1)
    if flip:
        m = tf.random.stateless_uniform([tf.shape(x)[0]], seed=seed + 1) < 0.5
        x = tf.where(m[:, None, None, None], tf.reverse(x, axis=[2]), x)
    return x


def _stream_batch(x_all, y_all, step, batch_size, idx_seed, aug_seed, trans, flip):
    pos = step * batch_size + tf.range(batch_size, dtype=tf.int64)
    idx = shuffled_indices(pos, int(x_all.shape[0]), idx_seed)
    x = augment(tf.gather(x_all, idx), tf.random.experimental.stateless_fold_in(aug_seed, step),
                trans, flip)
    return x, (tf.gather(y_all, idx) if y_all is not None else None)


def train_dataset(data: SSLData, batch_size: int, ul_batch_size: int, seed: int,
                  start_step: int = 0, aug_trans: bool = False, aug_flip: bool = False,
                  with_unlabeled: bool = True) -> tf.data.Dataset:
    """Infinite dataset of dicts {x_l (B,H,W,C), y_l (B,), [x_u (U,H,W,C)]} from ``start_step``."""
    xl = tf.constant(data.x_labeled)
    yl = tf.constant(data.y_labeled)
    xu = tf.constant(data.x_unlabeled) if with_unlabeled else None
    s_l, s_u = stream_seed(seed, _LABELED), stream_seed(seed, _UNLABELED)
    a_l, a_u = stream_seed(seed, _AUG_L), stream_seed(seed, _AUG_U)

    def make(step):
        x_l, y_l = _stream_batch(xl, yl, step, batch_size, s_l, a_l, aug_trans, aug_flip)
        out = {"x_l": x_l, "y_l": y_l}
        if with_unlabeled:
            out["x_u"], _ = _stream_batch(xu, None, step, ul_batch_size, s_u, a_u, aug_trans,
                                          aug_flip)
        return out

    ds = tf.data.Dataset.range(start_step, np.iinfo(np.int64).max)
    return ds.map(make, num_parallel_calls=tf.data.AUTOTUNE,
                  deterministic=True).prefetch(tf.data.AUTOTUNE)


def finetune_dataset(data: SSLData, batch_size: int, seed: int, aug_trans=False,
                     aug_flip=False) -> tf.data.Dataset:
    """Labeled batches for BN re-estimation (vat_tf test.py), deterministic."""
    xl, yl = tf.constant(data.x_labeled), tf.constant(data.y_labeled)
    s, a = stream_seed(seed, _FINETUNE), stream_seed(seed, _FINETUNE + 100)
    return tf.data.Dataset.range(0, np.iinfo(np.int64).max).map(
        lambda t: _stream_batch(xl, yl, t, batch_size, s, a, aug_trans, aug_flip)[0])


def eval_dataset(x: np.ndarray, y: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Batches (x, y) in order, the last one smaller (test.py's allow_smaller_final_batch)."""
    xt, yt = tf.constant(x), tf.constant(y)
    n = len(x)
    return tf.data.Dataset.range(0, n, batch_size).map(
        lambda i: (xt[i:tf.minimum(i + batch_size, n)], yt[i:tf.minimum(i + batch_size, n)])
    ).prefetch(tf.data.AUTOTUNE)


def eval_subset(data: SSLData, num: int, seed: int):
    """A fixed random subset of the eval set for periodic evaluation (upstream: 5000)."""
    n = len(data.y_eval)
    if num >= n:
        return data.x_eval, data.y_eval
    idx = np.sort(np.random.RandomState(seed).permutation(n)[:num])
    return data.x_eval[idx], data.y_eval[idx]
