"""Live coding with a perceptual model: 20 ms packets in, 20 ms of speech out, losses concealed.

::

    enc = speechcodec.load("pc").stream_encoder(bitrate=12000)
    dec = codec.stream_decoder()
    for block in microphone:                 # any number of 16 kHz float32 samples
        for packet in enc.push(block):       # one packet per 20 ms frame completed
            speaker.play(dec.pull(packet))   # 320 samples; dec.pull(None) for a lost packet
    for packet in enc.flush(): ...

A packet is the codec's payload only (:mod:`speechcodec.perceptual.packets`); a transport numbers
and checks it (:mod:`speechcodec.bitstream.pipe` for a pipe or a file). A file is the same
packets, so ``speechcodec decode`` of a file gives what a stream decoder plays.

Rate. By default the rate is variable, as Opus's is (:class:`RateControl`): each packet takes
the bytes its frame needs at a slowly adapting quantiser step, within bounds that hold for any
input: no packet over :data:`MAX_PACKET_RATIO` times the mean, and no second (50 packets) over
:data:`WINDOW_RATIO` times the rate. ``cbr=True`` gives every packet at most its 20 ms of bytes
(plus up to :data:`SLACK_BYTES` that earlier ones left unused).

Delay. A frame is coded once its 20 ms have arrived and the MDCT's next 20 ms (the window's
second half) too, and the network sees no later frame: 40 ms of algorithmic delay. In samples,
pushing ``320 k`` samples yields packets ``0 .. k - 1`` and packet ``j`` decodes to input samples
``[320 (j - 1), 320 j)``: the decoded stream is the input 320 samples (20 ms) later, plus the
20 ms frame a push of 20 ms waits for.

Same result as a file: :func:`decode_all` decodes a list of packets as the file decoder does
(one network pass over every frame, one inverse MDCT, losses concealed the same way); a stream
decoder's output is that, 320 samples later, to float rounding (the network's sums run in
another order one frame at a time; tested within 1e-5).
"""

from __future__ import annotations

import math
import warnings
from collections import deque

import numpy as np
import torch

from speechcodec.codec import in_its_threads
from speechcodec.errors import AudioInputError, BitstreamError, SpeechCodecError
from speechcodec.perceptual import comb, packets
from speechcodec.perceptual.network import StreamingEnhancer
from speechcodec.transform import bands
from speechcodec.transform.mdct import HOP, imdct, imdct_blocks, odft_blocks

SAMPLE_RATE_HZ = 16000
FRAME_MS = 20
ALGORITHMIC_DELAY_MS = 40  # the 20 ms frame and the MDCT window's 20 ms beyond it
STREAM_BITRATE_RANGE_BPS = (2000, 64000)  # as files (below 6 kbps a coarse packet may exceed the bounds)
SLACK_BYTES = 3  # with cbr, a packet may exceed its 20 ms of bytes by what earlier ones left unused
MAX_PACKET_RATIO = 3.0  # VBR: no packet over this many times the mean packet
WINDOW_PACKETS = 50  # VBR: no second (50 packets) over ...
WINDOW_RATIO = 1.05  # ... this many times the rate
FILE_RATIO = 1.01  # VBR: and no stream over this many times the rate (plus one mean packet)
RESERVE_BYTES = 12  # VBR: what the window keeps for each packet to come (a coarse packet's size)
VBR_SPREAD_CODES = 8  # VBR: a packet's step within this many 16ths of an octave of the CBR step
VBR_FLOOR_RATIO = 0.75  # VBR: no packet's step coarser than fits this share of the mean
VBR_GAIN = 16.0  # VBR: step codes the controller moves for a packet 100 % over the mean
# What a lost frame is made of, the first the default: chosen on held-out speakers at 10 % loss
# (scripts/premise_stream.py conceal; docs/history.md), as is the fade.
CONCEALMENTS = ("repeat", "shape", "noise", "silence")
CONCEAL_DECAY_DB = 6.0  # each frame lost in a row is this much quieter than the one before
CONCEAL_SILENT_AFTER = 10  # frames lost in a row after which the concealment is silence


