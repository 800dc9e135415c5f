"""One training run end to end: data, model, resume, fit, final evaluation, results.json.

Run directory layout (``--log_dir``)::

    config.json          the resolved config the run was started with
    preprocessing.npz    the fitted input transform (scaling / ZCA)
    checkpoints/         tf.train checkpoints (classifier, optimizer, epoch), last 3
    tb/train, tb/test    TensorBoard scalars
    results.json         final metrics (written atomically at the end)
"""
import contextlib
import json
import os
import sys
import time

import keras
import tensorflow as tf
from absl import logging

from lvat_tf import checkpointing
from lvat_tf import files
from lvat_tf import fitting
from lvat_tf import hardware
from lvat_tf.precision import mixed_precision_policy
from lvat_tf.data import pipeline
from lvat_tf.data import registry as data_registry
from lvat_tf.data.preprocessing import Preprocessor
from lvat_tf.errors import ConfigError
from lvat_tf.generative import model_dir as model_dir_lib
from lvat_tf.generative.train_glow import GlowConfig, train_glow
from lvat_tf.generative.train_vae import VAEConfig, train_vae
from lvat_tf.models import classifiers
from lvat_tf.models import registry as model_registry
from lvat_tf.regularizers import methods
from lvat_tf.regularizers.power_iteration import xi_resolution_warning
from lvat_tf.training import callbacks as cb
from lvat_tf.training import collapse as collapse_lib
from lvat_tf import distribute
from lvat_tf.training.model import SSLModel
from lvat_tf.training.optimizer import UpstreamAdam


class TrainingDiverged(RuntimeError):
    """The loss or the weights became non-finite; the last good checkpoint is kept."""


class RunDirError(ValueError):
    """``--log_dir`` holds something incompatible with this run."""


# Fields that may change between a run and its resumption without changing
# what is computed.
RESUME_FREE = {"log_dir", "jit_compile", "eval_freq", "eval_batch_size", "num_eval_examples",
                "data_dir", "tfds_download", "finetune_batch_size", "finetune_iter",
                # a run computes the same on any number of replicas (distribute.py)
                "distribution_strategy", "num_cpu_devices"}


def set_determinism(jit_compile: bool) -> None:
    """TF op determinism on, except under XLA, which refuses it (e.g. MaxPool's gradient)."""
    from tensorflow.python.framework import config as tf_config

    if jit_compile:
        if tf_config.is_op_determinism_enabled():
            tf_config.disable_op_determinism()
        logging.warning("--jit_compile: TF op determinism is off (XLA has no deterministic "
                        "kernels for some ops); runs are not bit-reproducible")
    else:
        tf.config.experimental.enable_op_determinism()


def build_classifier(cfg, data_spec, image_shape):
    """Builds the configured classifier and creates its variables."""
    clf = model_registry.build_from_config(cfg, data_spec.num_classes)
    try:
        clf.check_input_shape(image_shape)
    except ValueError as e:
        raise ConfigError("model", str(e)) from None
    clf(tf.zeros((2,) + tuple(image_shape)), bn_mode="moving")
    return clf


def initial_classifier(cfg, data_spec, image_shape):
    """The classifier at the start of training (:func:`build_classifier`).

    With ``cfg.init_seed`` the global seeds are reset to it just before the
    weights are drawn, so runs that differ only in ``seed`` start from the same
    weights. Without it the weights come from the generators as
    ``train_and_evaluate`` seeded them with ``cfg.seed`` (for a run without a
    generative model the same weights as ``init_seed = seed``; a generative
    model built first draws from them too).
    """
    if cfg.init_seed is not None:
        keras.utils.set_random_seed(cfg.init_seed)
    return build_classifier(cfg, data_spec, image_shape)


def _by_path(variables, what):
    """{variable path: variable}; paths must be unique (they key the checkpoint)."""
    out = {}
    for v in variables:
        if v.path in out:
            raise ValueError(f"two {what} variables share the path {v.path!r}")
        out[v.path] = v
    return out


