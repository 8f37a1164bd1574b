"""Model files: one safetensors file holding weights, frozen entropy tables and a JSON config.

safetensors stores raw tensors and a string-to-string metadata map, nothing executable, so a
model file from a stranger can be opened safely. Metadata keys:

- ``format``: ``"speechcodec-model"``; ``format_version``: ``"1"``
- ``name``: the model's name, written into every stream it encodes
- ``config``: JSON of :class:`speechcodec.model.ModelConfig`
- ``info``: JSON with at least ``bitrate_bps`` (nominal) and free-form training facts

The frozen tables are the tensor ``entropy.pmf`` (int32 ``[C * contexts, 2 * max_symbol + 1]``,
``contexts`` being 1 unless the config's ``prior_context`` is ``"previous"``); every other
tensor is a parameter of :class:`speechcodec.model.CodecModel`. A family without learned tables
(``Family.tables``, the perceptual one) has no ``entropy.pmf``, and its tensors are its network's.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from speechcodec.errors import ModelError
from speechcodec.files import AtomicWriter
from speechcodec.model import CodecModel, ModelConfig
from speechcodec.model.family import family_of

FORMAT = "speechcodec-model"
FORMAT_VERSION = "1"
PMF_KEY = "entropy.pmf"


@dataclass
class ModelFile:
    """A model file read back: everything the codec needs, checked for consistency."""

    name: str
    config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    pmf: np.ndarray  # int32 [C * contexts, 2 * max_symbol + 1]; [0, 1] for a family without tables
    info: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.config, self.state_dict, self.pmf)

    def build(self):
        """The network, weights loaded, in eval mode: a :class:`CodecModel`, or the family's own
        network for a family without learned tables."""
        family = family_of(self.config)
        model = CodecModel(self.config) if family.tables else family.network_class()(self.config)
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0] if str(exc) else "mismatch"
            raise ModelError(f"model file {self.path}: weights do not fit its config ({first})") from None
        model.eval()
        return model


def nominal_bitrate_bps(info: dict) -> int | None:
    """A model's one nominal bitrate (``speechcodec models``, its card, ``encode --bitrate``): the
    rate its training steered the real rate to. A decoder-only run keeps the codes of the run it
    continued, so it is that run's rate, whatever the decoder-only run was given. (The name
    rounds it; a measured rate is always labelled as measured.)"""
    history = info.get("history") or []
    if (info.get("train_config") or {}).get("decoder_only") and history and history[-1].get("bitrate_bps"):
        return int(history[-1]["bitrate_bps"])
    return int(info["bitrate_bps"]) if info.get("bitrate_bps") else None


def fingerprint(config: ModelConfig, state_dict: dict[str, torch.Tensor], pmf: np.ndarray) -> str:
    """16 hex digits of SHA-256 over the config, every weight's name, shape and bytes, and the tables."""
    h = hashlib.sha256()
    h.update(json.dumps(config.to_dict(), sort_keys=True).encode())
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes())
    h.update(np.ascontiguousarray(pmf, dtype="<i4").tobytes())
    return h.hexdigest()[:16]


NO_TABLES = np.zeros((0, 1), np.int32)


def save_model(path: str | os.PathLike, model, pmf: np.ndarray | None, name: str,
               info: dict | None = None) -> Path:
    """Write ``model`` (its ``cfg`` and weights) and its frozen tables to ``path`` atomically
    (temp file, then rename); ``pmf`` is ``None`` for a family without tables."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    if pmf is not None and pmf.size:
        tensors[PMF_KEY] = torch.from_numpy(np.ascontiguousarray(pmf, dtype=np.int32))
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "config": json.dumps(model.cfg.to_dict(), sort_keys=True),
        "info": json.dumps(info or {}, sort_keys=True),
    }
    return _write(path, tensors, metadata)


def _write(path: Path, tensors: dict[str, torch.Tensor], metadata: dict) -> Path:
    data = safetensors_bytes(tensors, metadata=metadata)
    with AtomicWriter(path) as tmp:  # written by Python: a full disk is an OSError, not a crash
        tmp.write_bytes(data)
        os.chmod(tmp, 0o644)  # a model is meant to be shared
    return path


def update_info(path: str | os.PathLike, changes: dict) -> Path:
    """Merge ``changes`` into a model file's ``info`` in place (atomically). Weights, tables and
    config stay as they are, so the fingerprint, and every stream the model wrote, stay valid."""
    model_file = load_model_file(path)
    meta = read_metadata(path)
    meta["info"] = json.dumps({**model_file.info, **changes}, sort_keys=True)
    tensors = dict(model_file.state_dict)
    if model_file.pmf.size:
        tensors[PMF_KEY] = torch.from_numpy(model_file.pmf)
    return _write(Path(path), tensors, meta)


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata map of a model file, without loading its tensors."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"{path} is not a readable safetensors model file ({exc})") from None
    if meta.get("format") != FORMAT:
        raise ModelError(f"{path} is a safetensors file but not a speechcodec model")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{path} has model format version {meta.get('format_version')!r}; "
                         f"this release reads {FORMAT_VERSION!r}")
    return meta


def load_model_file(path: str | os.PathLike) -> ModelFile:
    """Read and check a model file. Raises :class:`ModelError` with one line on any problem."""
    path = Path(path)
    meta = read_metadata(path)
    try:
        config = ModelConfig.from_dict(json.loads(meta["config"]))
        info = json.loads(meta.get("info", "{}"))
        name = meta["name"]
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelError(f"{path}: bad model metadata ({exc})") from None
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot read tensors ({exc})") from None
    pmf_t = tensors.pop(PMF_KEY, None)
    if not family_of(config).tables:
        if pmf_t is not None:
            raise ModelError(f"{path}: an {config.arch!r} model holds no entropy tables, yet this one does")
        return ModelFile(name=name, config=config, state_dict=tensors, pmf=NO_TABLES.copy(), info=info,
                         path=path)
    expected = (config.code_channels * config.prior_contexts, 2 * config.max_symbol + 1)
    if pmf_t is None or pmf_t.dtype != torch.int32 or tuple(pmf_t.shape) != expected:
        raise ModelError(f"{path}: entropy tables missing or not int32 {list(expected)}")
    pmf = pmf_t.numpy().copy()
    if (pmf <= 0).any():
        raise ModelError(f"{path}: entropy tables hold non-positive counts")
    return ModelFile(name=name, config=config, state_dict=tensors, pmf=pmf, info=info, path=path)
