"""Range coding of integer code frames with frozen integer probability tables (constriction).

The tables are integer counts, one row per code channel, over the symbols
``-max_symbol .. +max_symbol``. They are handed to constriction as float64 numbers that equal
the stored integers exactly (every count is below 2**53), so constriction's own deterministic
fixed-point quantisation sees bit-identical input on every machine: the encoder and the decoder
always build the same model. Nothing computed by a neural network at decode time takes part.

A model with ``contexts > 1`` has that many tables per channel (row ``c * contexts + k``); the
context ``k`` of each symbol comes from the frame before it (:mod:`speechcodec.bitstream.context`),
so symbols are decoded frame by frame. To keep that loop fast each symbol is coded in two parts
that multiply to its table probability exactly: first, frame by frame (all channels of frame 0,
then of frame 1, ...), its value if within ``+-CORE_MAX`` or an escape, from the row's counts
with the tails summed into the escape; then, after the last frame, the value of every escaped
symbol in the same order, from the row's tail counts. Contexts only need magnitudes up to 3, so
the core part alone decides them.
"""

from __future__ import annotations

import constriction
import numpy as np

from speechcodec.bitstream.context import activity_term, frame_contexts, magnitude_term
from speechcodec.contexts import MAGNITUDE_LEVELS, NUM_CONTEXTS
from speechcodec.errors import BitstreamError

CORE_MAX = 7  # context coding: symbols beyond +-CORE_MAX are escaped to a second pass
ENCODE_BLOCK_FRAMES = 64  # context coding hands constriction the table rows of this many frames at once
assert CORE_MAX >= MAGNITUDE_LEVELS - 1  # the core part must decide every context


def new_encoder():
    """A range encoder (constriction's queue coder: 32-bit words, decoded in the order written)."""
    return constriction.stream.queue.RangeEncoder()


def finish(encoder) -> bytes:
    """An encoder's whole 32-bit words, little-endian: a payload whose length its container gives."""
    return encoder.get_compressed().astype("<u4").tobytes()


def new_decoder(payload: bytes):
    """A range decoder over :func:`finish`'s bytes; ``BitstreamError`` unless whole words."""
    if len(payload) % 4:
        raise BitstreamError(f"range-coded payload of {len(payload)} bytes is not 32-bit aligned")
    return constriction.stream.queue.RangeDecoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))


def finish_cut(encoder) -> bytes:
    """An encoder's words big-endian, trailing zero bytes dropped (at least one byte): the start of
    a packet that :func:`new_cut_decoder` reads, and that may be cut shorter still where it
    decodes the same (the caller checks by decoding)."""
    return encoder.get_compressed().astype(">u4").tobytes().rstrip(b"\0") or b"\0"


def shortest_cut(encoder, full: bytes) -> bytes:
    """The fewest bytes (at least one, at most four fewer than ``full``, the encoder's
    :func:`finish_cut`) that a :func:`new_cut_decoder` decodes as it decodes ``full``: the value
    they spell, zero-padded, must lie within the coder's last interval ``[lower, lower + range)``
    (``encoder.pos()``: the 64-bit state after the words written so far). ``full`` cut short, or
    cut short and rounded up in its last byte; the cut short first where both lie within. The
    caller may check it by decoding."""
    position, (lower, width) = encoder.pos()
    size = 4 * (position + 2)  # the words written, and the state's two
    if len(full) > size:
        return full
    value = int.from_bytes(full.ljust(size, b"\0"), "big")
    start = value - ((value - lower) % (1 << 64))  # the interval's start: ``lower`` within this frame
    for keep in range(max(1, len(full) - 4), len(full)):
        shift = 8 * (size - keep)
        head = value >> shift
        if start <= head << shift < start + width:
            return full[:keep]
        if head + 1 < 256 ** keep and start <= (head + 1) << shift < start + width:
            return (head + 1).to_bytes(keep, "big")
    return full


