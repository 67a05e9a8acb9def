#!/usr/bin/env bash
# The GPU paths in one command, on a machine with an NVIDIA GPU and its driver:
#   1. installs what they need from the registries: onnxruntime-gpu 1.31.1 with its CUDA and
#      cuDNN libraries (PyPI), the TensorRT libraries of the major version its TensorRT
#      provider was built against (PyPI), torch 2.9.0 with CUDA (PyPI: the libtorch of the
#      trainer's LibTorch backend), and Debian's libvulkan1 (burn's Vulkan backend);
#   2. builds with the GPU features (trainer/libtorch against that CUDA libtorch, trainer/gpu,
#      runtime/cuda, runtime/tensorrt);
#   3. runs: `trainer bench` on LibTorch CUDA and on burn Vulkan (a few steps each), a short
#      `trainer fit --device cuda` with export,
#      `runtime bench` on CPU, CUDA, TensorRT fp32 and TensorRT fp16, and the parity of GPU
#      embeddings against CPU embeddings of the same images (max |difference|);
#   4. prints one table (images/s per path, parity, what failed and why) and exits non-zero on
#      any failure. Budget: under 10 minutes once the crates are compiled.
# On a machine with no NVIDIA GPU it stops at once, saying so.
#
#   scripts/gpu-check.sh [DATA_DIR]      (default ../shared/data/blood-cells/TRAIN)
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data="${1:-$root/../shared/data/blood-cells/TRAIN}"

# 0. a GPU, or stop now
if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu-check: no NVIDIA GPU here: nvidia-smi is not installed (no NVIDIA driver). Nothing was installed or run; use a machine with an NVIDIA GPU and its driver." >&2
  exit 1
fi
if ! gpus=$(nvidia-smi -L 2>&1) || [ -z "$gpus" ]; then
  echo "gpu-check: no NVIDIA GPU here: nvidia-smi lists none ($gpus). Nothing was installed or run." >&2
  exit 1
fi
[ -d "$data" ] || { echo "gpu-check: $data not found (pass the image folder)" >&2; exit 1; }
echo "gpu-check on: $gpus"
start=$(date +%s)
out="$root/runs/gpu-check"
mkdir -p "$out"
declare -a rows=()
failed=0
row() { rows+=("$(printf '%-34s %-14s %-12s %s' "$1" "$2" "$3" "$4")"); }
fail() { failed=1; row "$1" "-" "-" "FAILED: $2"; }

# 1. what the GPU paths need
venv="$out/venv"
echo "== installing onnxruntime-gpu with CUDA/cuDNN, TensorRT libraries (PyPI), libvulkan1 (Debian)"
if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv"; fi
"$venv/bin/pip" install -q "onnxruntime-gpu[cuda,cudnn]==1.31.1" || { echo "gpu-check: pip could not install onnxruntime-gpu" >&2; exit 1; }
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
capi="$site/onnxruntime/capi"
trt_provider="$capi/libonnxruntime_providers_tensorrt.so"
cuda_provider="$capi/libonnxruntime_providers_cuda.so"
needed() { readelf -d "$1" 2>/dev/null | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p'; }
trt_major=$(needed "$trt_provider" | sed -n 's/^libnvinfer\.so\.\([0-9]*\).*/\1/p' | head -1)
cuda_major=$(needed "$cuda_provider" | sed -n 's/^libcudart\.so\.\([0-9]*\).*/\1/p' | head -1)
echo "onnxruntime-gpu 1.31.1: CUDA ${cuda_major:-?}, TensorRT ${trt_major:-?} (from its providers' NEEDED entries)"
if [ -n "$trt_major" ] && [ -n "$cuda_major" ]; then
  "$venv/bin/pip" install -q "tensorrt-cu${cuda_major}-libs>=${trt_major},<$((trt_major + 1))" \
    || echo "gpu-check: TensorRT ${trt_major} libraries for CUDA ${cuda_major} could not be installed; the TensorRT rows will fail" >&2
fi
if ! ldconfig -p 2>/dev/null | grep -q libvulkan.so.1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libvulkan1 >/dev/null) \
      || echo "gpu-check: libvulkan1 could not be installed" >&2
  else
    echo "gpu-check: libvulkan1 missing and not root: burn's Vulkan backend will not load" >&2
  fi
