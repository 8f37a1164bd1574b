"""The two CSV logs of a run: ``metrics.csv`` (every ``log_every`` steps) and ``val_metrics.csv``
(every checkpoint). A resumed run appends to them; rows past its checkpoint are dropped first."""

from __future__ import annotations

import csv
from pathlib import Path

TRAIN_FIELDS = ["step", "loss", "stft", "mse", "kbps_estimated", "rate_lambda", "lr", "grad_norm",
                "audio_s_per_s", "adversarial", "feature_matching", "discriminator", "loudness"]
VAL_FIELDS = ["step", "kbps_real", "kbps_estimated_val", "distortion", "rate_goal_kbps", "best", "rolled_back"]
TRAIN_LOG, VAL_LOG = "metrics.csv", "val_metrics.csv"


def append_csv(path: Path, header: list[str], rows: list[list]) -> None:
    new = not path.exists()
    if not new:  # written by a version with fewer columns: pad the old rows
        with open(path, newline="") as f:
            old = list(csv.reader(f))
        if old and old[0] != header and old[0] == header[: len(old[0])]:
            with open(path, "w", newline="") as f:
                csv.writer(f).writerows([header] + [r + [""] * (len(header) - len(r)) for r in old[1:]])
    with open(path, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(header)
        writer.writerows(rows)


def truncate_csv(path: Path, step: int) -> None:
    """Drop rows logged after the checkpoint a resumed run restarts from."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([rows[0]] + [r for r in rows[1:] if int(r[0]) <= step])


class RunLogs:
    """The logs of one run in ``folder``: training rows gather in memory until the next checkpoint,
    so that the logs never run ahead of what a resumed run restarts from."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.pending: list[list] = []

    def start_at(self, step: int) -> None:
        """Keep the rows up to ``step`` (the checkpoint resumed from; 0: none, a fresh run)."""
        truncate_csv(self.folder / TRAIN_LOG, step or -1)
        truncate_csv(self.folder / VAL_LOG, step or -1)

    def remove(self) -> None:
        for name in (TRAIN_LOG, VAL_LOG):
            (self.folder / name).unlink(missing_ok=True)

    def step(self, row: list) -> None:
        self.pending.append(row)

    def validation(self, row: list) -> None:
        append_csv(self.folder / VAL_LOG, VAL_FIELDS, [row])

    def flush(self) -> None:
        append_csv(self.folder / TRAIN_LOG, TRAIN_FIELDS, self.pending)
        self.pending = []