def _checkpoint_optimizer_name(path, default="upstream_adam"):
    """The optimizer name a checkpoint's optimizer keys carry ("optimizer/<name>.S...")."""
    if path is None:
        return default
    for key, _ in tf.train.list_variables(path):
        if key.startswith("optimizer/") and ".S" in key:
            return key[len("optimizer/"):].split(".S", 1)[0]
    return default


def make_checkpoint(classifier, optimizer=None, directory=None, max_to_keep=3, extra=None):
    """A tf.train checkpoint of every classifier and optimizer variable, keyed by path.

    Variables are listed explicitly (rather than through Keras' object graph,
    which tf.train.Checkpoint does not fully see for layers kept in lists) so
    that BN moving statistics and every optimizer slot are saved and restored.

    Returns:
      (checkpoint, manager or None, epoch variable).

    ``extra``: {key: variable} of further state to save (regularisers).
    """
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    parts = {"classifier": _by_path(classifier.variables, "classifier"), "epoch": epoch}
    if optimizer is not None:
        parts["optimizer"] = _by_path(optimizer.variables, "optimizer")
    if extra:  # regulariser state, e.g. MAT's Gaussian mixture
        parts["regularizers"] = dict(extra)
    ckpt = tf.train.Checkpoint(**parts)
    manager = (tf.train.CheckpointManager(ckpt, directory, max_to_keep=max_to_keep)
               if directory else None)
    return ckpt, manager, epoch


#: Fields only some methods read: a run of another method resumes whatever they
#: hold (e.g. a VAT run made before the MAT defaults changed).
_MAT_FIELDS = ("mat_lambda1", "mat_lambda2", "mat_covariance", "mat_smoothness", "mat_alpha",
               "mat_beta", "mat_min_variance")
_LVAT_FIELDS = ("lvat_reference", "lvat_bn", "vae_num_epochs", "glow_train_steps",
                "generative_dtype")


def _unused_fields(method):
    spec = methods.get_method(method)
    unused = set()
    if not spec.needs_features:
        unused.update(_MAT_FIELDS)
    if not spec.generative:
        unused.update(_LVAT_FIELDS)
    return unused


def own_checkpoint(log_dir):
    """The run's own latest checkpoint in LOG_DIR/checkpoints, or None before its first."""
    return checkpointing.latest_checkpoint(os.path.join(log_dir, "checkpoints"))


def _check_run_dir(cfg):
    path = os.path.join(cfg.log_dir, "config.json")
    if not os.path.isfile(path):
        return
    try:
        with open(path) as f:
            old = json.load(f)
    except ValueError as e:
        raise RunDirError(f"--log_dir: {path} is not valid JSON ({str(e).splitlines()[0]})"
                          ) from None
    saved = set(old)
    new = cfg.to_dict()
    # Fields the run's config.json lacks were added to lvat_tf after the run
    # was made (e.g. --glow_train_steps for a baseline run): not a mismatch.
    unused = _unused_fields(cfg.method)
    diff = sorted(k for k in new if k not in RESUME_FREE and k not in unused and k in saved
                  and old.get(k) != new[k])
    if diff and own_checkpoint(cfg.log_dir) is None:
        # A start that stopped before its first checkpoint (e.g. a refused --init_from)
        # holds nothing to resume: start over with these flags rather than refuse them.
        logging.warning("--log_dir: %s has no checkpoint yet; starting over with --%s=%r "
                        "(was %r)", cfg.log_dir, diff[0], new[diff[0]], old.get(diff[0]))
        return
    if diff:
        k = diff[0]
        raise RunDirError(f"--log_dir: {cfg.log_dir} holds a run with --{k}={old.get(k)!r}, "
                          f"not {new[k]!r}; use another --log_dir or the same flags to resume")


