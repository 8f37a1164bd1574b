"""The perceptual family's codec: the packets of :mod:`.packets` and :mod:`.stream`, framed in
pages for files (:mod:`speechcodec.bitstream.pipe`), decoded through the enhancer of :mod:`.network`.

A :class:`speechcodec.codec.Codec` (the file and array APIs are the base's); files of the older
chunked layout (container format 3, chunks of transform frames: :mod:`.frames`) still decode
through the base's container. One model codes every rate: ``bitrate_bps`` (a load-time choice,
:meth:`PerceptualCodec.at`) drives the rate control, and the stream's header records it.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import itertools
import warnings
from collections.abc import Callable, Iterator
from typing import BinaryIO

import numpy as np
import soxr
import torch

from speechcodec.audio import expected_length, resample_blocks
from speechcodec.bitstream import StreamHeader, pipe, stream_bytes
from speechcodec.bitstream.pipe import PipeHeader
from speechcodec.codec import (
    DEFAULT_CHUNK_S,
    Codec,
    EncodeStats,
    checked_rate_hz,
    in_its_threads,
)
from speechcodec.errors import (
    AudioInputError,
    BitstreamError,
    ModelMismatchError,
    SpeechCodecError,
    TruncatedBitstreamError,
)
from speechcodec.modelfile import ModelFile
from speechcodec.perceptual import packets
from speechcodec.perceptual.frames import DecodedChunk, decode_chunk, empty_bands
from speechcodec.perceptual.stream import (
    CONCEAL_DECAY_DB,
    StreamDecoder,
    StreamEncoder,
    checked_intra_interval,
    decode_all,
)
from speechcodec.postfilter import OFF
from speechcodec.transform import bands
from speechcodec.transform.mdct import HOP, imdct, num_frames
from speechcodec.transform.quantiser import MAX_COEFFICIENT, gain

SAMPLE_RATE_HZ = 16000
BITRATE_RANGE_BPS = (2000, 64000)  # what the rate control may be asked for (the enhancer learnt 6-24 kbps)


class PerceptualCodec(Codec):
    """A perceptual-family model ready to code at ``bitrate_bps`` (``None``: its nominal rate)."""

    def __init__(self, model_file: ModelFile, chunk_s: float = DEFAULT_CHUNK_S, threads: int | None = None,
                 bitrate_bps: int | None = None):
        super().__init__(model_file, threads)
        self.enhancer = model_file.build()
        self.sample_rate_hz = SAMPLE_RATE_HZ
        self.samples_per_frame = HOP
        self.chunk_frames = max(1, round(chunk_s * SAMPLE_RATE_HZ / HOP))
        self.postfilter = OFF
        self._bitrate_bps = self._checked_bitrate(bitrate_bps if bitrate_bps is not None
                                                  else self.info.get("bitrate_bps", 12000))
        self.cbr = False  # the rate is variable (as Opus's) unless at(..., cbr=True)
        self.intra_interval: int | None = None  # packets; None: a file's or a stream's default

    @staticmethod
    def _checked_bitrate(bps) -> int:
        low, high = BITRATE_RANGE_BPS
        if isinstance(bps, bool) or not isinstance(bps, (int, np.integer)) or not low <= bps <= high:
            raise SpeechCodecError(f"a perceptual model codes {low} to {high} bps, got {bps!r}")
        return int(bps)

    @property
    def bitrate_bps(self) -> int:
        return self._bitrate_bps

    @property
    def name(self) -> str:
        """The model at this rate, as ``speechcodec models`` lists it: ``pc-12k``."""
        return f"{self.model_file.name}-{self.bitrate_bps / 1000:g}k"

    def at(self, bitrate_bps: int, cbr: bool | None = None, intra_interval: int | None = None
           ) -> PerceptualCodec:
        """The same model (network shared) coding at ``bitrate_bps`` (``cbr``: each packet within
        its 20 ms of bytes; ``intra_interval``: an intra packet every this many, 1 for every
        packet; each default as this codec)."""
        other = copy.copy(self)
        other._bitrate_bps = self._checked_bitrate(bitrate_bps)
        other.cbr = self.cbr if cbr is None else bool(cbr)
        if intra_interval is not None:
            other.intra_interval = checked_intra_interval(intra_interval)
        return other

    def __repr__(self) -> str:
        return f"PerceptualCodec({self.name!r}, {self.bitrate_bps} bps)"

    # ---- encoder ---------------------------------------------------------------------------

    def codes(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        raise SpeechCodecError("a perceptual model codes transform frames, not a latent: use "
                               "codes_from_bytes(encode(...)) for its symbols")

    def _encode_stream(self, out: BinaryIO, make_blocks: Callable[[], Iterator[np.ndarray]],
                       rate: int, channels: int, on_chunk: Callable[[float], None] | None = None,
                       ) -> EncodeStats:
        """A file: the packets a stream encoder makes of the audio (at 16 kHz), framed in pages of
        a second (:mod:`speechcodec.bitstream.pipe`), so that it decodes to what a call plays."""
        _, source_n = self._gain(make_blocks, rate)  # rejects empty and non-finite input first
        n = expected_length(source_n, rate, SAMPLE_RATE_HZ)
        if n > pipe.MAX_SAMPLES:
            raise AudioInputError(f"a perceptual model codes at most {pipe.MAX_SAMPLES // SAMPLE_RATE_HZ} s a "
                                  "file; split the audio")
        header = PipeHeader(self.model_file.name, self.fingerprint, self.bitrate_bps, self.cbr, rate,
                            min(channels, 64), n)
        written = len(header.to_bytes())
        out.write(header.to_bytes())
        enc = StreamEncoder(self.bitrate_bps, self.cbr, self.intra_interval or packets.FILE_INTRA_INTERVAL)
        pending: list[bytes] = []
        seq = payload = pages = 0

        def page(packets_: list[bytes]) -> int:
            data = pipe.page_bytes(seq, packets_)
            out.write(data)
            return len(data)

        with warnings.catch_warnings():  # a file was checked on reading: its peaks are the file's
            warnings.simplefilter("ignore")
            blocks = resample_blocks(make_blocks(), rate, SAMPLE_RATE_HZ, n)
            for block in itertools.chain(blocks, [None]):
                made = enc.flush() if block is None else enc.push(block)
                pending += made
                while len(pending) >= pipe.FILE_PAGE_PACKETS or (block is None and pending):
                    take, pending = pending[:pipe.FILE_PAGE_PACKETS], pending[pipe.FILE_PAGE_PACKETS:]
                    written += page(take)
                    payload += sum(map(len, take))
                    seq += len(take)
                    pages += 1
                if on_chunk and block is not None:
                    on_chunk(len(block) / SAMPLE_RATE_HZ)
        return EncodeStats(written, n / SAMPLE_RATE_HZ, pages, enc.clipped, payload)

    def payload_bytes(self, data: bytes) -> int:
        """The bytes the bitrate counts: a packet file's packets (as Opus's rate counts its
        packets; the framing is reported apart), or the whole of an older file."""
        data = stream_bytes(data)
        if data[:4] != pipe.MAGIC:
            return len(data)
        src = io.BytesIO(data)
        pipe.read_header(src)
        return sum(len(p) for page in pipe.read_pages(src) for p in page.packets)

    # ---- streaming -------------------------------------------------------------------------

    def stream_encoder(self, bitrate: int | None = None, cbr: bool | None = None,
                       intra_interval: int | None = None) -> StreamEncoder:
        """A live encoder: ``push(samples)`` returns a packet per 20 ms frame completed
        (:mod:`speechcodec.perceptual.stream`); ``bitrate`` in bps, this codec's unless given;
        ``cbr``: every packet within its 20 ms of bytes (default: variable, as this codec's);
        ``intra_interval``: an intra packet every this many (default: this codec's, else every
        packet, as a lossy link wants; a file's encoder sends one every 8)."""
        if intra_interval is None:
            intra_interval = self.intra_interval or packets.STREAM_INTRA_INTERVAL
        return StreamEncoder(self.bitrate_bps if bitrate is None else bitrate, self.cbr if cbr is None else cbr,
                             intra_interval)

    def stream_decoder(self, conceal: str = "repeat", decay_db: float = CONCEAL_DECAY_DB,
                       bitrate_bps: int | None = None) -> StreamDecoder:
        """A live decoder: ``pull(packet)`` returns the next 320 samples, ``pull(None)`` conceals
        a lost packet (``conceal``, ``decay_db``: how; the defaults were chosen on held-out speech).
        ``bitrate_bps``: the stream's, this codec's unless given; at 16 kbps or less the decoder
        runs a pitch comb on the low band (:mod:`speechcodec.perceptual.comb`)."""
        return StreamDecoder(self, conceal, decay_db, bitrate_bps)

    def encode_packets(self, audio: np.ndarray, bitrate: int | None = None,
                       cbr: bool | None = None, intra_interval: int | None = None) -> list[bytes]:
        """Every packet of a stream of ``audio`` (16 kHz mono): a stream encoder fed all of it."""
        enc = self.stream_encoder(bitrate, cbr, intra_interval)
        return enc.push(audio) + enc.flush()

    @in_its_threads
    def decode_packets(self, stream: list, bitrate_bps: int | None = None) -> np.ndarray:
        """A whole packet stream (``None`` for a lost packet) decoded as the file decoder decodes
        a file (one network pass over every frame, one inverse MDCT, losses concealed as a stream
        decoder conceals them): float32 samples from the first input sample on,
        ``320 x (packets - 1)`` of them. A stream decoder gives the same 320 samples later.
        ``bitrate_bps``: the stream's, this codec's unless given (it sets the postfilter)."""
        return decode_all(self, stream, bitrate_bps=bitrate_bps)[0]

    # ---- decoder ---------------------------------------------------------------------------

    def codes_from_bytes(self, data: bytes) -> np.ndarray:
        """The quantised coefficients ``[320, F + 1]`` a stream holds (range decoding only)."""
        data = stream_bytes(data)
        if data[:4] == pipe.MAGIC:
            return self.frames_of(data).symbols.T
        return np.concatenate([c.symbols for c in self._chunks_of(data)], axis=0).T

    def packets_of(self, data: bytes) -> list:
        """The packets of a packet file (``None`` for each one lost), in order."""
        src = io.BytesIO(stream_bytes(data))
        self._check_packet_header(pipe.read_header(src))
        return list(pipe.Sequencer().packets(pipe.read_pages(src)))

    def frames_of(self, data_or_packets) -> DecodedChunk:
        """What the textbook decoder makes of a packet file, or of a list of packets, none lost
        (range decoding only): one :class:`DecodedChunk` of every frame, a step each."""
        stream = data_or_packets if isinstance(data_or_packets, list) else self.packets_of(data_or_packets)
        levels, frames = None, []
        for packet in stream:
            if packet is None:
                raise BitstreamError("a packet of the stream is lost: its frame is not there")
            frames.append(packets.read(packet, levels))
            levels = frames[-1].levels
        if not frames:
            raise BitstreamError("the stream holds no packets")
        return packets.dequantised(frames)

    def _check_packet_header(self, header: PipeHeader) -> None:
        if header.model != self.model_file.name or header.fingerprint != self.fingerprint:
            raise ModelMismatchError(
                f"stream was written by model {header.model!r} (fingerprint {header.fingerprint}); "
                f"this is {self.model_file.name!r} ({self.fingerprint}): decode it with the model that "
                "wrote it")

    def _decode_stream(self, src: BinaryIO, sample_rate_hz: int | None, postfilter_spec=None):
        """A packet file (or a saved live stream): every packet decoded at once with losses
        concealed (:func:`speechcodec.perceptual.stream.decode_all`), cut to the length its
        header gives, at its source rate; an older chunked file as before."""
        magic = src.read(4)
        src.seek(-len(magic), io.SEEK_CUR)
        if magic != pipe.MAGIC:
            return super()._decode_stream(src, sample_rate_hz, postfilter_spec)
        header = pipe.read_header(src)
        self._check_packet_header(header)
        sequencer = pipe.Sequencer()
        stream = list(sequencer.packets(pipe.read_pages(src)))
        if header.num_samples is not None:  # the packets of damaged pages at the end, concealed too
            missing = num_frames(header.num_samples, HOP) - len(stream)
            if 0 < missing <= pipe.MAX_GAP_PACKETS * sequencer.damaged_at_end:
                stream += [None] * missing
                sequencer.lost += missing
        audio, counts = decode_all(self, stream, bitrate_bps=header.bitrate_bps)
        self.last_decode = {"packets": len(stream), **counts, "late": sequencer.late,
                            "damaged_pages": sequencer.damaged_pages}
        if header.num_samples is not None:
            if len(audio) < header.num_samples:
                raise TruncatedBitstreamError(f"packet file is cut short: {len(stream)} packets hold "
                                              f"{len(audio)} of its {header.num_samples} samples")
            audio = audio[:header.num_samples]
        source = header.source_sample_rate_hz or SAMPLE_RATE_HZ
        rate = source if sample_rate_hz is None else checked_rate_hz(sample_rate_hz, "output sample rate")
        if rate != SAMPLE_RATE_HZ:
            audio = soxr.resample(audio, SAMPLE_RATE_HZ, rate).astype(np.float32)
        audio = np.clip(audio, -1.0, 1.0)  # after the last resampling
        shown = dataclasses.replace(header, num_samples=len(audio) * SAMPLE_RATE_HZ // rate)
        return shown, iter([audio]), rate

    def _chunks_of(self, data: bytes):
        import io

        from speechcodec.bitstream import read_stream, stream_bytes

        header, chunks = read_stream(io.BytesIO(stream_bytes(data)))
        self._check_header(header)
        return self._decoded(header, chunks)

    def _decoded(self, header: StreamHeader, chunks):
        seen = 0
        for chunk in chunks:
            seen += chunk.num_frames
            yield decode_chunk(chunk.payload, chunk.num_frames + (seen == header.num_frames))

    @staticmethod
    def network_input(chunk) -> np.ndarray:
        """float32 ``[T, 657]``: what the network reads of a decoded chunk, frame by frame (the
        units, which quantised to zero, the band levels over 16, the step in octaves; ``chunk.step``
        one int, or one per frame ``[T, 1]`` as in a packet stream)."""
        step = np.broadcast_to(np.reshape(chunk.step, (-1, 1)) / 64.0, (len(chunk.units), 1))
        return np.concatenate([chunk.units, chunk.symbols == 0, chunk.band_levels_qo / 16.0, step],
                              axis=1).astype(np.float32)

    def run_network(self, x: np.ndarray) -> np.ndarray:
        """The network over ``network_input`` rows ``[T, 657]``: corrected units ``[T, 320]``."""
        t = torch.from_numpy(np.ascontiguousarray(x.T))[None]
        with torch.inference_mode():
            return self.enhancer(t[:, :HOP], t[:, HOP:2 * HOP], t[:, 2 * HOP:-1], t[:, -1:])[0].numpy().T

    def corrected_units(self, pieces: list) -> list[np.ndarray]:
        """The network's output for each decoded chunk in turn, each run with the frames before
        it as context: what one run over every frame gives, in bounded memory."""
        ctx = self.enhancer.context_frames
        history = np.zeros((0, 2 * HOP + 17), np.float32)
        out = []
        for c in pieces:
            x = self.network_input(c)
            window = np.concatenate([history, x])
            out.append(self.run_network(window)[len(history):])
            history = window[-ctx:]
        return out

    def energy_weight(self, step):
        """How far the output's band energies are brought to the textbook decoder's at ``step``
        (one int, or an array of them): 1 at fine steps (where those are accurate and the
        network's MSE shrinks them), 0 at coarse."""
        full, none = self.config.energy_full_step, self.config.energy_none_step
        if none <= full:
            return np.zeros(np.shape(step)) if np.ndim(step) else 0.0
        if not np.ndim(step):
            return min(max((none - step) / (none - full), 0.0), 1.0)
        return np.clip((none - np.asarray(step)) / (none - full), 0.0, 1.0)

    def enhance(self, pieces: list) -> np.ndarray:
        """The MDCT coefficients ``[T, 320]`` to synthesise from decoded chunks: the network's,
        except in bands that quantised to all zeros, which keep the textbook decoder's noise fill
        (louder at fine steps, by ``fill_gain16``), with band energies drawn towards the textbook
        decoder's (:meth:`energy_weight`)."""
        corrected = self.corrected_units(pieces)
        out = [self.synthesis_coefficients(c, y) for c, y in zip(pieces, corrected, strict=True)]
        return np.concatenate(out) if out else np.zeros((0, HOP))

    def synthesis_coefficients(self, c, y: np.ndarray) -> np.ndarray:
        """MDCT coefficients ``[T, 320]`` of a decoded chunk ``c`` from the network's corrected
        units ``y`` (:meth:`enhance`, frame by frame; a stream decoder calls it per packet)."""
        weight = self.energy_weight(c.step)
        empty = empty_bands(c.symbols, c.settings.layout)
        textbook = c.units
        if np.any(weight) and self.config.fill_gain16 != 16:
            fill = 1 + (self.config.fill_gain16 / 16 - 1) * np.reshape(weight, (-1, 1))
            textbook = np.where(empty, c.units * fill, c.units)
        units = np.where(empty, textbook, y)
        if np.any(weight):
            edges = np.asarray(bands.LAYOUTS[c.settings.layout])
            have = np.add.reduceat(units ** 2, edges[:-1], axis=1)
            want = np.add.reduceat(textbook ** 2, edges[:-1], axis=1)
            band_gain = np.sqrt(want / np.maximum(have, 1e-12)) ** weight
            units = units * np.repeat(band_gain, np.diff(edges), axis=1)
        coefficients = units * gain(c.settings, c.level_qo, c.step)
        if not np.isfinite(coefficients).all():
            coefficients = np.nan_to_num(coefficients, nan=0.0, posinf=0.0, neginf=0.0)
        # finite and bounded, whatever the network says
        return np.minimum(np.maximum(coefficients, -MAX_COEFFICIENT), MAX_COEFFICIENT)

    def _decode_chunks(self, header: StreamHeader, chunks) -> Iterator[np.ndarray]:
        coefficients = self.enhance(list(self._decoded(header, chunks)))
        if len(coefficients) != num_frames(header.num_samples, HOP):
            raise SpeechCodecError("perceptual stream holds a different number of frames than its length needs")
        yield np.clip(imdct(coefficients, header.num_samples, HOP), -1.0, 1.0).astype(np.float32)
