#!/usr/bin/env bash
# The main job: build, then on a data folder: a short self-supervised fit, ONNX export,
# `runtime embed`, `index build`, an `index query` of a sample cell, and the held-out retrieval
# metrics beside the colour-histogram baseline. Idempotent: a finished fit is reused, an
# interrupted one resumed, unchanged images are not embedded again.
#
#   scripts/main.sh [DATA_DIR] [--epochs N] [--device cpu|cuda] [--out RUN_DIR]
set -euo pipefail
source "$(dirname "$0")/env.sh"
data="" epochs=2 device=cpu out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --epochs) epochs="$2"; shift 2 ;;
    --device) device="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n 2,8p "$0"; exit 0 ;;
    *) data="$1"; shift ;;
  esac
done
if [ -z "$data" ]; then
  data="$root/../shared/data/blood-cells/TRAIN"
  if [ ! -d "$data" ]; then
    cat >&2 <<MSG
error: no data folder given and $data does not exist.
Get the Kaggle dataset "Blood Cell Images" (paultimothymooney/blood-cells), unpack it and pass
its dataset2-master/images/TRAIN folder (TRAIN/<CLASS>/*.jpeg), or place it at
$data (with source_groups.tsv beside TRAIN for group-aware validation).
MSG
    exit 1
  fi
fi
out="${out:-$root/runs/main-e$epochs}"
features=""
[ "$device" != cpu ] && features="--features trainer/gpu"
trainer=trainer
if [ "$device" = cpu ] && [ -z "${CELLSPACE_FLEX:-}" ]; then
  # the fast CPU trainer (LibTorch, ~2.7x flex on 2 cores); its own binary, so that the default
  # build below keeps the workspace's `trainer`. CELLSPACE_FLEX=1 skips it.
  echo "== the LibTorch trainer (libtorch 2.9.0 from PyPI wheels, ~0.9 GB once; scripts/setup-libtorch.sh)"
  if LIBTORCH=$(scripts/setup-libtorch.sh) && LIBTORCH=$LIBTORCH cargo build --release -p trainer --features libtorch; then
    cp "$CARGO_TARGET_DIR/release/trainer" "$CARGO_TARGET_DIR/release/trainer-libtorch"
    trainer=trainer-libtorch
  else
    echo "warning: no LibTorch trainer (see above): training on flex, burn's own CPU backend (slower)" >&2
  fi
fi
echo "== build (release) into $CARGO_TARGET_DIR"
cargo build --release --workspace $features
mkdir -p "$(dirname "$out")"
echo "== fit: $epochs epochs of self-supervised NT-Xent on windows around the white cells of $data -> $out"
$trainer fit --data "$data" --epochs "$epochs" --device "$device" --out "$out" --resume --export "$out/model" >"$out.fit.json"
model="$out/model.json"
echo "== embed $data"
runtime embed "$data" -o "$out/embeddings" --model "$model" --device cpu
echo "== index"
index build "$out/embeddings" --model "$model" -o "$out/cells.index"
sample=$(find "$data" -type f \( -iname '*.jpeg' -o -iname '*.jpg' -o -iname '*.png' \) | sort | sed -n 1p)
echo "== query: the other cells most similar to $sample (copies of its own original left out, one per original)"
index query "$sample" -i "$out/cells.index" -k 8 --exclude-self --distinct
echo "== held-out retrieval (whole source groups held out; kNN-200 accuracy, P@1, MAP@R)"
python3 - "$model" "$epochs" <<'PY'
import json, sys
card, epochs = json.load(open(sys.argv[1])), sys.argv[2]
m = card["metrics"]
v, base = m.get("held_out_validation"), m.get("histogram_baseline_same_split")
if not v:
    print("  nothing was held out (--val-fraction 0): see trainer cv for the estimate")
    sys.exit(0)
row = lambda name, r: print(f"  {name:<44} kNN-200 {r['knn200_acc']:.3f}  kNN-11 {r['knn11_acc']:.3f}  P@1 {r['precision_at_1']:.3f}  MAP@R {r['map_at_r']:.3f}")
row("learned (backbone)", v["backbone"])
if v.get("head"): row("learned (projection head)", v["head"])
served = m.get("served")
if served: row(f"served ({served['output']}, colour weight {served['colour_weight']:.1f})", served["report"])
if base: row("colour histogram 8x8x8 of the same windows", base)
if served and base:
    gap = served["report"]["knn200_acc"] - base["knn200_acc"]
    if gap > 0:
        print(f"  the served model beats the cell-window histogram by {gap:+.3f} kNN-200 on this split")
    else:
        print(f"  the served model does NOT beat the cell-window histogram on this split ({gap:+.3f} kNN-200):")
        print(f"  {epochs} epochs is a short demonstration; the shipped models/cellspace.onnx trains longer")
        print("  (README: Measured; docs/measured.md). One split of ~60 originals moves by ±0.05-0.08; trainer cv gives mean ± SD.")
PY
echo "== outputs: run $out (loss.png, embedding-map.png, metrics.jsonl), model $out/model.onnx, index $out/cells.index"
