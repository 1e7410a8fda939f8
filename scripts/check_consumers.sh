#!/usr/bin/env bash
# Builds and runs the consumer project (tests/consumer) against installed ssm packages, the ways users
# take it: from the FFTW build (build/release) with every component, with core alone (Mamba layers: no
# FFT, no JSON, no OpenMP) and without OpenMP; and from the Eigen-FFT build (build/asan, configured with
# SSM_FFT_BACKEND=Eigen) with every component, checking that binary links no FFTW (no GPL code).
# Run after `cmake --preset release` and `cmake --preset asan` (the packages are header-only: nothing
# needs to be built for the install).
set -euo pipefail
cd "$(dirname "$0")/.."

install_package() {  # build tree, prefix
  rm -rf "$2"
  cmake --install "$1" --prefix "$2" >/dev/null
}

consumer() {  # prefix, mode, name
  local dir="build/consumer-$3"
  rm -rf "$dir"
  echo "--- consumer $3: CONSUMER_MODE=$2 against $1"
  cmake -S tests/consumer -B "$dir" -G Ninja -DCMAKE_PREFIX_PATH="$PWD/$1" -DCONSUMER_MODE="$2" | grep "consumer:"
  cmake --build "$dir" >/dev/null
  "./$dir/consumer"
}

install_package build/release build/install
consumer build/install all fftw-all
consumer build/install core fftw-core
consumer build/install no_openmp fftw-no-openmp

install_package build/asan build/install-eigen
consumer build/install-eigen all eigen-all
if ldd build/consumer-eigen-all/consumer | grep -i fftw; then
  echo "check_consumers: the Eigen-backend consumer links FFTW" >&2
  exit 1
fi
echo "check_consumers: the Eigen-backend consumer links no FFTW"
