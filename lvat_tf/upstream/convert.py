"""Convert a TF1 checkpoint written by vat_tf or LVAT into a run directory of ours.

vat_tf (``tf.train.Saver`` of ``train_semisup.py``) holds ``CNN/c1_W`` ...;
LVAT holds ``scope_classifier/...`` plus, when the generative model was saved
with it, ``scope_vae/...`` or ``scope_glow/encoder/...``. Both also hold the
optimizer's state (``.../Adam``, ``.../Adam_1``, ``beta1_power``,
``beta2_power``, ``scope_optimizer/...``) and maybe ``global_step``: those are
recognised and not converted (a converted run is for evaluation, export and
as a generative-model directory, not for continuing upstream's optimizer).
Any other variable, a missing one or a mis-shaped one is an error that lists
them: nothing is skipped silently.

Output (what test.py, export.py and train.py --generative_model_dir accept)::

    OUT/config.json, OUT/preprocessing.npz, OUT/checkpoints/   the classifier
    OUT/generative/{generative.json, model.weights.h5}        VAE / Glow (LVAT)
    OUT/converted_from.json                                   source, skipped names
"""
import dataclasses
import json
import os
import re
from typing import Dict, List, Tuple

import numpy as np
import tensorflow as tf
from absl import logging

from lvat_tf import config as config_lib
from lvat_tf.data import pipeline, registry
from lvat_tf.data.preprocessing import Preprocessor
from lvat_tf.generative import model_dir as model_dir_lib
from lvat_tf.generative.vae import VAE
from lvat_tf.regularizers import methods
from lvat_tf.training import run
from lvat_tf.upstream import names

#: Optimizer / bookkeeping variables of upstream checkpoints (not converted).
_OPTIMIZER = re.compile(r"(^|/)(Adam(_\d+)?|beta[12]_power(_\d+)?|global_step)$|^scope_optimizer/")


class ConvertError(ValueError):
    """An unreadable, incomplete or unexpected upstream checkpoint (one line)."""


def read_checkpoint(path: str) -> Dict[str, np.ndarray]:
    """All variables of a TF1 checkpoint (path prefix, directory or ``checkpoint`` file)."""
    if os.path.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise ConvertError(f"--checkpoint: {path} holds no TF checkpoint")
        path = latest
    try:
        reader = tf.train.load_checkpoint(path)
    except (tf.errors.OpError, ValueError) as e:
        raise ConvertError(f"--checkpoint: {path}: not a readable TF checkpoint "
                           f"({str(e).splitlines()[0][:200]})") from None
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()}


def partition(variables: Dict[str, np.ndarray], upstream: str) -> Tuple[dict, dict, dict, List]:
    """(classifier, vae, glow, skipped): weights keyed as the loaders expect."""
    scope = "CNN/" if upstream == "vat_tf" else "scope_classifier/"
    clf, vae, glow, skipped, unknown = {}, {}, {}, [], []
    for k, v in variables.items():
        if _OPTIMIZER.search(k):
            skipped.append(k)
        elif k.startswith(scope):
            clf[k[len(scope):]] = v
        elif upstream == "lvat" and k.startswith("scope_vae/"):
            vae[k[len("scope_vae/"):]] = v
        elif upstream == "lvat" and k.startswith("scope_glow/"):
            glow[k[len("scope_glow/"):]] = v
        else:
            unknown.append(k)
    if unknown:
        other = "lvat" if upstream == "vat_tf" else "vat_tf"
        other_scope = "scope_classifier/" if upstream == "vat_tf" else "CNN/"
        hint = (f" (they look like {other}'s: use --upstream={other})"
                if all(k.startswith((other_scope, "scope_vae/", "scope_glow/")) for k in unknown)
                else "")
        raise ConvertError(f"--checkpoint: {len(unknown)} variables are not {upstream} "
                           f"variables: {sorted(unknown)[:5]}{hint}")
    if not clf:
        raise ConvertError(f"--checkpoint: no classifier variables under {scope!r} "
                           f"(is --upstream={upstream} right?)")
    if vae and glow:
        raise ConvertError("--checkpoint: holds both scope_vae and scope_glow variables")
    return clf, vae, glow, sorted(skipped)


