"""The semi-supervised Keras model: CE on the labeled batch + the method's regularisers.

One step (upstream's graph, in this order):

1. labeled pass, BN ``update`` mode, its own dropout mask -> cross-entropy;
2. clean unlabeled pass, BN ``batch`` mode, the step's unlabeled mask;
3. each regulariser, whose perturbed passes reuse that mode and mask.

All randomness of a step is keyed by (seed, optimizer.iterations), so a run
resumed from a checkpoint replays the same dropout masks and directions.
"""
import contextlib
from typing import Dict, NamedTuple

import keras
import tensorflow as tf

from lvat_tf.losses import cross_entropy
from lvat_tf.models.layers import fold_seed
from lvat_tf.regularizers.base import Forward
from lvat_tf import distribute

# Salts folded into the step seed.
_SALT_LABELED, _SALT_UNLABELED, _SALT_REG = 11, 12, 13


class StepLosses(NamedTuple):
    """The losses of one step.

    Attributes:
      total: scalar, cross-entropy + every regulariser's terms.
      xe: scalar cross-entropy on the labeled batch.
      logits_l: (B, K) labeled logits (BN update mode).
      regularizers: {metric name: scalar} of the regularisers' terms.
      features_l: (B, D) labeled features (what ``update_state`` receives).
    """

    total: tf.Tensor
    xe: tf.Tensor
    logits_l: tf.Tensor
    regularizers: Dict[str, tf.Tensor]
    features_l: tf.Tensor


class ClassifierForward(Forward):
    """The step's classifier on unlabeled-space inputs: BN ``batch`` (upstream's perturbed
    passes) or ``moving`` (``--vat_bn`` / ``--lvat_bn``), never ``update`` (only the labeled
    pass moves the BN statistics), and the step's unlabeled dropout mask."""

    def __init__(self, classifier, dropout_seed):
        self.classifier, self.dropout_seed = classifier, dropout_seed

    @staticmethod
    def _check(bn_mode):
        if bn_mode not in ("batch", "moving"):
            raise ValueError(f"perturbed-pass BN mode must be batch|moving, got {bn_mode!r}")

    def __call__(self, x, features=False, bn_mode="batch"):
        self._check(bn_mode)
        return self.classifier(x, bn_mode=bn_mode, dropout_seed=self.dropout_seed,
                               return_features=features)

    def linearize(self, x, tangent, bn_mode="batch"):
        self._check(bn_mode)
        return self.classifier.linearize(x, tangent, bn_mode=bn_mode,
                                         dropout_seed=self.dropout_seed)


