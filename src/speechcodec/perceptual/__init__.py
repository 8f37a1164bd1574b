"""The perceptual family: the textbook transform coder's stream, decoded through a network.

- :mod:`.frames` (numpy): a chunk of MDCT frames to and from its payload bytes;
- :mod:`.network` (torch): the frame-causal enhancer of the dequantised spectrum;
- :mod:`.codec`: :class:`~speechcodec.perceptual.codec.PerceptualCodec`, the two joined behind
  :class:`speechcodec.codec.Codec`'s methods;
- :mod:`.train`: training the enhancer on a folder of speech (resumable);
- :mod:`.packets` (numpy) and :mod:`.stream`: live coding, a packet per 20 ms frame, 40 ms of
  delay, lost packets concealed (``codec.stream_encoder()``, ``codec.stream_decoder()``).

The encoder is the textbook coder's: band energies as side information, the coefficients over
their band's RMS**alpha (so the quantisation noise follows the speech's envelope by
construction), one quantiser step per chunk chosen for the bitrate asked. One model therefore
codes every rate; the stream says the rate it was asked for, the step travels in each chunk.
"""