def init_checkpoint_path(init_from: str) -> str:
    """The checkpoint prefix ``--init_from`` names: a run directory's latest, or the prefix itself.

    Raises:
      CheckpointError: neither a run directory with a checkpoint nor a checkpoint prefix.
    """
    if os.path.isdir(init_from):
        path = checkpointing.latest_checkpoint(os.path.join(init_from, "checkpoints"),
                                               flag="--init_from")
        if path is None:
            raise checkpointing.CheckpointError(f"--init_from: {init_from} holds no checkpoint "
                                                f"in checkpoints/ (not a trained run directory)")
        return path
    if os.path.isfile(init_from + ".index"):
        return init_from
    raise checkpointing.CheckpointError(f"--init_from: {init_from} is neither a run directory "
                                        f"nor a checkpoint prefix (no {init_from}.index)")


def check_init_source(init_from: str, preprocessing: dict) -> str:
    """The checkpoint prefix of ``--init_from``, checked to hold a run on this run's inputs.

    Raises:
      CheckpointError / ConfigError: one line naming --init_from.
    """
    path = init_checkpoint_path(init_from)
    prep_path = os.path.join(init_from, "preprocessing.npz")
    if os.path.isdir(init_from) and os.path.isfile(prep_path):
        theirs = Preprocessor.load(prep_path).describe()
        if theirs != preprocessing:
            raise ConfigError("init_from", f"{init_from} was trained on other inputs "
                                           f"(preprocessing {theirs}, this run {preprocessing}); "
                                           f"train the source with this run's "
                                           f"--input_transform")
    return path


def warm_start(classifier, init_from: str, preprocessing: dict) -> str:
    """Loads another run's classifier weights and BN statistics into ``classifier``.

    Only the classifier: this run's optimizer, epoch counter and regulariser
    state start fresh. The source must be the same architecture (every variable
    matched, shapes equal) and, when it is a run directory, must have fitted the
    same input transform (its preprocessing.npz): weights trained on other
    inputs would be evaluated on a shifted input scale.

    Args:
      classifier: the built classifier.
      init_from: a run directory or a checkpoint prefix.
      preprocessing: this run's ``Preprocessor.describe()``.

    Returns:
      The checkpoint prefix restored.

    Raises:
      CheckpointError / ConfigError: one line naming --init_from.
    """
    path = check_init_source(init_from, preprocessing)
    source = tf.train.Checkpoint(classifier=_by_path(classifier.variables, "classifier"))
    checkpointing.restore(source, path, flag="--init_from", partial=True)
    logging.info("Warm start: classifier weights and BN statistics from %s "
                 "(optimizer and schedule start fresh)", path)
    return path


def _load_collapse_record(path):
    """The collapse record of earlier sessions of this run (collapse.json), or a new one."""
    if not os.path.isfile(path):
        return collapse_lib.CollapseRecord()
    try:
        with open(path) as f:
            saved = json.load(f)
        if "final" not in saved and saved.get("history"):
            # Written before records had "final": the last evaluation, classified now.
            last = saved["history"][-1]
            saved["final"] = collapse_lib.classify(last, last["labeled_accuracy"],
                                                   len(last["class_histogram"]))
        return collapse_lib.CollapseRecord(**saved)
    except (ValueError, TypeError) as e:
        raise RunDirError(f"--log_dir: {path} is not a collapse record written by lvat_tf "
                          f"({str(e).splitlines()[0]}); delete it to start a new record") from None


