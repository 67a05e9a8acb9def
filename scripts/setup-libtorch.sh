#!/usr/bin/env bash
# Prints the path of a CPU libtorch 2.9.0 (the version tch 0.22 / burn-tch 0.22 is built for),
# assembling it on first use from PyPI wheels: the `torch` wheel's headers and CPU libraries,
# plus the two small CUDA runtime libraries its CPU library links (cudart, cupti; no GPU is
# needed to load them). Used by the trainer's `libtorch` feature:
#
#   LIBTORCH=$(scripts/setup-libtorch.sh) cargo build --release -p trainer --features libtorch
#
# Download ~0.9 GB once, ~0.6 GB on disk. The CUDA build of the trainer (`--features
# libtorch` with `LIBTORCH_USE_PYTORCH=1` and a full `pip install torch==2.9.0`) needs no
# assembly; see scripts/gpu-check.sh.
set -euo pipefail
version=2.9.0
dest="${CELLSPACE_LIBTORCH:-$HOME/.cache/cellspace/libtorch-$version}"
if [ -f "$dest/.complete" ]; then
  echo "$dest"
  exit 0
fi
command -v python3 >/dev/null || { echo "error: python3 is required to fetch libtorch" >&2; exit 1; }
command -v cc >/dev/null || { echo "error: a C compiler (cc) is required to assemble libtorch" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/libtorch.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "fetching libtorch $version (PyPI wheels, ~0.9 GB) into $dest" >&2
py=$(python3 -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
pip=(python3 -m pip)
if ! python3 -m pip --version >/dev/null 2>&1; then # a distribution python without pip
  python3 -m venv "$work/venv" && pip=("$work/venv/bin/python" -m pip)
fi
"${pip[@]}" download -q --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --python-version "$py" -d "$work" \
  "torch==$version" nvidia-cuda-runtime-cu12==12.8.90 nvidia-cuda-cupti-cu12==12.8.90 >&2
mkdir -p "$work/x"
(cd "$work/x" && for w in "$work"/*.whl; do unzip -q -o "$w" 'torch/lib/*' 'torch/include/*' 'nvidia/*/lib/*' 2>/dev/null || true; done)
partial="$dest.partial"
rm -rf "$partial"
mkdir -p "$partial/lib"
mv "$work/x/torch/include" "$partial/include"
for f in libtorch_cpu.so libc10.so libgomp.so.1; do mv "$work/x/torch/lib/$f" "$partial/lib/"; done
cp -P "$work"/x/nvidia/cuda_runtime/lib/libcudart.so.12* "$work"/x/nvidia/cuda_cupti/lib/libcupti.so.12* "$partial/lib/"
# The wheel's libtorch.so is a link-time shim that also pulls the CUDA library (and with it
# cuDNN, cuBLAS, NCCL: gigabytes); the CPU shim links libtorch_cpu alone.
echo 'void cellspace_libtorch_cpu_shim(void) {}' > "$work/shim.c"
cc -shared -fPIC -o "$partial/lib/libtorch.so" "$work/shim.c" -Wl,--no-as-needed -L"$partial/lib" -ltorch_cpu -Wl,-rpath,'$ORIGIN'
# libtorch_cpu finds its neighbours (c10, gomp, cudart, cupti) through its own RUNPATH
echo "$version" > "$partial/.complete"
rm -rf "$dest"
mv "$partial" "$dest"
echo "$dest"
