"""One error family for everything a user can get wrong: bad audio, bad bitstreams, bad models."""


class SpeechCodecError(Exception):
    """Base class of every error speechcodec raises on purpose; the CLI prints it on one line."""


class AudioInputError(SpeechCodecError, ValueError):
    """The input audio is missing, unreadable, empty or holds non-finite samples."""


class BitstreamError(SpeechCodecError, ValueError):
    """The bytes are not a valid speechcodec stream (foreign, corrupt or inconsistent)."""


class TruncatedBitstreamError(BitstreamError, EOFError):
    """The stream ends before its end marker: the file was cut short."""


class ChecksumError(BitstreamError):
    """A CRC32 did not match: a byte of the header or of one chunk is damaged."""


class UnsupportedVersionError(BitstreamError):
    """The stream was written by a newer format version than this release reads."""


class TrainingError(SpeechCodecError, ValueError):
    """Training cannot start: a checkpoint from other settings, no usable audio, no GPU."""


class ModelError(SpeechCodecError, ValueError):
    """A model file is missing, unreadable, unsafe or inconsistent."""


class UnknownModelError(ModelError):
    """No installed model has the requested name."""


class ModelMismatchError(ModelError):
    """The stream was written with a model whose weights or tables differ from the one at hand."""


class AudioInputWarning(UserWarning):
    """The input audio is usable but not what its file promised (a WAV cut short); the CLI prints
    it on one line and goes on."""
