# Shared settings and helpers; no rules here.
import os
import re
from pathlib import Path
import shutil
import sys

from snakemake.utils import validate

from speechcodec.config import eval_names, load_config, shipped_models, training_configs
from speechcodec.layout import (RunLayout, codec2_run, neural_run, opus_matched_run, opus_run, shipped_run,
                                transform_matched_run, transform_run)
from speechcodec.dvc_sync import follow_dvc, record_in_dvc, write_params


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
RUN = RunLayout(NAME)  # every path of this run (speechcodec.layout)
BITRATES = [int(b) for b in config["bitrates_bps"]]
for _bps in BITRATES:  # each bitrate's model and train settings, checked before any job runs
    training_configs(config, _bps)
OPUS_GRID = [int(b) for b in config["eval"]["opus_grid_bps"]]
CODEC2_MODES = [int(b) for b in config["eval"]["codec2_modes_bps"]]
SHIPPED = shipped_models(config)
EVAL_RUNS = eval_names(config)
REPORT_FILES = RUN.report_files
# Sources whose change must retrain the models (as dvc.yaml's train_codec deps).
MODEL_SOURCES = sorted(
    str(p)
    for p in Path("src/speechcodec").glob("*/*.py")
    if p.parent.name in ("model", "entropy", "training", "perceptual", "transform")
) + ["src/speechcodec/contexts.py", "src/speechcodec/bitstream/context.py"]


def shipped_model_file(wildcards):
    """The installed file of a shipped model's name: sc-3k.safetensors, or pc.safetensors for pc-6k
    (one model that codes every rate, listed at each)."""
    direct = Path(f"src/speechcodec/pretrained/{wildcards.model}.safetensors")
    if direct.exists():
        return str(direct)
    return f"src/speechcodec/pretrained/{re.sub(r'-[0-9.]+k$', '', wildcards.model)}.safetensors"


def training_uses_gpu():
    """1 when training will run on a GPU (so --resources gpu=1 serialises it), else 0."""
    device = config["train"]["device"]
    return int(device.startswith("cuda") or (device == "auto" and shutil.which("nvidia-smi") is not None))


# The settings each stage reads, as dvc.yaml's `params:` name them (tests/test_workflow.py checks
# they agree). Snakemake sees them as one small JSON file per stage, rewritten only when they
# change: an edit then reruns the stages it concerns, and a rerun by DVC is not undone.
STAGE_SETTINGS = {
    "fetch_corpus": ["dataset", "data.vctk", "data.folder"],
    "clean_corpus": ["data.clean"],
    "split_speakers": ["data.split"],
    "train_codec": ["model", "train", "overrides.{bps}"],
    "make_report": ["bitrates_bps", "eval"],
    "make_listening_page": ["listen"],
}


def setting(key):
    """config's value at a dotted key (None when absent); bitrate keys match as text or number."""
    value = config
    for part in key.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part, value.get(int(part)) if part.isdigit() else None)
    return value


def dvc_stage(stage, item=None):
    """DVC's name for a stage, or for one item of a foreach stage (train_codec@6000)."""
    return stage if item is None else f"{stage}@{item}"


def settings_file(stage, bps=None):
    """The settings file of one stage (of one bitrate's, for foreach stages)."""
    return RUN.settings(dvc_stage(stage, bps))


SETTINGS_FILES = {}  # DVC stage name -> [its settings file]
for _stage, _keys in STAGE_SETTINGS.items():
    for _bps in (BITRATES if any("{bps}" in k for k in _keys) else [None]):
        _named = [k.format(bps=_bps) for k in _keys]
        write_params(settings_file(_stage, _bps), {k: setting(k) for k in _named})
        SETTINGS_FILES[dvc_stage(_stage, _bps)] = [settings_file(_stage, _bps)]


def benchmark_file(rule, item):
    """Where Snakemake keeps a job's time and memory (`item`: what the DVC stage's foreach goes
    over, a bitrate or a model name, or the wildcard that stands for it)."""
    return RUN.benchmark(rule, item)


