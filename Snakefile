# speechcodec: download -> clean -> split -> train per bitrate -> encode and score the test set
# -> Opus at matched bitrates (Codec 2 below Opus's floor) -> PESQ report and listening page.
#
#   snakemake --cores all --resources gpu=1                     # config.yaml (the demo)
#   snakemake --cores all --resources gpu=1 --configfile config/paper.yaml
#   snakemake --cores 1 --report results/demo/report.zip       # browsable HTML report (zipped)
#   snakemake ship --cores all --resources gpu=1 --configfile config/ship.yaml   # the shipped models
#
# Every path comes from src/speechcodec/layout.py (results/NAME/...).
#
# dvc.yaml describes the same stages with the same commands (tests/test_workflow.py checks), and
# the two agree on what is current: a successful run is recorded in dvc.lock, and a run plans
# nothing that `dvc repro` or `dvc pull` has made current (src/speechcodec/dvc_sync.py).


from snakemake.utils import min_version

min_version("8.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/ship.smk"


rule all:
    input:
        REPORT_FILES,
        RUN.listen,


onsuccess:
    record_run_in_dvc()
