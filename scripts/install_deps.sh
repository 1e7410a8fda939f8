#!/usr/bin/env bash
# Installs, from Debian's packages, whatever ssm needs to build, test, benchmark and fuzz that is
# not already there. Safe to run again: it installs only what is missing.
set -euo pipefail

packages=(g++ cmake ninja-build pkg-config python3 libeigen3-dev libfftw3-dev nlohmann-json3-dev
          libgtest-dev libbenchmark-dev)
if [[ "${SSM_WITH_FUZZ:-0}" == "1" ]]; then
  packages+=(clang libclang-rt-dev)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install_deps: everything is installed"
  exit 0
fi

echo "install_deps: installing ${missing[*]}"
sudo_cmd=()
if [[ "$(id -u)" != "0" ]]; then sudo_cmd=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
