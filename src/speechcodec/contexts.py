"""The coding-context rule's constants, shared by the bitstream (numpy), the entropy model
(torch) and the model config (neither): a symbol's table is picked by the magnitude of the same
channel's symbol one frame earlier and by how many channels of that frame were non-zero.
``speechcodec.bitstream.context`` applies the rule to integer arrays, ``speechcodec.entropy`` to
tensors (tested to agree)."""

MAGNITUDE_LEVELS = 4  # |previous symbol| clipped to 0..3
ACTIVITY_SIXTEENTHS = (1, 4, 8)  # thresholds on the share of non-zero channels, in 1/16
NUM_CONTEXTS = MAGNITUDE_LEVELS * (len(ACTIVITY_SIXTEENTHS) + 1)
