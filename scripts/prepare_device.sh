#!/usr/bin/env bash
# Fills .device/ (git-ignored; carried to the GPU machine with the device tool's `carry`) with what
# that machine lacks and scripts/device_check.sh uses: GoogleTest's sources, and the header-only
# nlohmann-json and CLI11 with their CMake package files, under .device/prefix. They come from this
# machine's Debian packages (googletest, nlohmann-json3-dev, libcli11-dev), installed with apt-get
# when missing. The python step's nanobind wheel (.device/wheels) and mpi4py's source package
# (.device/sdists: it is built there against that machine's MPI) come from PyPI, once. The GPU pass
# is then two commands (README "Two commands"):
#   scripts/prepare_device.sh             here
#   scripts/device_check.sh               on the GPU machine, from the repository root, .device carried
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TPEMBED_DEPS_FUNCTIONS_ONLY=1 source "$root/scripts/deps.sh"
tpembed_apt_install googletest nlohmann-json3-dev libcli11-dev
device=$root/.device
mkdir -p "$device/prefix/include" "$device/prefix/share/cmake" "$device/wheels"
rm -rf "$device/googletest" "$device/prefix/include/nlohmann" "$device/prefix/include/CLI" \
       "$device/prefix/share/cmake/nlohmann_json" "$device/prefix/share/cmake/CLI11"
cp -r /usr/src/googletest "$device/googletest"
cp -r /usr/include/nlohmann /usr/include/CLI "$device/prefix/include/"
cp -r /usr/share/cmake/nlohmann_json /usr/share/cmake/CLI11 "$device/prefix/share/cmake/"
# The GPU machine reaches no network: what its python step installs travels from here.
mkdir -p "$device/sdists"
ls "$device"/wheels/nanobind-*.whl >/dev/null 2>&1 \
  || python3 -m pip download --quiet --no-deps --only-binary :all: -d "$device/wheels" nanobind
ls "$device"/sdists/mpi4py-*.tar.gz >/dev/null 2>&1 \
  || python3 -m pip download --quiet --no-deps --no-binary :all: -d "$device/sdists" mpi4py
du -sh "$device"
