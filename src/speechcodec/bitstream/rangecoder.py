"""Range coding of integer code frames with frozen integer probability tables (constriction).

The tables are integer counts, one row per code channel, over the symbols
``-max_symbol .. +max_symbol``. They are handed to constriction as float64 numbers that equal
the stored integers exactly (every count is below 2**53), so constriction's own deterministic
fixed-point quantisation sees bit-identical input on every machine: the encoder and the decoder
always build the same model. Nothing computed by a neural network at decode time takes part.
"""

from __future__ import annotations

import constriction
import numpy as np

from speechcodec.errors import BitstreamError


class RangeCoder:
    """Codes ``[C, T]`` integer frames channel by channel with one categorical model per channel.

    Args:
        pmf: int array ``[C, S]`` of positive counts, ``S = 2 * max_symbol + 1``; row ``c`` is
            the frozen distribution of code channel ``c``; each row sums to ``2**precision``.
    """

    def __init__(self, pmf: np.ndarray):
        pmf = np.asarray(pmf)
        if pmf.ndim != 2 or pmf.shape[1] % 2 != 1 or not np.issubdtype(pmf.dtype, np.integer):
            raise ValueError(f"pmf must be an integer array [C, 2R+1], got {pmf.dtype} {pmf.shape}")
        if (pmf <= 0).any():
            raise ValueError("pmf counts must all be positive so every symbol stays codable")
        self.pmf = pmf.astype(np.int64)
        self.num_channels, num_symbols = pmf.shape
        self.max_symbol = num_symbols // 2
        totals = self.pmf.sum(axis=1, keepdims=True)
        # Ideal code length of each symbol under the integer tables, in bits: what the
        # estimate of the real file size is computed from.
        self._bits = -np.log2(self.pmf / totals)
        self._models = [
            constriction.stream.model.Categorical(row.astype(np.float64), perfect=False)
            for row in self.pmf
        ]

    def estimate_bits(self, codes: np.ndarray) -> float:
        """Ideal bits for ``codes`` (int ``[C, T]``) under the tables, before range coding."""
        idx = self._check(codes) + self.max_symbol
        return float(np.take_along_axis(self._bits, idx, axis=1).sum())

    def encode(self, codes: np.ndarray) -> bytes:
        """Range-code ``codes`` (int ``[C, T]`` within ``+-max_symbol``) into bytes."""
        idx = (self._check(codes) + self.max_symbol).astype(np.int32)
        encoder = constriction.stream.queue.RangeEncoder()
        for channel, model in enumerate(self._models):
            encoder.encode(np.ascontiguousarray(idx[channel]), model)
        return encoder.get_compressed().astype("<u4").tobytes()

    def decode(self, payload: bytes, num_frames: int) -> np.ndarray:
        """Inverse of :meth:`encode`: returns int32 ``[C, num_frames]``.

        Raises:
            BitstreamError: the payload is not a whole number of 32-bit words, or the coder
                rejects it. Garbage that passes both decodes to garbage symbols, never hangs:
                exactly ``C * num_frames`` symbols are read.
        """
        if len(payload) % 4:
            raise BitstreamError(f"range-coded payload of {len(payload)} bytes is not 32-bit aligned")
        words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
        try:
            decoder = constriction.stream.queue.RangeDecoder(words)
            rows = [decoder.decode(model, num_frames) for model in self._models]
        except Exception as exc:  # constriction raises plain exceptions on invalid data
            raise BitstreamError(f"range decoder rejected the payload: {exc}") from None
        return np.stack(rows).astype(np.int32) - self.max_symbol

    def _check(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[0] != self.num_channels:
            raise ValueError(f"codes must be [{self.num_channels}, T], got {codes.shape}")
        if codes.size and np.abs(codes).max() > self.max_symbol:
            raise ValueError(f"codes must lie within +-{self.max_symbol}; clip them first")
        return codes.astype(np.int64)
