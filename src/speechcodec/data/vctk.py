"""VCTK in its 0.92 and 0.80 layouts, safe zip extraction, and any folder of audio.

0.92: ``wav48_silence_trimmed/pXXX/pXXX_NNN_mic1.flac`` and ``txt/pXXX/pXXX_NNN.txt``
0.80: ``wav48/pXXX/pXXX_NNN.wav`` and ``txt/pXXX/pXXX_NNN.txt``
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

import pandas as pd
from tqdm import tqdm

from speechcodec.errors import DataError

AUDIO_092 = "wav48_silence_trimmed"
AUDIO_080 = "wav48"
_WANTED = re.compile(
    rf"(^|/)({AUDIO_092}/p\w+/p\w+_mic1\.flac|{AUDIO_080}/p\w+/p\w+\.wav|txt/p\w+/p\w+\.txt"
    r"|speaker-info\.txt|README\.txt|license_text)$"
)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
ITEM_COLUMNS = ["speaker", "utterance", "audio_path", "transcript_path"]


def _unsafe(info: zipfile.ZipInfo) -> str | None:
    """Why an archive member must not be extracted, or None when it is safe."""
    name = info.filename
    path = PurePosixPath(name.replace("\\", "/"))
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    if ".." in path.parts:
        return "path leaves the target folder"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link"
    return None


def extract_vctk(zip_path: str | os.PathLike, out_dir: str | os.PathLike,
                 remove_if_corrupt: bool = False, progress: bool = True) -> Path:
    """Extract the parts of a VCTK zip that training needs (mic1 audio, transcripts) into ``out_dir``.

    Every member is checked before anything is written: an absolute path, a ``..`` component or
    a link is refused (zip slip). Extraction goes to a sibling temp folder renamed at the end, so
    ``out_dir`` either holds a whole extraction or nothing. Already extracted: returns at once.
    """
    zip_path, out_dir = Path(zip_path), Path(out_dir)
    if out_dir.is_dir() and (out_dir / ".complete").exists():
        return out_dir
    tmp = out_dir.with_name(out_dir.name + ".extracting")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = archive.infolist()
            for info in members:
                reason = _unsafe(info)
                if reason:
                    raise DataError(f"refusing {zip_path}: member {info.filename!r} is unsafe "
                                    f"({reason}); nothing was extracted")
            wanted = [m for m in members if not m.is_dir() and _WANTED.search(m.filename)]
            if not any(m.filename.endswith((".flac", ".wav")) for m in wanted):
                raise DataError(f"{zip_path} holds no VCTK audio ({AUDIO_092}/ or {AUDIO_080}/)")
            for info in tqdm(wanted, desc="extract", unit="file", disable=not progress):
                target = tmp / PurePosixPath(info.filename)
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if remove_if_corrupt:
            zip_path.unlink(missing_ok=True)
        what = "removed it" if remove_if_corrupt else "left it in place"
        raise DataError(f"{zip_path} is not a readable zip archive ({exc}); {what}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / ".complete").write_text("extracted by speechcodec\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)  # an incomplete earlier extraction of ours (no .complete mark)
    os.replace(tmp, out_dir)
    return out_dir


def find_vctk_root(root: str | os.PathLike) -> Path:
    """The folder holding ``txt/`` and the audio folder, at ``root`` or up to two levels below."""
    root = Path(root)
    candidates = [root, *sorted(root.glob("*")), *sorted(root.glob("*/*"))]
    for folder in candidates:
        if (folder / "txt").is_dir() and ((folder / AUDIO_092).is_dir() or (folder / AUDIO_080).is_dir()):
            return folder
    raise DataError(f"no VCTK corpus under {root}: expected txt/ beside {AUDIO_092}/ (0.92) "
                    f"or {AUDIO_080}/ (0.80)")


def scan_vctk(root: str | os.PathLike) -> pd.DataFrame:
    """Candidate items of an extracted VCTK: one row per utterance seen as audio or transcript.

    ``audio_path`` or ``transcript_path`` is empty where that half is missing; cleaning decides.
    """
    base = find_vctk_root(root)
    audio: dict[tuple[str, str], str] = {}
    if (base / AUDIO_092).is_dir():
        for path in sorted((base / AUDIO_092).glob("p*/p*_mic1.flac")):
            audio[(path.parent.name, path.name[: -len("_mic1.flac")])] = str(path)
    else:
        for path in sorted((base / AUDIO_080).glob("p*/p*.wav")):
            audio[(path.parent.name, path.stem)] = str(path)
    texts = {(p.parent.name, p.stem): str(p) for p in sorted((base / "txt").glob("p*/p*.txt"))}
    keys = sorted(set(audio) | set(texts))
    rows = [(spk, utt, audio.get((spk, utt), ""), texts.get((spk, utt), "")) for spk, utt in keys]
    return pd.DataFrame(rows, columns=ITEM_COLUMNS)


def find_audio(root: str | os.PathLike) -> list[Path]:
    """Audio files under ``root``, sorted, following symlinked folders (a corpus assembled from
    links to speaker folders elsewhere), each real folder once (a link back up is no loop)."""
    found, seen = [], set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders[:] = []
            continue
        seen.add(real)
        found += [Path(folder) / n for n in names if Path(n).suffix.lower() in AUDIO_SUFFIXES]
    return sorted(found)


def scan_folder(root: str | os.PathLike) -> pd.DataFrame:
    """Any folder of audio: speaker = first sub-folder (or the folder's name), optional ``.txt``
    transcript beside each file with the same stem."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"audio folder {root} does not exist")
    rows = []
    for path in find_audio(root):
        rel = path.relative_to(root)
        speaker = rel.parts[0] if len(rel.parts) > 1 else root.name
        text = path.with_suffix(".txt")
        utterance = "_".join(rel.with_suffix("").parts[1:] or rel.with_suffix("").parts)
        rows.append((speaker, utterance, str(path), str(text) if text.exists() else ""))
    if not rows:
        raise DataError(f"no .wav/.flac/.ogg files under {root}")
    return pd.DataFrame(rows, columns=ITEM_COLUMNS)
