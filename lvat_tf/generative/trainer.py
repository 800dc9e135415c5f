"""The training loop shared by the VAE and Glow trainers.

What it adds to a model-specific ``train_step``:

* resume: every ``period`` steps the model, optimizer and step counter go to
  ``MODEL_DIR/checkpoints`` (tf.train, variables keyed by path); a restarted
  run continues from the latest one, on the same data stream (the stream is a
  stateless function of the step);
* a NaN guard: a non-finite loss stops the run with
  :class:`GenerativeModelError` before anything is written, so the last good
  checkpoint (and any saved model) is kept;
* TensorBoard scalars in ``MODEL_DIR/tb``, a Keras progress bar, absl logging;
* at the end, the model directory (weights + generative.json) via
  :mod:`model_dir`, and image grids (``reconstructions.png``, ``samples.png``).
"""
import json
import math
import os
import time
from typing import Callable, Dict, Optional

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from lvat_tf import checkpointing
from lvat_tf.generative import model_dir as model_dir_lib


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


def run(model, optimizer, train_step: Callable, lr_at_step: Callable[[int], float],
        total_steps: int, period: int, model_dir: str, meta: dict,
        evaluate: Optional[Callable[[], dict]] = None,
        images: Optional[Callable[[], dict]] = None, before_first_step: Optional[Callable] = None,
        verbose: bool = True):
    """Trains ``total_steps`` steps (resuming), then saves the model directory.

    Args:
      model: the Keras model (built).
      optimizer: a built Keras optimizer.
      train_step: ``train_step(step: int64 tensor) -> dict of scalar tensors``,
        one of them ``loss``.
      lr_at_step: the learning rate of a (0-based) step.
      total_steps: steps of the whole run.
      period: steps between log lines, history entries and checkpoints.
      model_dir: where checkpoints, TensorBoard logs, images and the model go.
      meta: generative.json content; ``training`` gets ``steps``, ``seconds``
        and ``history`` added.
      evaluate: optional ``() -> dict of floats`` run at each period's end.
      images: optional ``() -> {file name: (N, H, W, C) array}`` written at the end.
      before_first_step: called once on a fresh (not resumed) run, e.g. actnorm init.

    Returns:
      The meta dict that was saved.
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
    writer = tf.summary.create_file_writer(os.path.join(model_dir, "tb"))
    start = int(step_var.numpy())
    bar = keras.utils.Progbar(total_steps, stateful_metrics=None) if verbose else None
    if bar is not None and start:
        bar.update(start)
    t0, sums, count = time.time(), {}, 0
    for t in range(start, total_steps):
        optimizer.learning_rate.assign(lr_at_step(t))
        out = {k: float(v) for k, v in train_step(tf.constant(t, tf.int64)).items()}
        if not all(math.isfinite(v) for v in out.values()):
            raise model_dir_lib.GenerativeModelError(
                f"generative training diverged at step {t + 1} (loss {out.get('loss')}); "
                f"nothing written, last good checkpoint kept in {model_dir}/checkpoints")
        for k, v in out.items():
            sums[k] = sums.get(k, 0.0) + v
        count += 1
        if bar is not None:
            bar.update(t + 1, values=[(k, v) for k, v in out.items()])
        if (t + 1) % period == 0 or t + 1 == total_steps:
            entry = {"step": t + 1, "lr": lr_at_step(t)}
            entry.update({k: v / count for k, v in sums.items()})
            if evaluate is not None:
                entry.update({f"test_{k}": float(v) for k, v in evaluate().items()})
            history.append(entry)
            with writer.as_default(step=t + 1):
                for k, v in entry.items():
                    if k != "step":
                        tf.summary.scalar(k, v)
            writer.flush()
            logging.info("generative step %d/%d: %s", t + 1, total_steps,
                         " ".join(f"{k} {v:.4g}" for k, v in entry.items() if k != "step"))
            step_var.assign(t + 1)
            seconds_var.assign(float(seconds_var.numpy()) + time.time() - t0)
            t0 = time.time()
            model_dir_lib.write_json(history_path, history)
            manager.save(checkpoint_number=t + 1)
            sums, count = {}, 0
    seconds = float(seconds_var.numpy()) + (time.time() - t0 if start < total_steps else 0.0)
    meta = dict(meta)
    meta["training"] = dict(meta.get("training", {}), steps=total_steps,
                            seconds=round(seconds, 1), history=history)
    model_dir_lib.save(model_dir, model, meta)
    if images is not None:
        for name, arr in images().items():
            save_grid(os.path.join(model_dir, name), arr)
    return meta
