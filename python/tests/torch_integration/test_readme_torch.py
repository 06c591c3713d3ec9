"""README.md's "Use it from PyTorch" example runs as written under torchrun with 2 ranks over gloo
and prints what the README says it prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("torch", reason="SKIPPED: PyTorch is not installed")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
LIMIT_S = 180


def test_the_readme_pytorch_example_runs_on_two_ranks(tmp_path):
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text[text.index("## Use it from PyTorch"):]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    promised = re.search(r"prints `(.*?)` and\s+`(.*?)`", section, re.S)
    assert block and promised, "README.md's 'Use it from PyTorch' lost its example or its output"
    example = tmp_path / "example.py"
    example.write_text(block.group(1))
    # Each rank's stdout goes to a file of its own (--redirects 1): the ranks' prints share no pipe,
    # where their pieces could interleave.
    logs = tmp_path / "logs"
    done = subprocess.run(["timeout", str(LIMIT_S), sys.executable, "-m", "torch.distributed.run",
                           "--standalone", "--nproc-per-node=2", "--log-dir", str(logs),
                           "--redirects", "1", str(example)],
                          capture_output=True, text=True, timeout=LIMIT_S + 30,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    outputs = sorted(logs.glob("**/stdout.log"))
    printed_text = "".join(path.read_text() for path in outputs)
    assert done.returncode == 0, (printed_text + done.stdout + done.stderr)[-4000:]
    assert len(outputs) == 2, f"expected one stdout.log a rank under {logs}, found {outputs}"
    printed = sorted(line for line in printed_text.splitlines() if line.strip())
    assert printed == sorted(promised.groups()), printed_text
