"""Live coding with a perceptual model: 20 ms packets in, 20 ms of speech out, losses concealed.

::

    enc = speechcodec.load("pc").stream_encoder(bitrate=12000)
    dec = codec.stream_decoder()
    for block in microphone:                 # any number of 16 kHz float32 samples
        for packet in enc.push(block):       # one packet per 20 ms frame completed
            speaker.play(dec.pull(packet))   # 320 samples; dec.pull(None) for a lost packet
    for packet in enc.flush(): ...

Delay. A frame is coded once its 20 ms have arrived and the MDCT's next 20 ms (the window's
second half) too, and the network sees no later frame: 40 ms of algorithmic delay. In samples,
pushing ``320 k`` samples yields packets ``0 .. k - 1`` and packet ``j`` decodes to input samples
``[320 (j - 1), 320 j)``: the decoded stream is the input 320 samples (20 ms) later, plus the
20 ms frame a push of 20 ms waits for.

Same result as a file: :meth:`~speechcodec.perceptual.codec.PerceptualCodec.decode_packets`
decodes a list of packets as the file decoder decodes a file (one network pass over every frame,
one inverse MDCT); a stream decoder's output is that, 320 samples later, to float rounding (the
network's sums run in another order one frame at a time; tested within 1e-5).
"""

from __future__ import annotations

import numpy as np
import torch

from speechcodec.codec import _in_its_threads
from speechcodec.errors import AudioInputError, BitstreamError, SpeechCodecError
from speechcodec.perceptual import packets
from speechcodec.perceptual.network import StreamingEnhancer
from speechcodec.transform import bands
from speechcodec.transform.mdct import HOP, imdct_blocks, odft_blocks

SAMPLE_RATE_HZ = 16000
FRAME_MS = 20
ALGORITHMIC_DELAY_MS = 40  # the 20 ms frame and the MDCT window's 20 ms beyond it
STREAM_BITRATE_RANGE_BPS = (6000, 64000)  # below 6 kbps a packet's energies may not fit its bytes
SLACK_BYTES = 3  # a packet may exceed its 20 ms of bytes by what earlier ones left unused, up to this
LATE = 128  # a sequence number this far behind the one expected or further (mod 256) is late
# What a lost frame is made of, the first the default: chosen on held-out speakers at 10 % loss
# (scripts/premise_stream.py conceal; docs/history.md), as is the fade.
CONCEALMENTS = ("repeat", "shape", "noise", "silence")
CONCEAL_DECAY_DB = 6.0  # each frame lost in a row is this much quieter than the one before
CONCEAL_SILENT_AFTER = 10  # frames lost in a row after which the concealment is silence


def packet_budget_bytes(bitrate_bps: int) -> int:
    """A packet's bytes at ``bitrate_bps``: 20 ms at that rate. A packet may take up to
    :data:`SLACK_BYTES` more that the packets before it left unused (the range coder writes
    4-byte words), so the stream's average meets the rate and no packet exceeds it by more."""
    return int(bitrate_bps) * FRAME_MS // 8000


def checked_stream_bitrate(bitrate_bps) -> int:
    low, high = STREAM_BITRATE_RANGE_BPS
    if isinstance(bitrate_bps, bool) or not isinstance(bitrate_bps, (int, np.integer)) \
            or not low <= bitrate_bps <= high:
        raise SpeechCodecError(f"a stream codes {low} to {high} bps, got {bitrate_bps!r}")
    return int(bitrate_bps)


