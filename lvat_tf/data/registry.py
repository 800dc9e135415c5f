"""The dataset registry: ``--dataset`` name -> :class:`DatasetSpec`.

Loading order for the file-based datasets: canonical raw files in
``--data_dir`` (no network), else tensorflow-datasets (a prepared tfds
directory under ``data_dir``, or a download when the network allows it).
"""
import dataclasses
import os
import time
from typing import Callable, Dict, Optional, Tuple

import numpy as np
from absl import logging

from lvat_tf.data import DataError, network, raw

Arrays = Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


#: Training budget upstream's flags give (--num_epochs 120, --epoch_decay_start
#: 80, --num_iter_per_epoch 400), for datasets without their own.
UPSTREAM_BUDGET = {"num_epochs": 120, "epoch_decay_start": 80, "num_iter_per_epoch": 400}
#: vat_tf vat.py's --epsilon flag default, for (dataset, method) pairs without a value.
VAT_EPSILON_FLAG_DEFAULT = 8.0


@dataclasses.dataclass(frozen=True)
class DatasetDefaults:
    """Defaults that depend on the dataset: their one source of truth.

    ``lvat_tf.config.make_config`` applies them when the flag is not given
    (and logs each); the reason for every value is written at its dataset.

    Attributes:
      num_labeled: --num_labeled_examples.
      data_dir: --data_dir (None: embedded data, no files).
      model: --model.
      vat_epsilon: input-space --epsilon (VAT, VAT+Ent) without / with
        augmentation.
      glow: the Glow train.py trains for LVAT-Glow (num_levels, num_steps,
        width) and its --glow_train_steps (0 = upstream's schedule).
      vae_epochs: --vae_num_epochs (the VAE train.py trains for LVAT-VAE).
      vae_widths: that VAE's encoder widths.
      budget: --num_epochs / --epoch_decay_start / --num_iter_per_epoch when
        not given (None: upstream's flag defaults, UPSTREAM_BUDGET).
    """

    num_labeled: int
    data_dir: Optional[str]
    model: str
    vat_epsilon: Tuple[float, float] = (VAT_EPSILON_FLAG_DEFAULT, VAT_EPSILON_FLAG_DEFAULT)
    glow: Tuple[Tuple[str, int], ...] = (("num_levels", 3), ("num_steps", 22), ("width", 128),
                                         ("train_steps", 0))
    vae_epochs: int = 10
    vae_widths: Tuple[int, int, int] = (128, 256, 512)
    budget: Optional[Tuple[Tuple[str, int], ...]] = None

    def glow_layout(self) -> dict:
        """{num_levels, num_steps, width, train_steps} of the Glow train.py trains."""
        return dict(self.glow)

    def budget_fields(self) -> dict:
        """The dataset's own training budget ({} = upstream's flag defaults)."""
        return dict(self.budget or ())


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What the rest of the code needs to know about a dataset.

    Attributes:
      name: the ``--dataset`` value.
      image_shape: (H, W, C) of one image.
      num_classes: number of classes.
      num_train, num_test: split sizes.
      label_scheme: ``balanced`` (N/K per class, vat_tf cifar10.py) or
        ``random`` (first N of a permutation, vat_tf svhn.py).
      validation_scheme: ``from_labeled`` (validation = first
        num_valid_examples of the shuffled labeled set, vat_tf cifar10.py) or
        ``from_pool`` (the next num_valid_examples of the permuted
        non-labeled pool, vat_tf svhn.py).
      zca: whether the vat_tf preprocessing includes ZCA whitening.
      raw_files: description of the canonical files, for error messages.
      has_raw: ``has_raw(data_dir) -> bool``.
      load_raw: ``load_raw(data_dir) -> Arrays``.
      tfds_name: tensorflow-datasets name, or None.
      needs_files: False for embedded/synthetic datasets.
      loader: ``loader() -> Arrays`` for embedded/synthetic datasets.
      defaults: the dataset's :class:`DatasetDefaults`.
    """

    name: str
    image_shape: Tuple[int, int, int]
    num_classes: int
    num_train: int
    num_test: int
    label_scheme: str
    validation_scheme: str
    zca: bool = False
    raw_files: str = ""
    has_raw: Optional[Callable[[str], bool]] = None
    load_raw: Optional[Callable[[str], Arrays]] = None
    tfds_name: Optional[str] = None
    needs_files: bool = True
    loader: Optional[Callable[[], Arrays]] = None
    defaults: Optional[DatasetDefaults] = None


_SPECS: Dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    _SPECS[spec.name] = spec
    return spec


def names():
    return sorted(_SPECS)


def get_spec(name: str) -> DatasetSpec:
    if name not in _SPECS:
        raise DataError(f"--dataset: unknown dataset {name!r}; expected one of "
                        + "|".join(names()))
    return _SPECS[name]


def _to_arrays(ds):
    """A finite (image, label) tf.data.Dataset -> two stacked numpy arrays."""
    xs, ys = [], []
    for x, y in ds.batch(4096).as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def _load_tfds(spec: DatasetSpec, data_dir: Optional[str], download: bool) -> Arrays:
    import tensorflow_datasets as tfds

    tfds_dir = os.path.join(data_dir, "tfds") if data_dir else None
    builder = tfds.builder(spec.tfds_name, data_dir=tfds_dir)
    prepared = os.path.isdir(builder.data_dir) and bool(os.listdir(builder.data_dir))
    if not prepared and not download:
        raise DataError(f"--data_dir: {data_dir!r} holds neither the canonical {spec.name} files "
                        f"({spec.raw_files}) nor a prepared tfds '{spec.tfds_name}' dataset, and "
                        "--tfds_download is off")
    if not prepared:
        hosts = network.DOWNLOAD_HOSTS.get(spec.tfds_name, ("storage.googleapis.com",))
        t0 = time.monotonic()
        if network.first_reachable(hosts) is None:
            raise DataError(f"--data_dir: {data_dir!r} holds neither the canonical {spec.name} "
                            f"files ({spec.raw_files}) nor a prepared tfds '{spec.tfds_name}' "
                            f"dataset, and tensorflow-datasets cannot download it: no network "
                            f"({', '.join(hosts)} unreachable, probed for "
                            f"{time.monotonic() - t0:.1f} s)")
    logging.info("Loading %s through tensorflow-datasets (%s, data_dir=%s, download=%s)",
                 spec.name, spec.tfds_name, tfds_dir, download and not prepared)
    try:
        loaded = tfds.load(spec.tfds_name, split=["train", "test"], as_supervised=True,
                           data_dir=tfds_dir, download=download, shuffle_files=False)
        splits = [_to_arrays(ds) for ds in loaded]
    except Exception as e:  # network errors, partial downloads, missing tfds dirs
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"--data_dir: no canonical {spec.name} files in {data_dir!r} "
                        f"({spec.raw_files}) and tensorflow-datasets could not provide "
                        f"'{spec.tfds_name}': {msg}") from None
    (x_tr, y_tr), (x_te, y_te) = splits
    x_tr, x_te = np.asarray(x_tr, np.uint8), np.asarray(x_te, np.uint8)
    if x_tr.ndim == 3:
        x_tr, x_te = x_tr[..., None], x_te[..., None]
    return x_tr, np.asarray(y_tr, np.int64), x_te, np.asarray(y_te, np.int64)


def load_arrays(spec: DatasetSpec, data_dir: Optional[str], tfds_download: bool = True) -> Arrays:
    """Loads ``(x_train uint8 NHWC, y_train, x_test, y_test)`` for a dataset."""
    if spec.loader is not None:
        arrays = spec.loader()
    elif data_dir and os.path.exists(data_dir) and not os.path.isdir(data_dir):
        # Checked here, where the files are opened (Config.validate touches no files).
        raise DataError(f"--data_dir: {data_dir} is not a directory")
    elif data_dir and spec.has_raw(data_dir):
        logging.info("Loading %s from the canonical files in %s", spec.name, data_dir)
        arrays = spec.load_raw(data_dir)
    elif spec.tfds_name:
        arrays = _load_tfds(spec, data_dir, tfds_download)
    else:
        raise DataError(f"--data_dir: {data_dir!r} does not hold the {spec.name} files "
                        f"({spec.raw_files})")
    x_tr, y_tr, x_te, y_te = arrays
    if tuple(x_tr.shape[1:]) != spec.image_shape or tuple(x_te.shape[1:]) != spec.image_shape:
        raise DataError(f"--data_dir: {spec.name} images should be {spec.image_shape}, got "
                        f"{x_tr.shape[1:]} / {x_te.shape[1:]}")
    for y, split in ((y_tr, "train"), (y_te, "test")):
        if y.min() < 0 or y.max() >= spec.num_classes:
            raise DataError(f"--data_dir: {spec.name} {split} labels outside [0, "
                            f"{spec.num_classes})")
    return arrays


# --------------------------------------------------------------------------
# Embedded and synthetic data
# --------------------------------------------------------------------------
DIGITS_NUM_TEST = 497


def load_digits() -> Arrays:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 real images).

    Pixel values 0..16 are mapped to 0..255 (v * 255 / 16, rounded) so the
    vat_tf scaling (x - 127.5) / 255 applies unchanged. The file order is
    kept; the first 1,300 images are the training set and the last 497 the
    test set (a fixed split: sklearn ships none).
    """
    from sklearn.datasets import load_digits as _load

    d = _load()
    x = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    y = d.target.astype(np.int64)
    n_tr = len(x) - DIGITS_NUM_TEST
    return x[:n_tr], y[:n_tr], x[n_tr:], y[n_tr:]