def train_missing_generative(cfg, kind):
    """Trains the run's generative model into LOG_DIR/generative when it is not there yet.

    Without ``--generative_model_dir`` a VAE (``vae_num_epochs`` epochs) or a
    Glow (the dataset's DatasetDefaults.glow layout, ``glow_train_steps`` steps) is trained into
    LOG_DIR/generative (logged; resumed if cut off) and reused when the run
    resumes. Called outside any distribution strategy's scope: the trainers'
    Keras fit runs on one device, and the saved model is then loaded into the
    scope by :func:`generative_model_for`.

    Args:
      cfg: the run's Config.
      kind: "vae" or "glow" (the method's MethodSpec.generative).
    """
    gen_dir = os.path.join(cfg.log_dir, "generative")
    if cfg.generative_model_dir or os.path.isfile(os.path.join(gen_dir, model_dir_lib.META)):
        return
    if kind == "vae":
        logging.info("No --generative_model_dir: training a VAE for %d epochs into %s",
                     cfg.vae_num_epochs, gen_dir)  # widths: DatasetDefaults.vae_widths
        widths = data_registry.get_spec(cfg.dataset).defaults.vae_widths
        train_vae(VAEConfig(dataset=cfg.dataset, data_dir=cfg.data_dir, model_dir=gen_dir,
                            num_epochs=cfg.vae_num_epochs, seed=cfg.seed, widths=widths,
                            aug_trans=cfg.aug_trans, tfds_download=cfg.tfds_download),
                  verbose=False)
    else:
        arch = data_registry.get_spec(cfg.dataset).defaults.glow_layout()
        logging.info("No --generative_model_dir: training a Glow (L=%d, K=%d, width %d) "
                     "for %s steps into %s", arch["num_levels"], arch["num_steps"],
                     arch["width"], cfg.glow_train_steps or "upstream's", gen_dir)
        train_glow(GlowConfig(dataset=cfg.dataset, data_dir=cfg.data_dir, model_dir=gen_dir,
                              num_steps=cfg.glow_train_steps, is_aug=cfg.aug_trans,
                              num_levels=arch["num_levels"], flow_steps=arch["num_steps"],
                              width=arch["width"], seed=cfg.seed,
                              tfds_download=cfg.tfds_download), verbose=False)


def generative_model_for(cfg, data, kind):
    """The frozen generative model of an LVAT run: ``--generative_model_dir`` or
    LOG_DIR/generative (see :func:`train_missing_generative`).

    A directory trained on another dataset, image shape or preprocessing, or of
    another kind, is refused.

    Args:
      cfg: the run's Config.
      data: its SSLData (the model must match its image shape and transform).
      kind: "vae" or "glow" (the method's MethodSpec.generative).
    """
    gen_dir = cfg.generative_model_dir or os.path.join(cfg.log_dir, "generative")
    model, _ = model_dir_lib.load(gen_dir, expect={
        "kind": kind, "dataset": cfg.dataset, "image_shape": list(data.image_shape),
        "preprocessing": data.preprocessor.describe()})
    return model


def finetune_bn(classifier, data, cfg, seed):
    """vat_tf test.py BN re-estimation: ``finetune_iter`` labeled batches in update mode.

    Dropout is on (training mode), augmentation as configured; the moving
    averages continue with the usual decay.
    """
    if cfg.finetune_iter <= 0:
        return
    ds = pipeline.finetune_dataset(data, cfg.finetune_batch_size, seed, cfg.aug_trans,
                                   cfg.aug_flip)

    @tf.function(autograph=False)
    def step(x, t):
        s = tf.stack([tf.constant(seed, tf.int64), tf.cast(t, tf.int64) + (1 << 40)])
        classifier(x, bn_mode="update", dropout_seed=s)

    for t, x in enumerate(ds.take(cfg.finetune_iter)):
        step(x, tf.constant(t, tf.int64))


def evaluate_classifier(classifier, x, y, batch_size, logits_fn=None):
    """Inference-mode (moving statistics, no dropout) accuracy over all of x.

    Returns (number correct, number of examples). ``logits_fn``: the run's shared
    :func:`~lvat_tf.models.classifiers.inference_function` (built here when None).
    """
    if logits_fn is None:
        logits_fn = classifiers.inference_function(classifier, x.shape[1:])
    _, correct, n = cb.inference_totals(logits_fn, pipeline.eval_dataset(x, y, batch_size))
    return correct, n


