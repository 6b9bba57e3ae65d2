#!/usr/bin/env bash
# The CPU image's runtime settings side by side: one container per setting, all from the same image
# on the same model, up at once; `bench.py run` drives one at a time, in alternating rounds, with
# the same seeded workload per round. Prints each round's docs/s; the ratio is what to quote.
#   scripts/bench-container.sh MODEL_DIR [ROUNDS]        (image qwen3-rerank:cpu; podman or docker)
# Settings compared: the image as built (tcmalloc preloaded, torch.compile), LD_PRELOAD emptied
# (glibc malloc), and --enforce-eager (no torch.compile: what the image's C++ compiler buys).
set -euo pipefail
cd "$(dirname "$0")/.."
model=$(realpath "$1")
rounds=${2:-3}
engine=${ENGINE:-podman}
image=${IMAGE:-qwen3-rerank:cpu}
names=(as-built no-tcmalloc eager)
extra_env=("" "LD_PRELOAD=" "")
extra_flags=("" "" "--enforce-eager")
base_port=${BASE_PORT:-18100}
cleanup() { for n in "${names[@]}"; do "$engine" rm -f -t 5 "bench-$n" >/dev/null 2>&1 || true; done; }
trap cleanup EXIT
cleanup
for i in "${!names[@]}"; do
  env_args=()
  [ -n "${extra_env[$i]}" ] && env_args=(-e "${extra_env[$i]}")
  # shellcheck disable=SC2086
  "$engine" run -d --name "bench-${names[$i]}" --network host --shm-size=2g "${env_args[@]}" \
    -v "$model:/models/m:ro" "$image" --model /models/m --port $((base_port + i)) \
    --cpu-threads-bind nobind --max-model-len 2048 --log-file '' ${extra_flags[$i]} >/dev/null
done
for i in "${!names[@]}"; do
  until curl -sf "http://127.0.0.1:$((base_port + i))/ready" >/dev/null; do
    "$engine" container inspect -f '{{.State.Running}}' "bench-${names[$i]}" | grep -q true \
      || { "$engine" logs "bench-${names[$i]}" | tail -20; exit 1; }
    sleep 2
  done
done
for round in $(seq 1 "$rounds"); do
  for i in "${!names[@]}"; do
    out=$(mktemp)
    .venv/bin/python scripts/bench.py run --url "http://127.0.0.1:$((base_port + i))" --seed "$round" \
      --requests "${REQUESTS:-40}" --concurrency 4 --min-docs 10 --max-docs 30 --max-doc-tokens 300 --json "$out" >/dev/null
    python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[2], sys.argv[3], r['docs/s'], 'p50_ms', r['p50_ms'])" \
      "$out" "$round" "${names[$i]}"
    rm -f "$out"
  done
done