BENCHMARK_FILES = {  # DVC stage name -> [its Snakemake benchmark record]
    dvc_stage(rule, item): [benchmark_file(rule, f"{item}{unit}")]
    for rule, items, unit in [("train_codec", BITRATES, "bps"), ("eval_neural", BITRATES, "bps"),
                              ("eval_opus_matched", BITRATES, "bps"), ("eval_opus_grid", OPUS_GRID, "bps"),
                              ("eval_codec2_grid", CODEC2_MODES, "bps"), ("eval_shipped", SHIPPED, ""),
                              ("eval_opus_matched_shipped", SHIPPED, ""),
                              ("eval_transform_matched", BITRATES, "bps"), ("eval_transform_grid", OPUS_GRID, "bps"),
                              ("eval_transform_matched_shipped", SHIPPED, "")]
    for item in items
}

# After `dvc repro` or `dvc pull`, what DVC holds as current must not look stale here.
if workflow.is_main_process:
    try:
        _dated = follow_dvc(".", SETTINGS_FILES, BENCHMARK_FILES)
    except Exception as error:  # DVC busy (its lock) or broken: plan by dates alone, and say so
        print(f"speechcodec: not following DVC's record ({type(error).__name__}: {error})", file=sys.stderr)
    else:
        if _dated:
            print(f"speechcodec: {len(_dated)} outputs DVC holds as current dated after their inputs",
                  file=sys.stderr)


wildcard_constraints:
    bps=r"\d+",
    grid=r"\d+",
    mode=r"\d+",
    model=r"[A-Za-z0-9][A-Za-z0-9_.-]*",


def record_run_in_dvc():
    """After a successful run: what Snakemake made current goes into dvc.lock (dvc commit)."""
    outputs = [str(f) for job in workflow.dag.jobs for f in job.output]
    try:
        recorded = record_in_dvc(".", outputs)
    except Exception as error:
        print(f"speechcodec: could not record this run in dvc.lock ({type(error).__name__}: {error});"
              " `dvc commit` does it by hand", file=sys.stderr)
    else:
        if recorded:
            print(f"speechcodec: recorded {len(recorded)} stages in dvc.lock", file=sys.stderr)


# The shipped models (`snakemake ship`, workflow/rules/ship.smk): the config's `ship` section.
SHIP = config.get("ship") or {}
SHIP_MODELS = {str(k): int(v) for k, v in (SHIP.get("models") or {}).items() if v is not None}
# the perceptual family's models (one model, every rate: speechcodec.perceptual.train): name: settings
SHIP_PERCEPTUAL = {str(k): dict(v) for k, v in (SHIP.get("perceptual") or {}).items() if v is not None}
SHIP_FILES = [RUN.shipped_model(m) for m in [*SHIP_MODELS, *SHIP_PERCEPTUAL]]
for _model, _bps in SHIP_MODELS.items():  # what each shipped model's training reads, as a file
    write_params(RUN.settings(f"ship_train@{_model}"),
                 {k: setting(k) for k in ("model", "train", f"overrides.{_bps}", "ship")})


def one_of(names):
    """A wildcard pattern that matches exactly these names (none when there are none)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


def ship_setting(key):
    if not SHIP:
        raise ValueError(f"{CONFIG} has no `ship` section: run `snakemake ship --configfile config/ship.yaml`")
    return SHIP[key]


def perceptual_train_flags(wildcards):
    """A perceptual model's training flags: its settings in `ship.perceptual`, and the installed
    model of its name to start from with `ship.continue_installed`."""
    settings = SHIP_PERCEPTUAL[wildcards.model]
    flags = ["--steps", str(settings.get("steps", 60000)), "--decay-from", str(settings.get("decay_from", 40000))]
    flags += [f"--{key.replace('_', '-')}={settings[key]}" for key in ("lr", "step_high") if key in settings]
    if ship_setting("continue_installed"):
        flags += ["--init-from", wildcards.model]
    return " ".join(flags)


def ship_train_flags(wildcards):
    """What a shipped model's training adds to its config's settings."""
    flags = []
    if ship_setting("continue_installed"):
        flags += ["--init-from", wildcards.model]  # the installed model of that name
    if SHIP.get("steps"):
        flags += ["--steps", str(SHIP["steps"])]
    return " ".join(flags)
