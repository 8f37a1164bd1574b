"""Range coding of integers under discretised Laplace distributions on a fixed grid of scales.

A symbol ``k`` quantised by rounding from a Laplace variable of scale ``b`` has probability
``1 - r`` at zero and ``r**(2|k| - 1) (1 - r**2) / 2`` elsewhere, with ``r = exp(-1 / (2 b))``.
The scales sit on a grid of eighth-octaves, ``b_j = 2**(j / 8)``; a coder says which grid
point codes each symbol by an integer index, so every probability the decoder uses follows
from integers.

The tables are built once, in exact steps: ``exp`` and the powers of two come from a fixed
Taylor series in Python floats (IEEE double: each ``+ - * /`` is correctly rounded on every
machine), never from the platform's maths library, and they reach constriction as integer
counts (exact in float64), as :mod:`speechcodec.bitstream.rangecoder` hands over its tables.
So an encoder and a decoder on different machines build bit-identical models.

Each table covers ``-C_j .. C_j`` (``C_j`` about 14 scales, at most :data:`MAX_CORE`) plus an
escape; an escaped symbol is followed by its sign and its excess magnitude, coded uniformly in
16 bits. Symbols are grouped by table: all those of the lowest index first, in the order given,
then the next, so one constriction call codes a whole group.
"""

from __future__ import annotations

import math

import constriction
import numpy as np

J_MIN, J_MAX = -40, 96  # scales 2**-5 .. 2**12 (in quantisation steps)
MAX_CORE = 4095
ESCAPE_BITS = 16
COUNT_BITS = 22  # the tables' counts add up to about 2**COUNT_BITS
_LN2 = 0.6931471805599453  # the double nearest ln 2


def _exp(x: float) -> float:
    """exp(x) in fixed IEEE steps: x = m ln2 + f, |f| <= ln2 / 2, a 22-term Taylor series for
    exp(f), scaled by 2**m exactly (``math.ldexp``)."""
    m = int(math.floor(x / _LN2 + 0.5))
    f = x - m * _LN2
    term, total = 1.0, 1.0
    for n in range(1, 23):
        term = term * f / n
        total = total + term
    return math.ldexp(total, m)


