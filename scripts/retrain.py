"""Retrain an installed (or any) model from the data: every run its file records, in order.

    .venv/bin/python scripts/retrain.py sc-6k [--data ../shared/data/train/audio] [--work scratch/retrain]
    .venv/bin/python scripts/retrain.py sc-6k --dry-run      # print the commands only

A shipped model was trained in several runs (a CPU run, then continuations on a GPU, with other
configs); its file records each one (``info.history``), and its card lists the same commands.
Each run continues the previous run's output. Resumable: rerun after an interruption and it
skips the finished runs and resumes the unfinished one from its checkpoint. Runs on a GPU when
there is one, else (slowly) on the CPU. The result is ``WORK/NAME-N.safetensors`` (the last run's).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from model_card import train_args, training_runs  # noqa: E402

from speechcodec.modelfile import load_model_file  # noqa: E402
from speechcodec.registry import model_path  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="an installed model's name (sc-6k) or a .safetensors file")
    parser.add_argument("--data", default="../shared/data/train/audio", help="training audio folder")
    parser.add_argument("--work", default="scratch/retrain", help="models, checkpoints and logs go here")
    parser.add_argument("--base-config", default="config/ship.yaml",
                        help="the first run's config when the file does not record it")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args()
    mf = load_model_file(model_path(args.model))
    runs = training_runs(mf.info, mf.info.get("config_file") or args.base_config, args.base_config)
    work = Path(args.work)
    for i in range(len(runs)):
        argv = train_args(mf.name, runs, i, args.data, f"{work}/")
        out = Path(argv[-1])
        print(f"run {i + 1} of {len(runs)}: speechcodec train {' '.join(argv)}", flush=True)
        if args.dry_run:
            continue
        if out.exists():  # written only when that run finished
            print(f"  {out} is there: done", flush=True)
            continue
        work.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "speechcodec.cli", "train", *argv,
                               "--work-dir", str(out.with_suffix(".work"))])
        if done.returncode:
            print(f"retrain.py: run {i + 1} failed; rerun to resume it", file=sys.stderr)
            return done.returncode
    if not args.dry_run:
        print(f"{mf.name} retrained: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
