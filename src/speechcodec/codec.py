"""The codec contract every model family keeps (:class:`Codec`: the array and file APIs, the
container, threads, output formats), and the autoencoders' codec (:class:`AutoencoderCodec`),
which joins their network, the frozen entropy tables and the bitstream. Which class codes a
family, and what it can do, is on the family's record (:mod:`speechcodec.codecs`).

An autoencoder codes audio in chunks of a few seconds. Each chunk is encoded from a window that reaches
``encoder_context_frames`` beyond its edges and decoded from codes reaching
``decoder_context_frames`` beyond them, so the result equals coding the whole signal at once
(with silence beyond its ends: zero samples for the encoder, ``DECODER_EDGE_S`` of zero codes
for the decoder) while memory stays bounded by one chunk, however long the input.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from speechcodec.audio import (
    active_rms,
    as_mono,
    check_finite,
    expected_length,
    probe,
    read_mono_blocks,
    resample_blocks,
)
from speechcodec.bitstream import (
    MAX_SAMPLE_RATE_HZ,
    MIN_SAMPLE_RATE_HZ,
    RangeCoder,
    StreamHeader,
    read_stream,
    stream_bytes,
    write_chunk,
    write_end,
    write_header,
)
from speechcodec.errors import AudioInputError, ModelMismatchError, SpeechCodecError
from speechcodec.files import AtomicWriter, audio_format, check_not_input
from speechcodec.modelfile import ModelFile
from speechcodec.postfilter import OFF, PostfilterSettings, postfilter, postfilter_alignment, postfilter_context

# Each chunk edge makes the network run over its context twice (0.9 s for the shipped models):
# 10-s chunks keep that under 10 % of the work.
DEFAULT_CHUNK_S = 10.0
# Beyond the signal's edges the encoder sees silence (zero samples) as far as its context
# reaches, and the decoder zero codes for this long: shorter than the decoder's whole context,
# at no measurable cost in quality (docs/history.md), it saves work on short utterances.
DECODER_EDGE_S = 0.24
GAIN_RANGE = (0.01, 1000.0)
RATES = f"{MIN_SAMPLE_RATE_HZ} to {MAX_SAMPLE_RATE_HZ} Hz"
# audio formats a stream must not be named as (players would choke on it; the user meant decode)
AUDIO_FILE_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".m4a")


def _rate_ok(rate_hz: int) -> bool:
    return MIN_SAMPLE_RATE_HZ <= rate_hz <= MAX_SAMPLE_RATE_HZ


def checked_rate_hz(value, what: str) -> int:
    """``value`` as a sample rate in Hz: a whole number (``16000.0`` too) in the supported range."""
    whole = isinstance(value, (int, np.integer)) and not isinstance(value, bool) or \
        isinstance(value, (float, np.floating)) and float(value).is_integer()
    if not whole or not _rate_ok(int(value)):
        raise AudioInputError(f"{what} must be a whole number of Hz from {RATES}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class EncodeStats:
    """What encoding wrote, measured from the bytes."""

    num_bytes: int
    duration_s: float
    num_chunks: int
    clipped_symbols: int
    payload_bytes: int | None = None  # the codec's own bytes, framing left out (packet streams)

    @property
    def bitrate_bps(self) -> float:
        return self.num_bytes * 8 / self.duration_s

    @property
    def payload_bitrate_bps(self) -> float:
        """The rate of the codec's own bytes (as Opus's bitrate counts its packets), or of the
        whole file where the format has no framing apart."""
        return (self.num_bytes if self.payload_bytes is None else self.payload_bytes) * 8 / self.duration_s


def _windows(blocks: Iterable[np.ndarray], lead_shape: tuple[int, ...], total: int, step: int,
             ctx: int, pad: int) -> Iterator[tuple[int, int, int, np.ndarray]]:
    """Cut a stream of arrays (along the last axis, ``total`` columns) into steps with context.

    Yields ``(start, stop, lead, window)`` where ``window`` holds columns ``start - ctx .. stop +
    ctx`` cut to ``-pad .. total + pad``, zeros standing for columns outside ``0 .. total``, and
    ``lead`` is how many of them come before ``start``. A network run over each window therefore
    gives what it gives run over the whole signal with ``pad`` zero columns either side. Holds at
    most one step plus two contexts plus one block.
    """
    buf = np.zeros(lead_shape + (pad,), np.float32)
    buf_start = -pad
    start = 0

    def emit():
        nonlocal buf, buf_start, start
        while start < total:
            stop = min(start + step, total)
            first, end = max(-pad, start - ctx), min(total + pad, stop + ctx)
            if buf_start + buf.shape[-1] < end:
                return  # wait for more input
            yield start, stop, start - first, buf[..., first - buf_start: end - buf_start]
            drop = max(-pad, stop - ctx) - buf_start
            buf = buf[..., drop:]
            buf_start += drop
            start = stop

    for block in blocks:
        buf = np.concatenate([buf, block.astype(np.float32, copy=False)], axis=-1)
        yield from emit()
    missing = total + pad - (buf_start + buf.shape[-1])
    if missing > 0:
        buf = np.concatenate([buf, np.zeros(lead_shape + (missing,), np.float32)], axis=-1)
    yield from emit()


def checked_threads(threads: int | None) -> int | None:
    """A codec's ``threads``: a whole number >= 1, or ``None`` (torch's setting)."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise SpeechCodecError(f"threads must be a whole number >= 1 (or None), got {threads!r}")
    return threads


