"""The workflow: lint, dry runs of every config, Snakemake and DVC agreeing, and real
incremental runs of a tiny config with both tools (in temporary copies of the project)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
PROJECT_FILES = ["Snakefile", "workflow", "profiles", "dvc.yaml", ".dvcignore", "config"]
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (make setup installs it)")


def run(cmd: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def tiny_config() -> dict:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["name"] = "tiny"
    config["model"].update(width=32, fold_width=16, code_channels=8, res_blocks=1, max_symbol=16)
    config["train"].update(steps=12, batch_size=2, checkpoint_every=6, log_every=3, val_max_files=2)
    config["bitrates_bps"] = [2000, 4000]
    config["overrides"] = {"2000": {}, "4000": {}}
    config["eval"]["opus_grid_bps"] = [6000]
    config["eval"]["codec2_modes_bps"] = [3200]
    config["eval"]["shipped_models"] = []
    config["listen"]["count"] = 2
    return config


def make_project(root: Path, config: dict) -> Path:
    for name in PROJECT_FILES:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def snakemake_jobs(cwd: Path) -> dict[str, dict]:
    """Output file -> rule and shell command, from a forced dry run that prints commands."""
    out = run([str(BIN / "snakemake"), "-n", "-p", "--forceall", "--cores", "1"], cwd).stdout
    jobs, rule, outputs = {}, None, []
    for line in out.splitlines():
        if line.startswith(("rule ", "localrule ")):
            rule, outputs = line.split()[1].rstrip(":"), []
        elif line.strip().startswith("output:"):
            outputs = [o.strip() for o in line.split(":", 1)[1].split(",")]
        elif line.startswith("Shell command:") and rule and rule != "all":
            for output in outputs:
                jobs[output] = {"rule": rule, "cmd": line.split(":", 1)[1].strip()}
    return jobs


def dvc_stages(cwd: Path) -> dict[str, dict]:
    """Output path -> stage name (foreach suffix dropped) and command, as DVC resolves dvc.yaml."""
    code = ("import json, dvc.repo\nr = dvc.repo.Repo('.')\n"
            "print(json.dumps([[s.name, s.cmd, [str(o.def_path) for o in s.outs if not o.persist],"
            " sorted(k for d in s.deps if hasattr(d, 'params') for k in d.params)]"
            " for s in r.index.stages]))")
    stages = json.loads(run([sys.executable, "-c", code], cwd).stdout)
    return {out: {"rule": name.split("@")[0], "stage": name, "cmd": cmd, "params": params}
            for name, cmd, outs, params in stages for out in outs}


def assert_dvc_current(cwd: Path) -> None:
    status = run([str(BIN / "dvc"), "status"], cwd).stdout
    assert "Data and pipelines are up to date" in status, status


def assert_snakemake_current(cwd: Path) -> None:
    plan = run([str(BIN / "snakemake"), "-n", "--cores", "1"], cwd)
    assert "Nothing to be done" in plan.stdout + plan.stderr, (plan.stdout + plan.stderr)[-3000:]


def ran_rules(stdout: str) -> list[str]:
    return sorted(line.split()[1].rstrip(":") for line in stdout.splitlines()
                  if line.startswith(("rule ", "localrule ")) and not line.startswith("localrule all"))


def test_snakemake_lint_is_clean():
    result = run([str(BIN / "snakemake"), "--lint"], REPO)
    assert "good condition" in result.stdout + result.stderr


HISTORY_CONFIGS = ["ship_gpu", "ship_ctx", "ship_ctx_continue", "ship_ctx_decoder", "ship_cpu_anneal",
                   "ship_loudness"]


@pytest.mark.parametrize("configfile", ["config.yaml", "config/paper.yaml", "config/folder.yaml",
                                        "config/ship.yaml", "config/ship_perceptual.yaml",
                                        "config/perceptual.yaml",
                                        "config/paper_perceptual.yaml",
                                        *(f"config/history/{name}.yaml" for name in HISTORY_CONFIGS)])
def test_every_config_dry_runs(configfile):
    result = run([str(BIN / "snakemake"), "-n", "-p", "--cores", "all", "--resources", "gpu=1",
                  "--configfile", configfile, "--forceall"], REPO)
    assert "train_codec" in result.stdout
    # The commands read the file given, not config.yaml (Snakemake lists that one last).
    assert f"train --config {configfile} " in result.stdout
    name = yaml.safe_load((REPO / configfile).read_text())["name"]  # a variant's own, over its base's
    assert f"results/{name}/models/" in result.stdout


def test_slurm_profile_dry_runs_without_a_cluster():
    result = run([str(BIN / "snakemake"), "-n", "--profile", "workflow/profiles/slurm",
                  "--configfile", "config/paper.yaml", "--forceall"], REPO)
    assert "train_codec" in result.stdout


def test_the_cli_knows_the_schemas_sections():
    from speechcodec.config import SECTIONS

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert set(SECTIONS) == set(schema["properties"])


def test_the_schema_knows_every_model_and_training_setting():
    """A setting added to ModelConfig or TrainConfig must be added to the schema too, or a
    pipeline config that uses it is refused by Snakemake before anything runs."""
    from dataclasses import fields

    from speechcodec.model import ModelConfig
    from speechcodec.training import TrainConfig

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())["properties"]
    assert set(schema["model"]["properties"]) == {f.name for f in fields(ModelConfig)}
    # bitrate_bps comes from bitrates_bps, one training per entry; gpus is the pipeline's (torchrun)
    train_settings = {f.name for f in fields(TrainConfig)} - {"bitrate_bps"}
    assert set(schema["train"]["properties"]) - {"gpus"} == train_settings


def test_reading_a_config_needs_no_torch():
    """Snakemake parses the Snakefile (every `snakemake -n`) through speechcodec.config: no torch."""
    code = ("import sys\nsys.modules['torch'] = None  # any import of torch now fails\n"
            "from speechcodec.config import eval_names, load_config, training_configs\n"
            "import speechcodec.dvc_sync\n"
            "config = load_config('config.yaml')\n"
            "print(eval_names(config)[0], training_configs(config, config['bitrates_bps'][0])[1].bitrate_bps)")
    result = run([sys.executable, "-c", code], REPO)
    assert result.stdout.split() == ["neural-3000bps", "3000"], result.stdout


def test_config_schema_rejects_a_bad_value(tmp_path):
    config = tiny_config()
    config["model"]["arch"] = "transformer"
    make_project(tmp_path, config)
    result = subprocess.run([str(BIN / "snakemake"), "-n", "--cores", "1"], cwd=tmp_path, env=ENV,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "transformer" in result.stdout + result.stderr


def test_a_failed_rule_shows_its_log(tmp_path):
    """A refused corpus says why in Snakemake's own output, not only 'check log'."""
    config = tiny_config()
    config["dataset"] = "folder"
    config["data"]["folder"]["path"] = str(tmp_path / "no-such-folder")
    make_project(tmp_path, config)
    result = subprocess.run([str(BIN / "snakemake"), "--cores", "1"], cwd=tmp_path, env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert f"speechcodec: error: data.folder.path {tmp_path / 'no-such-folder'} is not a folder" in \
        result.stdout + result.stderr
    assert not (tmp_path / "resources" / "tiny" / "corpus").exists()


def test_snakemake_and_dvc_describe_the_same_pipeline(tmp_path):
    config = tiny_config()
    config["eval"]["shipped_models"] = ["sc-3k"]
    make_project(tmp_path, config)
    run(["git", "init", "-q"], tmp_path)
    run([str(BIN / "dvc"), "init", "-q"], tmp_path)
    smk, dvc = snakemake_jobs(tmp_path), dvc_stages(tmp_path)
    assert len(smk) == 24  # 12 stages with one output each, foreach x 2 or 1, 6 report files
    # Snakemake lists each file of a multi-file output; DVC lists the same files.
    assert set(smk) == set(dvc), (sorted(set(smk) - set(dvc)), sorted(set(dvc) - set(smk)))
    for out in smk:
        assert smk[out]["rule"] == dvc[out]["rule"], out
        assert smk[out]["cmd"].strip() == dvc[out]["cmd"].strip(), out
    # The settings each stage reads: DVC's params, Snakemake's settings files (written as it plans).
    for stage in dvc.values():
        settings = tmp_path / "results/tiny/settings" / f"{stage['stage']}.json"
        keys = sorted(json.loads(settings.read_text())) if settings.exists() else []
        assert keys == stage["params"], (stage["stage"], keys, stage["params"])


@needs_espeak
def test_snakemake_reruns_only_what_changed(tmp_path):
    """Snakemake alone reruns what an edit concerns, and leaves DVC nothing to do after each run."""
    config = tiny_config()
    config["eval"]["shipped_models"] = ["sc-3k"]  # scored beside the models trained here
    make_project(tmp_path, config)
    run(["git", "init", "-q"], tmp_path)
    run([str(BIN / "dvc"), "init", "-q"], tmp_path)
    snakemake = [str(BIN / "snakemake"), "--cores", "2", "--resources", "gpu=1"]
    first = run(snakemake, tmp_path)
    assert ran_rules(first.stderr + first.stdout).count("train_codec") == 2
    assert_dvc_current(tmp_path)
    assert (tmp_path / "results/tiny/report/table1.csv").exists()
    assert "| sc-3k (shipped) |" in (tmp_path / "results/tiny/report/table1.md").read_text()
    assert "speechcodec sc-3k (shipped)" in (tmp_path / "results/tiny/listen/index.html").read_text()
    run([str(BIN / "snakemake"), "--cores", "1", "--report", "report.zip"], tmp_path)
    import zipfile

    names = zipfile.ZipFile(tmp_path / "report.zip").namelist()
    assert any(n.endswith("table1.csv") for n in names) and any(n.endswith("index.html") for n in names)

    nothing = run(snakemake, tmp_path)
    assert "Nothing to be done" in nothing.stdout + nothing.stderr

    config["overrides"]["4000"] = {"train": {"lr": 0.002}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    changed = run(snakemake, tmp_path)
    log = changed.stdout + changed.stderr
    assert ran_rules(log) == ["eval_neural", "eval_opus_matched", "eval_transform_matched",
                              "make_listening_page", "make_report", "train_codec"], ran_rules(log)
    assert "wildcards: bps=4000" in log and "bps=2000" not in log
    assert_dvc_current(tmp_path)

    source = tmp_path / "src/speechcodec/model/layers.py"
    source.write_text(source.read_text() + "\n# a change to the model code\n")
    retrained = run(snakemake, tmp_path)
    assert ran_rules(retrained.stdout + retrained.stderr).count("train_codec") == 2
    assert_dvc_current(tmp_path)
    assert "Running stage" not in run([str(BIN / "dvc"), "repro"], tmp_path).stdout


@needs_espeak
def test_dvc_repro_push_pull(tmp_path):
    config = tiny_config()
    (tmp_path / "project").mkdir()
    project = make_project(tmp_path / "project", config)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    run(["git", "init", "-q"], project)
    run([str(BIN / "dvc"), "init", "-q"], project)
    run([str(BIN / "dvc"), "remote", "add", "-d", "store", str(tmp_path / "remote")], project)
    dvc = str(BIN / "dvc")
    first = run([dvc, "repro"], project)
    assert first.stdout.count("Running stage 'train_codec@") == 2
    assert_snakemake_current(project)
    again = run([dvc, "repro"], project)
    assert "Running stage" not in again.stdout

    config["overrides"]["2000"] = {"train": {"lr": 0.002}}
    (project / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    changed = run([dvc, "repro"], project)
    stages = sorted(line.split("'")[1] for line in changed.stdout.splitlines()
                    if line.startswith("Running stage"))
    assert stages == ["eval_neural@2000", "eval_opus_matched@2000", "eval_transform_matched@2000",
                      "make_listening_page", "make_report", "train_codec@2000"], stages
    assert_snakemake_current(project)

    # The other door after DVC's run: Snakemake reruns only the chain of the bitrate edited.
    config["overrides"]["4000"] = {"train": {"lr": 0.002}}
    (project / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    by_snakemake = run([str(BIN / "snakemake"), "--cores", "2", "--resources", "gpu=1"], project)
    log = by_snakemake.stdout + by_snakemake.stderr
    assert ran_rules(log) == ["eval_neural", "eval_opus_matched", "eval_transform_matched",
                              "make_listening_page", "make_report", "train_codec"], ran_rules(log)
    assert "wildcards: bps=4000" in log and "bps=2000" not in log
    assert_dvc_current(project)

    source = project / "src/speechcodec/entropy/quantizer.py"
    source.write_text(source.read_text() + "\n# a change to the entropy code\n")
    retrained = run([dvc, "repro"], project)
    assert retrained.stdout.count("Running stage 'train_codec@") == 2
    assert_snakemake_current(project)

    run([dvc, "push"], project)
    run(git + ["add", "-A"], project)
    run(git + ["commit", "-qm", "pipeline run"], project)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    assert not (clone / "results/tiny/models/2000bps.safetensors").exists()
    run([dvc, "pull"], clone)
    for rel in ("results/tiny/models/2000bps.safetensors", "results/tiny/models/4000bps.safetensors",
                "results/tiny/report/table1.csv", "results/tiny/split/test.csv"):
        assert (clone / rel).read_bytes() == (project / rel).read_bytes(), rel
    # Both accept what was pulled as current. The raw corpus is re-fetchable and not versioned
    # (cache: false), so DVC alone lists its stage as missing its output.
    status = run([dvc, "status"], clone).stdout
    assert not any(name in status for name in ("split_speakers", "train_codec", "make_report")), status
    assert_snakemake_current(clone)


def perceptual_tiny_config() -> dict:
    """``tiny_config`` with the perceptual family, as config/perceptual.yaml sets it (smaller)."""
    config = tiny_config()
    perceptual = yaml.safe_load((REPO / "config/perceptual.yaml").read_text())
    config["model"].update(perceptual["model"], width=16, res_blocks=1)
    config["train"].update(steps=6, batch_size=2, crop_s=0.5)
    config["bitrates_bps"] = [6000, 12000]
    config["overrides"] = {"6000": {}, "12000": {}}
    return config


@needs_espeak
def test_dvc_repro_trains_the_perceptual_family_once_for_every_rate(tmp_path):
    """`arch: perceptual` through `dvc repro`: one training, a Table 1 row at each rate, and
    Snakemake agrees that everything is current."""
    import pandas as pd

    project = make_project(tmp_path, perceptual_tiny_config())
    run(["git", "init", "-q"], project)
    run([str(BIN / "dvc"), "init", "-q"], project)
    first = run([str(BIN / "dvc"), "repro"], project)
    assert first.stdout.count("Running stage 'train_codec@") == 2
    runs = list((project / "results/tiny/train").glob("perceptual-*"))
    assert len(runs) == 1 and len(list(runs[0].glob("model-*.safetensors"))) == 1, runs
    models = [project / f"results/tiny/models/{bps}bps.safetensors" for bps in (6000, 12000)]
    assert models[0].read_bytes() == models[1].read_bytes()  # the one model, copied for each rate
    table = pd.read_csv(project / "results/tiny/report/table1.csv")
    rows = table[table["model"].str.startswith("tiny-")]
    assert len(rows) == 2, table
    kbps = sorted(rows["neural_kbps"])
    assert 4.5 < kbps[0] < 7.5 and 9 < kbps[1] < 14, kbps  # each row coded at its own rate
    for bps in (6000, 12000):
        val = pd.read_csv(project / f"results/tiny/train_metrics/{bps}bps/val_metrics.csv")
        assert val["bitrate_bps"].tolist() == [bps]
    assert_snakemake_current(project)


def test_the_ship_target_trains_measures_and_writes_the_cards(tmp_path):
    """`snakemake ship`: the shipped models from a folder of speech, measured on another, with
    their cards and the README's table; a rerun plans nothing."""
    import soundfile as sf

    from conftest import synth_speech

    for folder, seeds in (("train", range(4)), ("test", range(10, 12))):
        for i in seeds:
            path = tmp_path / "speech" / folder / f"spk{i}" / f"utt{i}.wav"
            path.parent.mkdir(parents=True)
            sf.write(path, synth_speech(3.0, seed=i), 16000)
    config = tiny_config()
    # relative to the project, as config/ship.yaml names ../shared/data/...
    config["ship"] = {"data": "../speech/train", "test_speech": "../speech/test",
                      "val_files": 1, "models": {"tiny-2k": 2000, "tiny-4k": 4000},
                      "perceptual": {"tiny-pc": {"steps": 4, "decay_from": 2}},
                      "continue_installed": False, "steps": 4}
    (tmp_path / "project").mkdir()
    project = make_project(tmp_path / "project", config)
    for folder in ("benchmarks", "scripts"):
        shutil.copytree(REPO / folder, project / folder)
    snakemake = [str(BIN / "snakemake"), "--cores", "2", "ship"]
    plan = run([*snakemake, "-n"], project)
    assert ran_rules(plan.stdout) == ["ship", "ship_card", "ship_card", "ship_card", "ship_perceptual",
                                      "ship_postfilter", "ship_postfilter", "ship_quality",
                                      "ship_results_table", "ship_speed", "ship_train", "ship_train"], \
        plan.stdout[-2000:]
    run(snakemake, project, timeout=1200)
    shipped = project / "results/tiny/shipped"
    for name in ("tiny-2k", "tiny-4k"):
        card = (shipped / f"{name}.md").read_text()
        assert name in card and "PESQ-WB" in card and "| postfilter | comb" in card
    opus_table, _, textbook = (shipped / "results.md").read_text().partition("\n\nTextbook baseline")
    rows = opus_table.splitlines()
    every_rate = ["tiny-pc-6k", "tiny-pc-12k", "tiny-pc-24k"]  # one perceptual model, a row per rate
    assert [r.split("|")[1].strip() for r in rows[2:]] == ["tiny-2k", "tiny-4k", *every_rate]
    card = (shipped / "tiny-pc.md").read_text()
    assert all(f"| `{name}` |" in card for name in every_rate) and "algorithmic delay | 40 ms" in card
    # Each model beside the textbook transform coder at its rate, with the files it wins.
    rows = [r for r in textbook.splitlines() if r.startswith("| tiny-")]
    assert [r.split("|")[1].strip() for r in rows] == ["tiny-2k", "tiny-4k", *every_rate]
    assert all(r.rstrip(" |").endswith("/2") for r in rows), rows
    assert (shipped / "report/table1.md").exists() and (shipped / "report/rate_quality.png").exists()
    again = run([*snakemake, "-n"], project)
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.parametrize("configfile, models", [("config/ship.yaml", 4),
                                                ("config/history/ship_loudness.yaml", 1)])
def test_the_ship_target_plans_the_shipped_models(configfile, models):
    """`snakemake ship --configfile ...` (the target before the files: --configfile takes several)."""
    plan = run([str(BIN / "snakemake"), "ship", "-n", "-p", "--forceall", "--cores", "2",
                "--configfile", configfile], REPO).stdout
    assert ran_rules(plan).count("ship_train") == models == ran_rules(plan).count("ship_card")
    from speechcodec.config import load_config

    for name, bps in load_config(REPO / configfile)["ship"]["models"].items():
        assert (f"--bitrate {bps} --data ../shared/data/train/audio --val-files 16 --name {name} " in plan) \
            == (bps is not None), name
