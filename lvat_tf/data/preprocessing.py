"""vat_tf preprocessing: scaling to [-0.5, 0.5] and CIFAR-10's ZCA whitening.

The ZCA state (mean, W) is fitted once on the training images and saved with
the run (``LOG_DIR/preprocessing.npz``) so that evaluation and export reuse
exactly the same transform.
"""
import os

import numpy as np

from lvat_tf.data import DataError

ZCA_REG = 1e-6  # vat_tf dataset_utils.ZCA
#: preprocessing.npz format written by this version (files without the key are 1).
FORMAT_VERSION = 1


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
    # Sigma is symmetric positive semi-definite, so its SVD is its eigendecomposition with
    # s = |lambda| (U differs only by signs and by the basis inside repeated eigenvalues,
    # which U f(S) U^T does not see): eigh gives upstream's W 2-3x faster than svd on
    # CIFAR-10's 3,072 x 3,072 Sigma (about 11 s against 26 s on 2 cores).
    lam, u = np.linalg.eigh(sigma)
    s = np.abs(lam)
    w = (u * (1.0 / np.sqrt(s) + reg)) @ u.T
    return mean.astype(np.float32), w.astype(np.float32)


def apply_zca(x: np.ndarray, mean: np.ndarray, w: np.ndarray, chunk: int = 5000) -> np.ndarray:
    """x_white = (x - mean) W^T, per sample; x (N, H, W, C) float32."""
    out = np.empty(x.shape, np.float32)
    flat_out = out.reshape(len(x), -1)
    for i in range(0, len(x), chunk):
        flat_out[i:i + chunk] = (x[i:i + chunk].reshape(-1, mean.size) - mean) @ w.T
    return out


SCALINGS = ("vat", "unit")


def pad_images(x: np.ndarray, size: int) -> np.ndarray:
    """Zero-pads (N, H, W, C) images symmetrically to (N, size, size, C)."""
    h, w = x.shape[1:3]
    if h > size or w > size:
        raise ValueError(f"images of {h}x{w} are larger than the padded size {size}")
    top, left = (size - h) // 2, (size - w) // 2
    return np.pad(x, ((0, 0), (top, size - h - top), (left, size - w - left), (0, 0)))