def scale(j: int) -> float:
    """The grid's scale ``2**(j / 8)``, in exact steps."""
    return math.ldexp(_exp((j % 8) * _LN2 / 8), j // 8)


def _counts(j: int) -> np.ndarray:
    """Integer counts of ``-C .. C`` then the escape, for grid scale ``j``."""
    b = scale(j)
    core = min(MAX_CORE, int(14 * b) + 2)
    r = _exp(-1.0 / (2 * b))
    total = float(1 << COUNT_BITS)
    probs = [0.0] * (core + 1)
    probs[0] = 1.0 - r
    power, factor = r * (1.0 - r * r) * 0.5, r * r  # P(k) for k = 1, then times r**2 per step
    for k in range(1, core + 1):
        probs[k] = power
        power = power * factor
    tail = 2.0 * power / (1.0 - factor)  # both tails beyond C: P(C + 1) / (1 - r**2), twice
    half = [max(1, int(p * total)) for p in probs[1:]]
    counts = half[::-1] + [max(1, int(probs[0] * total))] + half + [max(1, int(tail * total))]
    return np.array(counts, dtype=np.float64)


class LaplaceTables:
    """Every grid scale's table, built on first use: constriction models, and each symbol's
    ideal code length in one flat array (for fast rate estimates)."""

    def __init__(self):
        self._built = False
        self._thresholds: dict[float, np.ndarray] = {}

    def _build(self) -> None:
        grid = range(J_MIN, J_MAX + 1)
        counts = [_counts(j) for j in grid]
        self.core = np.array([(len(c) - 2) // 2 for c in counts], np.int64)  # C_j, from J_MIN on
        self.models = [constriction.stream.model.Categorical(c, perfect=False) for c in counts]
        self.offset = np.concatenate([[0], np.cumsum([len(c) for c in counts])[:-1]]).astype(np.int64)
        self.flat_bits = np.concatenate([-np.log2(c / c.sum()) for c in counts])
        self._built = True

    def _ready(self) -> None:
        if not self._built:
            self._build()

    def bits(self, symbols: np.ndarray, index: np.ndarray) -> float:
        """Ideal bits of ``symbols`` coded with grid indices ``index`` (same shape)."""
        self._ready()
        symbols, j = np.ravel(symbols), np.ravel(index) - J_MIN
        core = self.core[j]
        escapes = np.count_nonzero(np.abs(symbols) > core)
        return float(self.flat_bits[self.offset[j] + _table_index(symbols, core)].sum()) \
            + (1 + ESCAPE_BITS) * escapes

    def bits_rows(self, symbols: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Ideal bits of each row of ``symbols`` ``[K, N]`` coded with grid indices ``index``
        (same shape): :meth:`bits` of many candidates in one pass."""
        self._ready()
        j = index - J_MIN
        core = self.core[j]
        escaped = np.abs(symbols) > core
        table = np.where(escaped, 2 * core + 1, symbols + core)
        return self.flat_bits[self.offset[j] + table].sum(axis=1) + (1 + ESCAPE_BITS) * escaped.sum(axis=1)

    def symbol_bits(self, symbols: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Each symbol's ideal bits under its grid index (same shapes; escapes included)."""
        self._ready()
        j = index - J_MIN
        core = self.core[j]
        escapes = (1 + ESCAPE_BITS) * (np.abs(symbols) > core)
        return self.flat_bits[self.offset[j] + _table_index(symbols, core)] + escapes

    def rd_thresholds(self, weight: float) -> np.ndarray:
        """Where rate-distortion rounding moves a symbol one nearer zero, laid out as the tables:
        at symbol ``+m``'s place in table ``j`` (the escape's place for ``m = C + 1``), half of
        ``weight`` x the bits that ``m`` costs over ``m - 1``, less one half. A unit ``u``
        rounded to ``m`` is better coded as ``m - 1`` when ``|u| - m`` is below it (the squared
        error grows by ``2 (|u| - m) + 1``). Kept per weight."""
        self._ready()
        if weight not in self._thresholds:
            out = np.full(len(self.flat_bits), -1.0)
            for offset, core in zip(self.offset, self.core, strict=True):
                zero = offset + core
                bits = self.flat_bits[zero:zero + core + 2].copy()  # magnitudes 0 .. C, then escaped
                bits[-1] += 1 + ESCAPE_BITS
                out[zero + 1:zero + core + 2] = 0.5 * weight * np.diff(bits) - 0.5
            self._thresholds[weight] = out
        return self._thresholds[weight]

    def bits_at(self, values: np.ndarray, counts: np.ndarray, j: int) -> float:
        """Ideal bits of ``values`` (distinct) appearing ``counts`` times, all at grid index ``j``."""
        self._ready()
        core = int(self.core[j - J_MIN])
        per = self.flat_bits[self.offset[j - J_MIN] + _table_index(values, core)] \
            + (np.abs(values) > core) * (1 + ESCAPE_BITS)
        return float((per * counts).sum())

    @staticmethod
    def _groups(index: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
        """Positions sorted by grid index (stable), and (index, start, stop) of each group."""
        order = np.argsort(index, kind="stable")
        sorted_j = index[order]
        cuts = np.flatnonzero(np.diff(sorted_j)) + 1
        starts = np.concatenate([[0], cuts])
        stops = np.concatenate([cuts, [len(order)]])
        return order, [(int(sorted_j[a]), int(a), int(b)) for a, b in zip(starts, stops, strict=True) if b > a]

    def encode(self, encoder, symbols: np.ndarray, index: np.ndarray, plan: tuple | None = None) -> None:
        """Code ``symbols`` (ints within ``+-(MAX_CORE + 2**16)``) with their grid ``index``
        (``plan``: :meth:`plan` of the same ``index``, if made already)."""
        self._ready()
        symbols, index = np.ravel(symbols).astype(np.int64), np.ravel(index).astype(np.int64)
        if np.any((index < J_MIN) | (index > J_MAX)):
            raise ValueError(f"grid indices must lie within {J_MIN}..{J_MAX}")
        _, order, groups = plan or self.plan(index)
        values = symbols[order]
        core = self.core[index[order] - J_MIN]
        big = np.abs(values) > core
        idx = _table_index(values, core).astype(np.int32)
        for j, a, b in groups:
            encoder.encode(idx[a:b], self.models[j - J_MIN])
        if big.any():
            magnitude = np.abs(values[big]) - core[big] - 1
            if magnitude.max() >= 1 << ESCAPE_BITS:
                raise ValueError("a symbol lies beyond what the escape codes; clip it first")
            encoder.encode((values[big] > 0).astype(np.int32), _uniform(1))
            encoder.encode(magnitude.astype(np.int32), _uniform(ESCAPE_BITS))

    def plan(self, index: np.ndarray) -> tuple:
        """What :meth:`encode` and :meth:`decode` work out from ``index`` alone, to code many
        times with it."""
        flat = np.ravel(index).astype(np.int64)
        return (flat, *self._groups(flat))

    def decode(self, decoder, index: np.ndarray, plan: tuple | None = None) -> np.ndarray:
        """Inverse of :meth:`encode`: int64 symbols in the shape of ``index`` (``plan``:
        :meth:`plan` of the same ``index``, if made already)."""
        self._ready()
        flat, order, groups = plan or self.plan(index)
        values = np.empty(len(flat), np.int64)
        for j, a, b in groups:
            values[a:b] = decoder.decode(self.models[j - J_MIN], b - a)
        core = self.core[flat[order] - J_MIN]
        values -= core
        big = values == core + 1
        if big.any():
            count = int(big.sum())
            sign = np.where(decoder.decode(_uniform(1), count) > 0, 1, -1)
            magnitude = decoder.decode(_uniform(ESCAPE_BITS), count).astype(np.int64)
            values[big] = sign * (magnitude + core[big] + 1)
        out = np.empty(len(flat), np.int64)
        out[order] = values
        return out.reshape(np.shape(index))


def _table_index(symbols: np.ndarray, core) -> np.ndarray:
    """Where each symbol stands in its table: ``symbol + C`` within ``+-C``, else the escape
    (``2C + 1``, the last entry), whatever the sign."""
    return np.where(np.abs(symbols) > core, 2 * core + 1, symbols + core)


_uniforms: dict[int, object] = {}


def _uniform(bits: int):
    if bits not in _uniforms:
        _uniforms[bits] = constriction.stream.model.Uniform(1 << bits)
    return _uniforms[bits]


TABLES = LaplaceTables()

