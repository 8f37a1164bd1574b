# Shared settings and helpers; no rules here.
import json
import os
from pathlib import Path
import shutil

from snakemake.utils import validate

from speechcodec.config import bitrate_settings, eval_names, load_config


# The config file the commands read: the last one given with --configfile, else config.yaml.
# (Snakemake lists the command line's files before the Snakefile's own config.yaml.)
_GIVEN = [f for f in workflow.configfiles if Path(f).resolve() != Path("config.yaml").resolve()]
CONFIG = os.path.relpath(_GIVEN[-1]) if _GIVEN else "config.yaml"
if "base" in config:  # a variant file: its settings over its base's, exactly as the commands read it
    resolved = load_config(CONFIG)
    config.clear()
    config.update(resolved)
validate(config, "../schemas/config.schema.yaml")
NAME = config["name"]
RESULTS = f"results/{NAME}"
BITRATES = [int(b) for b in config["bitrates_bps"]]
OPUS_GRID = [int(b) for b in config["eval"]["opus_grid_bps"]]
EVAL_RUNS = eval_names(config)
REPORT_FILES = [
    f"{RESULTS}/report/{f}"
    for f in ("table1.csv", "table1.md", "rate_quality.png", "rate_quality.svg", "metrics.json", "curve.csv")
]
# Sources whose change must retrain the models (as dvc.yaml's train_codec deps).
MODEL_SOURCES = sorted(
    str(p)
    for p in Path("src/speechcodec").glob("*/*.py")
    if p.parent.name in ("model", "entropy")
) + ["src/speechcodec/bitstream/context.py", "src/speechcodec/train.py", "src/speechcodec/losses.py"]


def training_uses_gpu():
    """1 when training will run on a GPU (so --resources gpu=1 serialises it), else 0."""
    device = config["train"]["device"]
    return int(device.startswith("cuda") or (device == "auto" and shutil.which("nvidia-smi") is not None))


def beside(model_path, folder, bps):
    """results/NAME/models/Xbps.safetensors -> results/NAME/<folder>/Xbps: the training run's
    undeclared folders (checkpoints must survive a rerun, so they are not outputs)."""
    return os.path.join(os.path.dirname(os.path.dirname(model_path)), folder, f"{bps}bps")


def settings_of(wildcards):
    """This bitrate's model/train settings: a params value, so editing them reruns this chain only."""
    return json.dumps(bitrate_settings(config, int(wildcards.bps)), sort_keys=True)


wildcard_constraints:
    bps=r"\d+",
    grid=r"\d+",
    mode=r"\d+",
