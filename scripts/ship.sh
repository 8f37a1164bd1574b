#!/usr/bin/env bash
# Make the shipped models with the pipeline, then install them.
#
#   scripts/ship.sh                        # config/ship.yaml: train, measure, write the cards
#   SHIP_CONFIG=config/history/ship_gpu.yaml scripts/ship.sh   # another config with a `ship` section
#
# Runs `snakemake ship --configfile $SHIP_CONFIG` (workflow/rules/ship.smk): every model of the
# config's `ship.models` trained (or, with `ship.continue_installed`, continued) on `ship.data`,
# measured on `ship.test_speech` (speakers never trained on) for quality and speed, each with its
# model card, and the results table (docs/results.md); a rerun resumes the trainings from their
# checkpoints and redoes only what changed. Then copies model + card into
# src/speechcodec/pretrained/, the plot into docs/ and the table into docs/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
CONFIG=${SHIP_CONFIG:-config/ship.yaml}
PATH="$PWD/$BIN:$PATH" "$BIN/snakemake" ship --cores all --resources gpu=1 --configfile "$CONFIG"
read -r shipped names < <("$BIN/python" -c "
import sys
from speechcodec.config import load_config
from speechcodec.layout import RunLayout
config = load_config(sys.argv[1])
ship = config['ship']
print(RunLayout(config['name']).ship, *(m for m, bps in ship['models'].items() if bps),
      *(m for m, settings in (ship.get('perceptual') or {}).items() if settings is not None))" "$CONFIG")
for name in $names; do  # the finished models (not MODEL.trained.safetensors, their state before the postfilter)
  cp "$shipped/$name.safetensors" "$shipped/$name.md" src/speechcodec/pretrained/
done
old_rows=$("$BIN/python" - "$shipped/results.md" docs/results.md <<'PY'
# The results tables (docs/results.md) keep a row per installed model: the rows of the models made here replace
# theirs (a config may make only some, e.g. config/history/ship_loudness.yaml), the others stay. Each
# table (beside Opus, then beside the textbook coder) merges on its own; the text between them is
# the new one. Prints how many rows were kept from before.
import re, sys
from pathlib import Path
made, readme = Path(sys.argv[1]).read_text().strip("\n"), Path(sys.argv[2])
text = readme.read_text()
block = re.search(r"(<!-- results-table: .*? -->\n)(.*?)(\n<!-- /results-table -->)", text, flags=re.S)
if not block:
    sys.exit("ship.sh: docs/results.md has no <!-- results-table --> markers; the table is in " + sys.argv[1])
def name(row):
    return row.split("|")[1].strip()
def parts(markdown):
    return [p.splitlines() for p in markdown.strip("\n").split("\n\n")]
new_parts, old_parts = parts(made), parts(block[2])
kept = 0
merged = []
for i, part in enumerate(new_parts):
    if not part[0].startswith("|"):
        merged.append(part)  # the text between the tables
        continue
    old = next((p for p in old_parts[i:] if p[0].startswith("|") and p[0] == part[0]), [])
    new = {name(r): r for r in part[2:]}
    rows = [new.pop(name(r), r) for r in old[2:]] + list(new.values())
    kept = max(kept, sum(name(r) not in {name(m) for m in part[2:]} for r in old[2:]))
    merged.append(part[:2] + rows)
readme.write_text(text[:block.start(2)] + "\n\n".join("\n".join(p) for p in merged) + text[block.end(2):])
print(kept)
PY
)
if [ "$old_rows" = 0 ]; then  # every model in docs/results.md was made here: its plot is the one shown
  cp "$shipped/report/rate_quality.png" docs/rate_quality.png
else  # its own plot beside that one: the models it made, among Opus's and the textbook coder's grids
  run=$(basename "$(dirname "$shipped")")
  cp "$shipped/report/rate_quality.png" "docs/rate_quality_$run.png"
  echo "ship.sh: docs/rate_quality.png kept (this config made only some of the models in docs/results.md);" \
       "its plot is docs/rate_quality_$run.png" >&2
fi
echo "installed: $names; docs/results.md's table updated (the README's short table is written by hand)" >&2
