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


class DataError(SpeechCodecError, ValueError):
    """A data stage cannot go on: failed download, bad archive, unusable corpus."""


class ModelError(SpeechCodecError, ValueError):
    """A model file is missing, unreadable, unsafe or inconsistent."""


class UnknownModelError(ModelError):
    """No installed model has the requested name."""


class ModelMismatchError(ModelError):
    """The stream was written with a model whose weights or tables differ from the one at hand."""


class AudioInputWarning(UserWarning):
    """The input audio is usable but not what its file promised (a WAV cut short); the CLI prints
    it on one line and goes on."""


# Optional packages -> the extra of pyproject.toml that installs them. The codec itself (encode,
# decode, train) needs none; evaluation, reports and the pipeline do.
OPTIONAL_PACKAGES = {
    "matplotlib": "eval", "opuslib": "eval", "pesq": "eval", "visqol": "eval", "pystoi": "eval",
    "snakemake": "pipeline", "dvc": "pipeline",
}


class MissingExtraError(SpeechCodecError, ModuleNotFoundError):
    """An optional package is not installed; the message names the extra that installs it."""


def missing_extra(exc: ModuleNotFoundError) -> MissingExtraError | None:
    """The one-line error for an optional package that is not installed; None for any other."""
    package = (exc.name or "").split(".")[0]
    extra = OPTIONAL_PACKAGES.get(package)
    if extra is None:
        return None
    return MissingExtraError(f"this needs {package}, which is optional: pip install 'speechcodec[{extra}]' "
                             "(make setup installs everything)", name=package)


def optional_import(name: str):
    """Import an optional package, or raise MissingExtraError naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        error = missing_extra(exc)
        if error is None:
            raise
        raise error from None


def require(*names: str) -> None:
    """Before long work starts: raise MissingExtraError if an optional package is absent."""
    import importlib.util

    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            raise missing_extra(ModuleNotFoundError(f"No module named {name!r}", name=name))
