"""Saved generative-model directories: weights + a JSON record of what they were trained on.

Layout of ``--generative_model_dir``::

    generative.json   kind, dataset, image_shape, preprocessing, architecture, training
    model.weights.h5  Keras weights

LVAT refuses a directory whose dataset, image shape or preprocessing differs
from the classifier run's.
"""
import json
import os

import tensorflow as tf

from lvat_tf import files
from lvat_tf.precision import MIXED_POLICY, dtype_policy

from lvat_tf.generative.glow import Glow
from lvat_tf.generative.vae import VAE

META = "generative.json"
#: generative.json format written by this version (files without the key are 1).
FORMAT_VERSION = 1
WEIGHTS = "model.weights.h5"


class GenerativeModelError(ValueError):
    """A missing, broken or mismatched generative-model directory (one line)."""


def summary_line(model_dir: str, meta: dict) -> str:
    """One line for the end of a training script: where, how long, the last test metric."""
    t, last = meta["training"], meta["training"]["history"][-1]
    if meta["kind"] == "vae":
        metric = f"test reconstruction (Bernoulli, nats/image) {last['test_rec']:.2f}"
    else:
        metric = (f"test bits/dim {last['test_bits_per_dim']:.3f}, train loss per pixel "
                  f"{last['loss_per_pixel']:.4f} nats")
    name = {"vae": "VAE", "glow": "Glow"}[meta["kind"]]
    return f"{name} saved to {model_dir}: {t['steps']} steps in {t['seconds']} s, {metric}"


def build(kind: str, arch: dict, image_shape):
    """A fresh model of the recorded kind and architecture."""
    if kind == "vae":
        return VAE(latent_dim=arch["latent_dim"], channels=image_shape[-1], widths=arch["widths"])
    if kind == "glow":
        return Glow(image_shape=image_shape, **arch)
    raise GenerativeModelError(f"--generative_model_dir: unknown generative model kind {kind!r}")


def materialise(model, image_shape) -> None:
    """Creates a fresh model's variables for (H, W, C) images, so that weights can be loaded."""
    if isinstance(model, Glow):
        # Glow creates its variables from the shapes alone; a forward + inverse pass of an
        # eager TFP flow (the upstream-size one: ~14 s here) would only build them.
        model.build((None,) + tuple(image_shape))
    else:
        model(tf.zeros((1,) + tuple(image_shape)))


#: Generative models whose decoder may run in bfloat16 (``--generative_dtype=bfloat16``),
#: measured with docs/measurements/generative_bf16.py (docs/results.md 'LVAT's decoder
#: in bfloat16'): the VAE's bfloat16 decodes keep LVAT's direction (cosine 0.996 to
#: float32 decoding) and term (1.6 % per image) as closely as the bfloat16 classifier
#: itself does; the Glow's inverse flow in bfloat16 does not (cosine 0.58; x_adv moved
#: by 1.9 of the 2.3 that r moves it), so a Glow always decodes in float32.
BFLOAT16_DECODERS = ("vae",)


def compute_copy(model, image_shape, policy: str):
    """The same frozen model, its layers computing under the Keras dtype ``policy``.

    The weights are copied (they stay float32 variables; a mixed policy casts them
    where they are used). LVAT uses it to run the decoder in bfloat16
    (``--generative_dtype=bfloat16``) while the encoder stays float32.

    Args:
      model: a built VAE or Glow.
      image_shape: (H, W, C) of its input images.
      policy: a Keras dtype policy name, e.g. ``precision.MIXED_POLICY``.
    """
    cfg = model.get_config()
    # The saved config names the original's own policy; the copy takes ``policy``.
    cfg.pop("dtype", None)
    with dtype_policy(policy):
        copy = type(model).from_config(cfg)
        materialise(copy, image_shape)
    copy.set_weights(model.get_weights())
    copy.trainable = False
    return copy


def decoder_for(model, image_shape, dtype: str):
    """The model LVAT decodes with for ``--generative_dtype``: None for float32 (the model
    itself), a :func:`compute_copy` under the mixed bfloat16 policy for bfloat16."""
    if model is None or dtype == "float32":
        return None
    if dtype != "bfloat16":
        raise ValueError(f"--generative_dtype: expected float32|bfloat16, got {dtype!r}")
    return compute_copy(model, image_shape, MIXED_POLICY)


def write_json(path: str, obj) -> None:
    """Writes JSON atomically (lvat_tf.files)."""
    files.write_json_atomic(path, obj)


def read_json(path: str, default=None):
    if not os.path.isfile(path):
        return default
    with open(path) as f:
        return json.load(f)


def save(model_dir: str, model, meta: dict) -> None:
    """Writes weights then metadata, each atomically (a crash leaves the old pair)."""
    os.makedirs(model_dir, exist_ok=True)
    tmp = os.path.join(model_dir, "tmp." + WEIGHTS)
    model.save_weights(tmp)
    os.replace(tmp, os.path.join(model_dir, WEIGHTS))
    write_json(os.path.join(model_dir, META), dict(meta, format_version=FORMAT_VERSION))


def load(model_dir: str, expect: dict = None):
    """Loads (model, meta); ``expect`` keys (dataset, image_shape, preprocessing) must match."""
    if os.path.islink(model_dir.rstrip("/")):
        raise GenerativeModelError(f"--generative_model_dir: {model_dir} is a symbolic link; "
                                   "give the real directory")
    if not os.path.isdir(model_dir):
        raise GenerativeModelError(f"--generative_model_dir: {model_dir} is not a directory")
    meta_path = os.path.join(model_dir, META)
    if not os.path.isfile(meta_path) or not os.path.isfile(os.path.join(model_dir, WEIGHTS)):
        raise GenerativeModelError(f"--generative_model_dir: {model_dir} holds no {META} and "
                                   f"{WEIGHTS} (train one with run_scripts/train_vae.py or train_glow.py)")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise GenerativeModelError(f"--generative_model_dir: {meta_path} is not valid JSON "
                                   f"({str(e).splitlines()[0]})") from None
    if not isinstance(meta, dict):
        raise GenerativeModelError(f"--generative_model_dir: {meta_path} holds no JSON object")
    version = meta.get("format_version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise GenerativeModelError(f"--generative_model_dir: {meta_path} was written by a newer "
                                   f"lvat_tf (format {version!r}; this version reads up to "
                                   f"{FORMAT_VERSION})")
    missing = [k for k in ("kind", "image_shape", "architecture") if k not in meta]
    if missing:
        raise GenerativeModelError(f"--generative_model_dir: {meta_path} lacks {missing[0]!r}")
    for key, want in (expect or {}).items():
        got = meta.get(key)
        if isinstance(want, (tuple, list)):
            got, want = list(got or []), list(want)
        if got != want:
            raise GenerativeModelError(f"--generative_model_dir: {model_dir} was trained with "
                                       f"{key}={got!r}, this run needs {want!r}")
    shape = tuple(meta["image_shape"])
    try:
        model = build(meta["kind"], meta["architecture"], shape)
    except (KeyError, TypeError, ValueError) as e:
        raise GenerativeModelError(f"--generative_model_dir: {meta_path}: architecture "
                                   f"{meta['architecture']!r} cannot be built ({e})") from None
    materialise(model, shape)
    try:
        model.load_weights(os.path.join(model_dir, WEIGHTS))
    except Exception as e:  # h5py / shape errors
        raise GenerativeModelError(f"--generative_model_dir: {model_dir}: cannot load weights "
                                   f"({str(e).splitlines()[0]})") from None
    model.trainable = False
    return model, meta