fi
# the trainer's libtorch: torch 2.9.0 (the version tch 0.22 is built for) with its CUDA wheels,
# in a venv of its own (its CUDA 12 libraries stay apart from onnxruntime-gpu's CUDA 13)
tvenv="$out/venv-torch"
echo "== installing torch 2.9.0 with CUDA (PyPI) for the LibTorch trainer"
if [ ! -x "$tvenv/bin/python" ]; then python3 -m venv "$tvenv"; fi
torch_ok=1
"$tvenv/bin/pip" install -q "torch==2.9.0" || { torch_ok=0; echo "gpu-check: torch 2.9.0 could not be installed; the LibTorch rows will fail" >&2; }
# every library folder the wheels brought
libdirs=$(find "$site/nvidia" "$site/tensorrt_libs" "$capi" -name 'lib*.so*' -printf '%h\n' 2>/dev/null | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH="${libdirs}${LD_LIBRARY_PATH:-}"
export ORT_DYLIB_PATH="$capi/$(cd "$capi" && ls libonnxruntime.so.* | head -1)"

# 2. build with the GPU features
echo "== building with the GPU features"
export CARGO_TARGET_DIR="${CELLSPACE_TARGET_DIR:-${CARGO_TARGET_DIR:-$HOME/.cache/cellspace/target}}"
cd "$root"
features=trainer/gpu,runtime/cuda,runtime/tensorrt
# torch-sys finds the CUDA libtorch through the venv's python (LIBTORCH_USE_PYTORCH)
[ "$torch_ok" = 1 ] && features="$features,trainer/libtorch"
VIRTUAL_ENV="$tvenv" PATH="$tvenv/bin:$PATH" LIBTORCH_USE_PYTORCH=1 \
  cargo build --release --workspace --bins --features "$features" \
  || { echo "gpu-check: the build with GPU features ($features) failed" >&2; exit 1; }
bin="$CARGO_TARGET_DIR/release"

# 3. the checks
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$3" 2>/dev/null; }
vulkan_note="burn's Vulkan backend found no GPU: a compute-only container has no Vulkan ICD (start it with NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics, or train on the CPU: docs/training.md, GPU)"
echo "== trainer bench --device libtorch-cuda (LibTorch on CUDA)"
if timeout 200 "$bin/trainer" bench --data "$data" --device libtorch-cuda --steps 5 --limit 1024 --report "$out/trainer-bench-libtorch.json" 2> "$out/trainer-bench-libtorch.log"; then
  row "training, LibTorch CUDA (batch 128)" "$(json x 'round(d["train_compute_images_per_s"],1)' "$out/trainer-bench-libtorch.json")" "-" "ok (compute only; $(json x 'round(d["train_images_per_s"])' "$out/trainer-bench-libtorch.json") with augmentation)"
else
  fail "training, LibTorch CUDA" "$(tail -1 "$out/trainer-bench-libtorch.log")"
fi
echo "== trainer bench --device vulkan (burn Vulkan)"
if timeout 200 "$bin/trainer" bench --data "$data" --device vulkan --steps 5 --limit 1024 --report "$out/trainer-bench.json" 2> "$out/trainer-bench.log"; then
  row "training, burn Vulkan (batch 128)" "$(json x 'round(d["train_compute_images_per_s"],1)' "$out/trainer-bench.json")" "-" "ok (compute only)"
else
  if grep -qiE "vulkan|adapter|no suitable|ICD" "$out/trainer-bench.log"; then fail "training, burn Vulkan" "$vulkan_note"
  else fail "training, burn Vulkan" "$(tail -1 "$out/trainer-bench.log")"; fi
fi
echo "== short fit with export on the GPU"
if timeout 200 "$bin/trainer" fit --data "$data" --device cuda --epochs 1 --limit 1024 -o "$out/fit" --export "$out/model" > "$out/fit.json" 2> "$out/fit.log"; then
  row "fit 1 epoch (1,024 images) + export" "-" "-" "ok: $out/model.onnx"
else
  fail "fit + export" "$(tail -1 "$out/fit.log")"
fi
model="$root/models/cellspace.json"
subset="$out/parity-images"
rm -rf "$subset" && mkdir -p "$subset"
find "$data" -type f -name '*.jpeg' | sort | head -256 | while read -r f; do
  d="$subset/$(basename "$(dirname "$f")")"; mkdir -p "$d"; ln -sf "$f" "$d/"; done
"$bin/runtime" embed "$subset" -o "$out/emb-cpu" --model "$model" --device cpu >/dev/null 2>&1
for path in "cpu::CPU" "cuda::CUDA" "tensorrt::TensorRT fp32" "tensorrt --fp16::TensorRT fp16"; do
  args=${path%%::*}; name=${path##*::}
  echo "== runtime bench: $name"
  tag=$(echo "$name" | tr ' A-Z' '-a-z')
  # shellcheck disable=SC2086
  if timeout 300 "$bin/runtime" bench "$data" --model "$model" --device $args --limit 2000 --batch-sizes 32,256 -o "$out/rt-$tag.json" 2> "$out/rt-$tag.log"; then
    speed=$(json x '" / ".join(str(round(r["end_to_end_images_per_s"])) for r in d["rows"])' "$out/rt-$tag.json")
    parity="-"
    if [ "$args" != cpu ]; then
      # shellcheck disable=SC2086
      "$bin/runtime" embed "$subset" -o "$out/emb-$tag" --model "$model" --device $args >/dev/null 2>&1
      # fp32 paths must agree with the CPU to 1e-3, fp16 to 3e-2 (unit vectors)
      limit=1e-3; [[ "$args" == *fp16* ]] && limit=3e-2
      parity=$(python3 - "$out/emb-cpu/embeddings.npy" "$out/emb-$tag/embeddings.npy" "$limit" <<'PY' 2>/dev/null
import struct, sys
def load(p):
    b = open(p, "rb").read()
    n = int.from_bytes(b[8:10], "little")
    return struct.unpack(f"<{(len(b) - 10 - n) // 4}f", b[10 + n:])
a, g = load(sys.argv[1]), load(sys.argv[2])
if len(a) != len(g) or not a:
    print("mismatch")
else:
    d = max(abs(x - y) for x, y in zip(a, g))
    print(f"{d:.1e}" + ("" if d <= float(sys.argv[3]) else " OVER"))
PY
)
    fi
    if [ -z "$parity" ] || [[ "$parity" == *OVER* ]] || [ "$parity" = mismatch ]; then
      failed=1
      row "runtime, $name" "$speed" "${parity:-?}" "FAILED: GPU embeddings differ from the CPU's (or were not written)"
    else
      row "runtime, $name" "$speed" "$parity" "ok (end to end, batch 32 / 256)"
    fi
  else
    fail "runtime, $name" "$(tail -1 "$out/rt-$tag.log")"
  fi
done

# 4. one table
echo
echo "gpu-check: $(date -u +%Y-%m-%dT%H:%MZ), $gpus, $(( $(date +%s) - start )) s"
printf '%-34s %-14s %-12s %s\n' "path" "images/s" "max |diff|" "status"
for r in "${rows[@]}"; do echo "$r"; done
exit "$failed"
