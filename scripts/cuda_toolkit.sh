#!/usr/bin/env bash
# A CUDA 13.0 toolkit from PyPI's wheels, for building `--features cuda` on a machine
# without a GPU or a system CUDA install. Installs into .cuda/ (ignored by git) and prints
# the environment as `export NAME=value` lines:
#
#     eval "$(scripts/cuda_toolkit.sh)"
#     cargo build --release --features cuda
#
# CUDA 13.0 on purpose: the lent H200's driver (580) loads PTX up to ISA 9.0, which is what
# 13.0's nvcc emits; a newer toolkit's PTX would not load there.
#
# The binary links the CUDA driver (libcuda.so.1) dynamically, as candle's cudarc asks.
# No wheel ships the driver, so the link uses a stub: a shared library with the driver's
# entry points and soname, made here from the names cudarc declares, each answering
# CUDA_ERROR_NO_DEVICE (100). On a GPU machine the real driver is loaded in its place; here,
# with the stub on LD_LIBRARY_PATH, the binary runs on the CPU and `--device cuda` fails
# cleanly.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
prefix="${CUDA_TOOLKIT_PREFIX:-$root/.cuda}"
python="${PYTHON:-python3}"
wheels=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.0.2.14
  nvidia-curand==10.4.0.35
)

cu13="$prefix/site/nvidia/cu13"
if [ ! -x "$cu13/bin/nvcc" ] || [ ! -f "$prefix/.installed" ]; then
  echo "installing the CUDA 13.0 wheels into $prefix (once)" >&2
  "$python" -m pip install --quiet --no-deps --target "$prefix/site" "${wheels[@]}" >&2
  touch "$prefix/.installed"
fi
lib="$cu13/lib"
[ -d "$lib" ] || { echo "error: $lib is missing after the install" >&2; exit 1; }

# Unversioned names for the linker (-lcublas, ...), next to the versioned ones the wheels ship.
link="$prefix/link"
mkdir -p "$link"
for name in cudart nvrtc cublas cublasLt curand; do
  versioned="$(ls "$lib"/lib$name.so.* 2>/dev/null | sort | head -n 1 || true)"
  [ -n "$versioned" ] || { echo "error: no lib$name.so.* in $lib" >&2; exit 1; }
  ln -sf "$versioned" "$link/lib$name.so"
done

# The driver stub, from every cu* function cudarc's driver bindings declare `extern "C"`.
if [ ! -f "$link/libcuda.so" ]; then
  cudarc="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-* 2>/dev/null | sort -V | tail -n 1 || true)"
  [ -n "$cudarc" ] || { echo "error: cudarc's sources are not in the cargo registry: run 'cargo fetch' first" >&2; exit 1; }
  grep -rhoE '^ +fn cu[A-Za-z0-9_]+\(' "$cudarc/src/driver/sys" | sed -E 's/^ +fn //; s/\($//' | sort -u \
    | awk '{ printf "int %s(void) { return 100; }\n", $1 }' > "$link/cuda_stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$link/libcuda.so" "$link/cuda_stub.c"
  ln -sf libcuda.so "$link/libcuda.so.1"
fi

cat <<EOF
export CUDA_HOME="$cu13"
export CUDA_PATH="$cu13"
export PATH="$cu13/bin:\$PATH"
export CUDA_COMPUTE_CAP=90
export CUDARC_CUDA_VERSION=13000
export LIBRARY_PATH="$link:$lib\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
export NVCC_CCBIN="\${NVCC_CCBIN:-$(command -v g++ || command -v c++)}"
EOF