def convert(checkpoint: str, upstream: str, dataset: str, log_dir: str, data_dir=None,
            tfds_download: bool = True, preprocessing_from=None, **config_overrides) -> dict:
    """Writes the run directory; returns a summary dict.

    Args:
      checkpoint: TF1 checkpoint prefix (or its directory).
      upstream: ``vat_tf`` or ``lvat``.
      dataset: the dataset the checkpoint was trained on (not recorded by upstream).
      log_dir: the new run directory (must not hold a run).
      data_dir: where the dataset is: only vat_tf's CIFAR-10 preprocessing
        (ZCA) is fitted on data; for every other dataset/method the
        conversion reads no data (test.py / export.py evaluate on it later).
      preprocessing_from: a ZCA to use instead of fitting one on data_dir
        (see :meth:`Preprocessor.from_file`).
      **config_overrides: further config fields (e.g. epsilon, num_labeled_examples).
    """
    if upstream not in ("vat_tf", "lvat"):
        raise config_lib.ConfigError("upstream", f"expected vat_tf or lvat, got {upstream!r}")
    if os.path.exists(os.path.join(log_dir, "config.json")):
        raise config_lib.ConfigError("log_dir", f"{log_dir} already holds a run; give a new "
                                     "directory")
    variables = read_checkpoint(checkpoint)
    clf_w, vae_w, glow_w, skipped = partition(variables, upstream)
    method = "vat" if upstream == "vat_tf" else ("lvat_glow" if glow_w else "lvat_vae")
    gen_dir = os.path.join(log_dir, "generative") if (vae_w or glow_w) else None
    values = dict(dataset=dataset, model="conv_large", method=method, log_dir=log_dir,
                  top_bn="bfc_gamma" in clf_w, tfds_download=tfds_download)
    if data_dir:
        values["data_dir"] = data_dir
    values.update(config_overrides)
    cfg = config_lib.make_config(**values)
    spec = registry.get_spec(cfg.dataset)
    needs = methods.input_needs(cfg.method, cfg.zca, cfg.input_transform)
    if preprocessing_from:
        if not os.path.exists(preprocessing_from):
            raise config_lib.ConfigError("preprocessing_from", f"{preprocessing_from} does not "
                                         "exist")
        if not pipeline.needs_fitted_preprocessing(spec, needs):
            raise config_lib.ConfigError("preprocessing_from", f"{cfg.dataset} with "
                                         f"{cfg.method} uses no fitted (ZCA) preprocessing")
        prep = Preprocessor.from_file(preprocessing_from, spec.image_shape)
    elif pipeline.needs_fitted_preprocessing(spec, needs):
        if not data_dir:
            raise config_lib.ConfigError("data_dir", f"{cfg.dataset}'s ZCA whitening is fitted "
                                         "on the training images: give --data_dir, or "
                                         "--preprocessing_from=FILE (a preprocessing.npz, or "
                                         "upstream's mean/components)")
        prep = pipeline.load_ssl_data(cfg, needs=needs).preprocessor
    else:
        prep = pipeline.make_preprocessor(spec, needs)  # needs no data
    data = _Data(spec, prep, pipeline.model_input_shape(spec, prep))
    clf = run.build_classifier(cfg, data.spec, data.image_shape)
    try:
        names.load_convnet_weights(clf, clf_w)
    except names.UpstreamWeightsError as e:
        raise ConvertError(f"--checkpoint: {e}") from None
    if gen_dir:
        meta = {"dataset": cfg.dataset, "image_shape": list(data.image_shape),
                "preprocessing": data.preprocessor.describe(),
                "training": {"converted_from": os.path.abspath(checkpoint)}}
        try:
            if vae_w:
                gen = _vae_from(vae_w, data.image_shape)
                meta.update(kind="vae", architecture={"latent_dim": gen.latent_dim,
                                                      "widths": list(gen.widths)})
            else:
                gen = names.glow_from_weights(glow_w, image_shape=tuple(data.image_shape))
                meta.update(kind="glow", architecture={
                    "num_levels": gen.num_levels, "num_steps": gen.num_steps,
                    "width": gen.width, "num_bits": gen.num_bits, "init_seed": 0})
        except names.UpstreamWeightsError as e:
            raise ConvertError(f"--checkpoint: {e}") from None
        model_dir_lib.save(gen_dir, gen, meta)
        # Validated again now that the directory it names exists.
        cfg = config_lib.make_config(**dict(values, generative_model_dir=os.path.abspath(gen_dir)))
    os.makedirs(log_dir, exist_ok=True)
    data.preprocessor.save(os.path.join(log_dir, "preprocessing.npz"))
    config_lib.save_config(cfg, log_dir)
    ckpt, manager, epoch = run.make_checkpoint(clf, None, os.path.join(log_dir, "checkpoints"))
    epoch.assign(cfg.num_epochs)
    manager.save()
    summary = {"checkpoint": os.path.abspath(checkpoint), "upstream": upstream,
               "method": method, "converted": len(variables) - len(skipped),
               "skipped_optimizer_variables": skipped}
    with open(os.path.join(log_dir, "converted_from.json"), "w") as f:
        json.dump(summary, f, indent=2)
    logging.info("Converted %d variables (%d optimizer variables not converted) into %s",
                 summary["converted"], len(skipped), log_dir)
    return summary


@dataclasses.dataclass(frozen=True)
class _Data:
    """What the conversion needs of a dataset: spec, transform, model input shape."""

    spec: object
    preprocessor: object
    image_shape: tuple


def _vae_from(weights, image_shape):
    try:
        latent = int(weights["top_of_decoder/weights"].shape[0])
        widths = tuple(int(weights[f"e_{i}_1/W"].shape[-1]) for i in (1, 2, 3))
    except KeyError as e:
        raise names.UpstreamWeightsError(f"VAE weights incomplete: missing {e}") from None
    vae = VAE(latent_dim=latent, channels=int(image_shape[-1]), widths=widths)
    vae(tf.zeros((1,) + tuple(image_shape)))
    names.assign_strict(names.vae_assignments(vae), weights, "VAE")
    return vae
