"""What the ranks of a launched job (mpirun or torchrun) wrote: each rank's <folder>/rank<R>.jsonl,
one line a step ({"step", "ok", "error", "types", "message"}), read once the job has ended."""

from __future__ import annotations

import json
import os
import subprocess


def rank_results(done: subprocess.CompletedProcess, scenario: str, limit_s: int, folder: str,
                 ranks: int) -> dict:
    """{rank: {step: result}} for every rank of a job that ended normally within `limit_s`
    (launched under coreutils' timeout, whose exit code 124 says it hung)."""
    output = (done.stdout + done.stderr)[-6000:]
    assert done.returncode != 124, f"{scenario} hung: killed after {limit_s} s\n{output}"
    assert done.returncode == 0, f"{scenario} exited {done.returncode}\n{output}"
    results = {}
    for rank in range(ranks):
        path = os.path.join(folder, f"rank{rank}.jsonl")
        assert os.path.exists(path), f"rank {rank} wrote no results\n{output}"
        with open(path) as lines:
            results[rank] = {line["step"]: line for line in map(json.loads, lines)}
    return results
