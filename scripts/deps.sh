#!/usr/bin/env bash
# Installs what tpembed builds and tests with, from Debian's packages, when it is missing.
# Sourced by run.sh and test.sh; needs root (or sudo) only when something is missing.
# With TPEMBED_DEPS_FUNCTIONS_ONLY=1 it only defines tpembed_apt_install (prepare_device.sh).
set -euo pipefail

# tpembed_apt_install PACKAGE...: installs, with apt-get, those of the Debian packages not installed.
tpembed_apt_install() {
  local package missing=() sudo_cmd=()
  for package in "$@"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  ((${#missing[@]})) || return 0
  echo "tpembed: installing ${missing[*]}"
  [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
}
[[ ${TPEMBED_DEPS_FUNCTIONS_ONLY:-} == 1 ]] && return 0

tpembed_apt_install build-essential cmake pkg-config openmpi-bin libopenmpi-dev libgtest-dev libbenchmark-dev \
                    libcli11-dev nlohmann-json3-dev clang libclang-rt-dev
# The Python module's build backend and tests (PyPI, into the python3 on PATH); mpi4py is built
# against Debian's Open MPI (libopenmpi-dev above), not taken as a wheel with its own MPI.
python3 -c "import scikit_build_core, nanobind, numpy, pytest" 2>/dev/null \
  || python3 -m pip install --quiet --root-user-action=ignore scikit-build-core nanobind numpy pytest
python3 -c "import mpi4py" 2>/dev/null \
  || python3 -m pip install --quiet --root-user-action=ignore --no-binary=mpi4py mpi4py
# tpembed_torch_install: what tpembed.torch's tests (python/tests/torch_integration) need — PyTorch,
# pinned, from PyPI (its Linux wheel brings CUDA's libraries: about 5 GB, 90 s on the CI machine,
# so it is installed once per machine, and skipped where a torch is installed: the GPU machine has
# its own) and transformers for the tiny-Llama drop-in test. Called by test.sh (the demo needs
# neither).
tpembed_torch_install() {
  python3 -c "import torch" 2>/dev/null \
    || python3 -m pip install --quiet --root-user-action=ignore "torch==2.15.0"
  python3 -c "import transformers" 2>/dev/null \
    || python3 -m pip install --quiet --root-user-action=ignore "transformers==5.24.0"
}
