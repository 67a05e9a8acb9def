#!/usr/bin/env bash
# Install the onnxruntime C library (from the PyPI wheel onnxruntime==1.31.1, nothing fetched
# from elsewhere) into .ort/lib, and print the ORT_DYLIB_PATH to use. Idempotent.
# With CELLSPACE_ORT_GPU=1 it takes onnxruntime-gpu instead (CUDA + TensorRT providers).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version=1.31.1
pkg=onnxruntime
[ "${CELLSPACE_ORT_GPU:-0}" = 1 ] && pkg=onnxruntime-gpu
lib="$root/.ort/lib"
# downloaded wheels are kept outside the checkout, so fresh clones do not fetch them again
wheels="${XDG_CACHE_HOME:-$HOME/.cache}/cellspace/wheels"
if [ ! -f "$lib/libonnxruntime.so.$version" ] || [ "$(cat "$lib/PACKAGE" 2>/dev/null)" != "$pkg" ]; then
  mkdir -p "$wheels" "$lib"
  wheel=$(ls "$wheels"/${pkg//-/_}-$version-*.whl 2>/dev/null | sed -n 1p || true)
  if [ -z "$wheel" ]; then
    python3 -m pip download -q --no-deps --only-binary=:all: -d "$wheels" "$pkg==$version" >&2
    wheel=$(ls "$wheels"/${pkg//-/_}-$version-*.whl | sed -n 1p)
  fi
  rm -rf "$lib" && mkdir -p "$lib"
  python3 - "$wheel" "$lib" <<'PY'
import sys, zipfile, os
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for n in z.namelist():
        base = os.path.basename(n)
        if n.startswith("onnxruntime/capi/") and base.startswith("libonnxruntime"):
            with z.open(n) as src, open(os.path.join(out, base), "wb") as dst:
                dst.write(src.read())
PY
  echo "$pkg" > "$lib/PACKAGE"
  ln -sf "libonnxruntime.so.$version" "$lib/libonnxruntime.so"
fi
echo "$lib/libonnxruntime.so.$version"
