"""Helpers shared by the benchmarks: machine facts, min/median/max, and writing JSON + Markdown."""

from __future__ import annotations

import datetime
import importlib.metadata
import io
import json
import os
import pathlib
import platform
import statistics
import subprocess
import tarfile

ROOT = pathlib.Path(__file__).resolve().parents[1]


def machine() -> dict:
    """Where and with what a benchmark ran: the machine, the code (as a trial row names it) and the
    packages, so that a results file says which commit and versions its numbers belong to."""
    import jax

    from tasks.executables import cpu_model, package_versions
    from tasks.trainer import code_version

    versions = dict(package_versions())
    try:  # the `bench` extra's contender; read from its metadata, not imported
        versions["torch"] = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        versions["torch"] = None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),  # family, model and vector width: "AMD EPYC" alone names two machines
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),  # fewer under `taskset`
        "python": platform.python_version(),
        "jax": jax.__version__,
        "device": jax.devices()[0].device_kind,
        "code_version": code_version(),
        "versions": versions,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def summary(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values),
            "n": len(values)}  # fmt: skip


def write(results: dict, out: str, table: str) -> None:
    """Writes `out`.json and `out`.md (the Markdown table preceded by the machine line)."""
    path = pathlib.Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    m = results["machine"]
    pinned = f", pinned to {m['cores_usable']}" if m.get("cores_usable", m["cores"]) < m["cores"] else ""
    code = f", code {m['code_version']}" if "code_version" in m else ""  # (files before session 32)
    header = (f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores{pinned}), {m['device']}, "
              f"jax {m['jax']}, Python {m['python']}{code}.\n\n")  # fmt: skip
    path.with_suffix(".md").write_text(header + table + "\n")
    print(header + table)


def extract_revision(revision: str, paths: tuple[str, ...], into: pathlib.Path,
                     exclude: tuple[str, ...] = ()) -> str:  # fmt: skip
    """Extracts `paths` as of a git revision into `into` (`git archive`); returns the full commit."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", revision], check=True,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    excluded = [f":(exclude){path}" for path in exclude]
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, *paths, *excluded],
                             check=True, capture_output=True).stdout  # fmt: skip
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4 on
            tar.extractall(into, filter="data")
        else:  # before it, extractall has no filter: allow plain files and folders inside `into`
            members = tar.getmembers()
            for member in members:
                path = pathlib.PurePosixPath(member.name)
                plain = member.isfile() or member.isdir()
                if not plain or path.is_absolute() or ".." in path.parts:
                    raise ValueError(f"git archive of {revision}: unexpected {member.name!r}")
            tar.extractall(into, members=members)
    return commit