class SSLModel(keras.Model):
    """Wraps a classifier with the training objective.

    Args:
      classifier: a :class:`lvat_tf.models.classifiers.Classifier`.
      regularizers: list of :class:`lvat_tf.regularizers.base.Regularizer`.
      seed: the run seed (int).
      rampup_steps: updates over which the unlabeled terms' weight ramps up
        (:meth:`consistency_weight`; 0 = off). Labeled terms (MAT's information
        term) keep full weight: they are supervised, not consistency, terms.

    Data: dicts {``x_l`` (B, H, W, C), ``y_l`` (B,), ``x_u`` (U, H, W, C)} for
    training; tuples (x, y) for evaluation.
    """

    def __init__(self, classifier, regularizers=(), seed: int = 1, rampup_steps: int = 0,
                 **kwargs):
        super().__init__(**kwargs)
        self.classifier = classifier
        self.regularizers = list(regularizers)
        self.run_seed = int(seed)
        self.rampup_steps = int(rampup_steps)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.xe_tracker = keras.metrics.Mean(name="xe_loss")
        self.acc_tracker = keras.metrics.Mean(name="accuracy")
        self.reg_trackers = {r.name: keras.metrics.Mean(name=r.name) for r in self.regularizers}
        # Regularisers with a labeled-batch term (MAT's information term).
        for r in self.regularizers:
            if r.has_labeled_term:
                self.reg_trackers[r.name + "_info"] = keras.metrics.Mean(name=r.name + "_info")
        self.weight_tracker = (keras.metrics.Mean(name="consistency_weight")
                               if self.rampup_steps and self.regularizers else None)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras' TF trainer builds a model under a tf.distribute strategy by
        # pulling one batch and averaging it over replicas, which fails for
        # dict batches under MultiWorkerMirroredStrategy. The classifier and
        # the optimizer are built before fit (training/run.py), so skip it.
        return None

    @property
    def metrics(self):
        extra = [self.weight_tracker] if self.weight_tracker is not None else []
        return [self.loss_tracker, self.xe_tracker, self.acc_tracker,
                *self.reg_trackers.values(), *extra]

    def consistency_weight(self):
        """The weight of the unlabeled terms at this update: exp(-5 (1 - t/T)^2) for t < T.

        Laine & Aila's ramp-up (T = ``rampup_steps``): 0.0067 at the first update, 1 from
        update T on. None when T = 0 (full weight throughout, upstream's step unchanged).
        """
        if not self.rampup_steps:
            return None
        t = tf.minimum(tf.cast(self.optimizer.iterations, tf.float32) / self.rampup_steps, 1.0)
        return tf.exp(-5.0 * tf.square(1.0 - t))

    def call(self, x, training=False):
        return self.classifier(x, training=training)

    def step_seeds(self):
        step = tf.cast(self.optimizer.iterations, tf.int64)
        base = tf.stack([tf.constant(self.run_seed, tf.int64), step])
        return (fold_seed(base, _SALT_LABELED), fold_seed(base, _SALT_UNLABELED),
                fold_seed(base, _SALT_REG))

    def compute_losses(self, data, tape=None) -> StepLosses:
        """The step's :class:`StepLosses` (no update).

        Args:
          data: the step's batch dict.
          tape: the training tape, when called under one; the clean unlabeled
            pass (when no regulariser differentiates through it) and the
            direction searches then run with recording paused.
        """
        no_record = tape.stop_recording if tape is not None else contextlib.nullcontext
        seed_l, seed_u, seed_r = self.step_seeds()
        labeled_regs = [r for r in self.regularizers if r.has_labeled_term]
        feats_l, logits_l = self.classifier(data["x_l"], bn_mode="update", dropout_seed=seed_l,
                                            return_features=True)
        xe = cross_entropy(logits_l, data["y_l"])
        total = xe
        reg_losses = {}
        for reg in labeled_regs:
            loss = reg.labeled_loss(feats_l, data["y_l"])
            reg_losses[reg.name + "_info"] = loss
            total = total + loss
        unlabeled_regs = [r for r in self.regularizers if r.uses_unlabeled]
        if unlabeled_regs:
            x_u = data["x_u"]

            forward = ClassifierForward(self.classifier, seed_u)
            weight = self.consistency_weight()
            want_feats = any(r.needs_features for r in unlabeled_regs)
            grad_clean = any(r.needs_clean_grad for r in unlabeled_regs)
            with (contextlib.nullcontext() if grad_clean else no_record()):
                feats_u, clean = forward(x_u, features=True) if want_feats \
                    else (None, forward(x_u))
            for i, reg in enumerate(self.regularizers):
                if reg not in unlabeled_regs:
                    continue
                loss, _ = reg.unlabeled_loss(
                    forward, x_u, clean if reg.needs_clean_grad else tf.stop_gradient(clean),
                    fold_seed(seed_r, i), no_record=no_record,
                    clean_features=(tf.stop_gradient(feats_u) if reg.needs_features else None))
                reg_losses[reg.name] = loss  # logged unweighted: the term itself
                total = total + (loss if weight is None else weight * loss)
        return StepLosses(total, xe, logits_l, reg_losses, feats_l)

    # Keras traces train_step / test_step with autograph on. Nothing in the step branches
    # or loops on a tensor (loops run over Python ints: power iterations, regularisers), so
    # autograph would only rewrite the source of every function the step calls: skipping it
    # saves ~15 % of each run's fixed tracing cost (measured on the tests' tiny runs) for
    # the same computation (every test result unchanged).
    @tf.autograph.experimental.do_not_convert
    def train_step(self, data):
        variables = self.classifier.trainable_variables
        with tf.GradientTape() as tape:
            losses = self.compute_losses(data, tape)
            # Under tf.distribute each replica's losses are means over its slice
            # and Keras sums the replicas' gradients: 1/R makes that the
            # gradient of the global-batch mean (distribute.py).
            scaled = losses.total / tf.cast(distribute.num_replicas(), losses.total.dtype)
        grads = tape.gradient(scaled, variables)
        weight = self.consistency_weight()  # this update's (before apply moves the counter)
        self.optimizer.apply(grads, variables)
        for reg in self.regularizers:  # e.g. MAT's mixture, after the update
            reg.update_state(tf.stop_gradient(losses.features_l), data["y_l"])
        self._update_metrics(losses.total, losses.xe, losses.logits_l, data["y_l"],
                             losses.regularizers)
        if self.weight_tracker is not None:
            self.weight_tracker.update_state(weight)
        return self._results(self.metrics)

    def _results(self, metrics):
        out = {m.name: m.result() for m in metrics}
        if isinstance(self.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
            # Keras reduces multi-worker step outputs with reduce(MEAN, axis=0),
            # which rejects scalars: hand it shape-(1,) values (scalars after).
            out = {k: tf.reshape(v, [1]) for k, v in out.items()}
        return out

    @tf.autograph.experimental.do_not_convert
    def test_step(self, data):
        x, y = data
        logits = self.classifier(x, bn_mode="moving")
        xe = cross_entropy(logits, y)
        self._update_metrics(xe, xe, logits, y, {}, weight=tf.shape(y)[0])
        return self._results((self.loss_tracker, self.xe_tracker, self.acc_tracker))

    def _update_metrics(self, total, xe, logits, y, reg_losses, weight=None):
        acc = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32),
                                              tf.cast(y, tf.int32)), tf.float32))
        sw = None if weight is None else tf.cast(weight, tf.float32)
        self.loss_tracker.update_state(total, sample_weight=sw)
        self.xe_tracker.update_state(xe, sample_weight=sw)
        self.acc_tracker.update_state(acc, sample_weight=sw)
        for name, loss in reg_losses.items():
            self.reg_trackers[name].update_state(loss)
