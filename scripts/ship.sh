#!/usr/bin/env bash
# Make the shipped models with the pipeline, then install them.
#
#   scripts/ship.sh                        # config/ship.yaml: train, measure, write the cards
#   SHIP_CONFIG=config/ship_gpu.yaml scripts/ship.sh   # another config with a `ship` section
#
# Runs `snakemake ship --configfile $SHIP_CONFIG` (workflow/rules/ship.smk): every model of the
# config's `ship.models` trained (or, with `ship.continue_installed`, continued) on `ship.data`,
# measured on `ship.test_speech` (speakers never trained on) for quality and speed, each with its
# model card, and the README's results table; a rerun resumes the trainings from their
# checkpoints and redoes only what changed. Then copies model + card into
# src/speechcodec/pretrained/, the plot into docs/ and the table into the README.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
CONFIG=${SHIP_CONFIG:-config/ship.yaml}
PATH="$PWD/$BIN:$PATH" "$BIN/snakemake" ship --cores all --resources gpu=1 --configfile "$CONFIG"
shipped=$("$BIN/python" -c "
import sys
from speechcodec.config import load_config
from speechcodec.layout import RunLayout
print(RunLayout(load_config(sys.argv[1])['name']).ship)" "$CONFIG")
for model in "$shipped"/*.safetensors; do
  cp "$model" "${model%.safetensors}.md" src/speechcodec/pretrained/
done
cp "$shipped/report/rate_quality.png" docs/rate_quality.png
"$BIN/python" - "$shipped/results.md" README.md <<'PY'
import re, sys
from pathlib import Path
table, readme = Path(sys.argv[1]).read_text(), Path(sys.argv[2])
text = readme.read_text()
new = re.sub(r"(<!-- results-table: .*? -->\n).*?(\n<!-- /results-table -->)",
             lambda m: m[1] + table.rstrip("\n") + m[2], text, count=1, flags=re.S)
if new == text and table.rstrip("\n") not in text:
    sys.exit("ship.sh: the README has no <!-- results-table --> markers; table left in " + sys.argv[1])
readme.write_text(new)
PY
echo "installed: $(ls "$shipped"/*.safetensors | xargs -n1 basename | tr '\n' ' '); README table and docs/rate_quality.png updated" >&2