def load_synthetic(num_train=600, num_test=200, shape=(16, 16, 3), seed=0) -> Arrays:
    """Test-only: 10 learnable classes of noisy class-specific patterns."""
    rng = np.random.RandomState(seed)
    protos = rng.uniform(0, 255, size=(10,) + shape)

    def make(n):
        y = np.arange(n) % 10
        rng.shuffle(y)
        x = 0.6 * protos[y] + 0.4 * rng.uniform(0, 255, size=(n,) + shape)
        return np.clip(np.rint(x), 0, 255).astype(np.uint8), y.astype(np.int64)

    x_tr, y_tr = make(num_train)
    x_te, y_te = make(num_test)
    return x_tr, y_tr, x_te, y_te


_MNIST_FILES = ", ".join(raw.MNIST_FILES)
# Why each default (see DatasetDefaults):
# - num_labeled: vat_tf's cifar10.py (4000) and svhn.py (1000); the VAT paper's
#   MNIST-100 for mnist/fashion_mnist; 100 (10 per class) for digits.
# - data_dir: vat_tf's /tmp/<dataset> pattern; digits/synthetic are embedded.
# - model: upstream had only Conv-Large; the VAT paper's MLP for the grey-scale sets.
# - vat_epsilon: CIFAR-10 / SVHN from the vat_tf README commands (= VAT/LVAT
#   papers); MNIST 5.0 the VAT authors' MNIST-100 recipe (fashion_mnist reuses
#   it, no published value); digits (8x8 = 64 dims) scales MNIST's per-pixel
#   budget, 5.0 * sqrt(64 / 784) ~= 1.5.
# - glow: upstream's layout (L=3, K=22, width 128) and schedule for SVHN/CIFAR-10;
#   smaller flows and budgets measured to fit a 2-core CPU for the small sets.
# - vae_epochs / vae_widths: the paper's 300 epochs and LVAT Table 2's widths for
#   SVHN/CIFAR-10; a quarter of the widths and scaled epochs on the small
#   grey-scale sets (MNIST ~15 CPU-minutes, digits ~1 minute).
# - budget: digits gets 5 x 300 = 1,500 updates, no decay, so that the bare
#   ``train.py --dataset=digits --method=M`` ends within about 10 minutes on 2
#   CPU cores for every method, generative-model training included (estimated
#   from measured step times; slowest: LVAT-Glow, 165 s of Glow training +
#   1,500 x 250 ms, docs/data.md "Offline use"); no decay phase, which raised the
#   MNIST-100 error in both the port and the minimal instrument (docs/results.md).
_SMALL_GLOW = (("num_levels", 3), ("num_steps", 4), ("width", 32), ("train_steps", 1500))
_MNIST_DEFAULTS = dict(num_labeled=100, model="mlp", vat_epsilon=(5.0, 5.0), glow=_SMALL_GLOW,
                       vae_epochs=10, vae_widths=(32, 64, 128))
