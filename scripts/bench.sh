#!/usr/bin/env bash
# Benchmarks on this machine and real data: training images/s, embedding images/s (decode,
# inference, end to end), index build time, queries/s and recall@10 beside hnswlib on the same
# vectors (hnswlib from PyPI into runs/bench-venv), the atlas map's layout and frame time at
# 10^5 cells, the default model's cross-validated metrics. Prints figures; asserts nothing.
#
#   scripts/bench.sh [DATA_DIR] [--synthetic N] [--torch]
#     --synthetic N: the index on N synthetic vectors (1000000: about half an hour per side)
#     --torch: also the LibTorch trainer and the PyTorch twin of the training step, side by side
#              (fetches libtorch and torch from PyPI: large)
set -euo pipefail
source "$(dirname "$0")/env.sh"
data="$root/../shared/data/blood-cells/TRAIN" synthetic=100000 torch=0
while [ $# -gt 0 ]; do
  case "$1" in
    --synthetic) synthetic="$2"; shift 2 ;;
    --torch) torch=1; shift ;;
    *) data="$1"; shift ;;
  esac
done
[ -d "$data" ] || { echo "error: $data not found (see README: Data)" >&2; exit 1; }
cargo build --release --workspace >/dev/null
model="$root/models/cellspace.json"
echo "# $(date -u +%Y-%m-%dT%H:%MZ) on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
echo "## training (default configuration, CPU, flex backend)"
trainer bench --data "$data" --steps 10
if [ "$torch" = 1 ]; then
  # the LibTorch trainer (libtorch 2.9.0 from PyPI, patched burn-tch) and the PyTorch twin of the
  # same network and step (torch from PyPI into a bench-only venv: large), three alternating rounds
  tv="$root/runs/bench-venv-torch"
  "$tv/bin/python" -c "import torch" 2>/dev/null || { python3 -m venv "$tv" && "$tv/bin/pip" install -q torch; }
  LIBTORCH=$("$root/scripts/setup-libtorch.sh") cargo build --release -p trainer --features libtorch >/dev/null
  cp "$CARGO_TARGET_DIR/release/trainer" "$CARGO_TARGET_DIR/release/trainer-libtorch"
  cargo build --release -p trainer >/dev/null # the default binary back
  out="$root/runs/bench-train"
  rm -rf "$out" && mkdir -p "$out"
  for r in 1 2 3; do
    trainer bench --data "$data" --steps 10 --device flex --report "$out/flex-$r.json" 2>/dev/null
    trainer-libtorch bench --data "$data" --steps 10 --device libtorch --report "$out/libtorch-$r.json" 2>/dev/null
    "$tv/bin/python" "$root/scripts/bench_torch_twin.py" --steps 10 --threads "$(nproc)" > "$out/twin-$r.json"
    "$tv/bin/python" "$root/scripts/bench_torch_twin.py" --steps 10 --threads "$(nproc)" --channels-last > "$out/twin-cl-$r.json"
  done
  echo "## training beside the PyTorch twin (same network and step, $(nproc) threads)"
  python3 "$root/scripts/bench_train_compare.py" "$out"
fi
echo "## embedding (runtime, $(basename "$model"))"
runtime bench "$data" --model "$model" --device cpu --limit 2000
echo "## index: real embeddings of $data (every 10th held out as a query)"
emb="$root/runs/bench.embeddings"
runtime embed "$data" -o "$emb" --model "$model" --device cpu >/dev/null 2>&1 || true
index bench "$emb"
# the anchor: hnswlib from PyPI in a bench-only environment, on the same vectors and queries,
# one thread each, three alternating rounds (the machine's other load hits both alike)
venv="${CELLSPACE_BENCH_VENV:-$root/runs/bench-venv}"
if ! "$venv/bin/python" -c "import hnswlib, numpy" 2>/dev/null; then
  python3 -m venv "$venv" && "$venv/bin/pip" install -q hnswlib numpy \
    || { echo "hnswlib could not be installed: the comparison is skipped" >&2; venv=""; }
fi
out="$root/runs/bench-index"
mkdir -p "$out"
compare() { # NAME NPY [index bench args...]
  local name=$1 npy=$2; shift 2
  for r in 1 2 3; do
    RAYON_NUM_THREADS=1 index bench "$@" > "$out/$name-ours-$r.json"
    [ -n "$venv" ] && "$venv/bin/python" "$root/scripts/bench_hnswlib.py" "$npy" --ef 16,32,64,128,256 > "$out/$name-hnswlib-$r.json"
  done
  if [ -n "$venv" ]; then
    python3 "$root/scripts/bench_compare.py" "$out/$name"-ours-*.json -- "$out/$name"-hnswlib-*.json
  fi
}
echo "## index beside hnswlib: real embeddings"
compare real "$emb/embeddings.npy" "$emb"
echo "## index beside hnswlib: synthetic $synthetic x 128 (atlas-shaped: types, originals, copies; --synthetic N to change)"
compare synthetic "$out/synthetic.npy" --synthetic "$synthetic" --dim 128 --save-vectors "$out/synthetic.npy"
echo "## the atlas map: layout time and the page's frame time at 10^5 cells (Chromium; CELLSPACE_MAP_CELLS to change)"
cargo test --release --test map_page -- --ignored --nocapture map_layout_and_frame_time 2>&1 | grep -E "map bench|SKIPPED" || true
echo "## default model quality: cross-validated over source groups (from its card)"
python3 - "$model" <<'PY'
import json, sys
cv = (json.load(open(sys.argv[1]))["metrics"] or {}).get("cross_validation") or {}
est = (json.load(open(sys.argv[1]))["metrics"] or {}).get("estimate_on_unseen_cells") or {}
if est:
    shifts = est.get("knn200_mean_over_shifts")
    print(f"estimate on unseen cells ({est.get('from')}): kNN-200 {est['knn200_mean']:.3f} ± {est['knn200_sd']:.3f}"
          + (f", mean over the shifts {shifts:.3f}, worst {est['knn200_worst_shift']:.3f} ({est['worst_shift']})" if shifts is not None else ""))
if not cv:
    print("the card carries no cross-validation (trainer export --cv)")
for key in ("served", "chosen_on_other_folds", "histogram_baseline"):
    row = cv.get(key)
    if row:
        m, sd = row["mean"], row["sd"]
        print(f"{row['name']:<50} kNN-200 {m['knn200_acc']:.3f} ± {sd['knn200_acc']:.3f}  P@1 {m['precision_at_1']:.3f} ± {sd['precision_at_1']:.3f}  MAP@R {m['map_at_r']:.3f} ± {sd['map_at_r']:.3f}")
PY
