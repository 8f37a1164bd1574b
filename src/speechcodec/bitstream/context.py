"""Coding contexts from the previous code frame: the rule the range coder and the prior share.

A code symbol's table is chosen by two things the decoder already has when it reaches it: the
magnitude of the same channel's symbol one frame earlier (0, 1, 2, 3 or more) and how many
channels of that frame were non-zero (under 1/16, 1/4, 1/2 of them, or more). Pauses, where
nearly every symbol is zero, then cost almost nothing, and loud frames get wider tables.
Pure integer arithmetic: every machine picks the same table. ``speechcodec.entropy`` holds the
same rule for torch tensors (tested to agree); this module imports no torch.
"""

from __future__ import annotations

import numpy as np

from speechcodec.contexts import ACTIVITY_SIXTEENTHS, MAGNITUDE_LEVELS, NUM_CONTEXTS  # noqa: F401 - also this module's


def contexts_after(previous: np.ndarray) -> np.ndarray:
    """Context index (int64 ``[C, ...]``, ``0 .. NUM_CONTEXTS - 1``) of the symbols that follow
    the frame(s) ``previous`` (int ``[C, ...]``; channels on the first axis)."""
    previous = np.asarray(previous, dtype=np.int64)
    return magnitude_term(previous) + activity_term(np.count_nonzero(previous, axis=0), previous.shape[0])


def frame_contexts(codes: np.ndarray) -> np.ndarray:
    """Context of every symbol of ``codes`` (int ``[C, T]``): each frame's comes from the frame
    before it, the first frame's from a frame of zeros."""
    codes = np.asarray(codes, dtype=np.int64)
    previous = np.concatenate([np.zeros((codes.shape[0], 1), np.int64), codes[:, :-1]], axis=1)
    return contexts_after(previous)


def magnitude_term(values: np.ndarray) -> np.ndarray:
    """The part of the context a previous symbol's magnitude gives (int64, same shape)."""
    magnitude = np.minimum(np.abs(np.asarray(values, dtype=np.int64)), MAGNITUDE_LEVELS - 1)
    return magnitude * (len(ACTIVITY_SIXTEENTHS) + 1)


def activity_term(nonzero, channels: int):
    """The part of the context given by ``nonzero`` (an int, or an int array) of ``channels``
    symbols of the previous frame being non-zero."""
    return sum(16 * nonzero >= t * channels for t in ACTIVITY_SIXTEENTHS)  # sum() starts from int 0