class StreamEncoder:
    """Made by :meth:`PerceptualCodec.stream_encoder`: samples in, packets out (one per 20 ms)."""

    def __init__(self, fingerprint: bytes, bitrate_bps: int):
        self.bitrate_bps = checked_stream_bitrate(bitrate_bps)
        self.budget_bytes = packet_budget_bytes(self.bitrate_bps)
        self._fingerprint = fingerprint
        self._previous = np.zeros(HOP)  # the 20 ms before the frame being filled
        self._pending = np.zeros(0)
        self._code = packets.CODES // 2
        self._credit = 0  # bytes earlier packets left unused, up to SLACK_BYTES
        self._closed = False
        self.seq = 0  # packets made so far (the next one's sequence number, mod 256)
        self.samples_in = 0

    def push(self, samples) -> list[bytes]:
        """Take any number of 16 kHz mono samples (floats in -1..1); return the packets of the
        frames they completed."""
        if self._closed:
            raise SpeechCodecError("this stream encoder was flushed; make a new one")
        x = np.asarray(samples, dtype=np.float64)
        if x.ndim != 1:
            raise AudioInputError(f"push takes mono samples (one dimension), got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise AudioInputError("the samples hold NaN or infinity")
        self.samples_in += len(x)
        self._pending = np.concatenate([self._pending, x])
        out = []
        while len(self._pending) >= HOP:
            out.append(self._frame(self._pending[:HOP]))
            self._pending = self._pending[HOP:]
        return out

    def flush(self) -> list[bytes]:
        """End the stream: the packets of the last part frame (zero-padded) and of the closing
        frame the MDCT needs. The encoder takes nothing after this."""
        if self._closed:
            return []
        out = []
        if len(self._pending):
            out.append(self._frame(np.pad(self._pending, (0, HOP - len(self._pending)))))
        out.append(self._frame(np.zeros(HOP)))
        self._pending = np.zeros(0)
        self._closed = True
        return out

    def _frame(self, block: np.ndarray) -> bytes:
        spectrum = odft_blocks(np.concatenate([self._previous, block])[None])[0]
        self._previous = block
        allowed = self.budget_bytes + self._credit
        code, payload = packets.fit(packets.analyse(spectrum), allowed, self._code)
        self._code = code
        packet = packets.pack(self.seq, code, payload, self._fingerprint)
        self._credit = min(max(self._credit + self.budget_bytes - len(packet), 0), SLACK_BYTES)
        self.seq += 1
        return packet


class StreamDecoder:
    """Made by :meth:`PerceptualCodec.stream_decoder`: packets in, 320 samples (20 ms) out each.

    ``pull(packet)`` decodes the next frame; ``pull(None)`` says its packet was lost and conceals
    it. A packet that is cut, damaged or of another model is concealed as lost (counted in
    ``damaged``). A packet whose sequence number runs ahead of the one expected means the ones
    between were lost: they are concealed first, so that pull returns ``320 x (missing + 1)``
    samples. A late or repeated packet (behind the one expected) is dropped: no samples.
    """

    def __init__(self, codec, conceal: str = "repeat", decay_db: float = CONCEAL_DECAY_DB):
        if conceal not in CONCEALMENTS:
            raise SpeechCodecError(f"unknown concealment {conceal!r}; choose one of {', '.join(CONCEALMENTS)}")
        self.conceal, self.decay_db = conceal, float(decay_db)
        self.codec = codec
        self._fingerprint = bytes.fromhex(codec.fingerprint)
        self._net = StreamingEnhancer(codec.enhancer)
        self.threads = codec.threads
        self._tail = np.zeros(HOP)  # the second half of the last block
        self._expected: int | None = None
        self._last_input: torch.Tensor | None = None
        self._last_coefficients: np.ndarray | None = None
        self._lost_run = 0
        self._rng = np.random.default_rng(0)
        self.frames = self.lost = self.damaged = self.late = 0

    @_in_its_threads
    def pull(self, packet: bytes | None) -> np.ndarray:
        if packet is None:
            return self._conceal()
        try:
            seq, frame = packets.unpack(packet, self._fingerprint)
        except BitstreamError:
            self.damaged += 1
            return self._conceal()
        out = []
        if self._expected is not None:
            behind = (self._expected - seq) % 256
            if 0 < behind <= LATE:
                self.late += 1
                return np.zeros(0, np.float32)
            out.extend(self._conceal() for _ in range((seq - self._expected) % 256))
        out.append(self._decode(frame))
        self._expected = (seq + 1) % 256
        return np.concatenate(out)

    def _decode(self, frame) -> np.ndarray:
        x = torch.from_numpy(self.codec.network_input(frame)[0])
        y = self._net.step(x).numpy()[None]
        coefficients = self.codec.synthesis_coefficients(frame, y)[0]
        self._last_input, self._last_coefficients, self._lost_run = x, coefficients, 0
        return self._synthesise(coefficients)

    def _conceal(self) -> np.ndarray:
        """A lost frame (:data:`CONCEALMENTS`): by default the last good frame's spectrum again,
        6 dB quieter for each frame lost in a row (silence after 10); "shape" gives its
        magnitudes random signs, "noise" fills each band with noise at its RMS. The network is fed
        the last good frame again, so its memory stays in step."""
        self.lost += 1
        if self._expected is not None:
            self._expected = (self._expected + 1) % 256
        self._lost_run += 1
        last = self._last_coefficients
        if last is None or self._lost_run > CONCEAL_SILENT_AFTER or self.conceal == "silence":
            coefficients = np.zeros(HOP)
        else:
            fade = 10 ** (-self.decay_db * self._lost_run / 20)
            if self.conceal == "shape":  # the last spectrum's magnitudes, random signs
                coefficients = last * self._rng.choice((-1.0, 1.0), HOP) * fade
            elif self.conceal == "repeat":
                coefficients = last * fade
            else:  # "noise": each band's RMS, uniform noise
                edges = np.asarray(bands.LAYOUTS[packets.SETTINGS.layout])
                rms = np.sqrt(np.add.reduceat(last ** 2, edges[:-1]) / np.diff(edges))
                noise = self._rng.uniform(-np.sqrt(3), np.sqrt(3), HOP)
                coefficients = np.repeat(rms, np.diff(edges)) * noise * fade
        if self._last_input is not None:
            self._net.step(self._last_input)
        return self._synthesise(coefficients)

    def _synthesise(self, coefficients: np.ndarray) -> np.ndarray:
        self.frames += 1
        block = imdct_blocks(coefficients[None])[0]
        out = self._tail + block[:HOP]
        self._tail = block[HOP:]
        return np.clip(out, -1.0, 1.0).astype(np.float32)


def loss_pattern(packets_count: int, loss: float, seed: int = 0) -> np.ndarray:
    """bool ``[packets_count]``: which packets a link that drops each with probability ``loss``
    (independently) loses; the same seed gives the same pattern to every codec compared."""
    if not 0.0 <= loss < 1.0:
        raise SpeechCodecError(f"packet loss must lie within 0 .. 1 (exclusive), got {loss!r}")
    return np.random.default_rng(seed).random(packets_count) < loss


def loopback(codec, audio: np.ndarray, bitrate_bps: int | None = None, loss: float = 0.0, seed: int = 0,
             conceal: str = "repeat", decay_db: float = CONCEAL_DECAY_DB) -> tuple[np.ndarray, dict]:
    """``audio`` (16 kHz mono) through a stream encoder, a link that loses packets at random
    (:func:`loss_pattern`) and a stream decoder, one 20 ms frame at a time. Returns the decoded
    speech aligned with the input (the decoder's 320-sample lag removed) and what happened
    (packets, lost, bytes, the real bitrate)."""
    enc, dec = codec.stream_encoder(bitrate_bps), codec.stream_decoder(conceal, decay_db)
    sent = enc.push(audio) + enc.flush()
    lost = loss_pattern(len(sent), loss, seed)
    out = np.concatenate([dec.pull(None if gone else p) for p, gone in zip(sent, lost, strict=True)])
    size = sum(len(p) for p in sent)
    stats = {"packets": len(sent), "lost": int(lost.sum()), "bytes": size,
             "bitrate_bps": size * 8 / (len(sent) * FRAME_MS / 1000), "max_packet_bytes": max(map(len, sent))}
    return out[HOP: HOP + len(audio)], stats
