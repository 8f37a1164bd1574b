"""The built-in demo corpus: eSpeak NG voices reading Harvard sentences, in the VCTK 0.92 layout.

Built offline in seconds and deterministic (fixed voices, sentences and zip timestamps), with
deliberate faults planted so that the real download, cleaning and split code has work to do:

- speaker ``p911`` has no transcripts at all (as p315 in VCTK 0.92)  -> no_transcript
- ``p901_009``: an empty (0-byte) audio file                            -> unreadable_audio
- ``p902_009``: random bytes named .flac                                -> unreadable_audio
- ``p903_009``: a transcript whose audio is missing                     -> missing_audio
- ``p904_009``: two seconds of digital silence                          -> silence
- ``p905_009``: a 0.2-second clip                                       -> too_short
- ``p906_009``: the same samples as ``p906_001``                        -> duplicate
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import soundfile as sf

from speechcodec.errors import DataError

# Harvard sentences (IEEE 1969 recommended practice for speech quality measurements).
SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
    "The small pup gnawed a hole in the sock.",
    "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.",
    "The swan dive was far short of perfect.",
    "The beauty of the view stunned the young boy.",
    "Two blue fish swam in the tank.",
    "Her purse was full of useless trash.",
    "The colt reared and threw the tall rider.",
    "It snowed, rained, and hailed the same morning.",
    "Read verse out loud for pleasure.",
]
# (voice+variant, pitch 0-99, words per minute): twelve distinct synthetic "speakers".
VOICES = [
    ("en-us+m1", 45, 165), ("en-gb+f2", 60, 155), ("en-gb-scotland+m3", 40, 150),
    ("en-029+f3", 65, 160), ("en-gb-x-rp+m7", 35, 145), ("en-us-nyc+f4", 55, 170),
    ("en-us+m3", 50, 140), ("en-gb+f1", 70, 150), ("en-gb-x-gbclan+m2", 42, 158),
    ("en-us+f5", 62, 148), ("en-gb-x-rp+m4", 38, 162), ("en-us+m6", 48, 152),
]
UTTERANCES_PER_SPEAKER = 8
FIXED_TIME = (2020, 1, 1, 0, 0, 0)
ZIP_NAME = "VCTK-Corpus-0.92.zip"


def espeak_binary() -> str:
    found = shutil.which("espeak-ng")
    if not found:
        raise DataError("the demo corpus needs espeak-ng; `make setup` installs it "
                        "(Debian: apt-get install espeak-ng)")
    return found


def speak(text: str, voice: str, pitch: int, wpm: int) -> tuple[np.ndarray, int]:
    result = subprocess.run([espeak_binary(), "-v", voice, "-p", str(pitch), "-s", str(wpm),
                             "--stdout", text], capture_output=True, check=False, timeout=60)
    if result.returncode != 0 or not result.stdout:
        raise DataError(f"espeak-ng failed for voice {voice}: {result.stderr.decode()[:200]}")
    audio, rate = sf.read(io.BytesIO(result.stdout), dtype="int16")
    return audio, rate


def _flac_bytes(audio: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def build_demo_corpus(out_zip: str | os.PathLike) -> Path:
    """Synthesise the demo corpus into a zip in the VCTK 0.92 layout (written atomically)."""
    out_zip = Path(out_zip)
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {}
    for s, (voice, pitch, wpm) in enumerate(VOICES):
        speaker = f"p{900 + s}"
        for u in range(UTTERANCES_PER_SPEAKER):
            utt = f"{speaker}_{u + 1:03d}"
            text = SENTENCES[(s * 5 + u) % len(SENTENCES)]
            audio, rate = speak(text, voice, pitch, wpm)
            files[f"wav48_silence_trimmed/{speaker}/{utt}_mic1.flac"] = _flac_bytes(audio, rate)
            if speaker != "p911":
                files[f"txt/{speaker}/{utt}.txt"] = (text + "\n").encode()
    rng = np.random.default_rng(0)
    planted = {
        "p901_009": b"",
        "p902_009": rng.bytes(4096),
        "p904_009": _flac_bytes(np.zeros(2 * 22050, np.int16), 22050),
        "p905_009": _flac_bytes(speak("Go.", "en-us", 50, 400)[0][: int(0.2 * 22050)], 22050),
        "p906_009": files["wav48_silence_trimmed/p906/p906_001_mic1.flac"],
    }
    for utt, data in planted.items():
        spk = utt[:4]
        files[f"wav48_silence_trimmed/{spk}/{utt}_mic1.flac"] = data
        files[f"txt/{spk}/{utt}.txt"] = b"A planted fault for the cleaning stage.\n"
    files["txt/p903/p903_009.txt"] = b"This transcript has no audio.\n"
    files["speaker-info.txt"] = b"ID  AGE  GENDER  ACCENTS  REGION\n" + "".join(
        f"p{900 + s}  0  {'F' if '+f' in v else 'M'}  eSpeakNG  {v}\n" for s, (v, _, _) in enumerate(VOICES)
    ).encode()
    tmp = out_zip.with_name(f".{out_zip.name}.part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.external_attr = 0o644 << 16
            archive.writestr(info, files[name])
    os.replace(tmp, out_zip)
    return out_zip