def train_and_evaluate(cfg, verbose="auto"):
    """Trains (or resumes) the run described by ``cfg`` and writes results.json.

    Returns:
      The results dict.

    Raises:
      ConfigError, DataError, RunDirError: bad flags, data or run directory.
      TrainingDiverged: a non-finite loss; the last good checkpoint is kept.
    """
    if not cfg.log_dir:
        raise ConfigError("log_dir", "a run directory is required")
    t_start = time.time()
    # First: multi-worker strategies must exist before any other TF op runs.
    strategy = distribute.make_strategy(cfg.distribution_strategy, cfg.num_cpu_devices)
    chief = distribute.is_chief(strategy)
    _check_run_dir(cfg)
    keras.utils.set_random_seed(cfg.seed)
    set_determinism(cfg.jit_compile)
    if cfg.mixed_precision:
        msg = hardware.bfloat16_warning(bool(tf.config.list_physical_devices("GPU")))
        if msg:
            logging.warning(msg)

    # The method is resolved once: the data's transform, the generative model
    # and the regularisers all follow from this spec.
    spec = methods.get_method(cfg.method)
    prep_path = os.path.join(cfg.log_dir, "preprocessing.npz")
    prep = Preprocessor.load(prep_path) if os.path.isfile(prep_path) else None
    # Nothing is written to LOG_DIR before the data has loaded: a bad --data_dir
    # or a broken file leaves no half-made run directory behind.
    data = pipeline.load_ssl_data(cfg, prep, methods.input_needs(cfg.method, cfg.zca,
                                                                 cfg.input_transform))
    if cfg.init_from and own_checkpoint(cfg.log_dir) is None:
        check_init_source(cfg.init_from, data.preprocessor.describe())  # before any write
    generative = None
    # The generative model stays float32 (built before the mixed policy is set).
    # A given one is loaded (and checked) before LOG_DIR is written, too.
    if spec.generative and cfg.generative_model_dir:
        with strategy.scope():
            generative = generative_model_for(cfg, data, spec.generative)
    os.makedirs(cfg.log_dir, exist_ok=True)
    with contextlib.ExitStack() as held:
        if chief:
            # One process per run directory (the other workers of a multi-worker run
            # write under LOG_DIR/workers/). Checked again under the lock: another
            # process may have started this directory since the first check.
            held.enter_context(files.DirectoryLock(cfg.log_dir, "--log_dir"))
            _check_run_dir(cfg)
            if prep is None:
                data.preprocessor.save(prep_path)
            files.write_text_atomic(os.path.join(cfg.log_dir, "config.json"), cfg.to_json())
        if spec.generative and generative is None:  # trained into LOG_DIR/generative first
            train_missing_generative(cfg, spec.generative)
            with strategy.scope():
                generative = generative_model_for(cfg, data, spec.generative)
        with mixed_precision_policy(cfg.mixed_precision):
            return _train(cfg, strategy, chief, data, spec, generative, t_start, verbose)


