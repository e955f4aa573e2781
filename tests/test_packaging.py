"""What an installed cellsearch holds: the package built by setuptools as pip builds a wheel, then
imported from a directory inside another git repository (a project's .venv), not from this one."""

import functools
import hashlib
import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest
from searchkit import QUICK, ray_head, tiny_args

ROOT = pathlib.Path(__file__).parents[1]

PROBE = """
import json, sys
from search.cli import main
from search.config import bundled_configs, config_path, load_config
from tasks.datasets import PACKAGE_DATA
from tasks.trainer import code_version
print(json.dumps({"configs": str(bundled_configs()), "quick": str(config_path("quick")),
                  "list_size": load_config("quick").jozefowicz.list_size, "data": str(PACKAGE_DATA),
                  "code_version": code_version()}))
sys.exit(main(["reproduce", "--preset", "huge"]))
"""


def build(site: pathlib.Path, egg_base: pathlib.Path) -> None:
    """cellsearch's packages and package data into `site`, as `pip install` of a wheel puts them."""
    built = subprocess.run([sys.executable, "-c", "import setuptools; setuptools.setup()", "--quiet",
                            "egg_info", "--egg-base", str(egg_base), "build_py", "--build-lib",
                            str(site)], cwd=ROOT, check=True, capture_output=True, text=True)  # fmt: skip
    # any setuptools warning fails it (one said tasks.data was missing from `packages`)
    assert "Warning" not in built.stderr, built.stderr


def git(directory, *arguments):
    return subprocess.run(["git", "-C", str(directory), *arguments], check=True, capture_output=True,
                          text=True).stdout.strip()  # fmt: skip


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """cellsearch's packages as a wheel installs them, in a `.venv` inside a project's git repository."""
    tmp = tmp_path_factory.mktemp("installed")
    project = tmp / "project"
    site = project / ".venv" / "site-packages"
    build(site, tmp)
    git(project, "init", "--quiet")
    (project / "notes.txt").write_text("a project that keeps its virtual environment inside\n")
    git(project, "add", "notes.txt")
    git(project, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "notes")
    return project, site


def test_installed_package_carries_configs_data_and_its_own_code_version(installed):
    project, site = installed
    for config in sorted((ROOT / "configs").glob("*.toml")):  # every config, byte for byte
        assert (site / "search" / "configs" / config.name).read_bytes() == config.read_bytes()
    for line in (ROOT / "tasks" / "data" / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256((site / "tasks" / "data" / name).read_bytes()).hexdigest() == digest

    probe = subprocess.run([sys.executable, "-c", PROBE], cwd=project, capture_output=True, text=True,
                           env={"PATH": "/usr/bin:/bin", "HOME": str(project), "PYTHONPATH": str(site)})  # fmt: skip
    found = json.loads(probe.stdout)
    configs = site / "search" / "configs"
    assert found["configs"] == str(configs) and found["quick"] == str(configs / "quick.toml")
    assert found["list_size"] == 100 and found["data"] == str(site / "tasks" / "data")
    # `reproduce` looks for its presets there too: one line naming the file, exit 2
    assert probe.returncode == 2
    assert probe.stderr == (f"cellsearch: error: preset 'huge' needs {configs}/baselines-huge.toml "
                            "(presets: quick, small, paper; --configs names another directory)\n")
    # not the commit of the repository that holds the environment, but the package and its source
    version = found["code_version"]
    assert git(project, "rev-parse", "--short=12", "HEAD") not in version
    assert version.startswith("cellsearch-0.1.0+src.") and len(version) == len("cellsearch-0.1.0+src.") + 12


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="not a git checkout (an unpacked archive)")
def test_code_version_of_a_checkout_is_its_commit():
    from tasks.trainer import code_version

    commit = git(ROOT, "rev-parse", "--short=12", "HEAD")
    assert code_version() in (commit, commit + "+dirty")


def other_install(tmp_path: pathlib.Path) -> pathlib.Path:
    """cellsearch as a wheel installs it, with one comment more than this checkout's code."""
    other = tmp_path / "other-install"
    build(other, tmp_path)
    with open(other / "analysis" / "__init__.py", "a") as source:
        source.write("# one line that the driver's copy does not have\n")
    return other


@pytest.mark.parametrize("where", ["a cluster node", "the working directory"])
def test_workers_with_other_code_are_refused(tmp_path, where):
    """Workers that import other cellsearch code (here: one comment added) would train rows that
    name code the run was not made with: a cluster node installed from other code, or, on one
    machine, another copy in the directory the search is started from (Ray puts it on its
    workers' path). The search stops with one line before any trial, naming both."""
    from search.executor import local_ray_environment

    other = other_install(tmp_path)
    env = os.environ | local_ray_environment()
    search = ["search", str(QUICK), "--out", str(tmp_path / "run"), *tiny_args(max_trials=2), "--quiet"]
    run = functools.partial(subprocess.run, env=env, capture_output=True, text=True, timeout=300)
    if where == "a cluster node":  # the head's workers import cellsearch from `other`; and the
        # driver does not send its own (--no-ship)
        with ray_head(cpus=1, env=env | {"PYTHONPATH": str(other)}) as (address, _):
            result = run([sys.executable, "-m", "search.cli", *search, "--address", address, "--no-ship"],
                         cwd=tmp_path)  # fmt: skip
    else:  # the installed command, as a user runs it, from inside `other`: a local Ray
        result = run([str(pathlib.Path(sys.executable).parent / "cellsearch"), *search], cwd=other)
    from results import RunStore
    from tasks.trainer import code_digest

    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr[-2000:]
    assert (f"a worker on {socket.gethostname()} runs other cellsearch code (cellsearch-0.1.0+src."
            in result.stderr and "than this driver" in result.stderr
            and f"source {code_digest()[:12]})" in result.stderr)  # fmt: skip
    assert "install the same code on every node, and run cellsearch from a directory" in result.stderr
    RunStore(tmp_path / "run").check_new()  # no trial ran, and no run was left behind


def test_a_cluster_node_with_other_code_trains_the_code_the_driver_ships(tmp_path):
    """The node of the test above, joined without --no-ship: the driver's cellsearch goes with the
    job, PTB's files inside it, and comes first on its workers' path, so they train this
    checkout's code on the data it ships, and the rows name its version."""
    from search.executor import local_ray_environment
    from tasks import make_task
    from tasks.trainer import code_version

    other = other_install(tmp_path)
    env = os.environ | local_ray_environment()
    with ray_head(cpus=1, env=env | {"PYTHONPATH": str(other)}) as (address, _):
        result = subprocess.run([sys.executable, "-m", "search.cli", "search", str(QUICK), "--out",
                                 str(tmp_path / "run"), *tiny_args(max_trials=2), "--quiet",
                                 "--set", "strategy=baselines", "--set", 'tasks=["ptb"]',
                                 "--address", address], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    from results import load

    rows = load(tmp_path / "run")
    assert len(rows) == 2 and set(rows["code_version"]) == {code_version()}
    assert set(rows["task"]) == {"ptb"} and set(rows["status"]) == {"ok"}
    assert set(rows["data_checksum"]) == {make_task("ptb").data_checksum()}
