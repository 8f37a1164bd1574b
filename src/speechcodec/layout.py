"""Where a pipeline run keeps its files: the one place their paths are spelled.

::

    resources/NAME/corpus/                   the fetched corpus (re-fetchable, not versioned)
    results/NAME/clean/                      cleaned 16 kHz audio and manifest.csv
    results/NAME/split/                      train.csv, val.csv, test.csv
    results/NAME/models/BPSbps.safetensors   one model per target bitrate
    results/NAME/train/BPSbps/               its checkpoints (what a rerun resumes from)
    results/NAME/train_metrics/BPSbps/       its metrics.csv and val_metrics.csv
    results/NAME/eval/RUN/                   one codec scored on the test speakers (RUN below)
    results/NAME/report/                     Table 1, the plot, metrics.json, curve.csv
    results/NAME/listen/                     the listening page
    results/NAME/logs/STAGE[/ITEM].log       each step's log
    results/NAME/settings/STAGE.json         the settings each step reads (as DVC's params)
    results/NAME/benchmarks/RULE/ITEM.tsv    Snakemake's time and memory per job
    results/NAME/shipped/                    `snakemake ship`: MODEL.safetensors (postfilter chosen;
                                             MODEL.trained.safetensors before) and MODEL.md (its
                                             card), MODEL.work/, quality.csv, speed.csv, eval/,
                                             report/ (Table 1 and the plot), results.md (README table)

The Snakefile's rules, ``speechcodec.config`` and the listening page take their paths from here;
``dvc.yaml`` (YAML, which cannot import this) spells the same ones, and a test checks that it does.
Arguments may be Snakemake wildcards: ``run.model("{bps}")``.
"""

from __future__ import annotations

from dataclasses import dataclass

REPORT_FILES = ("table1.csv", "table1.md", "rate_quality.png", "rate_quality.svg", "metrics.json", "curve.csv")
SHIPPED_PREFIX = "shipped-"  # the eval run of an installed model: shipped-NAME


def neural_run(bps) -> str:
    """The eval run of the model this pipeline trained for ``bps``."""
    return f"neural-{bps}bps"


def opus_matched_run(run: str) -> str:
    """The eval run of Opus at the real rate measured in ``run`` (a neural or shipped run):
    opus-match-6000bps beside neural-6000bps, opus-match-shipped-pc-6k beside shipped-pc-6k."""
    return _matched("opus", run)


def opus_run(bps) -> str:
    return f"opus-{bps}bps"


def codec2_run(bps) -> str:
    return f"codec2-{bps}bps"


def transform_run(bps) -> str:
    """The textbook transform coder at ``bps`` (the Opus grid's rates, for the plot)."""
    return f"transform-{bps}bps"


def transform_matched_run(run: str) -> str:
    """The textbook transform coder at the real rate measured in ``run`` (a neural or shipped
    run): transform-match-6000bps beside neural-6000bps."""
    return _matched("transform", run)


def _matched(baseline: str, run: str) -> str:
    """The eval run of ``baseline`` at the real rate measured in ``run``."""
    return f"{baseline}-match-{run.removeprefix('neural-')}"


def shipped_run(model: str) -> str:
    return f"{SHIPPED_PREFIX}{model}"


@dataclass(frozen=True)
class RunLayout:
    """The paths of one pipeline run (``name``: the config's ``name``)."""

    name: str

    @property
    def root(self) -> str:
        return f"results/{self.name}"

    @property
    def corpus(self) -> str:
        return f"resources/{self.name}/corpus"

    @property
    def clean(self) -> str:
        return f"{self.root}/clean"

    @property
    def split(self) -> str:
        return f"{self.root}/split"

    @property
    def report(self) -> str:
        return f"{self.root}/report"

    @property
    def report_files(self) -> list[str]:
        return [f"{self.report}/{f}" for f in REPORT_FILES]

    @property
    def listen(self) -> str:
        return f"{self.root}/listen"

    def model(self, bps) -> str:
        return f"{self.root}/models/{bps}bps.safetensors"

    def work(self, bps) -> str:
        """The training run's checkpoints: not an output (they must survive a rerun)."""
        return f"{self.root}/train/{bps}bps"

    def train_metrics(self, bps) -> str:
        return f"{self.root}/train_metrics/{bps}bps"

    def eval(self, run: str) -> str:
        return f"{self.root}/eval/{run}"

    def log(self, stage: str, item: str | None = None) -> str:
        return f"{self.root}/logs/{stage}.log" if item is None else f"{self.root}/logs/{stage}/{item}.log"

    def settings(self, stage: str) -> str:
        """The settings file of a DVC stage (``train_codec@6000`` for one item of a foreach)."""
        return f"{self.root}/settings/{stage}.json"

    def benchmark(self, rule: str, item: str) -> str:
        return f"{self.root}/benchmarks/{rule}/{item}.tsv"

    @property
    def ship(self) -> str:
        """The shipped models as this config trains and measures them (``snakemake ship``)."""
        return f"{self.root}/shipped"

    def shipped_model(self, model: str) -> str:
        return f"{self.ship}/{model}.safetensors"

    def shipped_card(self, model: str) -> str:
        return f"{self.ship}/{model}.md"
