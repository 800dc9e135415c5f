"""The classifier's callbacks: upstream schedule, periodic evaluation, TensorBoard.

The NaN guard and the checkpoint writer, shared with the generative trainers,
are in :mod:`lvat_tf.fitting`.
"""
import json
import os
import time

import keras
import tensorflow as tf
from absl import logging

from lvat_tf import files
from lvat_tf.losses import cross_entropy
from lvat_tf.training.optimizer import upstream_schedule


class UpstreamSchedule(keras.callbacks.Callback):
    """Sets Adam's lr and beta1 at the start of each epoch (vat_tf train_semisup.py)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.current = (cfg.learning_rate, cfg.mom1)

    def on_epoch_begin(self, epoch, logs=None):
        c = self.cfg
        lr, beta1 = upstream_schedule(epoch, c.learning_rate, c.num_epochs, c.epoch_decay_start,
                                      c.mom1, c.mom2, c.learning_rate_decay)
        self.model.optimizer.learning_rate.assign(lr)
        self.model.optimizer.set_beta_1(beta1)
        self.current = (lr, beta1)


def inference_totals(logits_fn, dataset):
    """(summed cross-entropy, number correct, number of examples) of ``logits_fn`` over the
    (x, y) batches of ``dataset`` (the one evaluation loop of the periodic and final
    evaluations)."""
    xe_sum, correct, n = 0.0, 0, 0
    for x, y in dataset:
        logits = logits_fn(x)
        b = int(tf.shape(y)[0])
        xe_sum += float(cross_entropy(logits, y)) * b
        correct += int(tf.reduce_sum(tf.cast(tf.equal(
            tf.argmax(logits, -1, output_type=tf.int32), tf.cast(y, tf.int32)), tf.int32)))
        n += b
    return xe_sum, correct, n


class PeriodicEval(keras.callbacks.Callback):
    """Every ``eval_freq`` epochs and at the last: inference-mode eval on a fixed subset.

    Upstream evaluates 5000 shuffled examples with moving BN statistics; we
    use a fixed random subset of the same size so curves are comparable.
    """

    def __init__(self, dataset, eval_freq, num_epochs, writer=None, prefix="test",
                 logits_fn=None):
        super().__init__()
        self.dataset, self.eval_freq, self.num_epochs = dataset, eval_freq, num_epochs
        self.writer, self.prefix = writer, prefix
        self.logits_fn = logits_fn
        self.history = []

    def _evaluate(self):
        """{loss, xe_loss, accuracy} over the dataset: the model's test_step through
        ``model.evaluate``, or, given ``logits_fn`` (the run's shared inference graph,
        models.classifiers.inference_function), the same means from its logits without
        tracing a test function of its own."""
        if self.logits_fn is None:
            return self.model.evaluate(self.dataset, verbose=0, return_dict=True)
        xe_sum, correct, n = inference_totals(self.logits_fn, self.dataset)
        return {"loss": xe_sum / n, "xe_loss": xe_sum / n, "accuracy": correct / n}

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.eval_freq and epoch + 1 != self.num_epochs:
            return
        res = self._evaluate()
        step = int(self.model.optimizer.iterations.numpy())
        self.history.append({"epoch": epoch + 1, "step": step, **{k: float(v)
                                                                  for k, v in res.items()}})
        logging.info("Epoch %d %s-NLL %.4f %s-Acc %.4f", epoch + 1, self.prefix,
                     res["xe_loss"], self.prefix, res["accuracy"])
        if logs is not None:
            logs[f"{self.prefix}_xe_loss"] = res["xe_loss"]
            logs[f"{self.prefix}_accuracy"] = res["accuracy"]
        if self.writer is not None:
            with self.writer.as_default():
                tf.summary.scalar("xe_loss", res["xe_loss"], step=step)
                tf.summary.scalar("accuracy", res["accuracy"], step=step)
                tf.summary.scalar("error_percent", 100 * (1 - res["accuracy"]), step=step)
            self.writer.flush()


class ScalarLogger(keras.callbacks.Callback):
    """TensorBoard scalars per epoch: every loss term, accuracy, lr, beta1, time.

    Also keeps ``history``: one entry per epoch ({"epoch", "step", every
    training log: loss, xe_loss, accuracy and each regulariser's term, e.g.
    ``lvat_loss``, and ``fit_seconds``: fit time so far over every session}), written to ``save_path`` (LOG_DIR/train_history.json) after
    every epoch so a resumed run continues it; ``history`` given = what earlier
    sessions recorded up to the checkpoint resumed from.
    """

    def __init__(self, writer, schedule: UpstreamSchedule, history=None, save_path=None):
        super().__init__()
        self.writer, self.schedule = writer, schedule
        self.history = list(history or [])
        self.save_path = save_path
        # Fit time of the epochs kept, over every session: a resumed run adds to it.
        self._earlier = self.history[-1].get("fit_seconds", 0.0) if self.history else 0.0
        self._t0 = time.time()

    def on_train_begin(self, logs=None):
        self._t0 = time.time()

    @property
    def earlier_seconds(self) -> float:
        """Fit seconds of the epochs this session started from (0 for a fresh run).

        A history written before fit_seconds was recorded (a run finished by an
        older version, resumed only to be re-evaluated) has no such key: 0, not
        an error.
        """
        return self._earlier

    def on_epoch_end(self, epoch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        lr, beta1 = self.schedule.current
        train_logs = {k: float(v) for k, v in (logs or {}).items() if not k.startswith("test_")
                      and not k.startswith("valid_")}
        parts = " ".join(f"{k}={v:.4f}" for k, v in train_logs.items())
        logging.info("Epoch %d step %d %s lr=%.3g beta1=%.2f", epoch + 1, step, parts, lr, beta1)
        with self.writer.as_default():
            for k, v in train_logs.items():
                tf.summary.scalar(k, v, step=step)
            tf.summary.scalar("learning_rate", lr, step=step)
            tf.summary.scalar("beta1", beta1, step=step)
        self.writer.flush()
        self.history.append({"epoch": epoch + 1, "step": step, **train_logs,
                             "learning_rate": float(lr), "beta1": float(beta1),
                             "fit_seconds": round(self._earlier + time.time() - self._t0, 1)})
        if self.save_path:
            files.write_json_atomic(self.save_path, self.history)


def load_train_history(path: str, through_epoch: int) -> list:
    """train_history.json's entries up to ``through_epoch`` (later ones are re-run on resume)."""
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [h for h in json.load(f) if h["epoch"] <= through_epoch]


def make_writer(log_dir, name):
    return tf.summary.create_file_writer(os.path.join(log_dir, "tb", name))