register(DatasetSpec("mnist", (28, 28, 1), 10, 60000, 10000, "balanced", "from_pool",
                     raw_files=_MNIST_FILES, has_raw=raw.has_mnist_files,
                     load_raw=raw.load_mnist_dir, tfds_name="mnist",
                     defaults=DatasetDefaults(data_dir="/tmp/mnist", **_MNIST_DEFAULTS)))
register(DatasetSpec("fashion_mnist", (28, 28, 1), 10, 60000, 10000, "balanced", "from_pool",
                     raw_files=_MNIST_FILES, has_raw=raw.has_mnist_files,
                     load_raw=raw.load_mnist_dir, tfds_name="fashion_mnist",
                     defaults=DatasetDefaults(data_dir="/tmp/fashion_mnist", **_MNIST_DEFAULTS)))
register(DatasetSpec("svhn", (32, 32, 3), 10, 73257, 26032, "random", "from_pool",
                     raw_files=", ".join(raw.SVHN_FILES), has_raw=raw.has_svhn_files,
                     load_raw=raw.load_svhn_dir, tfds_name="svhn_cropped",
                     defaults=DatasetDefaults(num_labeled=1000, data_dir="/tmp/svhn",
                                              model="conv_large", vat_epsilon=(2.5, 3.5),
                                              vae_epochs=300)))
