"""The VAE and Glow trainers' loop: Keras ``fit`` with the classifier's callbacks.

A model-specific ``train_step(step)`` becomes the ``train_step`` of a thin
Keras model (:class:`_StepTrainer`) fed the step numbers as its dataset, so
the generative models train through ``keras.Model.fit`` like the classifier
and share its callbacks (:mod:`lvat_tf.fitting`). What a run gets:

* resume: at the end of every ``period`` steps (one Keras epoch) the model,
  optimizer and step counter go to ``MODEL_DIR/checkpoints`` (tf.train,
  variables keyed by path); a restarted run continues from the latest one, on
  the same data stream (the stream is a stateless function of the step);
* the NaN guard: a non-finite loss stops the run with
  :class:`GenerativeModelError`, no checkpoint is written after it and the
  model directory is not written, so the last good checkpoint (and any saved
  model) is kept;
* TensorBoard scalars in ``MODEL_DIR/tb``, Keras' progress bar, absl logging,
  ``history.json`` (period means of every loss term and the evaluation);
* at the end, the model directory (weights + generative.json) via
  :mod:`model_dir`, and image grids (``reconstructions.png``, ``samples.png``).
"""
import dataclasses
import json
import os
import time
from typing import Callable, Dict, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from lvat_tf import checkpointing
from lvat_tf import fitting
from lvat_tf.data import registry
from lvat_tf.errors import ConfigError
from lvat_tf.generative import model_dir as model_dir_lib


@dataclasses.dataclass(frozen=True)
class GenerativeConfig:
    """What every generative trainer is told (VAEConfig and GlowConfig add their own).

    Attributes:
      dataset: a registered dataset name (its training images, labels unused).
      data_dir: raw files or a tfds directory (None: tfds' default).
      model_dir: where the checkpoints and the finished model go.
      batch_size: images per step.
      seed: initialisation and data-stream seed.
      tfds_download: whether tfds may download a missing dataset.
    """

    dataset: str = "svhn"
    data_dir: str = None
    model_dir: str = ""
    batch_size: int = 32
    seed: int = 1
    tfds_download: bool = True

    def __post_init__(self):
        """Validated on construction (scripts, recipes and train.py alike): one-line errors."""
        registry.get_spec(self.dataset)  # DataError naming --dataset when unknown
        if self.batch_size <= 0:
            raise ConfigError("batch_size", f"expected a positive value, got {self.batch_size}")


def _model_keys(model) -> Dict[str, tf.Variable]:
    """{path without the model's own (auto-numbered) name: variable}."""
    out = {}
    for v in model.variables:
        key = v.path.split("/", 1)[-1]
        if key in out:
            raise ValueError(f"two model variables share the path {key!r}")
        out[key] = v
    return out


def _optimizer_keys(optimizer) -> Dict[str, tf.Variable]:
    """Optimizer variables keyed by position (their names carry auto-numbered prefixes)."""
    return {f"{i:05d}": v for i, v in enumerate(optimizer.variables)}


