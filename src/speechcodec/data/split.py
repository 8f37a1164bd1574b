"""The speaker split: test and train speakers never overlap; test:train = 14:80 as in the paper.

Rule (deterministic for a seed):

1. Speakers are sorted by name. Unless ``test_speakers`` names them, the number of test speakers
   is ``round(n * 14 / 94)``, at least 1 and at most n - 1; they are the first ones of the
   sorted list permuted by ``numpy.random.default_rng(seed)``.
2. Every utterance of a test speaker is in test; every other utterance is in train.
3. Validation is carved from train: ``max(1, round(val_fraction * n_train_items))`` utterances
   drawn with the same generator. Validation therefore shares speakers with train (it watches
   training, it never scores the codec); test shares none.

Every manifest stores paths relative to its own folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from speechcodec.data.clean import write_csv_atomic
from speechcodec.data.manifest import read_manifest
from speechcodec.errors import DataError

PAPER_RATIO = (14, 80)
HELD_OUT_EVERY = 10


def held_out_speakers(speakers, every: int = HELD_OUT_EVERY) -> list[str]:
    """The speakers that choices are made on and no training run sees: every ``every``-th of
    the sorted names, starting from the ``every // 2``-th (23 of the 230 speakers of the
    training speech). ``scripts/tune_transform.py`` and ``scripts/premise_perceptual.py`` judge
    on them; a model meant to be judged there trains without them."""
    if every < 2:
        raise ValueError("every must be at least 2: holding out every speaker leaves nothing to train on")
    return sorted(set(speakers))[every // 2::every]


def split_speakers(manifest_path: str | os.PathLike, out_dir: str | os.PathLike,
                   ratio: tuple[int, int] = PAPER_RATIO, seed: int = 0,
                   test_speakers: list[str] | None = None, val_fraction: float = 0.05) -> dict:
    """Write ``train.csv``, ``val.csv``, ``test.csv`` and ``split.json`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = read_manifest(manifest_path)
    speakers = sorted(df["speaker"].astype(str).unique())
    if len(speakers) < 2:
        raise DataError(f"a speaker split needs at least 2 speakers, {manifest_path} has {len(speakers)}")
    rng = np.random.default_rng(seed)
    if test_speakers:
        unknown = sorted(set(test_speakers) - set(speakers))
        if unknown:
            raise DataError(f"test speakers not in the corpus: {', '.join(unknown)}")
        test = sorted(test_speakers)
        if len(test) >= len(speakers):
            raise DataError("every speaker is a test speaker: nothing is left to train on")
    else:
        n_test = min(len(speakers) - 1, max(1, round(len(speakers) * ratio[0] / sum(ratio))))
        test = sorted(np.array(speakers)[rng.permutation(len(speakers))[:n_test]].tolist())
    is_test = df["speaker"].astype(str).isin(test)
    train_all = df[~is_test].reset_index(drop=True)
    n_val = max(1, round(val_fraction * len(train_all))) if len(train_all) > 1 else 0
    val_idx = np.sort(rng.permutation(len(train_all))[:n_val])
    parts = {
        "train": train_all.drop(index=val_idx).reset_index(drop=True),
        "val": train_all.iloc[val_idx].reset_index(drop=True),
        "test": df[is_test].reset_index(drop=True),
    }
    summary = {"seed": seed, "ratio_test_train": list(ratio)}
    for name, part in parts.items():
        part = part.copy()
        part["path"] = [os.path.relpath(p, out.resolve()) for p in part["path"]]
        write_csv_atomic(part, out / f"{name}.csv")
        summary[name] = {"speakers": sorted(part["speaker"].astype(str).unique().tolist()),
                         "items": len(part), "duration_s": round(float(part["duration_s"].sum()), 2)}
    (out / "split.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
