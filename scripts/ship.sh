#!/usr/bin/env bash
# Retrain the shipped models from the data, measure them, write their model cards, install them.
#
#   scripts/ship.sh [BPS ...]     default: 3000 6000 12000 24000 (config/ship.yaml's bitrates)
#
# Trains every bitrate at once (the CPU threads split between them; CUDA when present), on
# $SHIP_DATA (default ../shared/data/train/audio), in $SHIP_WORK (default scratch/ship). Rerun
# after an interruption: each training resumes from its last checkpoint. Then runs
# benchmarks/quality.py (on ../shared/data/speech, speakers never used in training) and
# benchmarks/speed.py, writes each card with scripts/model_card.py and copies model + card into
# src/speechcodec/pretrained/.
#
# Continue the installed models instead (a GPU round; each starts from the installed sc-* model):
#   SHIP_CONFIG=config/ship_gpu.yaml SHIP_STEPS=4000 SHIP_WORK=scratch/gpu-round scripts/ship.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
DATA=${SHIP_DATA:-../shared/data/train/audio}
WORK=${SHIP_WORK:-scratch/ship}
CONFIG=${SHIP_CONFIG:-config/ship.yaml}
STEPS=()
[ -z "${SHIP_STEPS:-}" ] || STEPS=(--steps "$SHIP_STEPS")
if [ $# -gt 0 ]; then rates=("$@"); else rates=(3000 6000 12000 24000); fi
threads=$(( $(nproc) / ${#rates[@]} ))
[ "$threads" -ge 1 ] || threads=1
[ -d "$DATA" ] || { echo "ship.sh: no training audio at $DATA (set SHIP_DATA)" >&2; exit 1; }
mkdir -p "$WORK"

models=()
pids=()
for bps in "${rates[@]}"; do
  name="sc-$((bps / 1000))k"
  models+=("$WORK/$name.safetensors")
  if [ -e "$WORK/$name.safetensors" ]; then  # written only when its training completed
    echo "$name: $WORK/$name.safetensors is trained (delete it and $WORK/$name.work to retrain)" >&2
    continue
  fi
  echo "training $name: log in $WORK/$name.log" >&2
  "$BIN/speechcodec" --log "$WORK/$name.log" train --config "$CONFIG" --bitrate "$bps" \
    --data "$DATA" --val-files 16 --name "$name" --out "$WORK/$name.safetensors" "${STEPS[@]}" \
    --threads "$threads" -q --description "folded + iSTFT decoder, 16 kHz, $((bps / 1000)) kbps; trained on shared/data/train" &
  pids+=($!)
done
for pid in "${pids[@]}"; do
  wait "$pid" || { echo "ship.sh: a training failed; see the logs in $WORK" >&2; exit 1; }
done

"$BIN/python" benchmarks/quality.py --model "${models[@]}" --csv "$WORK/quality.csv" --out "$WORK/eval" \
  --report "$WORK/report"
"$BIN/python" benchmarks/speed.py --model "${models[@]}" --csv "$WORK/speed.csv"
for model in "${models[@]}"; do
  "$BIN/python" scripts/model_card.py "$model" --quality "$WORK/quality.csv" --speed "$WORK/speed.csv" \
    --config "$CONFIG" --note "${SHIP_NOTE:-}"
  cp "$model" "${model%.safetensors}.md" src/speechcodec/pretrained/
done
cp "$WORK/report/rate_quality.png" docs/rate_quality.png
echo "installed: ${models[*]}; README plot: docs/rate_quality.png" >&2
