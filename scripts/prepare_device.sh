#!/usr/bin/env bash
# Fills .device/ (git-ignored; carried to the GPU machine with the device tool's `carry`) with what
# that machine lacks and scripts/device_check.sh uses: GoogleTest's sources, and the header-only
# nlohmann-json and CLI11 with their CMake package files, under .device/prefix. Run it once here
# (after scripts/deps.sh installed them) before the first device pass of a session.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
device=$root/.device
mkdir -p "$device/prefix/include" "$device/prefix/share/cmake" "$device/wheels"
rm -rf "$device/googletest"
cp -r /usr/src/googletest "$device/googletest"
cp -r /usr/include/nlohmann /usr/include/CLI "$device/prefix/include/"
cp -r /usr/share/cmake/nlohmann_json /usr/share/cmake/CLI11 "$device/prefix/share/cmake/"
du -sh "$device"
