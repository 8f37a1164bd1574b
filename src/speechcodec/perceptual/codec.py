"""The perceptual family's codec: :mod:`.frames` (the stream) joined with :mod:`.network`.

Keeps :class:`speechcodec.codec.Codec`'s public methods (``encode``, ``decode``, ``encode_file``,
``decode_file``, ``payload_bytes``...) and its container; a chunk's payload is a run of transform
frames (:mod:`speechcodec.perceptual.frames`). One model codes every rate: ``bitrate_bps`` (a
load-time choice, :meth:`PerceptualCodec.at`) sets each chunk's quantiser step, and the stream's
header records it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import BinaryIO

import numpy as np
import torch

from speechcodec.audio import expected_length, resample_blocks
from speechcodec.baselines.transform import MAX_SAMPLES, TransformCodec, _gain
from speechcodec.bitstream import StreamHeader, write_chunk, write_end, write_header
from speechcodec.bitstream.container import _CRC, _RECORD
from speechcodec.codec import DEFAULT_CHUNK_S, Codec, EncodeStats, _in_its_threads, checked_threads
from speechcodec.errors import AudioInputError, BitstreamError, SpeechCodecError
from speechcodec.modelfile import ModelFile
from speechcodec.perceptual import packets
from speechcodec.perceptual.frames import DecodedChunk, decode_chunk, empty_bands, encode_chunk
from speechcodec.perceptual.stream import CONCEAL_DECAY_DB, StreamDecoder, StreamEncoder
from speechcodec.postfilter import OFF
from speechcodec.transform import bands
from speechcodec.transform.mdct import HOP, imdct, num_frames, odft

SAMPLE_RATE_HZ = 16000
BITRATE_RANGE_BPS = (2000, 64000)  # what the rate control may be asked for (the enhancer learnt 6-24 kbps)


class PerceptualCodec(Codec):
    """A perceptual-family model ready to code at ``bitrate_bps`` (``None``: its nominal rate)."""

    def __init__(self, model_file: ModelFile, chunk_s: float = DEFAULT_CHUNK_S, threads: int | None = None,
                 bitrate_bps: int | None = None):
        self.threads = checked_threads(threads)
        self.model_file = model_file
        self.config = model_file.config
        self.info = model_file.info
        self.fingerprint = model_file.fingerprint
        self.enhancer = model_file.build()
        self.sample_rate_hz = SAMPLE_RATE_HZ
        self.samples_per_frame = HOP
        self.chunk_frames = max(1, round(chunk_s * SAMPLE_RATE_HZ / HOP))
        self.postfilter = OFF
        self._bitrate_bps = self._checked_bitrate(bitrate_bps if bitrate_bps is not None
                                                  else self.info.get("bitrate_bps", 12000))

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

    def at(self, bitrate_bps: int) -> PerceptualCodec:
        """The same model (network shared) coding at ``bitrate_bps``."""
        other = copy.copy(self)
        other._bitrate_bps = self._checked_bitrate(bitrate_bps)
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
        _, source_n = self._gain(make_blocks, rate)  # rejects empty and non-finite input first
        n = expected_length(source_n, rate, SAMPLE_RATE_HZ)
        if n > MAX_SAMPLES:
            raise AudioInputError(f"a perceptual model codes at most {MAX_SAMPLES // SAMPLE_RATE_HZ} s a "
                                  "stream; split the audio")
        audio = np.concatenate(list(resample_blocks(make_blocks(), rate, SAMPLE_RATE_HZ, n)))
        spectrum = odft(audio)
        header = StreamHeader(
            model=self.model_file.name, fingerprint=self.fingerprint, sample_rate_hz=SAMPLE_RATE_HZ,
            num_samples=n, samples_per_frame=HOP, code_channels=HOP, chunk_frames=self.chunk_frames, gain=1.0,
            source_sample_rate_hz=rate, source_num_samples=source_n, source_channels=channels,
            bitrate_bps=self.bitrate_bps)
        written = write_header(out, header)
        frames = header.num_frames
        record = _RECORD.size + _CRC.size
        # the bits left for the chunks' payloads, shared out by their frames
        budget = self.bitrate_bps * n / SAMPLE_RATE_HZ - 8 * (written + record)
        coder = TransformCodec(self.bitrate_bps)
        chunks = 0
        for start in range(0, frames, self.chunk_frames):
            stop = min(start + self.chunk_frames, frames)
            end = stop + 1 if stop == frames else stop  # the last chunk holds the closing frame
            target = budget * (stop - start) / frames - 8 * record
            payload = encode_chunk(coder, spectrum[start:end], max(target, 1.0))
            written += write_chunk(out, stop - start, payload)
            chunks += 1
            if on_chunk:
                on_chunk((stop - start) * HOP / SAMPLE_RATE_HZ)
        written += write_end(out)
        return EncodeStats(written, n / SAMPLE_RATE_HZ, chunks, 0)

    # ---- streaming -------------------------------------------------------------------------

    def stream_encoder(self, bitrate: int | None = None) -> StreamEncoder:
        """A live encoder: ``push(samples)`` returns a packet per 20 ms frame completed
        (:mod:`speechcodec.perceptual.stream`); ``bitrate`` in bps, this codec's unless given."""
        return StreamEncoder(bytes.fromhex(self.fingerprint), self.bitrate_bps if bitrate is None else bitrate)

    def stream_decoder(self, conceal: str = "repeat", decay_db: float = CONCEAL_DECAY_DB) -> StreamDecoder:
        """A live decoder: ``pull(packet)`` returns the next 320 samples, ``pull(None)`` conceals
        a lost packet (``conceal``, ``decay_db``: how; the defaults were chosen on held-out speech)."""
        return StreamDecoder(self, conceal, decay_db)

    def encode_packets(self, audio: np.ndarray, bitrate: int | None = None) -> list[bytes]:
        """Every packet of a stream of ``audio`` (16 kHz mono): a stream encoder fed all of it."""
        enc = self.stream_encoder(bitrate)
        return enc.push(audio) + enc.flush()

    @_in_its_threads
    def decode_packets(self, stream: list[bytes]) -> np.ndarray:
        """A whole, lossless packet stream decoded as the file decoder decodes a file (one
        network pass over every frame, one inverse MDCT): float32 samples from the first input
        sample on, ``320 x (packets - 1)`` of them. A stream decoder gives the same 320 samples later."""
        fingerprint = bytes.fromhex(self.fingerprint)
        frames = []
        for i, packet in enumerate(stream):
            seq, frame = packets.unpack(packet, fingerprint)
            if seq != i % 256:
                raise BitstreamError(f"packet {i} has sequence number {seq}: the stream is not whole "
                                     "and in order")
            frames.append(frame)
        if not frames:
            return np.zeros(0, np.float32)
        first = frames[0]
        joined = DecodedChunk(first.settings, np.array([[f.step] for f in frames]),
                              *(np.concatenate([getattr(f, name) for f in frames])
                                for name in ("symbols", "level_qo", "coefficients", "units", "band_levels_qo")))
        coefficients = self.enhance([joined])
        return np.clip(imdct(coefficients, HOP * (len(frames) - 1), HOP), -1.0, 1.0).astype(np.float32)

    # ---- decoder ---------------------------------------------------------------------------

    def codes_from_bytes(self, data: bytes) -> np.ndarray:
        """The quantised coefficients ``[320, F + 1]`` a stream holds (range decoding only)."""
        return np.concatenate([c.symbols for c in self._chunks_of(data)], axis=0).T

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
        weight = np.clip((none - np.asarray(step)) / (none - full), 0.0, 1.0)
        return weight if np.ndim(step) else float(weight)

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
            gain = np.sqrt(want / np.maximum(have, 1e-12)) ** weight
            units = units * np.repeat(gain, np.diff(edges), axis=1)
        return units * _gain(c.settings, c.level_qo, c.step)

    def _decode_chunks(self, header: StreamHeader, chunks) -> Iterator[np.ndarray]:
        coefficients = self.enhance(list(self._decoded(header, chunks)))
        if len(coefficients) != num_frames(header.num_samples, HOP):
            raise SpeechCodecError("perceptual stream holds a different number of frames than its length needs")
        yield np.clip(imdct(coefficients, header.num_samples, HOP), -1.0, 1.0).astype(np.float32)
