# Sourced by the scripts: onnxruntime and the shared build directory.
# The build directory lives outside the checkout so that fresh clones on one machine (CI runs
# right after a session, in another folder) reuse compiled dependencies; set
# CELLSPACE_TARGET_DIR to choose another place.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR="${CELLSPACE_TARGET_DIR:-${CARGO_TARGET_DIR:-$HOME/.cache/cellspace/target}}"
ORT_DYLIB_PATH="$("$root/scripts/setup-ort.sh")"
export ORT_DYLIB_PATH
export PATH="$CARGO_TARGET_DIR/release:$PATH"
for tool in cargo python3; do
  command -v "$tool" >/dev/null || { echo "error: $tool is required (Rust from rustup.rs, Python 3 from your distribution)" >&2; exit 1; }
done
