"""Corpora in, manifests out: download, safe extraction, cleaning and the speaker split.

Every function takes the paths it reads and writes; nothing here hard-codes a location.
"""

from speechcodec.data.clean import DROP_REASONS, clean_corpus
from speechcodec.data.download import download
from speechcodec.data.split import held_out_speakers, split_speakers
from speechcodec.data.vctk import extract_vctk, find_vctk_root, scan_folder, scan_vctk
from speechcodec.errors import DataError

__all__ = [
    "DROP_REASONS",
    "DataError",
    "clean_corpus",
    "download",
    "extract_vctk",
    "find_vctk_root",
    "held_out_speakers",
    "scan_folder",
    "scan_vctk",
    "split_speakers",
]
