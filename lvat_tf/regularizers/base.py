"""The regulariser interface ``SSLModel`` calls: every hook declared, each with a no-op default.

A method is a list of regularisers (``methods.py``); one training step calls,
for each of them and in this order:

1. ``labeled_loss(features_l, y_l)`` when ``has_labeled_term`` (MAT's
   information term), added to the loss and logged as ``<name>_info``;
2. ``unlabeled_loss(forward, x_u, clean_logits, seed, no_record,
   clean_features)`` when ``uses_unlabeled``, added and logged as ``<name>``;
3. after the optimizer step, ``update_state(features_l, y_l)`` (MAT's
   mixture moving averages).

``variables`` are checkpointed with the run. ``forward`` (a :class:`Forward`;
``forward(x', features=False, bn_mode="batch")``) runs the classifier on unlabeled-space inputs in upstream's
"batch statistics, no update, shared dropout mask" mode (with ``features=True``
it returns (features, logits); ``bn_mode="moving"`` normalises with the BN
moving averages instead, still without updating them); ``no_record()`` is a
context manager under which the training tape records nothing: the search for the adversarial direction
runs there, since its result is a constant of the loss (upstream's
stop_gradient), so recording it would only cost memory and time.
``forward.linearize(x', tangent, bn_mode="batch")`` gives the logits and their
directional derivative (the exact power iteration's J d).
"""
import abc
import contextlib
import dataclasses
import functools
from typing import Callable, Dict, List, Optional, Tuple

import tensorflow as tf

from lvat_tf.losses import kl_divergence_with_logits
from lvat_tf.models.layers import forward_mode_linearize


class Forward(abc.ABC):
    """The classifier in perturbed-pass mode, as :meth:`Regularizer.unlabeled_loss` gets it.

    Subclasses implement ``__call__`` (abstract: a Forward without it cannot be built);
    :meth:`linearize` has a generic default.
    """

    @abc.abstractmethod
    def __call__(self, x, features=False, bn_mode="batch"):
        """Logits (B, K) of inputs (B, ...); with ``features`` (features (B, D), logits)."""

    def linearize(self, x, tangent, bn_mode="batch") -> Tuple[tf.Tensor, tf.Tensor]:
        """(logits (B, K), J tangent (B, K)), J = d logits / d x at ``x``.

        Default: TensorFlow's forward mode over ``__call__`` (correct for any
        forward; the training step's classifier forward overrides it with the
        classifier's own cheaper pass, ``Classifier.linearize``).
        """
        return forward_mode_linearize(self, x, tangent, bn_mode=bn_mode)

    def with_bn_mode(self, bn_mode: str) -> "Forward":
        """This forward with ``bn_mode`` fixed, for both calls."""
        return FunctionForward(functools.partial(self, bn_mode=bn_mode),
                               functools.partial(self.linearize, bn_mode=bn_mode))


class FunctionForward(Forward):
    """A :class:`Forward` from a callable ``fn(x, **kwargs)`` (and optionally its linearisation
    ``linearize(x, tangent)``; default: :meth:`Forward.linearize`'s forward mode)."""

    def __init__(self, fn: Callable, linearize: Optional[Callable] = None):
        self._fn, self._linearize = fn, linearize

    def __call__(self, x, **kwargs):
        return self._fn(x, **kwargs)

    def linearize(self, x, tangent, **kwargs):
        if self._linearize is None:
            return forward_mode_linearize(self._fn, x, tangent, **kwargs)
        return self._linearize(x, tangent, **kwargs)


def as_forward(forward) -> Forward:
    """``forward`` when it is a :class:`Forward`, else a :class:`FunctionForward` of it
    (tests and callers outside a training step pass plain callables)."""
    return forward if isinstance(forward, Forward) else FunctionForward(forward)


