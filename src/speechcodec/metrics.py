"""Quality and rate measures: PESQ (pesq package, ITU-T P.862 / P.862.2), ViSQOL v3, STOI, SNR."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import soxr

from speechcodec.errors import optional_import

PESQ_RATE_HZ = 16000


def _align(ref: np.ndarray, deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = min(len(ref), len(deg))
    return ref[:n].astype(np.float64), deg[:n].astype(np.float64)


def pesq_wb(ref: np.ndarray, deg: np.ndarray) -> float:
    """Wide-band PESQ (P.862.2) of 16 kHz signals; NaN where PESQ finds no speech."""
    pesq = optional_import("pesq").pesq

    ref, deg = _align(ref, deg)
    try:
        return float(pesq(PESQ_RATE_HZ, ref, deg, "wb"))
    except Exception:  # pesq raises NoUtterancesError / BufferTooShortError on odd input
        return math.nan


def pesq_nb(ref: np.ndarray, deg: np.ndarray) -> float:
    """Narrow-band PESQ (P.862) of 16 kHz signals (the model filters to the telephone band);
    the same call as the pesq package's conformance check."""
    pesq = optional_import("pesq").pesq

    ref, deg = _align(ref, deg)
    try:
        return float(pesq(PESQ_RATE_HZ, ref, deg, "nb"))
    except Exception:
        return math.nan


_visqol: dict = {}


def visqol(ref: np.ndarray, deg: np.ndarray) -> float:
    """ViSQOL v3 MOS-LQO in speech mode (16 kHz signals), NaN where it cannot score.

    A second opinion beside PESQ, from a different model of hearing (a gammatone spectrogram
    compared patch by patch): a change that pleases PESQ alone is not a gain. The lattice mapper
    is the reference implementation's default; the package's fallback polynomial over-predicts
    degraded speech by 1-2 points, so it is never used here.
    """
    if "api" not in _visqol:
        import logging

        VisqolApi = optional_import("visqol").VisqolApi

        logging.getLogger("visqol").setLevel(logging.WARNING)
        api = VisqolApi()
        api.create(mode="speech", use_lattice_model=True)
        _visqol["api"] = api
    ref, deg = _align(ref, deg)
    try:
        return float(_visqol["api"].measure_from_arrays(ref, deg, PESQ_RATE_HZ).moslqo)
    except Exception:  # too short or silent to align
        return math.nan


def stoi(ref: np.ndarray, deg: np.ndarray, rate_hz: int = PESQ_RATE_HZ) -> float:
    _stoi = optional_import("pystoi").stoi

    ref, deg = _align(ref, deg)
    return float(_stoi(ref, deg, rate_hz, extended=False))


def snr_db(ref: np.ndarray, deg: np.ndarray) -> float:
    ref, deg = _align(ref, deg)
    noise = float(np.sum((ref - deg) ** 2))
    return 10 * math.log10(max(float(np.sum(ref**2)), 1e-20) / max(noise, 1e-20))


def to_pesq_rate(audio: np.ndarray, rate_hz: int) -> np.ndarray:
    if rate_hz == PESQ_RATE_HZ:
        return audio.astype(np.float32)
    return soxr.resample(audio, rate_hz, PESQ_RATE_HZ).astype(np.float32)


class Metric(NamedTuple):
    """One quality score of a decoded file against its 16 kHz reference, and where reports show it."""

    name: str  # its column in scores.csv and its key in summary.json
    function: Callable[[np.ndarray, np.ndarray], float]
    label: str  # how tables and plots name it
    higher_is_better: bool = True
    decimals: int = 2  # in tables
    shown: bool = True  # in Table 1, the model cards and the README's table
    beside_baselines: bool = False  # the baselines' (Opus, Codec 2) scores are shown beside ours
    difference: str = ""  # "all": our score minus every baseline's; "codec2": minus Codec 2's only


# Every score `speechcodec eval` computes, in its columns' order: add one here and it is
# computed, written per file and averaged (with its spread) in each run's summary, and Table 1,
# the listening page, benchmarks/quality.py and the model cards show it as its fields say.
# PESQ-WB is the paper's (the plot's axis); ViSQOL the independent check a gain must pass too;
# PESQ-NB is compared with Codec 2, which codes narrowband audio.
METRICS = (
    Metric("pesq_wb", pesq_wb, "PESQ-WB", beside_baselines=True, difference="all"),
    Metric("pesq_nb", pesq_nb, "PESQ-NB", beside_baselines=True, difference="codec2"),
    Metric("visqol", visqol, "ViSQOL", beside_baselines=True, difference="all"),
    Metric("stoi", stoi, "STOI", decimals=3),
    Metric("snr_db", snr_db, "SNR dB", shown=False),
)
PAPER_METRIC = "pesq_wb"  # the seed paper's Table 1 metric: the rate-quality plot's axis

SHOWN = tuple(m for m in METRICS if m.shown)
BESIDE_BASELINES = tuple(m for m in METRICS if m.beside_baselines)
VERSUS_OPUS = tuple(m for m in METRICS if m.difference == "all")
VERSUS_CODEC2 = tuple(m for m in METRICS if m.difference in ("all", "codec2"))


def score_text(value: float | None, metric: Metric, sign: bool = False) -> str:
    """A score as tables show it ("-" when not measured)."""
    if value is None or value != value:
        return "-"
    return f"{value:{'+' if sign else ''}.{metric.decimals}f}"


def all_metrics(ref_16k: np.ndarray, deg_16k: np.ndarray) -> dict[str, float]:
    return {m.name: m.function(ref_16k, deg_16k) for m in METRICS}
