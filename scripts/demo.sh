#!/usr/bin/env bash
# The main job on the built-in demo corpus: the whole pipeline (eSpeak NG corpus -> clean ->
# 14:80 split -> train per bitrate -> encode the test set -> Opus at matched bitrates -> PESQ
# report and listening page), then the HTML report; once for the autoencoder (config.yaml) and
# once for the perceptual family, pc (config/perceptual.yaml: one small pc trained for every
# rate, beside the installed one). A rerun does only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
for run in "demo config.yaml" "demo-pc config/perceptual.yaml"; do
    set -- $run
    snakemake --cores all --resources gpu=1 --configfile "$2"
    snakemake --cores 1 --report "results/$1/report.zip" --configfile "$2"
done
for name in demo demo-pc; do
    echo
    cat "results/$name/report/table1.md"
done
echo
echo "reports:         results/demo/report.zip, results/demo-pc/report.zip (unzip, open report.html)"
echo "plots:           results/demo/report/rate_quality.png, results/demo-pc/report/rate_quality.png"
echo "listening pages: results/demo/listen/index.html, results/demo-pc/listen/index.html"
