#!/usr/bin/env bash
# Embed a folder (or a list of image paths) on a Ray cluster with the standalone runtime, then
# merge: OUT/merged is the same, row for row, as one `runtime embed DIR`.
#
#   scripts/cluster-embed.sh DIR_OR_LIST --shards N [-o OUT] [--workers W] [--address ADDR]
#
# Without --address it starts a local Ray cluster of W workers (default 2) on this machine;
# with --address (ray://head:10001, or `auto` on a node of a `ray start` cluster) it uses that
# cluster. Ray comes from PyPI into runs/ray-venv (or $CELLSPACE_RAY_PYTHON's environment).
# The bundle shipped to the workers: the runtime binary, libonnxruntime, the model and card.
set -euo pipefail
source "$(dirname "$0")/env.sh"
[ $# -ge 1 ] || { sed -n 2,10p "$0" >&2; exit 64; }
input=$1; shift
out="${input%/}.cluster"
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    -o|--out) out="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
python="${CELLSPACE_RAY_PYTHON:-$root/runs/ray-venv/bin/python}"
if ! "$python" -c "import ray" 2>/dev/null; then
  echo "== installing Ray into runs/ray-venv (PyPI)" >&2
  python3 -m venv "$root/runs/ray-venv" && "$root/runs/ray-venv/bin/pip" install -q "ray==2.60.0"
  python="$root/runs/ray-venv/bin/python"
fi
(cd "$root" && { cargo build --release -p runtime >/dev/null 2>&1 || cargo build --release -p runtime; })
model="${CELLSPACE_MODEL:-$root/models/cellspace.json}"
bundle="$out/bundle"
rm -rf "$bundle" && mkdir -p "$bundle/lib" "$bundle/model"
cp "$CARGO_TARGET_DIR/release/runtime" "$bundle/"
cp "$(dirname "$ORT_DYLIB_PATH")"/libonnxruntime*.so* "$bundle/lib/"
cp "$model" "$bundle/model/cellspace.json"
cp "$(dirname "$model")/$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["onnx_file"])' "$model" | xargs basename)" "$bundle/model/"
echo "bundle for the workers: $(du -sh "$bundle" | cut -f1) in $bundle" >&2
exec "$python" "$root/scripts/cluster_embed.py" "$input" --bundle "$bundle" -o "$out" "${args[@]}"