class Regularizer:
    """Base class of every regulariser; subclasses override what they use.

    Class attributes (subclass dataclasses may turn them into fields):
      name: the metric name of the unlabeled term.
      needs_clean_grad: the loss is differentiated through the clean unlabeled
        logits (entropy minimisation); otherwise they arrive gradient-stopped
        and the clean pass runs unrecorded.
      needs_features: the unlabeled term takes the clean pass's features (MAT).
      has_labeled_term: :meth:`labeled_loss` contributes.
    """

    name: str = "regularizer"
    needs_clean_grad: bool = False
    needs_features: bool = False
    has_labeled_term: bool = False

    @property
    def uses_unlabeled(self) -> bool:
        """Whether :meth:`unlabeled_loss` runs (False: the unlabeled batch is not needed)."""
        return True

    @property
    def variables(self) -> List[tf.Variable]:
        """State checkpointed with the run (MAT's mixture); none by default."""
        return []

    def labeled_loss(self, features_l: tf.Tensor, y_l: tf.Tensor) -> tf.Tensor:
        """A term on the labeled batch: features (B, D), labels (B,) -> scalar."""
        del features_l, y_l
        return tf.constant(0.0)

    def unlabeled_loss(self, forward, x: tf.Tensor, clean_logits: tf.Tensor, seed: tf.Tensor,
                       no_record=contextlib.nullcontext,
                       clean_features: Optional[tf.Tensor] = None
                       ) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
        """The term on the unlabeled batch.

        Args:
          forward: the classifier in perturbed-pass mode (module docstring).
          x: (U, H, W, C) unlabeled inputs.
          clean_logits: (U, K) the clean pass (gradient-stopped unless
            ``needs_clean_grad``).
          seed: (2,) int64 stateless seed of this regulariser in this step.
          no_record: context manager pausing the training tape.
          clean_features: (U, D) the clean pass's features when ``needs_features``.

        Returns:
          (scalar loss, {metric name: scalar}).
        """
        del forward, x, clean_logits, seed, no_record, clean_features
        zero = tf.constant(0.0)
        return zero, {self.name: zero}

    def update_state(self, features_l: tf.Tensor, y_l: tf.Tensor) -> None:
        """After the optimizer step, with the labeled pass's features (B, D) and labels (B,)."""
        del features_l, y_l

    def __call__(self, forward, x, clean_logits, seed, no_record=contextlib.nullcontext,
                 clean_features=None):
        return self.unlabeled_loss(forward, x, clean_logits, seed, no_record=no_record,
                                   clean_features=clean_features)


#: How a consistency term's own classifier passes are batch-normalised
#: (``--vat_bn``, ``--lvat_bn``; ours except ``batch``; docs/methods.md).
#: ``batch`` = upstream: each pass with its own batch's statistics (the
#: perturbed pass with those of a batch made only of perturbed inputs).
#: ``joint``: the reference input and the perturbed input as the two halves of
#: one batch, [x; x_adv], so both are normalised with the same statistics.
#: ``moving``: the term's passes with the BN moving averages (never updated).
PERTURBED_BN_MODES = ("batch", "joint", "moving")


def joint_forward(forward, reference):
    """``v -> forward([reference; v])[B:]``: v's logits (B, K), normalised beside the reference.

    Args:
      forward: the classifier on (2B, ...) inputs (``Regularizer.unlabeled_loss``'s).
      reference: (B, ...) inputs whose batch v joins.
    """
    b = tf.shape(reference)[0]
    return lambda v: forward(tf.concat([reference, v], 0))[b:]


def joint_reference_logits(forward, reference, other):
    """The reference's logits (B, K) from one pass over [reference; other], gradient-stopped."""
    b = tf.shape(reference)[0]
    return tf.stop_gradient(forward(tf.concat([reference, other], 0))[:b])


def joint_consistency(forward, reference, x_adv):
    """KL(p(y|reference) || p(y|x_adv)) from one pass over [reference; x_adv] (both (B, ...)).

    The reference half is the (gradient-stopped) target; the gradient flows
    through the perturbed half and through the shared batch statistics.
    """
    b = tf.shape(reference)[0]
    logits = forward(tf.concat([reference, x_adv], 0))
    return kl_divergence_with_logits(tf.stop_gradient(logits[:b]), logits[b:])


@dataclasses.dataclass(frozen=True)
class BuildContext:
    """What a method's regularisers may need beyond the config: ``MethodSpec.build(cfg, ctx)``.

    Attributes:
      generative_model: the frozen VAE / Glow (LVAT methods), else None.
      feature_dim: the classifier's feature size (D of its last hidden layer).
      num_classes: K.
      generative_decoder: a copy of ``generative_model`` that computes in another
        dtype (``--generative_dtype=bfloat16``) for LVAT's decodes; None: the model.
    """

    generative_model: object = None
    feature_dim: Optional[int] = None
    num_classes: Optional[int] = None
    generative_decoder: object = None
