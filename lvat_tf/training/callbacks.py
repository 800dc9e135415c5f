"""The classifier's callbacks: upstream schedule, periodic evaluation, TensorBoard.

The NaN guard and the checkpoint writer, shared with the generative trainers,
are in :mod:`lvat_tf.fitting`.
"""
import os

import keras
import tensorflow as tf
from absl import logging

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
                                      c.mom1, c.mom2)
        self.model.optimizer.learning_rate.assign(lr)
        self.model.optimizer.set_beta_1(beta1)
        self.current = (lr, beta1)


class PeriodicEval(keras.callbacks.Callback):
    """Every ``eval_freq`` epochs and at the last: inference-mode eval on a fixed subset.

    Upstream evaluates 5000 shuffled examples with moving BN statistics; we
    use a fixed random subset of the same size so curves are comparable.
    """

    def __init__(self, dataset, eval_freq, num_epochs, writer=None, prefix="test"):
        super().__init__()
        self.dataset, self.eval_freq, self.num_epochs = dataset, eval_freq, num_epochs
        self.writer, self.prefix = writer, prefix
        self.history = []

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.eval_freq and epoch + 1 != self.num_epochs:
            return
        res = self.model.evaluate(self.dataset, verbose=0, return_dict=True)
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
    """TensorBoard scalars per epoch: every loss term, accuracy, lr, beta1, time."""

    def __init__(self, writer, schedule: UpstreamSchedule):
        super().__init__()
        self.writer, self.schedule = writer, schedule

    def on_epoch_end(self, epoch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        lr, beta1 = self.schedule.current
        parts = " ".join(f"{k}={float(v):.4f}" for k, v in (logs or {}).items()
                         if not k.startswith("test_"))
        logging.info("Epoch %d step %d %s lr=%.3g beta1=%.2f", epoch + 1, step, parts, lr, beta1)
        with self.writer.as_default():
            for k, v in (logs or {}).items():
                if not k.startswith("test_"):
                    tf.summary.scalar(k, float(v), step=step)
            tf.summary.scalar("learning_rate", lr, step=step)
            tf.summary.scalar("beta1", beta1, step=step)
        self.writer.flush()


def make_writer(log_dir, name):
    return tf.summary.create_file_writer(os.path.join(log_dir, "tb", name))