class Preprocessor:
    """The run's input transform: uint8 images -> model input space.

    Args:
      scaling: ``vat`` = (x - 127.5) / 255 (vat_tf), ``unit`` = x / 255 (LVAT:
        its generative models need [0, 1]).
      pad_to: zero-pad (black) images to this square size first (LVAT's VAE
        and Glow are built for 32x32; MNIST's 28x28 gets 2 px per side).
      zca_mean, zca_w: the fitted ZCA (CIFAR-10 with vat scaling), or None.
    """

    def __init__(self, zca_mean=None, zca_w=None, scaling="vat", pad_to=None):
        if scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
        self.zca_mean, self.zca_w = zca_mean, zca_w
        self.scaling, self.pad_to = scaling, pad_to

    @property
    def uses_zca(self):
        return self.zca_mean is not None

    def _scale(self, x_uint8):
        if self.pad_to:
            x_uint8 = pad_images(np.asarray(x_uint8), self.pad_to)
        if self.scaling == "unit":
            return (np.asarray(x_uint8, np.float32) / 255.0).astype(np.float32)
        return scale(x_uint8)

    def __call__(self, x_uint8: np.ndarray) -> np.ndarray:
        x = self._scale(x_uint8)
        return apply_zca(x, self.zca_mean, self.zca_w) if self.uses_zca else x

    @classmethod
    def fit(cls, x_train_uint8: np.ndarray, zca: bool, scaling: str = "vat",
            pad_to=None) -> "Preprocessor":
        """ZCA is part of vat_tf's CIFAR-10 preprocessing only (LVAT: none)."""
        p = cls(scaling=scaling, pad_to=pad_to)
        if zca and scaling == "vat":
            p.zca_mean, p.zca_w = fit_zca(p._scale(x_train_uint8))
        return p

    def describe(self) -> dict:
        return {"scaling": self.scaling, "pad_to": self.pad_to, "zca": self.uses_zca}

    def save(self, path: str) -> None:
        tmp = path + ".tmp.npz"
        extra = {"zca_mean": self.zca_mean, "zca_w": self.zca_w} if self.uses_zca else {}
        np.savez(tmp, kind="zca" if self.uses_zca else "scale", scaling=self.scaling,
                 pad_to=self.pad_to or 0, format_version=FORMAT_VERSION, **extra)
        os.replace(tmp, path)

    @classmethod
    def from_file(cls, path: str, image_shape) -> "Preprocessor":
        """A ZCA transform from a file (``--preprocessing_from``).

        Accepts a run's ``preprocessing.npz``, an .npz with upstream's arrays
        ``mean`` (D,) and ``components`` (D, D) (vat_tf cifar10.py saves them
        as ``mean.npy`` / ``components.npy``), or a directory holding those two
        .npy files. Upstream's arrays are in CHW-flattened order; they are
        permuted to ours (HWC), which whitens every image identically.
        """
        h, w, c = image_shape
        if os.path.isdir(path):
            try:
                mean = np.load(os.path.join(path, "mean.npy"))
                comp = np.load(os.path.join(path, "components.npy"))
            except (OSError, ValueError) as e:
                raise DataError(f"--preprocessing_from: {path} holds no readable mean.npy and "
                                f"components.npy ({type(e).__name__})") from None
        else:
            try:
                with np.load(path) as f:
                    files = set(f.files)
                    upstream = {"mean", "components"} <= files
                    if upstream:
                        mean, comp = f["mean"], f["components"]
            except Exception as e:  # not an npz
                raise DataError(f"--preprocessing_from: {path} is not an .npz file "
                                f"({type(e).__name__})") from None
            if not upstream:
                p = cls.load(path)
                if not p.uses_zca:
                    raise DataError(f"--preprocessing_from: {path} holds no ZCA (kind 'scale')")
                if p.zca_mean.size != h * w * c:
                    raise DataError(f"--preprocessing_from: {path}: ZCA of {p.zca_mean.size} "
                                    f"dimensions, images have {h * w * c}")
                return p
        d = h * w * c
        mean, comp = np.asarray(mean, np.float32).reshape(-1), np.asarray(comp, np.float32)
        if mean.size != d or comp.shape != (d, d):
            raise DataError(f"--preprocessing_from: {path}: expected mean ({d},) and components "
                            f"({d}, {d}), got {mean.shape} and {comp.shape}")
        # perm[i] = HWC index of CHW element i.
        perm = np.arange(d).reshape(h, w, c).transpose(2, 0, 1).reshape(-1)
        m_hwc = np.empty_like(mean)
        m_hwc[perm] = mean
        w_hwc = np.empty_like(comp)
        w_hwc[np.ix_(perm, perm)] = comp
        return cls(m_hwc, w_hwc, scaling="vat")

    @classmethod
    def load(cls, path: str) -> "Preprocessor":
        try:
            with np.load(path) as f:
                version = int(f["format_version"]) if "format_version" in f.files else 1
                if version > FORMAT_VERSION:
                    raise DataError(f"{path}: written by a newer lvat_tf (preprocessing format "
                                    f"{version}; this version reads up to {FORMAT_VERSION})")
                kind = str(f["kind"])
                if kind not in ("zca", "scale"):
                    raise DataError(f"{path}: unknown preprocessing kind {kind!r}")
                scaling = str(f["scaling"]) if "scaling" in f.files else "vat"
                pad_to = int(f["pad_to"]) if "pad_to" in f.files else 0
                zca = (f["zca_mean"], f["zca_w"]) if kind == "zca" else (None, None)
                if kind == "zca" and (zca[0].ndim != 1 or zca[1].shape != (zca[0].size,) * 2):
                    raise DataError(f"{path}: ZCA mean {zca[0].shape} and matrix "
                                    f"{zca[1].shape} do not fit")
                return cls(*zca, scaling=scaling, pad_to=pad_to or None)
        except DataError:
            raise
        except Exception as e:  # zipfile / pickle / numpy errors of a corrupt file
            raise DataError(f"{path}: cannot read the run's preprocessing state "
                            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                            ) from None
