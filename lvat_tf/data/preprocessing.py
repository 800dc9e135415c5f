"""vat_tf preprocessing: scaling to [-0.5, 0.5] and CIFAR-10's ZCA whitening.

The ZCA state (mean, W) is fitted once on the training images and saved with
the run (``LOG_DIR/preprocessing.npz``) so that evaluation and export reuse
exactly the same transform.
"""
import os

import numpy as np

from lvat_tf.data import DataError

ZCA_REG = 1e-6  # vat_tf dataset_utils.ZCA


def scale(x_uint8: np.ndarray) -> np.ndarray:
    """vat_tf scaling (x - 127.5) / 255 -> [-0.5, 0.5], float32."""
    return ((np.asarray(x_uint8, np.float32) - 127.5) / 255.0).astype(np.float32)


def fit_zca(x: np.ndarray, reg: float = ZCA_REG):
    """Fits upstream's ZCA on scaled images (N, H, W, C).

    Upstream formula (vat_tf ``dataset_utils.ZCA``): mean over samples,
    Sigma = Xc^T Xc / N, U S V = svd(Sigma), W = U diag(1/sqrt(S) + reg) U^T —
    the reg is added *after* the inverse square root, as upstream does.
    Deliberate deviations: computed in float64 (upstream: float32), and on
    HWC-flattened vectors (upstream: CHW); ZCA is permutation-equivariant so
    the whitened pixels agree up to rounding.

    Returns:
      (mean (D,), W (D, D)) float32, D = H*W*C.
    """
    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    mean = flat.mean(axis=0)
    flat -= mean
    sigma = flat.T @ flat / len(flat)
    u, s, _ = np.linalg.svd(sigma)
    w = (u * (1.0 / np.sqrt(s) + reg)) @ u.T
    return mean.astype(np.float32), w.astype(np.float32)


def apply_zca(x: np.ndarray, mean: np.ndarray, w: np.ndarray, chunk: int = 5000) -> np.ndarray:
    """x_white = (x - mean) W^T, per sample; x (N, H, W, C) float32."""
    out = np.empty(x.shape, np.float32)
    flat_out = out.reshape(len(x), -1)
    for i in range(0, len(x), chunk):
        flat_out[i:i + chunk] = (x[i:i + chunk].reshape(-1, mean.size) - mean) @ w.T
    return out


class Preprocessor:
    """The run's input transform: uint8 images -> model input space."""

    def __init__(self, zca_mean=None, zca_w=None):
        self.zca_mean, self.zca_w = zca_mean, zca_w

    @property
    def uses_zca(self):
        return self.zca_mean is not None

    def __call__(self, x_uint8: np.ndarray) -> np.ndarray:
        x = scale(x_uint8)
        return apply_zca(x, self.zca_mean, self.zca_w) if self.uses_zca else x

    @classmethod
    def fit(cls, x_train_uint8: np.ndarray, zca: bool) -> "Preprocessor":
        if not zca:
            return cls()
        return cls(*fit_zca(scale(x_train_uint8)))

    def save(self, path: str) -> None:
        tmp = path + ".tmp.npz"
        if self.uses_zca:
            np.savez(tmp, kind="zca", zca_mean=self.zca_mean, zca_w=self.zca_w)
        else:
            np.savez(tmp, kind="scale")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> "Preprocessor":
        try:
            with np.load(path) as f:
                if str(f["kind"]) == "zca":
                    return cls(f["zca_mean"], f["zca_w"])
                return cls()
        except (OSError, KeyError, ValueError) as e:
            raise DataError(f"{path}: cannot read the run's preprocessing state ({e})") from None