def _train(cfg, strategy, chief, data, spec, generative, t_start, verbose):
    with strategy.scope():
        clf = initial_classifier(cfg, data.spec, data.image_shape)
        feats, _ = clf(tf.zeros((2,) + tuple(data.image_shape)), bn_mode="moving",
                       return_features=True)
        # --generative_dtype=bfloat16: LVAT decodes with a bfloat16 copy (weights shared
        # by value; the frozen model never changes), the encoder stays float32.
        decoder = model_dir_lib.decoder_for(generative, data.image_shape, cfg.generative_dtype)
        if decoder is not None:
            logging.info("LVAT decodes with a %s copy of the %s (--generative_dtype); its "
                         "encoder stays float32", cfg.generative_dtype, spec.generative.upper())
        regs = methods.build_regularizers(cfg, generative, feature_dim=int(feats.shape[-1]),
                                          num_classes=data.spec.num_classes,
                                          generative_decoder=decoder)
        if cfg.power_iteration == "finite_difference" and regs and cfg.method in ("vat", "vatent"):
            msg = xi_resolution_warning(cfg.xi, data.image_shape, data.input_abs_max)
            if msg:
                logging.warning(msg)

        model = SSLModel(clf, regs, seed=cfg.seed, rampup_steps=cfg.consistency_rampup)
        # The optimizer's name prefixes its variables' checkpoint keys: a fixed
        # name, or the second run of a process (reproduce.py) would save
        # "upstream_adam_1/..." and could not be resumed by a fresh process. Runs
        # saved before this fix keep the name their checkpoint holds.
        ckpt_dir = os.path.join(cfg.log_dir, "checkpoints")
        latest = own_checkpoint(cfg.log_dir)
        opt = UpstreamAdam(learning_rate=cfg.learning_rate, beta_1=cfg.mom1,
                           name=_checkpoint_optimizer_name(latest))
        # XLA: whole train step compiled; measured slower for Conv-Large on this CPU
        # (environment.md), so off by default.
        model.compile(optimizer=opt, jit_compile=cfg.jit_compile)
        opt.build(clf.trainable_variables)
        state = {f"{i}/{v.path}": v for i, r in enumerate(regs)
                 for v in r.variables}
        # Multi-worker: every worker saves (saving is collective), the chief
        # into the run directory, the others into a scratch directory.
        save_dir = ckpt_dir if chief else os.path.join(
            cfg.log_dir, "workers", str(distribute.worker_index(strategy)), "checkpoints")
        ckpt, manager, epoch_var = make_checkpoint(clf, opt, save_dir, extra=state)
    initial_epoch = 0
    if latest:
        checkpointing.restore(ckpt, latest)
        initial_epoch = int(epoch_var.numpy())
        logging.info("Resuming from %s (epoch %d, step %d)", latest,
                     initial_epoch, int(opt.iterations.numpy()))
    elif cfg.init_from:
        warm_start(clf, cfg.init_from, data.preprocessor.describe())
    logging.info("%s on %s: %d parameters, %d epochs x %d steps", cfg.model, cfg.dataset,
                 clf.count_params(), cfg.num_epochs, cfg.num_iter_per_epoch)

    start_step = initial_epoch * cfg.num_iter_per_epoch
    train_ds = distribute.distribute_train_dataset(
        strategy, lambda: pipeline.train_dataset(data, cfg.batch_size, cfg.ul_batch_size,
                                                 cfg.seed, start_step, cfg.aug_trans,
                                                 cfg.aug_flip, with_unlabeled=spec.uses_unlabeled),
        {"x_l": cfg.batch_size, "x_u": cfg.ul_batch_size})
    x_ev, y_ev = pipeline.eval_subset(data, cfg.num_eval_examples, cfg.seed)
    eval_ds = pipeline.eval_dataset(x_ev, y_ev, cfg.eval_batch_size)
    tb_dir = cfg.log_dir if chief else os.path.dirname(save_dir)
    train_writer, test_writer = cb.make_writer(tb_dir, "train"), cb.make_writer(tb_dir, "test")
    schedule = cb.UpstreamSchedule(cfg)
    guard = fitting.NaNGuard()
    logits_fn = classifiers.inference_function(clf, data.image_shape)
    evaluator = cb.PeriodicEval(eval_ds, cfg.eval_freq, cfg.num_epochs, test_writer,
                                "valid" if cfg.validation else "test", logits_fn)
    collapse_path = os.path.join(cfg.log_dir, "collapse.json")
    monitor = collapse_lib.CollapseMonitor(
        logits_fn, collapse_lib.monitor_batch(data.x_unlabeled, cfg.seed), data.x_labeled,
        data.y_labeled, cfg.method, cfg.eval_freq, cfg.num_epochs, test_writer,
        cfg.eval_batch_size, record=_load_collapse_record(collapse_path),
        save_path=collapse_path if chief else None)
    history_path = os.path.join(cfg.log_dir, "train_history.json")
    logger = cb.ScalarLogger(train_writer, schedule,
                             cb.load_train_history(history_path, initial_epoch),
                             history_path if chief else None)
    callbacks = [schedule, guard, evaluator, monitor, logger,
                 fitting.Checkpointer(manager, guard, clf.variables + list(state.values()),
                                      epoch_var)]
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    t_fit = time.time()
    if initial_epoch < cfg.num_epochs:
        model.fit(train_ds, epochs=cfg.num_epochs, steps_per_epoch=cfg.num_iter_per_epoch,
                  initial_epoch=initial_epoch, callbacks=callbacks, verbose=verbose)
    fit_seconds = time.time() - t_fit
    if guard.bad_step is not None:
        kept = manager.latest_checkpoint or "none"
        raise TrainingDiverged(f"training stopped: non-finite loss at step {guard.bad_step} "
                               f"({guard.bad_logs}); last good checkpoint kept: {kept}")

    # A finished run evaluated again keeps the training time it took.
    prev_path = os.path.join(cfg.log_dir, "results.json")
    prev_seconds = 0.0
    if os.path.isfile(prev_path):
        with open(prev_path) as f:
            prev = json.load(f)
        prev_seconds = prev.get("train_seconds_total", prev.get("train_seconds_this_session", 0.0))
    results = final_evaluation(clf, data, cfg, logits_fn)
    results["distribution"] = {"strategy": cfg.distribution_strategy,
                               "replicas": strategy.num_replicas_in_sync}
    results["mixed_precision"] = cfg.mixed_precision
    results.update({
        "method": cfg.method, "dataset": cfg.dataset, "model": cfg.model,
        "num_labeled_examples": cfg.num_labeled_examples,
        "num_iterations": int(opt.iterations.numpy()), "seed": cfg.seed,
        "epsilon": cfg.epsilon, "train_seconds_this_session": round(fit_seconds, 1),
        # Over every session: the fit time of the epochs resumed from (train_history.json)
        # plus this session's whole fit (its per-epoch records leave out what follows an
        # epoch's record: checkpointing, the end of fit); a finished run re-evaluated, or
        # one whose history predates the record, keeps its results.json's.
        "train_seconds_total": round(max(logger.earlier_seconds, prev_seconds) + fit_seconds,
                                     1),
        "wall_seconds_this_session": round(time.time() - t_start, 1),
        "periodic_eval": evaluator.history, "collapse": monitor.record.to_dict(),
        "train_history": logger.history,
        "config": cfg.to_dict(),
    })
    if chief:
        files.write_json_atomic(os.path.join(cfg.log_dir, "results.json"), results)
    logging.info("test error %.2f %% (%d/%d correct after BN re-estimation)",
                 results["test_error"], results["num_correct"], results["num_test_examples"])
    return results


def final_evaluation(clf, data, cfg, logits_fn=None):
    """test.py protocol: BN re-estimation, then the whole test set (moving statistics).

    With ``--validation`` the "test set" is the validation set, as upstream
    test.py reads ``test_val`` then; ``evaluated_on`` says which. ``logits_fn``: as
    :func:`evaluate_classifier`'s (one graph serves both evaluations: it reads the moving
    statistics when called, so it sees the re-estimated ones).
    """
    if logits_fn is None:
        logits_fn = classifiers.inference_function(clf, data.image_shape)
    c0, n = evaluate_classifier(clf, data.x_eval, data.y_eval, cfg.eval_batch_size, logits_fn)
    finetune_bn(clf, data, cfg, cfg.seed)
    c, n = evaluate_classifier(clf, data.x_eval, data.y_eval, cfg.eval_batch_size, logits_fn)
    acc = c / n
    return {"test_accuracy": acc, "test_error": 100.0 * (1 - acc), "num_correct": c,
            "num_test_examples": n, "test_error_before_bn_finetune": 100.0 * (1 - c0 / n),
            "evaluated_on": "validation" if cfg.validation else "test"}
