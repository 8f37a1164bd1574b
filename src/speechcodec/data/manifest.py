"""Reading a manifest (``data clean``'s ``manifest.csv``, ``data split``'s train/val/test.csv):
what training, evaluation and the listening page need of the data stages."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from speechcodec.errors import DataError


def read_manifest(path: str | os.PathLike,
                  columns: tuple[str, ...] = ("speaker", "utterance", "path")) -> pd.DataFrame:
    """A manifest with its ``path`` column made absolute; ``columns`` must be there (``data clean``
    and ``data split`` write them all; training needs only ``path``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest {path} does not exist")
    try:
        df = pd.read_csv(path, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"manifest {path} is not a readable CSV ({str(exc).splitlines()[0]})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"manifest {path} lacks the column(s) {', '.join(missing)} "
                        f"(a manifest from 'speechcodec data clean' or 'data split' has them)")
    df["path"] = [str((path.parent / p).resolve()) for p in df["path"]]
    return df
