"""The README's Python example runs as written: alone, and as 2 MPI ranks (its tensor-parallel part).

The first ```python block of README.md's "Use it from Python" section is run in a fresh
interpreter; its strict-mode lines print the first bad id and its position, checked here.
"""
import os
import re
import subprocess
import sys

import pytest
from mpi_jobs import job_environment, mpi_ready

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIMIT_S = 120


def readme_example(tmp_path):
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text[text.index("## Use it from Python"):]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block, "README.md's 'Use it from Python' has no python block"
    path = tmp_path / "readme_example.py"
    path.write_text(block.group(1))
    return str(path)


@pytest.mark.skipif(bool(mpi_ready()), reason=f"SKIPPED: {mpi_ready()}")
def test_the_readme_example_runs_alone(tmp_path):
    done = subprocess.run([sys.executable, readme_example(tmp_path)], capture_output=True, text=True,
                          timeout=LIMIT_S)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == ["-1", "2"], done.stdout


@pytest.mark.skipif(bool(mpi_ready()), reason=f"SKIPPED: {mpi_ready()}")
def test_the_readme_example_runs_on_two_ranks(tmp_path):
    done = subprocess.run(["timeout", str(LIMIT_S), "mpirun", "--oversubscribe", "--allow-run-as-root", "-np", "2",
                           sys.executable, readme_example(tmp_path)], capture_output=True, text=True, env=job_environment(),
                          timeout=LIMIT_S + 10)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == ["-1", "2", "-1", "2"], done.stdout
