#!/usr/bin/env bash
# The GPU check: everything a first GPU session should measure, in under 8 minutes on one GPU, as JSON
# lines in one file. It refuses to start without CUDA (unless --device cpu: the dry run the tests use).
#
#   bash benchmarks/gpu_check.sh                      # one or more GPUs: writes gpu_check.jsonl
#   bash benchmarks/gpu_check.sh --device cpu --preset tiny --out /tmp/check.jsonl   # dry run
#
# 1. `minidreamer4 bench` eager and --compile (bf16 on GPUs): training, imagination, dream and acting
#    speed with FLOP utilisation;
# 2. a short run of every stage of the loop (collect, tokenizer, dynamics, finetune, imagination RL,
#    evaluation) at the preset's model sizes, with short episodes: its summary and each stage's speed;
# 3. the dynamics stage on every GPU present under torchrun (DDP): frames/s across all ranks.
# Options: --device cuda|cpu, --preset gpu|cpu|tiny, --out FILE, --minutes M (per training stage, 0.75).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda PRESET=gpu OUT=gpu_check.jsonl MIN=0.75
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --preset) PRESET=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --minutes) MIN=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
if [ "$DEVICE" = cuda ]; then
  NGPU=$($PY -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
  if [ "$NGPU" = 0 ]; then
    echo "gpu_check: no CUDA device: refusing to start (use --device cpu --preset tiny for a dry run)" >&2
    exit 2
  fi
  BF16=on
else
  NGPU=1
  BF16=off
fi
RUNS=$(mktemp -d)
trap 'rm -rf "$RUNS"' EXIT
: > "$OUT"
say() { echo "gpu_check: $*" >&2; }
T0=$(date +%s)

say "1/3 bench, eager and compiled ($PRESET, $DEVICE, bf16 $BF16)"
$PY -m minidreamer4 bench --preset "$PRESET" --device "$DEVICE" --bf16 "$BF16" --repeat 5 | tail -1 >> "$OUT"
$PY -m minidreamer4 bench --preset "$PRESET" --device "$DEVICE" --bf16 "$BF16" --repeat 5 --compile \
  | tail -1 >> "$OUT"

say "2/3 every stage, briefly"
COMMON=(--preset "$PRESET" --device "$DEVICE" --bf16 "$BF16" --runs_dir "$RUNS" --env.max_steps 100
  --data.collect_episodes 10 --tok_train.minutes "$MIN" --dyn_train.minutes "$MIN"
  --ft_train.minutes 0.3 --rl_train.minutes 0.3 --agent.iterations 1 --agent.eval_episodes 2
  --agent.collect_episodes 1)
$PY -m minidreamer4 train "${COMMON[@]}" --name stages > "$RUNS/stages.log" 2>&1 || {
  tail -20 "$RUNS/stages.log" >&2; exit 1; }
$PY - "$RUNS/stages" "$PRESET" "$DEVICE" >> "$OUT" <<'EOF'
import json, sys
run, preset, device = sys.argv[1:]
rows = [json.loads(x) for x in open(f"{run}/metrics.jsonl")]
last = lambda stage, k: next((r[k] for r in reversed(rows) if r["stage"] == stage and k in r), None)
out = {"check": "stages", "preset": preset, "device": device, **json.load(open(f"{run}/summary.json"))}
out |= {
    "tokenizer_frames_per_s": last("tokenizer/train", "frames_per_s"),
    "tokenizer_steps": last("tokenizer/train", "step"),
    "tokenizer_heldout_psnr": last("tokenizer/eval", "psnr"),
    "dynamics_frames_per_s": last("dynamics/train", "frames_per_s"),
    "dynamics_steps": last("dynamics/train", "step"),
    "imagined_frames_per_s": last("imagination/train", "imagined_frames_per_s"),
    "timings_s": json.load(open(f"{run}/timings.json")),
}
print(json.dumps(out))
EOF

say "3/3 dynamics under torchrun on $NGPU process(es)"
mkdir -p "$RUNS/ddp/checkpoints"
cp "$RUNS/stages/checkpoints/tokenizer.pt" "$RUNS/ddp/checkpoints/"
$PY -m torch.distributed.run --standalone --nproc_per_node="$NGPU" -m minidreamer4 train-dynamics \
  "${COMMON[@]}" --name ddp --data.dir "$RUNS/stages/episodes" > "$RUNS/ddp.log" 2>&1 || {
  tail -20 "$RUNS/ddp.log" >&2; exit 1; }
$PY - "$RUNS/ddp" "$NGPU" "$DEVICE" >> "$OUT" <<'EOF'
import json, sys
run, n, device = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = [json.loads(x) for x in open(f"{run}/metrics.jsonl")]
train = [r for r in rows if r["stage"] == "dynamics/train"]
ddp = [r for r in rows if r["stage"] == "dynamics/ddp"]
print(json.dumps({
    "check": "torchrun_dynamics", "device": device, "processes": n,
    "frames_per_s_per_rank": train[-1]["frames_per_s"], "frames_per_s_all_ranks": train[-1]["frames_per_s"] * n,
    "steps": train[-1]["step"], "max_param_diff": ddp[-1]["max_param_diff"] if ddp else 0.0,
}))
EOF
say "done in $(( $(date +%s) - T0 )) s: $(wc -l < "$OUT") JSON lines in $OUT"
