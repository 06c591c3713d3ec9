"""The README's Python examples run as written, and print what the README says they print.

- "Use it from Python": its first ```python block, in a fresh interpreter alone and as 2 MPI ranks
  (its tensor-parallel part); its strict-mode lines print the first bad id and its position, and a
  check appended here compares each rank's tensor-parallel output with the unsharded lookup of the
  same (seeded) table, bit for bit.
- "Gradient (backward)": its ```python block; it prints the gradient's first column and the
  counts its comments state.
(The shell example of "The tpembed command" runs in tests/cli/cli_readme.sh, the C++ ones in
tests/readme; the PyTorch section's example is run by python/tests/torch_integration.)
"""
import os
import re
import subprocess
import sys

import pytest
from mpi_jobs import job_environment, mpi_ready

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIMIT_S = 120

# Appended to the "Use it from Python" example: `out` is then the tensor-parallel output.
TP_CHECK = """
np.testing.assert_array_equal(out, tpembed.embedding(ids, table))
print("tp", world.size, "matches the unsharded lookup")
"""


def readme_block(tmp_path, section, suffix=""):
    """The first ```python block of README.md's `section`, written to a file (with `suffix`)."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    start = text.index(section)
    end = text.find("\n## ", start + len(section))
    block = re.search(r"```python\n(.*?)```", text[start:end if end >= 0 else None], re.S)
    assert block, f"README.md's '{section}' has no python block"
    path = tmp_path / "readme_example.py"
    path.write_text(block.group(1) + suffix)
    return str(path)


def python_example(tmp_path):
    return readme_block(tmp_path, "## Use it from Python", TP_CHECK)


@pytest.mark.skipif(bool(mpi_ready()), reason=f"SKIPPED: {mpi_ready()}")
def test_the_readme_example_runs_alone(tmp_path):
    done = subprocess.run([sys.executable, python_example(tmp_path)], capture_output=True,
                          text=True, timeout=LIMIT_S)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == ["-1 2", "tp 1 matches the unsharded lookup"], done.stdout


@pytest.mark.skipif(bool(mpi_ready()), reason=f"SKIPPED: {mpi_ready()}")
def test_the_readme_example_runs_on_two_ranks(tmp_path):
    # Each rank's stdout in its own file (Open MPI's --output-filename): on the merged stdout the
    # ranks' lines can interleave mid-line.
    outputs = tmp_path / "output"
    done = subprocess.run(["timeout", str(LIMIT_S), "mpirun", "--oversubscribe",
                           "--allow-run-as-root", "-np", "2", "--output-filename", str(outputs),
                           sys.executable, python_example(tmp_path)],
                          capture_output=True, text=True, env=job_environment(),
                          timeout=LIMIT_S + 10)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = sorted(line for path in sorted(outputs.glob("*/rank.*/stdout"))
                   for line in path.read_text().splitlines())
    assert lines == ["-1 2", "-1 2"] + ["tp 2 matches the unsharded lookup"] * 2, done.stdout


def test_the_gradient_example_prints_what_its_comments_say(tmp_path):
    done = subprocess.run([sys.executable, readme_block(tmp_path, "## Gradient (backward)")],
                          capture_output=True, text=True, timeout=LIMIT_S)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "[2. 2. 0. 2. 0.]", done.stdout
    assert lines[1] == "{'accumulated': 4, 'unowned': 0, 'out_of_range': 2, 'ignored': 0}", \
        done.stdout
