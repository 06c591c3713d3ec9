#!/usr/bin/env bash
# Installs what tpembed builds and tests with, from Debian's packages, when it is missing.
# Sourced by run.sh and test.sh; needs root (or sudo) only when something is missing.
set -euo pipefail
packages=(build-essential cmake pkg-config openmpi-bin libopenmpi-dev libgtest-dev libbenchmark-dev
          libcli11-dev nlohmann-json3-dev clang libclang-rt-dev)
missing=()
for package in "${packages[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "tpembed: installing ${missing[*]}"
  sudo_cmd=()
  [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The Python module's build backend and tests (PyPI, into the python3 on PATH); mpi4py is built
# against Debian's Open MPI (libopenmpi-dev above), not taken as a wheel with its own MPI.
python3 -c "import scikit_build_core, nanobind, numpy, pytest" 2>/dev/null \
  || python3 -m pip install --quiet --root-user-action=ignore scikit-build-core nanobind numpy pytest
python3 -c "import mpi4py" 2>/dev/null \
  || python3 -m pip install --quiet --root-user-action=ignore --no-binary=mpi4py mpi4py