register(DatasetSpec("cifar10", (32, 32, 3), 10, 50000, 10000, "balanced", "from_labeled",
                     zca=True, raw_files=f"{raw.CIFAR10_DIR}/ or {raw.CIFAR10_TAR}",
                     has_raw=raw.has_cifar10_files, load_raw=raw.load_cifar10_dir,
                     tfds_name="cifar10",
                     defaults=DatasetDefaults(num_labeled=4000, data_dir="/tmp/cifar10",
                                              model="conv_large", vat_epsilon=(10.0, 8.0),
                                              vae_epochs=300)))
register(DatasetSpec("digits", (8, 8, 1), 10, 1797 - DIGITS_NUM_TEST, DIGITS_NUM_TEST,
                     "balanced", "from_pool", needs_files=False, loader=load_digits,
                     defaults=DatasetDefaults(
                         num_labeled=100, data_dir=None, model="mlp", vat_epsilon=(1.5, 1.5),
                         glow=_SMALL_GLOW[:3] + (("train_steps", 300),), vae_epochs=30,
                         vae_widths=(32, 64, 128),
                         budget=(("num_epochs", 5), ("epoch_decay_start", 5),
                                 ("num_iter_per_epoch", 300)))))
register(DatasetSpec("synthetic", (16, 16, 3), 10, 600, 200, "balanced", "from_pool",
                     needs_files=False, loader=load_synthetic,
                     defaults=DatasetDefaults(
                         num_labeled=20, data_dir=None, model="tiny_cnn",
                         glow=(("num_levels", 2), ("num_steps", 2), ("width", 8),
                               ("train_steps", 8)),
                         vae_epochs=2, vae_widths=(8, 16, 32))))
