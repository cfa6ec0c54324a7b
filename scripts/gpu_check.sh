#!/usr/bin/env bash
# One prepared run on a machine with an NVIDIA GPU (the lent H200, or any with CUDA >= 13.0
# drivers): checks the CUDA build against the CPU answers on every predict and model
# fixture, then times the predictors against rankseg 0.0.8's CUDA path and torch's argmax on
# the same GPU, and writes results/bench/gpu/*.md (or under $OUT). Well under 8 minutes.
#
# Prepare on any x86-64 machine (no GPU needed; the GPU machine needs no Rust or network):
#     eval "$(scripts/cuda_toolkit.sh)"
#     CARGO_TARGET_DIR=target/cuda cargo build --release --features cuda
#     mkdir -p .gpu && gzip -c target/cuda/release/rankseg > .gpu/rankseg.gz
#     python3 -m pip download --no-deps -d .gpu rankseg==0.0.8
# then, on the GPU machine, from the repository root (Python with torch and numpy):
#     scripts/gpu_check.sh
# With the device tool: ignore .gpu in .git/info/exclude and carry it.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out="${OUT:-results/bench/gpu}"
mkdir -p "$out"
python="${PYTHON:-python3}"

bin="${RANKSEG_BIN:-}"
if [ -z "$bin" ]; then
  bin="$(mktemp -d)/rankseg"
  gunzip -c .gpu/rankseg.gz > "$bin"
  chmod +x "$bin"
fi
if ! "$python" -c "import rankseg" 2>/dev/null; then
  wheel="$(ls .gpu/rankseg-*.whl 2>/dev/null | head -n 1 || true)"
  [ -n "$wheel" ] && "$python" -m pip install --quiet --no-deps "$wheel"
fi

# The cu13 libraries the binary loads (cuBLAS, NVRTC, cuRAND) from the Python install.
libs="$("$python" - <<'EOF'
import glob, os, site
dirs = set()
for base in site.getsitepackages():
    for lib in glob.glob(os.path.join(base, "nvidia", "**", "lib*.so*"), recursive=True):
        dirs.add(os.path.dirname(lib))
    dirs.update(glob.glob(os.path.join(base, "torch", "lib")))
print(":".join(sorted(dirs)))
EOF
)"
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/device.txt"
PYTHONUNBUFFERED=1 "$python" scripts/gpu_compare.py --bin "$bin" --out "$out"
