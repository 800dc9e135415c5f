"""Finding and restoring the latest tf.train checkpoint, with one-line errors for broken ones.

``tf.train.latest_checkpoint`` returns None when the ``checkpoint`` state file
names a checkpoint whose files are gone, and a restore of a truncated data
file raises a long TF error. A run that found "no checkpoint" would start over
and its checkpoint manager would then delete the older, good checkpoints, so a
broken latest checkpoint stops the run instead, naming the file.
"""
import glob
import os
from typing import Optional

import tensorflow as tf


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be resumed from (one-line message)."""


def latest_checkpoint(directory: str, flag: str = "--log_dir") -> Optional[str]:
    """The latest checkpoint prefix in ``directory``; None when none was ever written.

    Raises:
      CheckpointError: the state file is unreadable or names missing files.
    """
    state_file = os.path.join(directory, "checkpoint")
    if not os.path.isfile(state_file):
        return None
    try:
        state = tf.train.get_checkpoint_state(directory)
    except Exception as e:  # text-format protobuf errors of a corrupt state file
        raise CheckpointError(f"{flag}: {state_file} is not a checkpoint state file "
                              f"({type(e).__name__}); delete it to start over") from None
    if state is None or not state.model_checkpoint_path:
        raise CheckpointError(f"{flag}: {state_file} names no checkpoint; delete it to start over")
    # get_checkpoint_state already joins a relative entry with ``directory``.
    path = state.model_checkpoint_path
    if not os.path.isfile(path + ".index") and not os.path.isabs(path):
        path = os.path.join(directory, os.path.basename(path))
    if not os.path.isfile(path + ".index") or not glob.glob(path + ".data-*"):
        raise CheckpointError(f"{flag}: {state_file} names {os.path.basename(path)}, whose "
                              f"files are missing (a half-written checkpoint?); point "
                              f"{state_file} at an earlier one or delete the directory")
    return path


def restore(checkpoint: tf.train.Checkpoint, path: str, flag: str = "--log_dir",
            partial: bool = False):
    """Restores ``path`` into ``checkpoint``; a truncated or foreign file is a CheckpointError."""
    try:
        status = checkpoint.restore(path)
        if partial:
            status = status.expect_partial()
        status.assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError, IndexError, KeyError) as e:
        # IndexError: TF's reader on a truncated data file ("Read less bytes than requested").
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{flag}: cannot restore {path} ({first[:200]})") from None
    return status
