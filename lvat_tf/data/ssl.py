"""Labeled / unlabeled / validation splits, reproducible from ``dataset_seed``.

* ``balanced`` (vat_tf cifar10.py ``prepare_dataset``): rng =
  RandomState(dataset_seed); perm = rng.permutation(N); for class k = 0..K-1
  take the first n/K indices of class k in perm order; then shuffle the
  labeled set with rng.permutation(n). Used for CIFAR-10, MNIST,
  Fashion-MNIST and digits (MNIST-100 = 10 per class, as the VAT papers).
  Deviation: vat_tf's CIFAR-10 script first applies an *unseeded*
  permutation to the training set, so its labeled subset is not
  reproducible; we omit it.
* ``random`` (vat_tf svhn.py): labeled = perm[:n].
* ``per_class`` (ours; the draw of ``../shared/tools/minimal_vat_mlp.py``, the
  issue's independent instrument): a fresh RandomState(dataset_seed) permutes
  each class's indices in turn, k = 0..K-1, and keeps the first n/K; the
  labeled set stays in class order (the labeled stream is reshuffled every
  epoch anyway). Lets the port train on exactly the instrument's subset
  (dataset_seed 1), so that the two implementations differ in nothing else.
* Validation ``from_labeled`` (cifar10.py): validation = labeled[:num_valid],
  labeled-train = labeled[num_valid:]. ``from_pool`` (svhn.py): validation =
  the next num_valid of the permuted pool without the labeled ones.
* ``num_labeled`` = the training-set size (supervised): all of it, permuted.
* Unlabeled = the whole training set (labeled examples included), minus the
  validation examples in validation mode — as upstream.
"""
import dataclasses

import numpy as np

#: Ways to draw the labeled subset (``--label_scheme``; default: the dataset's).
LABEL_SCHEMES = ("balanced", "random", "per_class")


@dataclasses.dataclass(frozen=True)
class Split:
    """Indices into the training set. All int64 arrays."""

    labeled: np.ndarray
    unlabeled: np.ndarray
    validation: np.ndarray


def _pool_without(perm: np.ndarray, labeled: np.ndarray) -> np.ndarray:
    """The permutation ``perm`` with the labeled indices removed, order kept."""
    taken = np.zeros(len(perm), bool)
    taken[labeled] = True
    return perm[~taken[perm]]


def make_split(y_train: np.ndarray, num_labeled: int, num_classes: int, label_scheme: str,
               validation_scheme: str, dataset_seed: int, validation: bool = False,
               num_valid: int = 1000) -> Split:
    n = len(y_train)
    rng = np.random.RandomState(dataset_seed)
    perm = rng.permutation(n)
    if num_labeled > n:
        raise ValueError(f"more labels asked for than training images ({n})")
    if num_labeled == n:
        # Supervised: every training image labeled, in the seeded order (the
        # balanced scheme cannot take n/K per class from unbalanced classes).
        labeled, pool = perm, perm[:0]
    elif label_scheme == "balanced":
        per_class = num_labeled // num_classes
        y_perm = y_train[perm]
        chosen = []
        for k in range(num_classes):
            idx = np.where(y_perm == k)[0][:per_class]
            if len(idx) < per_class:
                raise ValueError(f"class {k} has only {len(idx)} examples, {per_class} needed")
            chosen.append(perm[idx])
        labeled = np.concatenate(chosen)
        labeled = labeled[rng.permutation(len(labeled))]
        pool = _pool_without(perm, labeled)
    elif label_scheme == "per_class":
        per_class = num_labeled // num_classes
        # A fresh generator: the draw must not depend on `perm` having been drawn first.
        class_rng = np.random.RandomState(dataset_seed)
        chosen = []
        for k in range(num_classes):
            members = np.where(y_train == k)[0]
            if len(members) < per_class:
                raise ValueError(f"class {k} has only {len(members)} examples, {per_class} needed")
            chosen.append(class_rng.permutation(members)[:per_class])
        labeled = np.concatenate(chosen)
        pool = _pool_without(perm, labeled)
    elif label_scheme == "random":
        labeled, pool = perm[:num_labeled], perm[num_labeled:]
    else:
        raise ValueError(f"unknown label scheme {label_scheme!r}")
    valid = np.zeros(0, np.int64)
    if validation:
        if validation_scheme == "from_labeled":
            valid, labeled = labeled[:num_valid], labeled[num_valid:]
        else:
            valid = pool[:num_valid]
    keep = np.ones(n, bool)
    keep[valid] = False
    unlabeled = np.arange(n)[keep]
    return Split(labeled.astype(np.int64), unlabeled.astype(np.int64), valid.astype(np.int64))