def packet_budget_bytes(bitrate_bps: int) -> int:
    """A CBR packet's bytes at ``bitrate_bps``: 20 ms at that rate (rounded down)."""
    return int(bitrate_bps) * FRAME_MS // 8000


def checked_stream_bitrate(bitrate_bps) -> int:
    low, high = STREAM_BITRATE_RANGE_BPS
    if isinstance(bitrate_bps, bool) or not isinstance(bitrate_bps, (int, np.integer)) \
            or not low <= bitrate_bps <= high:
        raise SpeechCodecError(f"a stream codes {low} to {high} bps, got {bitrate_bps!r}")
    return int(bitrate_bps)


def largest_packet_bytes(bitrate_bps: int, cbr: bool = False) -> int:
    """The largest packet the rate control makes at ``bitrate_bps`` (for any input, except
    where even the coarsest step's packet is larger: below 6 kbps)."""
    if cbr:
        return packet_budget_bytes(bitrate_bps) + SLACK_BYTES
    return math.floor(MAX_PACKET_RATIO * bitrate_bps * FRAME_MS / 8000)


def checked_intra_interval(packets_count) -> int:
    """An encoder's intra interval (packets), or a one-line error."""
    top = packets.MAX_INTRA_INTERVAL
    if isinstance(packets_count, bool) or not isinstance(packets_count, (int, np.integer)) \
            or not 1 <= packets_count <= top:
        raise SpeechCodecError(f"the intra interval is 1 to {top} packets (1: every packet intra), "
                               f"got {packets_count!r}")
    return int(packets_count)


class RateControl:
    """Which step each packet takes, causally (no look-ahead beyond its frame).

    VBR (the default): a step code ``q`` that moves by :data:`VBR_GAIN` codes for each mean
    packet a packet is over or under the mean (an integrator: the stream's mean meets the rate),
    held within :data:`VBR_SPREAD_CODES` of the step that would fit this frame into the mean (so
    silence does not wind it up); then the packet is coded at that step or coarser, so that it
    fits :func:`largest_packet_bytes` and the last second's bytes stay within
    :data:`WINDOW_RATIO` of the rate. CBR: the finest step that fits 20 ms of bytes (plus up to
    :data:`SLACK_BYTES` that earlier packets left).
    """

    def __init__(self, bitrate_bps: int, cbr: bool = False, spread: int = VBR_SPREAD_CODES):
        self.bitrate_bps, self.cbr, self.spread = bitrate_bps, cbr, spread
        self.mean_bytes = bitrate_bps * FRAME_MS / 8000
        self.largest = largest_packet_bytes(bitrate_bps, cbr)
        self._window: deque[int] = deque(maxlen=WINDOW_PACKETS - 1)
        self._code = packets.CODES // 2
        self._q: float | None = None
        self._credit = 0
        self._made = self._spent = 0  # VBR: packets made so far, and their bytes
        self._reserve = min(RESERVE_BYTES, 0.75 * self.mean_bytes)
        self.gain = VBR_GAIN
        self.window_ratio = WINDOW_RATIO
        self.floor_ratio = VBR_FLOOR_RATIO

    def code(self, a: packets.FrameAnalysis) -> tuple[int, bytes]:
        if self.cbr:
            allowed = packet_budget_bytes(self.bitrate_bps) + self._credit
            code, packet = packets.fit(a, allowed, self._code)
            self._credit = min(max(self._credit + packet_budget_bytes(self.bitrate_bps) - len(packet), 0),
                               SLACK_BYTES)
        else:
            # the file's mean: never more than FILE_RATIO of the rate, plus a packet's worth
            ahead = math.floor(FILE_RATIO * self.mean_bytes * (self._made + 1) + self.mean_bytes - self._spent)
            allowed = max(1, min(self.largest, self._window_room(), ahead))
            sizes = packets.Sizes(a, self._code)
            reference = sizes.fitting_code(self.mean_bytes, self._code)
            if self._q is None:
                self._q = float(reference)
            finest = int(np.clip(round(self._q), reference - self.spread, reference + self.spread))
            if self.floor_ratio:  # a quiet frame gets at least this share of the mean
                finest = min(finest, sizes.fitting_code(self.floor_ratio * self.mean_bytes, finest))
            finest = min(max(finest, 0), packets.CODES - 1)
            code, packet = packets.fit(a, allowed, finest, finest, sizes.fitting_code(allowed, finest, finest),
                                       sizes)
            if reference > 0:  # a frame that could take the mean (not a pause): the integrator learns
                # from the size the step asked for, not the one the bounds allowed (else a held
                # packet reads as room to spare, and the step winds finer against the bounds)
                wanted = len(packet) if code == finest else sizes.bits_at(finest) / 8 + 1
                self._q += self.gain * (wanted - self.mean_bytes) / self.mean_bytes
                self._q = min(max(self._q, 0.0), packets.CODES - 1.0)
            self._window.append(len(packet))
            self._made += 1
            self._spent += len(packet)
        self._code = code
        return code, packet

    def _window_room(self) -> int:
        """The most this packet may take so that every second it falls in (this one and the
        next 49) can stay within :data:`WINDOW_RATIO` of the rate, when each packet still to come
        in it takes :data:`RESERVE_BYTES`."""
        limit = math.floor(self.window_ratio * WINDOW_PACKETS * self.mean_bytes)
        earlier = [0] * (WINDOW_PACKETS - 1 - len(self._window)) + list(self._window)  # oldest first
        room, tail = limit - sum(earlier), sum(earlier)
        for k in range(1, WINDOW_PACKETS):  # the window that ends k packets later
            tail -= earlier[k - 1]
            room = min(room, limit - tail - k * self._reserve)
        return room


