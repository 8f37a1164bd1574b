#!/usr/bin/env bash
# The main job on a fresh machine. Until the pipeline lands: speak a sentence with eSpeak NG,
# encode it with the default shipped model, decode it back, and show what the file holds.
set -euo pipefail
cd "$(dirname "$0")/.."
out=results/demo
mkdir -p "$out"
espeak-ng -v en-us -s 150 -w "$out/sentence.wav" \
  "The quick brown fox jumps over the lazy dog. A neural codec squeezes this sentence into a few kilobytes."
.venv/bin/speechcodec models
.venv/bin/speechcodec encode "$out/sentence.wav" "$out/sentence.spcd"
.venv/bin/speechcodec info "$out/sentence.spcd"
.venv/bin/speechcodec decode "$out/sentence.spcd" "$out/sentence_decoded.wav"
echo "listen: $out/sentence.wav (original) and $out/sentence_decoded.wav (decoded)"
