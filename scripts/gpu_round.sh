#!/usr/bin/env bash
# A GPU round inside a fixed time budget: continue the four installed sc-* models
# (config/history/ship_gpu.yaml) and train the paper's network at its 14.81 kbps row (config/paper.yaml),
# all five at once on one GPU. This is how the shipped sc-6k/12k/24k and models/paper-15k were
# made on a 15-minute H100 lease (see their cards).
#
#   MODE=probe scripts/gpu_round.sh         # 100 steps each: steps/s and fixed costs -> $WORK/probe.json
#   MODE=train TRAIN_SECONDS=450 scripts/gpu_round.sh   # steps from the probe, to end within the budget
#   INIT_DIR=DIR MODE=train ...             # continue from DIR/NAME.safetensors (a previous round)
#
# NAMES (default "sc-3k sc-6k sc-12k sc-24k paper-15k"): the runs. SHIP_CONFIG (default
# config/history/ship_gpu.yaml): the config of the sc-* runs, e.g. config/history/ship_ctx.yaml.
# DATA (default ../shared/data/train/audio): training audio. WORK (default /tmp/gpu-round): work
# folders, logs and the models written (NAME.safetensors, or NAME.best.safetensors when a run was
# cut short). PY (default python3) must have speechcodec importable (src/ is put on PYTHONPATH).
# A quick check on a CPU: PROBE_STEPS=2 MIN_STEPS=2 BATCH_SIZE=2 (defaults 100, 200, the configs').
set -u
cd "$(dirname "$0")/.."
PY=${PY:-python3}
MODE=${MODE:-probe}
DATA=${DATA:-../shared/data/train/audio}
WORK=${WORK:-/tmp/gpu-round}
TRAIN_SECONDS=${TRAIN_SECONDS:-400}
read -r -a NAMES <<<"${NAMES:-sc-3k sc-6k sc-12k sc-24k paper-15k}"
SHIP_CONFIG=${SHIP_CONFIG:-config/history/ship_gpu.yaml}
declare -A CONFIG=([sc-3k]=$SHIP_CONFIG [sc-6k]=$SHIP_CONFIG [sc-12k]=$SHIP_CONFIG
                   [sc-24k]=$SHIP_CONFIG [paper-15k]=config/paper.yaml)
declare -A BPS=([sc-3k]=3000 [sc-6k]=6000 [sc-12k]=12000 [sc-24k]=24000 [paper-15k]=14810)
declare -A BATCH=([sc-3k]=128 [sc-6k]=128 [sc-12k]=128 [sc-24k]=128 [paper-15k]=32)  # the configs'
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD/src PYTHONUNBUFFERED=1
runs="$WORK/$MODE"
mkdir -p "$runs"
[ -d "$DATA" ] || { echo "gpu_round.sh: no training audio at $DATA (set DATA)" >&2; exit 1; }
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 1
threads=$(( $(nproc) / ${#NAMES[@]} ))
[ "$threads" -ge 1 ] || threads=1

steps_for() {  # NAME -> steps that end within TRAIN_SECONDS, from the probe's rate and fixed cost
  if [ "$MODE" = probe ]; then echo "${PROBE_STEPS:-100}"; return; fi
  $PY - "$WORK/probe.json" "$1" "$TRAIN_SECONDS" "${MIN_STEPS:-200}" <<'EOF'
import json, sys
rate, fixed = json.load(open(sys.argv[1]))[sys.argv[2]]
steps = int(rate * (float(sys.argv[3]) - fixed) * 0.8) // 100 * 100  # 20 % spare: validations
print(max(int(sys.argv[4]), steps))
EOF
}

for name in "${NAMES[@]}"; do
  steps=$(steps_for "$name") || { echo "gpu_round.sh: run MODE=probe first" >&2; exit 1; }
  init=()
  [ -z "${INIT_DIR:-}" ] || init=(--init-from "$INIT_DIR/$name.safetensors")
  [ -z "${BATCH_SIZE:-}" ] || { init+=(--batch-size "$BATCH_SIZE"); BATCH[$name]=$BATCH_SIZE; }
  echo "$name: ${CONFIG[$name]} ${BPS[$name]} bps, $steps steps"
  date +%s.%N > "$runs/$name.start"
  ( timeout $((TRAIN_SECONDS + 40)) $PY -m speechcodec.cli train --config "${CONFIG[$name]}" \
      --bitrate "${BPS[$name]}" --data "$DATA" --val-files 16 --steps "$steps" --threads "$threads" \
      --name "$name" "${init[@]}" --out "$runs/$name.safetensors" --work-dir "$runs/$name.work" -q \
      > "$runs/$name.log" 2>&1
    echo "exit $?" >> "$runs/$name.log"; date +%s.%N > "$runs/$name.end" ) &
done
wait

batches=$(for name in "${NAMES[@]}"; do echo -n "$name=${BATCH[$name]},"; done)
$PY - "$runs" "$MODE" "$WORK/probe.json" "$batches" "${NAMES[@]}" <<'EOF'
import csv, json, sys
from pathlib import Path
runs, mode, probe_path, names = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[5:]
batch = {k: int(v) for k, v in (kv.split("=") for kv in sys.argv[4].strip(",").split(","))}
probe = {}
for name in names:
    metrics = runs / f"{name}.work" / "metrics.csv"
    log = (runs / f"{name}.log").read_text().strip().splitlines()
    if not metrics.exists():
        print(f"{name}: no metrics; log ends: {log[-3:]}")
        continue
    last = list(csv.DictReader(open(metrics)))[-1]
    rate = float(last["audio_s_per_s"]) / batch[name]  # steps per second (1 s crops)
    wall = float((runs / f"{name}.end").read_text()) - float((runs / f"{name}.start").read_text())
    probe[name] = [rate, wall - int(last["step"]) / rate]
    print(f"{name}: {last['step']} steps, {rate:.1f} steps/s, wall {wall:.0f} s, {log[-1]}")
    val = runs / f"{name}.work" / "val_metrics.csv"
    for row in csv.DictReader(open(val)) if val.exists() else []:
        print(f"   step {row['step']}: {float(row['kbps_real']):.2f} kbps, distortion "
              f"{float(row['distortion']):.3f}, best {row['best']}, rolled back {row['rolled_back']}")
if mode == "probe":
    probe_path.write_text(json.dumps(probe))
    print(f"{probe_path}: written")
EOF
for name in "${NAMES[@]}"; do  # a run cut short by the budget still leaves its best validated model
  [ -f "$runs/$name.safetensors" ] || [ ! -f "$runs/$name.work/best.safetensors" ] ||
    cp "$runs/$name.work/best.safetensors" "$runs/$name.best.safetensors"
done
