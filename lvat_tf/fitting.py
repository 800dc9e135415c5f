"""The Keras ``fit`` callbacks every trainer shares: the NaN guard and the checkpoint writer.

The classifier (``training/run.py``) and the VAE and Glow trainers
(``generative/trainer.py``) all train through ``keras.Model.fit``; what they
must agree on lives here, once:

* :class:`NaNGuard` stops a run at the first non-finite loss of a batch;
* :class:`Checkpointer` writes a tf.train checkpoint at the end of an epoch
  (the classifier's epoch, or a generative trainer's logging period), unless
  the guard tripped or a weight is not finite, so the last good checkpoint is
  never replaced by a broken one. TF writes new files and updates the
  ``checkpoint`` index last, so a kill during a save leaves the previous one
  valid.

Callbacks run in list order: put the guard first and the checkpointer last,
after any callback that writes files the checkpoint must agree with.
"""
import math
from typing import Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging


class NaNGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite scalar in a batch's logs.

    Attributes:
      bad_step: the optimizer step (1-based count of applied updates) whose
        logs were not finite, or None.
      bad_logs: {name: float} of that batch.
    """

    def __init__(self):
        super().__init__()
        self.bad_step: Optional[int] = None
        self.bad_logs = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.bad_step is not None or not logs:
            return
        vals = {k: float(v) for k, v in logs.items() if np.ndim(v) == 0}
        if not all(math.isfinite(v) for v in vals.values()):
            self.bad_step = int(self.model.optimizer.iterations.numpy())
            self.bad_logs = vals
            self.model.stop_training = True
            logging.error("Non-finite loss at step %d (epoch %d): %s", self.bad_step,
                          self._epoch, vals)


class Checkpointer(keras.callbacks.Callback):
    """Saves a checkpoint at the end of every epoch, or refuses to.

    Args:
      manager: the ``tf.train.CheckpointManager`` of the run's checkpoint.
      guard: the run's :class:`NaNGuard`; no checkpoint once it tripped.
      variables: the weights that must all be finite for a save.
      counter: an int64 variable inside the checkpoint that records the
        progress a restart resumes from.
      count: ``"epochs"`` (counter = epochs done, the checkpoint numbered by
        epoch: the classifier) or ``"steps"`` (counter = optimizer steps
        done, numbered by step: the generative trainers).
    """

    def __init__(self, manager, guard: NaNGuard, variables: Sequence[tf.Variable],
                 counter: tf.Variable, count: str = "epochs"):
        super().__init__()
        if count not in ("epochs", "steps"):
            raise ValueError(f"count: expected 'epochs' or 'steps', got {count!r}")
        self.manager, self.guard, self.variables = manager, guard, list(variables)
        self.counter, self.count = counter, count

    def on_epoch_end(self, epoch, logs=None):
        if self.guard.bad_step is not None:
            return
        if not all(bool(tf.reduce_all(tf.math.is_finite(v))) for v in self.variables):
            self.guard.bad_step = int(self.model.optimizer.iterations.numpy())
            self.model.stop_training = True
            logging.error("Non-finite weights after epoch %d: checkpoint not written", epoch + 1)
            return
        done = epoch + 1 if self.count == "epochs" else int(self.model.optimizer.iterations)
        self.counter.assign(done)
        path = self.manager.save(checkpoint_number=done)
        logging.info("Saved checkpoint %s", path)
