#!/usr/bin/env bash
# Decode and prompt tok/s of bin/client per Node version, the versions alternating (README, Speed,
# Node versions). Usage: scripts/bench-node-versions.sh <model.gguf> [threads] [rounds]
# Node 24 and 26 come from the registry (scripts/install-node.mjs) into $LLAMESH_CI_CACHE or
# ~/.cache/llamesh-ci; the machine's node is the third.
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:?usage: scripts/bench-node-versions.sh <model.gguf> [threads] [rounds]}"
threads="${2:-2}"; rounds="${3:-4}"
CACHE="${LLAMESH_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llamesh-ci}"
nodes=("$(command -v node)" "$(node scripts/install-node.mjs "$CACHE" 24)" "$(node scripts/install-node.mjs "$CACHE" 26)")
for ((r = 1; r <= rounds; r++)); do
  order=(0 1 2); ((r % 2)) || order=(2 1 0)
  for i in "${order[@]}"; do
    n="${nodes[$i]}"
    err="$("$n" bin/client "$model" -n 32 -i "It was a dark and stormy night" --temp 0 -t "$threads" --max-seq-len 512 2>&1 >/dev/null)"
    prompt="$(grep -oE 'Prompt: [0-9]+ tokens in [0-9.]+ ms, [0-9.]+ tok/s' <<<"$err" | grep -oE '[0-9.]+ tok/s')"
    decode="$(grep -oE 'Speed: [0-9.]+ tok/s' <<<"$err")"
    echo "round $r node $("$n" --version): prompt $prompt, decode ${decode#Speed: }"
  done
done
