#!/usr/bin/env bash
# The main job on the built-in demo corpus: the whole pipeline (eSpeak NG corpus -> clean ->
# 14:80 split -> train per bitrate -> encode the test set -> Opus at matched bitrates -> PESQ
# report and listening page), then the HTML report. A rerun does only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
snakemake --cores all --resources gpu=1
snakemake --cores 1 --report results/demo/report.zip
echo
cat results/demo/report/table1.md
echo
echo "report:          results/demo/report.zip (unzip, open report.html)"
echo "plot:            results/demo/report/rate_quality.png"
echo "listening page:  results/demo/listen/index.html"
