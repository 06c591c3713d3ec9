"""Launching real mpirun jobs from a pytest process: whether it can, and the environment it needs."""

from __future__ import annotations

import os
import shutil

import tpembed


def mpi_ready() -> str:
    """Why multi-rank jobs cannot run here ('' when they can)."""
    if not tpembed.mpi_available():
        return "tpembed was built without MPI"
    if shutil.which("mpirun") is None:
        return "mpirun is not on PATH"
    if shutil.which("timeout") is None:
        return "coreutils' timeout is not on PATH"
    try:
        import mpi4py  # noqa: F401  (imported only to see that it is there: no MPI_Init here)
    except ImportError:
        return "mpi4py is not installed (python3 -m pip install --no-binary=mpi4py mpi4py)"
    return ""


def job_environment(*python_paths: str) -> dict:
    """This process's environment for a child mpirun, with `python_paths` put first on PYTHONPATH.

    A pytest process that imported mpi4py is an MPI singleton: its launcher variables must not make
    the child mpirun think it runs inside a job. The user's own Open MPI settings stay
    (OMPI_MCA_plm=isolated on a machine without ssh, OMPI_ALLOW_RUN_AS_ROOT, btl choices).
    """
    launcher = ("OMPI_COMM_WORLD_", "OMPI_UNIVERSE_", "OMPI_FIRST_RANKS", "OMPI_APP_CTX", "OMPI_NUM_APP_CTX",
                "OMPI_FILE_LOCATION", "OMPI_ARGV", "OMPI_COMMAND", "OMPI_MCA_orte_", "OMPI_MCA_ess",
                "OMPI_MCA_pmix", "OMPI_MCA_initial_wdir", "OMPI_MCA_mpi_oversubscribe", "PMIX_", "PRTE_", "OPAL_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(launcher)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [*python_paths, env.get("PYTHONPATH")]))
    return env