class StreamEncoder:
    """Made by :meth:`PerceptualCodec.stream_encoder`: samples in, packets out (one per 20 ms)."""

    def __init__(self, bitrate_bps: int, cbr: bool = False,
                 intra_interval: int = packets.STREAM_INTRA_INTERVAL):
        self.bitrate_bps = checked_stream_bitrate(bitrate_bps)
        self.cbr = bool(cbr)
        self.intra_interval = checked_intra_interval(intra_interval)
        self.rate = RateControl(self.bitrate_bps, self.cbr)
        self._previous = np.zeros(HOP)  # the 20 ms before the frame being filled
        self._pending = np.zeros(0)
        self._levels: np.ndarray | None = None  # the last frame's band levels (inter prediction)
        self._closed = False
        self._warned = False
        self.packets = 0  # packets made so far
        self.samples_in = 0
        self.clipped = 0  # samples beyond full scale, clipped to it

    def push(self, samples) -> list[bytes]:
        """Take any number of 16 kHz mono samples (floats in -1..1; beyond that they are
        clipped, with one warning); return the packets of the frames they completed."""
        if self._closed:
            raise SpeechCodecError("this stream encoder was flushed; make a new one")
        try:
            x = np.asarray(samples, dtype=np.float64)
        except (TypeError, ValueError):
            raise AudioInputError("push takes numbers (16 kHz mono samples in -1..1)") from None
        if x.ndim != 1:
            raise AudioInputError(f"push takes mono samples (one dimension), got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise AudioInputError("the samples hold NaN or infinity")
        over = int(np.count_nonzero(np.abs(x) > 1.0))
        if over:
            self.clipped += over
            if not self._warned:
                warnings.warn(f"stream encoder: {over} samples beyond full scale (1.0) clipped to it "
                              "(warned once a stream)", stacklevel=2)
                self._warned = True
            x = np.clip(x, -1.0, 1.0)
        self.samples_in += len(x)
        self._pending = np.concatenate([self._pending, x])
        whole = len(self._pending) // HOP
        if not whole:
            return []
        # every frame completed, analysed at once (row by row: as one frame at a time)
        signal = np.concatenate([self._previous, self._pending[:whole * HOP]])
        spectra = odft_blocks(np.lib.stride_tricks.sliding_window_view(signal, 2 * HOP)[::HOP])
        raw = packets.band_levels(spectra)
        self._previous = self._pending[(whole - 1) * HOP: whole * HOP]
        self._pending = self._pending[whole * HOP:]
        return [self._code(spectrum, levels) for spectrum, levels in zip(spectra, raw, strict=True)]

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
        return self._code(spectrum)

    def _code(self, spectrum: np.ndarray, raw: np.ndarray | None = None) -> bytes:
        intra = self.packets % self.intra_interval == 0
        a = packets.analyse(spectrum, None if intra else self._levels, raw)
        self._levels = a.levels
        _, packet = self.rate.code(a)
        self.packets += 1
        return packet


class Concealer:
    """What a lost frame is made of (:data:`CONCEALMENTS`): by default the last good frame's
    spectrum again, ``decay_db`` quieter for each frame lost in a row (silence after 10); "shape"
    gives its magnitudes random signs, "noise" fills each band with noise at its RMS."""

    def __init__(self, conceal: str = "repeat", decay_db: float = CONCEAL_DECAY_DB):
        if conceal not in CONCEALMENTS:
            raise SpeechCodecError(f"unknown concealment {conceal!r}; choose one of {', '.join(CONCEALMENTS)}")
        self.conceal, self.decay_db = conceal, float(decay_db)
        self._rng = np.random.default_rng(0)

    def __call__(self, last: np.ndarray | None, run: int) -> np.ndarray:
        """The coefficients ``[320]`` of the ``run``-th frame lost in a row after ``last``."""
        if last is None or run > CONCEAL_SILENT_AFTER or self.conceal == "silence":
            return np.zeros(HOP)
        fade = 10 ** (-self.decay_db * run / 20)
        if self.conceal == "shape":  # the last spectrum's magnitudes, random signs
            return last * self._rng.choice((-1.0, 1.0), HOP) * fade
        if self.conceal == "repeat":
            return last * fade
        edges = np.asarray(bands.LAYOUTS[packets.SETTINGS.layout])  # "noise": each band's RMS
        rms = np.sqrt(np.add.reduceat(last ** 2, edges[:-1]) / np.diff(edges))
        noise = self._rng.uniform(-np.sqrt(3), np.sqrt(3), HOP)
        return np.repeat(rms, np.diff(edges)) * noise * fade


class _Unpacker:
    """Packets to frames, keeping the band levels an inter packet is predicted from. After a lost
    or damaged packet it does not know them: the inter packets that follow are skipped (concealed)
    until the next intra one."""

    def __init__(self):
        self.levels: np.ndarray | None = None
        self.damaged = self.skipped = 0

    def __call__(self, packet):
        """The frame decoded, or ``None`` for a packet that is lost or does not decode."""
        r = self.read(packet)
        return None if r is None else packets.frame_of(r)

    def read(self, packet) -> packets.Read | None:
        """The packet range decoded (:func:`packets.read`), or ``None`` if lost, damaged or an
        inter packet the decoder lost the frame before of."""
        if packet is None:
            self.levels = None
            return None
        try:
            if self.levels is None and not packets.is_intra(packet):
                self.skipped += 1
                return None
            r = packets.read(packet, self.levels)
        except BitstreamError:
            self.damaged += 1
            self.levels = None
            return None
        self.levels = r.levels
        return r


class StreamDecoder:
    """Made by :meth:`PerceptualCodec.stream_decoder`: packets in, 320 samples (20 ms) out each.

    ``pull(packet)`` decodes the next frame; ``pull(None)`` says its packet was lost and conceals
    it (:class:`Concealer`). A packet that does not decode is concealed as lost (counted in
    ``damaged``), and so are the inter packets after either until the next intra packet (counted in
    ``skipped``). Sequence numbers are the transport's: :class:`speechcodec.bitstream.pipe.Sequencer`
    turns a numbered stream into these calls. After a loss the output is bit-exact again at most
    the encoder's intra interval (1 packet live by default, 8 in files) plus the network's context
    plus the low-band comb's memory (:data:`comb.MEMORY_FRAMES`, where it runs) later. At 16 kbps
    or less (the stream's rate, ``bitrate_bps``: the codec's unless given) its output goes
    through :class:`speechcodec.perceptual.comb.LowBandComb`.
    """

    def __init__(self, codec, conceal: str = "repeat", decay_db: float = CONCEAL_DECAY_DB,
                 bitrate_bps: int | None = None):
        self.codec = codec
        self._comb = comb.for_bitrate(codec.bitrate_bps if bitrate_bps is None else bitrate_bps)
        self._concealer = Concealer(conceal, decay_db)
        self._unpack = _Unpacker()
        self._net = StreamingEnhancer(codec.enhancer)
        self.threads = codec.threads
        self._tail = np.zeros(HOP)  # the second half of the last block
        self._last_input: torch.Tensor | None = None
        self._last_coefficients: np.ndarray | None = None
        self._lost_run = 0
        self.frames = self.lost = 0

    @property
    def damaged(self) -> int:
        return self._unpack.damaged

    @property
    def skipped(self) -> int:
        return self._unpack.skipped

    @in_its_threads
    def pull(self, packet: bytes | None) -> np.ndarray:
        frame = self._unpack(packet)
        if frame is None:
            return self._conceal()
        x = torch.from_numpy(self.codec.network_input(frame)[0])
        y = self._net.step(x).numpy()[None]
        coefficients = self.codec.synthesis_coefficients(frame, y)[0]
        self._last_input, self._last_coefficients, self._lost_run = x, coefficients, 0
        return self._synthesise(coefficients)

    def _conceal(self) -> np.ndarray:
        """A lost frame; the network is fed the last good frame again, so its memory stays in step."""
        self.lost += 1
        self._lost_run += 1
        if self._last_input is not None:
            self._net.step(self._last_input)
        return self._synthesise(self._concealer(self._last_coefficients, self._lost_run))

    def _synthesise(self, coefficients: np.ndarray) -> np.ndarray:
        self.frames += 1
        block = imdct_blocks(coefficients[None])[0]
        out = self._tail + block[:HOP]
        self._tail = block[HOP:]
        if self._comb is not None:
            out = self._comb(out)
        return np.minimum(np.maximum(out, -1.0), 1.0).astype(np.float32)


def decode_all(codec, stream: list, conceal: str = "repeat", decay_db: float = CONCEAL_DECAY_DB,
               bitrate_bps: int | None = None) -> tuple[np.ndarray, dict]:
    """A whole packet stream (``None`` for a lost packet) decoded as the file decoder decodes:
    one network pass over every frame, one inverse MDCT, each lost or damaged packet concealed as
    :class:`StreamDecoder` conceals it. Returns float32 samples from the first input sample on,
    ``320 x (packets - 1)`` of them (a stream decoder gives the same 320 samples later), and
    counts: ``lost`` (packets the stream lacks), ``damaged``, ``skipped`` (inter packets after
    either, until an intra one): each concealed. ``bitrate_bps``: the stream's (its header's; the codec's
    unless given), which sets the postfilter (:func:`speechcodec.perceptual.comb.for_bitrate`)."""
    unpack, concealer = _Unpacker(), Concealer(conceal, decay_db)
    frames = [unpack.read(p) for p in stream]
    good = [t for t, frame in enumerate(frames) if frame is not None]
    coefficients = np.zeros((len(frames), HOP))
    if good:  # every good frame at once: the same arithmetic as frame by frame, row by row
        together = packets.dequantised([frames[t] for t in good])
        # the network's input: a lost frame repeats the last good one's (none before the first)
        x = codec.network_input(together)
        last_good = np.searchsorted(good, np.arange(len(frames)), side="right") - 1
        corrected = codec.run_network(x[last_good[last_good >= 0]])
        coefficients[good] = codec.synthesis_coefficients(together, corrected[np.asarray(good) - good[0]])
    last, run = None, 0
    for t, frame in enumerate(frames):
        if frame is None:
            run += 1
            coefficients[t] = concealer(last, run)
        else:
            last, run = coefficients[t], 0
    n = HOP * max(len(frames) - 1, 0)
    combed = comb.for_bitrate(codec.bitrate_bps if bitrate_bps is None else bitrate_bps)
    if combed is not None and n:  # over the 320 samples a stream decoder plays first, too
        audio = combed(imdct(np.concatenate([np.zeros((1, HOP)), coefficients]), n + HOP, HOP))[HOP:]
    else:
        audio = imdct(coefficients, n, HOP)
    audio = np.clip(audio, -1.0, 1.0).astype(np.float32) if n else np.zeros(0, np.float32)
    lost = sum(p is None for p in stream)
    return audio, {"lost": lost, "damaged": unpack.damaged, "skipped": unpack.skipped}


def encode_pipe(codec, src, out) -> tuple[StreamEncoder, dict]:
    """Raw 16-bit PCM at 16 kHz from ``src`` to a packet stream on ``out`` (a page per packet,
    flushed as each is made: :mod:`speechcodec.bitstream.pipe`), until ``src`` ends."""
    from speechcodec.audio import as_mono
    from speechcodec.bitstream.pipe import PipeHeader, write_packet

    enc = codec.stream_encoder()
    head = PipeHeader(codec.model_file.name, codec.fingerprint, enc.bitrate_bps, enc.cbr).to_bytes()
    out.write(head)
    out.flush()
    stats = {"payload_bytes": 0, "framing_bytes": len(head), "odd_byte": False}

    def send(made: list[bytes]) -> None:
        for packet in made:
            written = write_packet(out, enc.packets - len(made) + made.index(packet), packet)
            stats["payload_bytes"] += len(packet)
            stats["framing_bytes"] += written - len(packet)
        out.flush()

    leftover = b""
    while True:
        block = src.read1(2 * HOP) if hasattr(src, "read1") else src.read(2 * HOP)
        if not block:
            break
        data = leftover + block
        whole = len(data) // 2 * 2
        leftover = data[whole:]
        send(enc.push(as_mono(np.frombuffer(data[:whole], "<i2"))))
    stats["odd_byte"] = bool(leftover)
    send(enc.flush())
    return enc, stats


def decode_pipe(codec, src, out, bitrate_bps: int | None = None):
    """A packet stream from ``src`` (its header read already; ``bitrate_bps``: the header's) to
    raw 16-bit PCM at 16 kHz on ``out``, 20 ms a packet as it comes; lost, damaged and late
    packets as :class:`speechcodec.bitstream.pipe.Sequencer` says. Returns the decoder and the
    sequencer."""
    from speechcodec.bitstream.pipe import Sequencer, read_pages

    dec, sequencer = codec.stream_decoder(bitrate_bps=bitrate_bps), Sequencer()
    for packet in sequencer.packets(read_pages(src)):
        pcm = np.round(np.clip(dec.pull(packet), -1, 1 - 1 / 32768) * 32768).astype("<i2")  # as sf.write
        out.write(pcm.tobytes())
        out.flush()
    return dec, sequencer


def loss_pattern(packets_count: int, loss: float, seed: int = 0) -> np.ndarray:
    """bool ``[packets_count]``: which packets a link that drops each with probability ``loss``
    (independently) loses; the same seed gives the same pattern to every codec compared."""
    if not 0.0 <= loss < 1.0:
        raise SpeechCodecError(f"packet loss must lie within 0 .. 1 (exclusive), got {loss!r}")
    return np.random.default_rng(seed).random(packets_count) < loss


def loopback(codec, audio: np.ndarray, bitrate_bps: int | None = None, loss: float = 0.0, seed: int = 0,
             conceal: str = "repeat", decay_db: float = CONCEAL_DECAY_DB,
             cbr: bool = False) -> tuple[np.ndarray, dict]:
    """``audio`` (16 kHz mono) through a stream encoder, a link that loses packets at random
    (:func:`loss_pattern`) and a stream decoder, one 20 ms frame at a time. Returns the decoded
    speech aligned with the input (the decoder's 320-sample lag removed) and what happened
    (packets, lost, payload bytes, the real bitrate from them, the largest packet)."""
    enc = codec.stream_encoder(bitrate_bps, cbr=cbr)
    dec = codec.stream_decoder(conceal, decay_db, bitrate_bps=enc.bitrate_bps)
    sent = enc.push(audio) + enc.flush()
    lost = loss_pattern(len(sent), loss, seed)
    out = np.concatenate([dec.pull(None if gone else p) for p, gone in zip(sent, lost, strict=True)])
    size = sum(len(p) for p in sent)
    stats = {"packets": len(sent), "lost": int(lost.sum()), "bytes": size,
             "bitrate_bps": size * 8 / (len(sent) * FRAME_MS / 1000), "max_packet_bytes": max(map(len, sent))}
    return out[HOP: HOP + len(audio)], stats


def _is_intra(packet: bytes) -> bool:
    try:
        return packets.is_intra(packet)
    except BitstreamError:
        return False


def packet_stream_facts(f, size: int) -> dict:
    """What ``speechcodec info`` says of packets (a perceptual file or a saved live stream, open
    as ``f``, ``size`` bytes in all):
    reads every page (checks every CRC). The bitrate counts the packets, as Opus's does; the
    framing's bytes (header, page heads, CRCs) are given apart."""
    from speechcodec.bitstream.pipe import Sequencer, read_header, read_pages

    header = read_header(f)
    sequencer = Sequencer()
    stream = list(sequencer.packets(read_pages(f)))
    sent = [len(p) for p in stream if p is not None]
    seconds = len(stream) * FRAME_MS / 1000
    payload = sum(sent)
    facts = {
        "kind": "packets (speechcodec encode, or stream-encode)",
        "model": header.model,
        "fingerprint": header.fingerprint,
        "bitrate_asked_kbps": header.bitrate_bps / 1000,
        "rate_control": "cbr" if header.cbr else "vbr",
        "packets": len(stream),
        "packets_lost": len(stream) - len(sent),
        "intra_packets": sum(_is_intra(p) for p in stream if p is not None),
        "pages_damaged": sequencer.damaged_pages,
        "duration_s": round(header.duration_s if header.duration_s is not None else seconds, 3),
        "num_bytes": size,
        "payload_bytes": payload,
        "bitrate_kbps": round(payload * 8 / seconds / 1000, 3) if seconds else 0.0,
        "framing_bytes": size - payload,
        "framing_kbps": round((size - payload) * 8 / seconds / 1000, 3) if seconds else 0.0,
        "largest_packet_bytes": max(sent, default=0),
        "largest_packet_allowed_bytes": largest_packet_bytes(header.bitrate_bps, header.cbr),
        "frame_ms": FRAME_MS,
        "algorithmic_delay_ms": ALGORITHMIC_DELAY_MS,
        "postfilter": (f"low-band pitch comb (g {comb.GAIN:g} below {comb.CUTOFF_HZ / 1000:g} kHz)"
                       if comb.runs_at(header.bitrate_bps) else "off"),
    }
    if header.source_sample_rate_hz:
        facts["source_sample_rate_hz"] = header.source_sample_rate_hz
        facts["source_channels"] = header.source_channels
    return facts