def in_its_threads(method):
    """Run a Codec method with torch set to the codec's ``threads`` (intra-op), restored after."""
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        before = torch.get_num_threads()
        if not self.threads or self.threads == before:
            return method(self, *args, **kwargs)
        torch.set_num_threads(self.threads)
        try:
            return method(self, *args, **kwargs)
        finally:
            torch.set_num_threads(before)

    return run


class Codec:
    """What every family's codec keeps: a loaded model ready to code, ``encode(audio,
    sample_rate) -> bytes`` and ``decode(bytes)``, the file API (atomic, streaming, any output
    format), the container, its threads. :class:`AutoencoderCodec` and
    :class:`speechcodec.perceptual.codec.PerceptualCodec` each write and read their streams
    (``_encode_stream``, ``_decode_chunks``...); what one can do is on its family's record
    (:func:`speechcodec.codecs.capabilities`).

    ``threads``: torch intra-op threads while it codes (``None``: whatever torch is set to). The
    networks are small and run in short chunks, so one thread is the fastest per stream on most
    CPUs (``benchmarks/speed.py`` shows one against all); :func:`speechcodec.load` gives 1.
    """

    sample_rate_hz: int  # the rate it codes at
    samples_per_frame: int  # samples a code frame stands for
    chunk_frames: int  # code frames a chunk of its container holds
    postfilter: PostfilterSettings = OFF  # the strengths its streams carry

    def __init__(self, model_file: ModelFile, threads: int | None = None):
        self.threads = checked_threads(threads)
        self.model_file = model_file
        self.config = model_file.config
        self.info = model_file.info
        self.fingerprint = model_file.fingerprint

    @property
    def name(self) -> str:
        return self.model_file.name

    @property
    def bitrate_bps(self) -> int | None:
        return self.info.get("bitrate_bps")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.bitrate_bps} bps, {self.sample_rate_hz} Hz)"

    # ---- the array API -------------------------------------------------------------------

    @in_its_threads
    def encode(self, audio: np.ndarray, sample_rate: int) -> bytes:
        """Code ``audio`` (float ``[N]``, ``[N, ch]`` or ``[ch, N]``, any rate) into bytes."""
        mono = self._checked_array(audio, sample_rate)
        out = io.BytesIO()
        channels = 1 if np.ndim(audio) == 1 else min(np.shape(audio))
        self._encode_stream(out, lambda: iter((mono,)), int(sample_rate), channels)
        return out.getvalue()

    @in_its_threads
    def decode(self, data: bytes, sample_rate_hz: int | None = None,
               postfilter: str | PostfilterSettings | None = None) -> tuple[np.ndarray, int]:
        """Bytes -> ``(float32 [N], rate)``; the rate is the input's unless ``sample_rate_hz``.

        ``postfilter``: ``None`` applies what the stream says (off in streams of format 1),
        ``"model"`` this model's chosen strengths, ``"off"`` none, or given strengths."""
        header, blocks, rate = self._decode_stream(io.BytesIO(stream_bytes(data)), sample_rate_hz, postfilter)
        audio = np.concatenate(list(blocks)) if header.num_samples else np.zeros(0, np.float32)
        return audio, rate

    def payload_bytes(self, data: bytes) -> int:
        """Bytes the bitrate is computed from: every byte of the stream, header included."""
        return len(data)

    # ---- the file API (streams: bounded memory) ------------------------------------------

    @in_its_threads
    def stream_encoder(self, bitrate: int | None = None):
        """Live coding is the perceptual family's (:mod:`speechcodec.perceptual.stream`); this
        model looks ahead over whole chunks."""
        raise SpeechCodecError(f"model {self.name!r} codes whole files (it looks ahead); streaming takes a "
                               "perceptual-family model, e.g. speechcodec.load('pc')")

    def stream_decoder(self, *args, **kwargs):
        """As :meth:`stream_encoder`: only the perceptual family streams."""
        return self.stream_encoder()

    def encode_file(self, src: str | os.PathLike, dst: str | os.PathLike,
                    progress: bool = False) -> EncodeStats:
        """Encode an audio file (wav/flac/ogg/...) into ``dst``; nothing is left at ``dst`` on error."""
        if Path(dst).suffix.lower() in AUDIO_FILE_SUFFIXES:  # e.g. `encode in.wav out.wav`: meant decode?
            raise SpeechCodecError(f"{dst} would hold a speechcodec stream, not {Path(dst).suffix} audio: "
                                   "name it .spcd (`speechcodec decode` writes audio)")
        check_not_input(src, dst)
        info = probe(src)
        if not _rate_ok(info.sample_rate_hz):
            raise AudioInputError(f"input file {src} is at {info.sample_rate_hz} Hz; a stream holds "
                                  f"{RATES}: resample it first")
        with AtomicWriter(dst) as tmp, open(tmp, "wb") as out:
            bar = tqdm(total=round(info.duration_s, 1), unit="s", desc="encode", disable=not progress,
                       bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}]")
            with bar:
                stats = self._encode_stream(out, lambda: read_mono_blocks(src), info.sample_rate_hz,
                                            info.channels, on_chunk=bar.update)
        return stats

    @in_its_threads
    def decode_file(self, src: str | os.PathLike, dst: str | os.PathLike,
                    sample_rate_hz: int | None = None, progress: bool = False,
                    postfilter: str | PostfilterSettings | None = None) -> StreamHeader:
        """Decode a stream file to a 16-bit WAV (or any soundfile format by extension);
        ``postfilter`` as in :meth:`decode`."""
        src = Path(src)
        if src.is_dir():
            raise SpeechCodecError(f"input {src} is a directory, not a speechcodec stream: name one .spcd file")
        if not src.is_file():
            raise SpeechCodecError(f"input file {src} does not exist")
        check_not_input(src, dst)
        with open(src, "rb") as f:
            header, blocks, rate = self._decode_stream(f, sample_rate_hz, postfilter)
            with AtomicWriter(dst) as tmp:
                ext, subtype = audio_format(dst)
                bar = tqdm(total=round(header.duration_s or 0, 1), unit="s", desc="decode",
                           disable=not progress,
                           bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}]")
                try:
                    with bar, sf.SoundFile(str(tmp), "w", samplerate=rate, channels=1, format=ext,
                                           subtype=subtype) as out:
                        for block in blocks:
                            out.write(block)  # clipped after the last resampling already
                            bar.update(len(block) / rate)
                except sf.LibsndfileError as exc:  # libsndfile says "System error" on a full disk
                    hint = "; is the disk full?" if "System error" in exc.error_string else ""
                    raise SpeechCodecError(f"cannot write {dst} at {rate} Hz "
                                           f"({exc.error_string}){hint}") from None
        return header

    # ---- what each family writes and reads ------------------------------------------------

    def codes_from_bytes(self, data: bytes) -> np.ndarray:
        """The integer symbols a stream holds (range decoding only, no network)."""
        raise NotImplementedError

    def _encode_stream(self, out: BinaryIO, make_blocks: Callable[[], Iterator[np.ndarray]],
                       rate: int, channels: int, on_chunk: Callable[[float], None] | None = None,
                       ) -> EncodeStats:
        """Write a whole stream of the audio ``make_blocks()`` yields (mono, at ``rate``) to ``out``."""
        raise NotImplementedError

    def _decode_chunks(self, header: StreamHeader, chunks) -> Iterator[np.ndarray]:
        """Audio blocks at ``sample_rate_hz`` from the chunks of a container stream."""
        raise NotImplementedError

    # ---- shared internals -------------------------------------------------------------------

    def _checked_array(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        checked_rate_hz(sample_rate, "sample_rate")
        mono = as_mono(audio)
        if mono.size == 0:
            raise AudioInputError("input audio has no samples")
        check_finite(mono)
        return mono

    def _gain(self, make_blocks: Callable[[], Iterator[np.ndarray]], rate: int) -> tuple[float, int]:
        """The gain that brings the active speech level to the model's ``input_rms``, and the
        sample count; this pass also rejects empty and non-finite input before anything is written."""
        rms, total = active_rms(make_blocks(), rate)
        if total == 0:
            raise AudioInputError("input audio has no samples")
        if rms == 0.0:
            return 1.0, total
        # Rounded to float32 here because the header stores float32: both sides use this value.
        return float(np.float32(np.clip(self.config.input_rms / rms, *GAIN_RANGE))), total

    def _check_header(self, header: StreamHeader) -> None:
        model = self.model_file.name  # the model a stream names (a model of every rate: at any of them)
        if header.model != model or header.fingerprint != self.fingerprint:
            raise ModelMismatchError(
                f"stream was written by model {header.model!r} (fingerprint {header.fingerprint}); "
                f"this is {model!r} ({self.fingerprint}): decode it with the model that wrote it"
            )
        if (header.sample_rate_hz, header.samples_per_frame, header.code_channels) != (
                self.sample_rate_hz, self.samples_per_frame, self.config.code_channels):
            raise ModelMismatchError("stream geometry does not match the model")

    def postfilter_for(self, header: StreamHeader, spec: str | PostfilterSettings | None) -> PostfilterSettings:
        """The postfilter a decode applies: the stream's (``None``), the model's, ``"off"``, or ``spec``."""
        if isinstance(spec, PostfilterSettings):
            return spec
        if spec is None or spec == "stream":
            return PostfilterSettings(header.postfilter_comb_pct / 100, header.postfilter_formant_pct / 100)
        if spec == "model":
            return self.postfilter
        if spec == "off":
            return OFF
        raise SpeechCodecError(f"postfilter must be 'stream', 'model', 'off' or strengths, got {spec!r}")

    def _decode_stream(self, src: BinaryIO, sample_rate_hz: int | None,
                       postfilter_spec: str | PostfilterSettings | None = None):
        header, chunks = read_stream(src)
        self._check_header(header)
        settings = self.postfilter_for(header, postfilter_spec)
        rate = header.source_sample_rate_hz if sample_rate_hz is None else \
            checked_rate_hz(sample_rate_hz, "output sample rate")
        if rate == header.source_sample_rate_hz:
            out_n = header.source_num_samples
        else:
            out_n = expected_length(header.num_samples, header.sample_rate_hz, rate)
        blocks = self._decode_chunks(header, chunks)
        if not settings.off:
            blocks = self._postfilter_blocks(blocks, header.num_samples, settings)
        resampled = resample_blocks(blocks, header.sample_rate_hz, rate, out_n)
        # finite and within full scale after the last resampling (which can overshoot)
        clipped = (np.clip(np.nan_to_num(b, nan=0.0, posinf=0.0, neginf=0.0), -1.0, 1.0) for b in resampled)
        return header, clipped, rate

    def _postfilter_blocks(self, blocks: Iterable[np.ndarray], num_samples: int,
                           settings: PostfilterSettings) -> Iterator[np.ndarray]:
        """The postfilter over decoded blocks, in pieces with context: the same as one call over it all."""
        rate = self.sample_rate_hz
        align = postfilter_alignment(rate)  # pieces start on whole analysis frames
        ctx = -(-postfilter_context(rate) // align) * align
        step = -(-self.chunk_frames * self.samples_per_frame // align) * align
        for start, stop, lead, window in _windows(blocks, (), num_samples, step, ctx, ctx):
            yield postfilter(window, rate, settings)[lead: lead + stop - start]


class AutoencoderCodec(Codec):
    """An autoencoder family's codec: the network's integer code, range-coded with the model's
    frozen tables, chunk by chunk (with context across chunk edges), and the decoder postfilter."""

    def __init__(self, model_file: ModelFile, chunk_s: float = DEFAULT_CHUNK_S, threads: int | None = None):
        super().__init__(model_file, threads)
        self.model = model_file.build()
        self.autoencoder = self.model.autoencoder
        self.coder = RangeCoder(model_file.pmf, self.config.prior_contexts)
        self.sample_rate_hz = self.config.sample_rate_hz
        self.samples_per_frame = self.config.samples_per_frame
        self.chunk_frames = max(1, round(chunk_s * self.config.frame_rate_hz))
        self.decoder_edge_frames = min(self.autoencoder.decoder_context_frames,
                                       round(DECODER_EDGE_S * self.config.frame_rate_hz))
        # the strengths chosen for this model (its file's info), written into every stream it encodes
        try:
            self.postfilter = PostfilterSettings(**self.info.get("postfilter", {}).get("strengths", {}))
        except (TypeError, ValueError, AttributeError) as exc:
            raise ModelMismatchError(f"model {self.name!r}: bad postfilter settings ({exc})") from None

    @in_its_threads
    def codes(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """The integer code ``[C, F]`` the encoder would range-code for ``audio``."""
        mono = self._checked_array(audio, sample_rate)
        gain, _ = self._gain(lambda: iter((mono,)), int(sample_rate))
        n = expected_length(len(mono), int(sample_rate), self.sample_rate_hz)
        blocks = resample_blocks(iter((mono,)), int(sample_rate), self.sample_rate_hz, n)
        return np.concatenate([c for _, c, _ in self._code_chunks(blocks, n, gain)], axis=1)

    def codes_from_bytes(self, data: bytes) -> np.ndarray:
        """The integer code ``[C, F]`` held by a stream (range decoding only, no network)."""
        header, chunks = read_stream(io.BytesIO(stream_bytes(data)))
        self._check_header(header)
        return np.concatenate([self.coder.decode(c.payload, c.num_frames) for c in chunks], axis=1)

    def _code_chunks(self, blocks: Iterable[np.ndarray], num_samples: int, gain: float):
        """Yield ``(num_frames, codes int32 [C, num_frames], clipped)`` chunk by chunk."""
        spf = self.samples_per_frame
        num_frames = -(-num_samples // spf)
        ctx = self.autoencoder.encoder_context_frames
        m = self.config.max_symbol
        with torch.inference_mode():
            for start, stop, lead, window in _windows(blocks, (), num_frames * spf, self.chunk_frames * spf,
                                                      ctx * spf, ctx * spf):
                x = torch.from_numpy(window * np.float32(gain))[None, None]  # [1, 1, T]
                y = self.autoencoder.encode(x)[0]  # [C, window frames]
                n, lead = (stop - start) // spf, lead // spf
                # nan_to_num: a diverged model must give garbage codes, not crash the coder.
                codes = np.nan_to_num(torch.round(y[:, lead: lead + n]).numpy(), nan=0.0)
                clipped = int((np.abs(codes) > m).sum())
                yield n, np.clip(codes, -m, m).astype(np.int32), clipped

    def _encode_stream(self, out: BinaryIO, make_blocks: Callable[[], Iterator[np.ndarray]],
                       rate: int, channels: int, on_chunk: Callable[[float], None] | None = None,
                       ) -> EncodeStats:
        """Two passes over the source blocks: loudness first, then coding."""
        rms_gain, source_n = self._gain(make_blocks, rate)
        n = expected_length(source_n, rate, self.sample_rate_hz)
        header = StreamHeader(
            model=self.name, fingerprint=self.fingerprint, sample_rate_hz=self.sample_rate_hz,
            num_samples=n, samples_per_frame=self.samples_per_frame,
            code_channels=self.config.code_channels, chunk_frames=self.chunk_frames,
            gain=rms_gain, source_sample_rate_hz=rate, source_num_samples=source_n,
            source_channels=channels, postfilter_comb_pct=round(self.postfilter.comb * 100),
            postfilter_formant_pct=round(self.postfilter.formant * 100),
        )
        written = write_header(out, header)
        chunks = clipped = 0
        blocks = resample_blocks(make_blocks(), rate, self.sample_rate_hz, n)
        for num_frames, codes, clip in self._code_chunks(blocks, n, rms_gain):
            written += write_chunk(out, num_frames, self.coder.encode(codes))
            chunks += 1
            clipped += clip
            if on_chunk:
                on_chunk(num_frames * self.samples_per_frame / self.sample_rate_hz)
        written += write_end(out)
        return EncodeStats(written, n / self.sample_rate_hz, chunks, clipped)

    def _decode_chunks(self, header: StreamHeader, chunks) -> Iterator[np.ndarray]:
        spf = self.samples_per_frame
        ctx = self.autoencoder.decoder_context_frames
        inv_gain = np.float32(1.0 / header.gain)
        codes = (self.coder.decode(c.payload, c.num_frames).astype(np.float32) for c in chunks)
        with torch.inference_mode():
            for start, stop, lead, window in _windows(codes, (self.config.code_channels,), header.num_frames,
                                                      self.chunk_frames, ctx, self.decoder_edge_frames):
                x_hat = self.autoencoder.decode(torch.from_numpy(window)[None])[0, 0].numpy()
                audio = x_hat[lead * spf: (lead + stop - start) * spf]
                audio = audio[: max(0, header.num_samples - start * spf)]
                yield audio * inv_gain