def new_cut_decoder(packet: bytes):
    """A range decoder over any bytes, read as big-endian words with the bytes cut off as zeros."""
    words = np.frombuffer(packet + b"\0" * (-len(packet) % 4), ">u4").astype(np.uint32)
    return constriction.stream.queue.RangeDecoder(words)


class RangeCoder:
    """Codes ``[C, T]`` integer frames with frozen categorical tables.

    Args:
        pmf: int array ``[C * contexts, S]`` of positive counts, ``S = 2 * max_symbol + 1``;
            row ``c * contexts + k`` is the frozen distribution of code channel ``c`` in
            context ``k``; each row sums to ``2**precision``.
        contexts: 1 (one table per channel, coded channel by channel) or ``NUM_CONTEXTS``.
    """

    def __init__(self, pmf: np.ndarray, contexts: int = 1):
        pmf = np.asarray(pmf)
        if pmf.ndim != 2 or pmf.shape[1] % 2 != 1 or not np.issubdtype(pmf.dtype, np.integer):
            raise ValueError(f"pmf must be an integer array [C, 2R+1], got {pmf.dtype} {pmf.shape}")
        if contexts not in (1, NUM_CONTEXTS) or pmf.shape[0] % contexts:
            raise ValueError(f"contexts must be 1 or {NUM_CONTEXTS} and divide the {pmf.shape[0]} table rows")
        if (pmf <= 0).any():
            raise ValueError("pmf counts must all be positive so every symbol stays codable")
        self.pmf = pmf.astype(np.int64)
        self.contexts = contexts
        self.num_channels = pmf.shape[0] // contexts
        self.max_symbol = m = pmf.shape[1] // 2
        totals = self.pmf.sum(axis=1, keepdims=True)
        # Ideal code length of each symbol under the integer tables, in bits: what the
        # estimate of the real file size is computed from.
        self._bits = -np.log2(self.pmf / totals)
        if contexts == 1:
            self._models = [
                constriction.stream.model.Categorical(row.astype(np.float64), perfect=False)
                for row in self.pmf
            ]
            return
        # One model family; each symbol brings its own row (exact integers as float64).
        self._family = constriction.stream.model.Categorical(perfect=False)
        self._row_base = np.arange(self.num_channels, dtype=np.int64) * contexts
        self._core = r = min(CORE_MAX, m)
        core = self.pmf[:, m - r: m + r + 1]
        tails = np.concatenate([self.pmf[:, : m - r], self.pmf[:, m + r + 1:]], axis=1)
        if r < m:  # core symbols -r..r, then the escape (index 2r + 1) holding both tails
            core = np.concatenate([core, tails.sum(axis=1, keepdims=True)], axis=1)
        self._core_rows = core.astype(np.float64)
        self._tail_rows = tails.astype(np.float64)  # symbols -m..-(r+1), then r+1..m
        # The magnitude part of the context of each core index i (value i - r); the escape,
        # index 2r + 1, stands for magnitudes above r >= 3, as value r + 1 does.
        self._core_terms = magnitude_term(np.arange(-r, r + 1 + (r < m)))

    def _table_rows(self, codes: np.ndarray) -> np.ndarray:
        """Row of ``pmf`` that codes each symbol of ``codes`` (int ``[C, T]``)."""
        if self.contexts == 1:
            return np.broadcast_to(np.arange(self.num_channels)[:, None], codes.shape)
        return self._row_base[:, None] + frame_contexts(codes)

    def estimate_bits(self, codes: np.ndarray) -> float:
        """Ideal bits for ``codes`` (int ``[C, T]``) under the tables, before range coding."""
        codes = self._check(codes)
        return float(self._bits[self._table_rows(codes), codes + self.max_symbol].sum())

    def encode(self, codes: np.ndarray) -> bytes:
        """Range-code ``codes`` (int ``[C, T]`` within ``+-max_symbol``) into bytes."""
        codes = self._check(codes)
        encoder = new_encoder()
        if self.contexts == 1:
            idx = (codes + self.max_symbol).astype(np.int32)
            for channel, model in enumerate(self._models):
                encoder.encode(np.ascontiguousarray(idx[channel]), model)
        elif codes.size:
            self._encode_with_contexts(encoder, codes)
        return finish(encoder)

    def _encode_with_contexts(self, encoder, codes: np.ndarray) -> None:
        m, r = self.max_symbol, self._core
        rows = self._table_rows(codes).T.reshape(-1)  # frame-major, as the decoder goes
        values = codes.T.reshape(-1)
        escaped = np.abs(values) > r
        core = np.where(escaped, 2 * r + 1, values + r).astype(np.int32)
        step = ENCODE_BLOCK_FRAMES * self.num_channels  # a cache-sized buffer of table rows
        buf = np.empty((min(step, len(rows)), self._core_rows.shape[1]))
        for start in range(0, len(rows), step):
            part = rows[start: start + step]
            self._core_rows.take(part, 0, buf[: len(part)])
            encoder.encode(core[start: start + step], self._family, buf[: len(part)])
        if escaped.any():
            tail = values[escaped]
            tail_idx = np.where(tail < 0, tail + m, tail - r - 1 + (m - r)).astype(np.int32)
            encoder.encode(tail_idx, self._family, self._tail_rows[rows[escaped]])

    def decode(self, payload: bytes, num_frames: int) -> np.ndarray:
        """Inverse of :meth:`encode`: returns int32 ``[C, num_frames]``.

        Raises:
            BitstreamError: the payload is not a whole number of 32-bit words, or the coder
                rejects it. Garbage that passes both decodes to garbage symbols, never hangs:
                exactly ``C * num_frames`` symbols are read (plus one per escape).
        """
        decoder = new_decoder(payload)
        try:
            if self.contexts == 1:
                idx = np.stack([decoder.decode(model, num_frames) for model in self._models])
                return idx.astype(np.int32) - self.max_symbol
            return self._decode_with_contexts(decoder, num_frames).astype(np.int32)
        except Exception as exc:  # constriction raises plain exceptions on invalid data
            raise BitstreamError(f"range decoder rejected the payload: {exc}") from None

    def _decode_with_contexts(self, decoder, num_frames: int) -> np.ndarray:
        channels, m, r = self.num_channels, self.max_symbol, self._core
        core = np.empty((num_frames, channels), np.int64)
        # The rows of frame t: the magnitude term of each symbol of frame t - 1 (zero exactly
        # for a zero symbol), plus (channel base + activity term) looked up by how many of
        # those terms are non-zero. As few numpy calls a frame as possible: this loop is the
        # range decoder's whole cost.
        base_by_nonzero = [self._row_base + activity_term(nz, channels) for nz in range(channels + 1)]
        terms, take, family, count = self._core_terms.take, self._core_rows.take, self._family, np.count_nonzero
        buf = np.empty((channels, self._core_rows.shape[1]))
        mag = np.empty(channels, np.int64)
        rows = base_by_nonzero[0]
        for t in range(num_frames):  # each frame's tables come from the one before
            take(rows, 0, buf)
            frame = core[t] = decoder.decode(family, buf)
            terms(frame, out=mag)
            rows = mag + base_by_nonzero[count(mag)]
        values = core - r
        escaped = core == 2 * r + 1
        if escaped.any():
            previous = np.concatenate([np.full((1, channels), r), core[:-1]])  # frame -1: zeros
            mag_seen = self._core_terms[previous]
            activity = activity_term(np.count_nonzero(mag_seen, axis=1), channels)[:, None]
            rows_seen = self._row_base + mag_seen + activity
            tail = decoder.decode(family, self._tail_rows[rows_seen[escaped]]).astype(np.int64)
            values[escaped] = np.where(tail < m - r, tail - m, tail - (m - r) + r + 1)
        return values.T

    def _check(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[0] != self.num_channels:
            raise ValueError(f"codes must be [{self.num_channels}, T], got {codes.shape}")
        if codes.size and np.abs(codes).max() > self.max_symbol:
            raise ValueError(f"codes must lie within +-{self.max_symbol}; clip them first")
        return codes.astype(np.int64)
