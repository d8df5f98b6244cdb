#!/usr/bin/env bash
# The GPU figures BENCHMARKS.md asks for, side by side with the PyTorch references, in one command.
#
#   bash benchmarks/gpu_suite.sh OUT_DIR [PEERS_DIR]
#
# Run on a machine with a CUDA GPU from the checkout's root, with jax[cuda] and torch installed (offline: build
# .gpu/ with `../shared/tools/gpu-prep --data mnist,ptb --peers`, send it along, `source .gpu/setup.sh` first).
# PEERS_DIR holds the references' drivers (enas_pytorch/bench.py, dpnas/bench.py; default .gpu/peers, else
# ../shared/peers). Each benchmark runs under its own time limit; their JSON lines go to OUT_DIR/gpu_suite.jsonl
# (one object per line: {"name", "rc", "seconds", "result"}) and their logs to OUT_DIR/gpu_suite.log.
# GPU_SUITE_ONLY="name ..." runs only the named benchmarks. Needs neither TensorFlow nor tensorflow-datasets. At most 8 minutes (the sum of the limits).
set -uo pipefail
out=${1:?usage: gpu_suite.sh OUT_DIR [PEERS_DIR]}
peers=${2:-}
[ -n "$peers" ] || { [ -d .gpu/peers ] && peers=.gpu/peers || peers=../shared/peers; }
mkdir -p "$out"
jsonl="$out/gpu_suite.jsonl"; log="$out/gpu_suite.log"
: > "$jsonl"; : > "$log"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$log" 2>&1
python3 -c "import jax, torch; print('jax', jax.__version__, jax.devices(), 'torch', torch.__version__)" >> "$log" 2>&1

bench() {  # bench NAME LIMIT_S COMMAND...: one JSON line from the command's stdout, its stderr to the log
  local name=$1 limit=$2; shift 2
  if [ -n "${GPU_SUITE_ONLY:-}" ] && [[ " $GPU_SUITE_ONLY " != *" $name "* ]]; then return; fi
  local start=$SECONDS stdout
  echo "=== $name: $*" >> "$log"
  stdout=$(timeout "$limit" "$@" 2>> "$log"); local rc=$?
  printf '%s\n' "$stdout" >> "$log"
  local result; result=$(printf '%s' "$stdout" | python3 -c '
import json, sys
lines = sys.stdin.read().splitlines()
starts = [i for i, line in enumerate(lines) if line.startswith("{")]
for i in starts[::-1]:  # the last JSON object printed, on one line or indented over several
  for end in range(len(lines), i, -1):
    try:
      print(json.dumps(json.loads("\n".join(lines[i:end])))); sys.exit()
    except ValueError:
      pass
print("null")')
  printf '{"name": "%s", "rc": %d, "seconds": %d, "result": %s}\n' "$name" "$rc" "$((SECONDS - start))" "$result" \
    >> "$jsonl"
  echo "$name: rc=$rc, $((SECONDS - start)) s" | tee -a "$log"
}

# ENAS RNN at paper size (12 nodes, hidden 1000, 10k vocabulary, batch 64, bptt 35): supernet vs fixed cell,
# controller steps; then the reference's shared and controller steps at the same size.
bench enas_rnn_paper 130 python3 benchmarks/enas_step.py --paper --skip-cnn --steps 30
bench enas_rnn_paper_reference 80 python3 "$peers/enas_pytorch/bench.py" --device cuda --steps 60 --warmup 5 \
  --controller_steps 30 --controller_warmup 3 --pad_vocab_to 10000
# DP-NAS: the README net on 8,000/2,000 MNIST at 28x28, 3 epochs: one seed, 8 seeds at once; the reference with
# its embeddings in memory and as per-sample files (its own behaviour).
bench dpnas_evaluation 120 python3 benchmarks/dpnas_evaluator.py --seeds 8
bench dpnas_evaluation_reference_memory 40 python3 "$peers/dpnas/bench.py" --device cuda --embed-store memory \
  --repeats 2
bench dpnas_evaluation_reference_disk 40 python3 "$peers/dpnas/bench.py" --device cuda --embed-store disk \
  --repeats 1
# Fisher diagonals: every path against a plain backward pass and torch.func.
bench fisher_throughput 110 python3 benchmarks/fisher_throughput.py
cat "$jsonl"
