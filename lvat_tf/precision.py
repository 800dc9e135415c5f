"""Keras dtype policies as context managers: the one place the mixed-precision policy is named.

On the ground floor so that the generative models (which run their decoder in
bfloat16 under ``--generative_dtype``) and the trainer share one definition.
"""
import contextlib

import keras

#: Keras' policy for ``--mixed_precision``: bfloat16 compute, float32 variables.
MIXED_POLICY = "mixed_bfloat16"


@contextlib.contextmanager
def dtype_policy(name):
    """Keras' global dtype policy ``name`` inside (None: unchanged), restored after."""
    if name is None:
        yield
        return
    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(old)


@contextlib.contextmanager
def mixed_precision_policy(enabled: bool):
    """Keras' ``mixed_bfloat16`` policy for the models built inside, restored after.

    bfloat16 compute with float32 variables: CPUs with AVX512-BF16/AMX, Ampere
    and later GPUs, TPUs. The losses (softmax, KL, cross-entropy) and the
    batch-norm statistics run in float32 (losses.py, models/layers.py) and VAT's
    direction uses the exact power iteration (config.py): finite differences at
    xi = 1e-6 are below bfloat16's resolution (LVAT against p(y|x) keeps them: its
    direction is the gradient at r = 0). LVAT's generative model stays float32
    unless ``--generative_dtype=bfloat16`` (generative/model_dir.py). float16
    is not offered: it needs dynamic loss scaling, and the VAT gradients of a
    small KL underflow without it.
    """
    with dtype_policy(MIXED_POLICY if enabled else None):
        yield