def save_grid(path: str, images: np.ndarray, ncols: int = 10) -> None:
    """Writes (N, H, W, C) images in [0, 1] as one PNG grid (1 px gaps), atomically."""
    images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
    n, h, w, c = images.shape
    rows = -(-n // ncols)
    grid = np.ones((rows * (h + 1) + 1, ncols * (w + 1) + 1, c), np.float32)
    for i, im in enumerate(images):
        r, k = divmod(i, ncols)
        grid[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + k * (w + 1):1 + k * (w + 1) + w] = im
    png = tf.io.encode_png(tf.constant(np.round(grid * 255).astype(np.uint8)))
    tmp = path + ".tmp"
    tf.io.write_file(tmp, png)
    os.replace(tmp, path)


class _StepTrainer(keras.Model):
    """Keras' view of a generative model's training: one batch = one call of ``step``.

    The batches are the step numbers (int64 scalars), so ``step`` draws its
    own data from the stateless stream and applies its own update; this model
    owns no weights of its own (the generative model is an attribute, so its
    variables are tracked).
    """

    def __init__(self, model, step: Callable, **kwargs):
        super().__init__(**kwargs)
        self.generative = model
        self._step = step

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        return None  # the model and the optimizer are built before fit

    @tf.autograph.experimental.do_not_convert  # the step is a plain graph (SSLModel.train_step)
    def train_step(self, data):
        return self._step(data)


class _StepLearningRate(keras.callbacks.Callback):
    """Sets the optimizer's learning rate before every step from ``lr_at_step(step)``."""

    def __init__(self, lr_at_step: Callable[[int], float]):
        super().__init__()
        self.lr_at_step = lr_at_step

    def on_train_batch_begin(self, batch, logs=None):
        opt = self.model.optimizer
        opt.learning_rate.assign(self.lr_at_step(int(opt.iterations.numpy())))


class _PeriodLog(keras.callbacks.Callback):
    """At the end of each period (epoch): means of the batch logs, the evaluation,
    history.json, TensorBoard, a log line, and the training time so far.

    Nothing is recorded for a period in which the NaN guard tripped.
    """

    def __init__(self, guard, lr_at_step, evaluate, history, history_path, writer,
                 seconds_var, total_steps):
        super().__init__()
        self.guard, self.lr_at_step, self.evaluate = guard, lr_at_step, evaluate
        self.history, self.history_path, self.writer = history, history_path, writer
        self.seconds_var, self.total_steps = seconds_var, total_steps
        self._sums, self._count, self._t0 = {}, 0, time.time()

    def on_train_batch_end(self, batch, logs=None):
        for k, v in (logs or {}).items():
            self._sums[k] = self._sums.get(k, 0.0) + float(v)
        self._count += 1

    def on_epoch_end(self, epoch, logs=None):
        if self.guard.bad_step is not None or not self._count:
            return
        done = int(self.model.optimizer.iterations.numpy())
        entry = {"step": done, "lr": self.lr_at_step(done - 1)}
        entry.update({k: v / self._count for k, v in self._sums.items()})
        if self.evaluate is not None:
            entry.update({f"test_{k}": float(v) for k, v in self.evaluate().items()})
        self.history.append(entry)
        with self.writer.as_default(step=done):
            for k, v in entry.items():
                if k != "step":
                    tf.summary.scalar(k, v)
        self.writer.flush()
        logging.info("generative step %d/%d: %s", done, self.total_steps,
                     " ".join(f"{k} {v:.4g}" for k, v in entry.items() if k != "step"))
        now = time.time()
        self.seconds_var.assign(float(self.seconds_var.numpy()) + now - self._t0)
        self._t0 = now
        model_dir_lib.write_json(self.history_path, self.history)
        self._sums, self._count = {}, 0


def run(model, optimizer, train_step: Callable, lr_at_step: Callable[[int], float],
        total_steps: int, period: int, model_dir: str, meta: dict,
        evaluate: Optional[Callable[[], dict]] = None,
        images: Optional[Callable[[], dict]] = None, before_first_step: Optional[Callable] = None,
        verbose: bool = True, callbacks: Sequence[keras.callbacks.Callback] = ()):
    """Trains ``total_steps`` steps (resuming) through ``keras.Model.fit``, then saves
    the model directory.

    Args:
      model: the Keras model (built).
      optimizer: a built Keras optimizer; its ``iterations`` count the steps.
      train_step: ``train_step(step: int64 tensor) -> dict of scalar tensors``,
        one of them ``loss``; traced once by fit.
      lr_at_step: the learning rate of a (0-based) step.
      total_steps: steps of the whole run.
      period: steps between log lines, history entries and checkpoints (a
        Keras epoch; the last one is shorter when ``period`` does not divide
        ``total_steps``).
      model_dir: where checkpoints, TensorBoard logs, images and the model go.
      meta: generative.json content; ``training`` gets ``steps``, ``seconds``
        and ``history`` added.
      evaluate: optional ``() -> dict of floats`` run at each period's end.
      images: optional ``() -> {file name: (N, H, W, C) array}`` written at the end.
      before_first_step: called once on a fresh (not resumed) run, e.g. actnorm init.
      verbose: Keras' progress bar.
      callbacks: more Keras callbacks, run after the lr schedule and the NaN
        guard and before the log and the checkpoint writer.

    Returns:
      The meta dict that was saved.

    Raises:
      GenerativeModelError: a non-finite loss or weight, or checkpoints made
        with other settings in ``model_dir``.
    """
    os.makedirs(model_dir, exist_ok=True)
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    seconds_var = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="seconds")
    ckpt = tf.train.Checkpoint(model=_model_keys(model), optimizer=_optimizer_keys(optimizer),
                               step=step_var, seconds=seconds_var)
    manager = tf.train.CheckpointManager(ckpt, os.path.join(model_dir, "checkpoints"),
                                         max_to_keep=2)
    history_path = os.path.join(model_dir, "history.json")
    history = []
    # What the checkpoints were made with: a resumed run must ask for the same.
    settings = {k: meta[k] for k in ("kind", "dataset", "image_shape", "preprocessing",
                                     "architecture") if k in meta}
    settings["training"] = {k: v for k, v in meta.get("training", {}).items()
                            if k not in ("model_dir", "data_dir", "tfds_download")}
    settings_path = os.path.join(model_dir, "checkpoints", "settings.json")
    latest = checkpointing.latest_checkpoint(os.path.join(model_dir, "checkpoints"),
                                             flag=model_dir)
    if latest:
        old = model_dir_lib.read_json(settings_path, default=None)
        if old is not None and old != json.loads(json.dumps(settings)):
            diff = sorted(k for k in set(old["training"]) | set(settings["training"])
                          if old["training"].get(k) != json.loads(json.dumps(
                              settings["training"])).get(k)) or ["architecture"]
            raise model_dir_lib.GenerativeModelError(
                f"{model_dir} holds checkpoints of a run with other settings ({diff[0]}: "
                f"{old['training'].get(diff[0])!r}); use another directory or the same flags")
        checkpointing.restore(ckpt, latest, flag=model_dir)
        history = model_dir_lib.read_json(history_path, default=[])
        history = [h for h in history if h["step"] <= int(step_var.numpy())]
        logging.info("Resuming generative training from %s (step %d of %d)",
                     latest, int(step_var.numpy()), total_steps)
    else:
        os.makedirs(os.path.dirname(settings_path), exist_ok=True)
        model_dir_lib.write_json(settings_path, settings)
        if before_first_step is not None:
            before_first_step()
    # The step counter of the checkpoint is the truth; the optimizer's step
    # count (restored with its variables) must agree: the lr schedule and the
    # checkpoint numbers read it.
    start = int(step_var.numpy())
    optimizer.iterations.assign(start)
    trainer = _StepTrainer(model, train_step, name=f"{model.name}_trainer")
    trainer.compile(optimizer=optimizer)
    guard = fitting.NaNGuard()
    writer = tf.summary.create_file_writer(os.path.join(model_dir, "tb"))
    fit_callbacks = [_StepLearningRate(lr_at_step), guard, *callbacks,
                     _PeriodLog(guard, lr_at_step, evaluate, history, history_path, writer,
                                seconds_var, total_steps),
                     fitting.Checkpointer(manager, guard, model.variables, step_var, "steps")]
    full, rest = divmod(total_steps, period)
    # Whole periods, then the shorter last one (Keras epochs have one length).
    for first, epochs, length in ((start // period, full, period), (full, full + 1, rest)):
        if guard.bad_step is not None or length == 0 or first >= epochs:
            continue
        steps = tf.data.Dataset.range(max(start, first * period), total_steps)
        trainer.fit(steps, epochs=epochs, initial_epoch=first, steps_per_epoch=length,
                    callbacks=fit_callbacks, verbose=1 if verbose else 0, shuffle=False)
    if guard.bad_step is not None:
        raise model_dir_lib.GenerativeModelError(
            f"generative training diverged at step {guard.bad_step} (loss "
            f"{guard.bad_logs.get('loss')}); nothing written, last good checkpoint kept in "
            f"{model_dir}/checkpoints")
    seconds = float(seconds_var.numpy())  # every period's time, this session's and earlier
    meta = dict(meta)
    meta["training"] = dict(meta.get("training", {}), steps=total_steps,
                            seconds=round(seconds, 1), history=history)
    model_dir_lib.save(model_dir, model, meta)
    if images is not None:
        for name, arr in images().items():
            save_grid(os.path.join(model_dir, name), arr)
    return meta
