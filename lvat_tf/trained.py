"""A finished run's classifier, restored for evaluation, export and analysis.

Above the training layer: it reads the run's config.json into a Config.
"""
import os

import tensorflow as tf

from lvat_tf import checkpointing
from lvat_tf import config as config_lib
from lvat_tf.data import pipeline, registry
from lvat_tf.data.preprocessing import Preprocessor
from lvat_tf.training import run


def load_trained_classifier(log_dir, with_data=True, **overrides):
    """Restores a run's classifier from its latest checkpoint.

    Args:
      log_dir: the run directory.
      with_data: load the dataset too; False restores the classifier from the
        run's saved transform alone (export without evaluation) and returns
        data = None.
      **overrides: evaluation-only config fields to change (see run.RESUME_FREE).

    Returns:
      (cfg, classifier, data or None, checkpoint path).
    """
    if not os.path.isdir(log_dir):
        raise run.RunDirError(f"--log_dir: {log_dir} is not a directory")
    cfg = config_lib.load_config(log_dir)
    bad = sorted(set(overrides) - run.RESUME_FREE)
    if bad:
        raise config_lib.ConfigError(bad[0], "cannot be changed when evaluating a finished run")
    cfg = cfg.replace(**overrides)
    tf.config.experimental.enable_op_determinism()
    prep = Preprocessor.load(os.path.join(log_dir, "preprocessing.npz"))
    if with_data:
        data = pipeline.load_ssl_data(cfg, prep)  # the saved transform: no method needed
        spec, shape = data.spec, data.image_shape
    else:
        data = None
        spec = registry.get_spec(cfg.dataset)
        shape = pipeline.model_input_shape(spec, prep)
    clf = run.build_classifier(cfg, spec, shape)
    manager_dir = os.path.join(log_dir, "checkpoints")
    latest = checkpointing.latest_checkpoint(manager_dir)
    if latest is None:
        raise run.RunDirError(f"--log_dir: {log_dir} holds no checkpoint in checkpoints/")
    ckpt, _, _ = run.make_checkpoint(clf)
    checkpointing.restore(ckpt, latest, partial=True)
    return cfg, clf, data, latest
