"""The search on a real local Ray: strategies, the store, exact resume, killed workers and drivers."""

import dataclasses
import hashlib
import io
import json
import math
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings

import pandas as pd
import pytest

from results import RunStore, load
from search.cli import grouping_line
from search.config import ConfigError
from search.loop import SearchSummary, run_search
from tasks import TrialSpec, make_task
from searchkit import (QUICK, TINY, TINY_BUDGET, borrowed, cellsearch, descendants, free_port, kill_session, ray_actors,
                       ray_head, readme_example, sequence, tiny, tiny_args, wait_for_rows)

DATA = pathlib.Path(__file__).parents[1] / "tasks" / "data"



# Past round 0 where a later round is what the strategy adds (evolution's children, the
# screen); for random cells round 0 (gru and two new cells, on 3 tasks) is the whole strategy,
# and each further cell is a new program to compile. baselines stops by itself at tanh, lstm
# and gru x 3 tasks.
@pytest.mark.parametrize("strategy, max_trials, expected", [
    ("jozefowicz", 14, 14), ("regularized_evolution", 14, 14), ("random", 9, 9),
    ("nasbench_nlp_random", 9, 9), ("baselines", 14, 9),
])  # fmt: skip
def test_every_strategy_runs_and_stores_rows(tmp_path, ray_workers, strategy, max_trials, expected):
    config = tiny(strategy=strategy, max_trials=max_trials)
    start = pd.Timestamp.now(tz="UTC").floor("s")
    summary = run_search(config, tmp_path / "run", borrowed(ray_workers))
    assert summary.trials == summary.ran == expected
    frame = load(tmp_path / "run")
    assert sorted(frame["trial"]) == list(range(expected))
    # when the driver stored each row, in the order it appended them
    assert start <= frame["stored_at"].min() and frame["stored_at"].max() <= pd.Timestamp.now(tz="UTC")
    assert frame["stored_at"].is_monotonic_increasing
    for column in ("cell_hash", "task", "lr", "clip", "init_scale", "layers", "seed", "status",
                   "score", "valid_accuracy", "data_checksum", "code_version", "strategy"):
        assert column in frame, column
    assert set(frame["status"]) <= {"ok", "diverged"}
    assert set(frame["layers"]) == {1, 2}  # the config's grid (tiny's), not the paper's 1-4
    cells = [json.loads(line) for line in open(tmp_path / "run" / "cells.jsonl")]
    assert {c["hash"] for c in cells} == set(frame["cell_hash"])
    assert "gru" in {c["name"] for c in cells}
    assert (tmp_path / "run" / "run.toml").read_text().startswith("[config]")
    if strategy == "nasbench_nlp_random":  # its cells come back as NAS-Bench-NLP recipes
        from cells import from_nasbench_nlp, parse

        sampled = [c for c in cells if c["origin"] == "nasbench_nlp"]
        assert sampled and all(
            from_nasbench_nlp(parse(c["text"]).to_nasbench_nlp()).hash == c["hash"] for c in sampled
        )


COMMITTED_SEARCH = pathlib.Path(__file__).parents[1] / "docs" / "reproduction-quick" / "search"


def test_the_default_seed_cells_are_the_papers_round_zero():
    """lstm and gru, in the order the committed quick search (made before `seed_cells`) trained them."""
    import numpy as np

    from results import RunStore
    from search.config import parse_config, to_toml
    from search.strategies import STRATEGIES

    stored = RunStore(COMMITTED_SEARCH).metadata()["config"]
    assert "seed_cells" not in stored
    config = parse_config(to_toml(stored))
    proposals = STRATEGIES[config.strategy](config).propose(0, np.random.default_rng([config.seed, 0]))
    frame = load(COMMITTED_SEARCH).sort_values("trial")
    first = frame[frame["round"] == 0]
    assert [(p.graph.hash, p.task, p.hparams.lr, p.hparams.layers) for p in proposals] == list(
        zip(first["cell_hash"], first["task"].astype(str), first["lr"], first["layers"]))


def test_a_search_starts_from_the_seed_cells_it_is_given(tmp_path, ray_workers):
    """Round 0 trains the given cells (a baseline by name, a cell a search found by RUN:CELL) and
    gru, not lstm; run.toml keeps the found cell's equations, so the run resumes without the other
    run."""
    from cells import baseline

    found = next(c for c in map(json.loads, open(COMMITTED_SEARCH / "cells.jsonl"))
                 if c["origin"] == "mutation")  # fmt: skip
    run = tmp_path / "jozefowicz"
    command = ["search", str(QUICK), "--out", str(run), "--seed-cells", "mut1",
               f"{COMMITTED_SEARCH}:{found['hash'][:8]}", *tiny_args(max_trials=9), "--quiet"]  # fmt: skip
    result = cellsearch(*command)
    assert result.returncode == 0, result.stderr[-2000:]
    seeds = {baseline("mut1").hash, found["hash"], baseline("gru").hash}
    frame = load(run)
    assert set(frame["cell_hash"]) == seeds and set(frame["purpose"]) == {"baseline"}  # 3 x 3 tasks
    origins = {c["hash"]: c["origin"] for c in map(json.loads, open(run / "cells.jsonl"))}
    assert origins[found["hash"]] == "given" and origins[baseline("mut1").hash] == "baseline"
    assert found["text"] in (run / "run.toml").read_text().replace("\\n", "\n")
    # regularized evolution's first population: gru and the seeds (here filling its 3 places)
    config = tiny(strategy="regularized_evolution", max_trials=9,
                  seed_cells=["mut1", found["text"]])  # fmt: skip
    run_search(config, tmp_path / "evolution", borrowed(ray_workers))
    assert set(load(tmp_path / "evolution")["cell_hash"]) == seeds


@pytest.fixture
def hillclimb(tmp_path, monkeypatch):
    """The README's strategy of one's own, saved as hillclimb.py in the current directory (which
    `strategy_class` searches last, on a `sys.path` restored afterwards)."""
    (tmp_path / "hillclimb.py").write_text(readme_example("# hillclimb.py"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "hillclimb", raising=False)
    yield tmp_path / "hillclimb.py"
    sys.modules.pop("hillclimb", None)


def test_a_strategy_of_your_own_runs_resumes_and_is_recorded(tmp_path, ray_workers, hillclimb):
    from analysis import leaderboard

    config = tiny(strategy="hillclimb:HillClimb", strategy_options={"children": 1}, max_trials=12)
    summary = run_search(config, tmp_path / "run", borrowed(ray_workers))
    assert summary.trials == summary.ran == 12 and summary.rounds == 3
    frame = load(tmp_path / "run")
    assert set(frame["strategy"]) == {"hillclimb:HillClimb"}
    cells = {c["hash"]: c for c in map(json.loads, open(tmp_path / "run" / "cells.jsonl"))}
    assert set(frame[frame["round"] == 0]["cell_name"]) == {"gru", "lstm"}  # the seed cells
    for round_index in (1, 2):  # one child (children = 1) of the best cell so far, on every task
        rows = frame[frame["round"] == round_index]
        (child,) = set(rows["cell_hash"])
        assert sorted(rows["task"]) == ["arith", "ptb", "xml"]
        assert cells[child]["origin"] == "mutation"
        board = leaderboard(frame[frame["round"] < round_index])
        assert board.loc[cells[child]["parent"], "jozefowicz"] == board["jozefowicz"].max()
    # which code chose the trials: the module's file and its digest
    source = RunStore(tmp_path / "run").metadata()["run"]["strategy_source"]
    assert source["class"] == "hillclimb:HillClimb" and source["file"] == str(hillclimb)
    assert source["sha256"] == hashlib.sha256(hillclimb.read_bytes()).hexdigest()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the module is as it was: not a word
        again = run_search(config, tmp_path / "run", borrowed(ray_workers))
    assert (again.ran, again.replayed, again.best) == (0, 12, summary.best)
    hillclimb.write_text(hillclimb.read_text() + "# edited since\n")
    with pytest.warns(UserWarning, match=r"hillclimb.py changed since the run was made \(sha256 "):
        run_search(config, tmp_path / "run", borrowed(ray_workers))
    with pytest.raises(ConfigError, match="'strategy_options' was {'children': 1}, now {'children': 2}"):
        run_search(tiny(strategy="hillclimb:HillClimb", strategy_options={"children": 2}, max_trials=12),
                   tmp_path / "run", borrowed(ray_workers))  # fmt: skip


def test_the_readme_strategy_mutates_a_seed_while_no_cell_is_scored(hillclimb):
    """Every GRU setting of round 0 diverged: no Jozefowicz score yet, so it mutates the GRU."""
    import numpy as np

    from cells import baseline
    from search.strategies import strategy_class

    config = tiny(strategy="hillclimb:HillClimb")
    strategy = strategy_class(config.strategy)(config)
    seeds = strategy.propose(0, np.random.default_rng([config.seed, 0]))
    strategy.update([{"cell_hash": p.graph.hash, "task": p.task, "score": None, "status": "diverged"}
                     for p in seeds])  # fmt: skip
    assert not strategy.book.ranked()
    children = strategy.propose(1, np.random.default_rng([config.seed, 1]))
    assert children and {strategy.book.cells[p.graph.hash].parent for p in children} == {baseline("gru").hash}


BAD_STRATEGIES = """
import search
from cells import baseline


class NotAProposal(search.Strategy):
    def propose(self, round_index, rng):
        return ["gru"]


class NotInTheBook(search.Strategy):
    def propose(self, round_index, rng):
        return [search.Proposal(baseline("gru"), "arith", None, "evaluate")]


class NotATask(search.Strategy):
    def propose(self, round_index, rng):
        return [p._replace(task="nottingham") for p in self.evaluate_cells(("gru",), 1)]


class NotSettings(search.Strategy):
    def propose(self, round_index, rng):
        return [p._replace(hparams={"lr": 1.0}) for p in self.evaluate_cells(("gru",), 1)]
"""


@pytest.mark.parametrize("name, message", [
    ("NotAProposal", "strategy bad_strategies:NotAProposal proposed str 'gru', not a search.Proposal"),
    ("NotInTheBook", "proposed a cell it did not add to its book (`self.book.add(graph, origin)`"),
    ("NotATask", "proposed a trial on task 'nottingham', which is not one of the config's (arith, "
                 "memorize, ptb, xml)"),
    ("NotSettings", "proposed settings {'lr': 1.0}, not a tasks.HParams (`self.book.settings` draws"),
])  # fmt: skip
def test_a_strategy_proposing_what_the_loop_cannot_run_is_stopped_in_one_line(
        tmp_path, ray_workers, monkeypatch, name, message):  # fmt: skip
    monkeypatch.syspath_prepend(tmp_path)
    (tmp_path / "bad_strategies.py").write_text(BAD_STRATEGIES)
    with pytest.raises(ValueError) as error:
        run_search(tiny(strategy=f"bad_strategies:{name}"), tmp_path / "run", borrowed(ray_workers))
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not list(RunStore(tmp_path / "run").trials())  # nothing trained, nothing stored
    sys.modules.pop("bad_strategies", None)


def test_the_command_line_finds_a_strategy_beside_where_it_is_started(tmp_path):
    (tmp_path / "hillclimb.py").write_text(readme_example("# hillclimb.py"))
    result = cellsearch("search", "quick", "--set", "strategy=hillclimb:HillClimb", "--out", "run",
                        "--quiet", *tiny_args(max_trials=6), cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert set(load(tmp_path / "run")["strategy"]) == {"hillclimb:HillClimb"}
    status = cellsearch("status", tmp_path / "run")  # elsewhere: reading a run needs no module
    assert status.returncode == 0 and "hillclimb:HillClimb on arith, xml, ptb" in status.stdout
    result = cellsearch("search", "quick", "--set", "strategy=hillclimb:HillClimb", "--out", tmp_path / "x")
    assert result.returncode == 2
    assert result.stderr.strip().endswith("strategy: hillclimb:HillClimb: importing hillclimb failed: "
                                          "ModuleNotFoundError: No module named 'hillclimb'")  # fmt: skip


def test_a_task_of_your_own_is_searched_resumed_and_rerun(tmp_path):
    """The README's reverse.py beside a config in another directory than the one the search is
    started from: the driver and the Ray workers import it from there, each row records its
    source; a resume after an edit warns, and `rerun` from elsewhere finds the module again."""
    experiment = tmp_path / "experiment"
    experiment.mkdir()
    module = experiment / "reverse.py"
    module.write_text(readme_example("# reverse.py"))
    tiny_reverse = "".join(f"{key} = {value}\n" for key, value in TINY_BUDGET)
    (experiment / "reverse.toml").write_text(
        QUICK.read_text() + f"\n[budget.'reverse:Reverse']\n{tiny_reverse}"
        "\n[task_options.'reverse:Reverse']\nsymbols = 3\n")  # fmt: skip
    command = ["search", "experiment/reverse.toml", "--out", "run", "--quiet",
               "--set", 'tasks=["reverse:Reverse", "arith"]', "--set", "budget.reverse:Reverse.steps=20",
               *tiny_args(max_trials=8)]  # fmt: skip
    result = cellsearch(*command, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    frame = load(tmp_path / "run")
    reverse = frame[frame["task"] == "reverse:Reverse"]
    digest = hashlib.sha256(module.read_bytes()).hexdigest()
    source = {"class": "reverse:Reverse", "file": str(module), "sha256": digest}
    assert len(reverse) >= 2 and set(reverse["status"]) <= {"ok", "diverged"}
    assert set(reverse["budget_steps"]) == {20} and set(reverse["sequence_length"]) == {6}
    assert all(row == source for row in reverse["task_source"])
    assert frame[frame["task"] == "arith"]["task_source"].isna().all()  # a built-in task's: none
    (checksum,) = set(reverse["data_checksum"])
    assert checksum.startswith("synthetic:reverse:v1:")  # its name, version and options
    run = RunStore(tmp_path / "run").metadata()["run"]
    assert run["task_sources"] == {"reverse:Reverse": source}
    assert run["data_checksums"]["reverse:Reverse"] == checksum
    again = cellsearch(*command, cwd=tmp_path)  # finished: replayed, nothing to say
    assert again.returncode == 0 and "(0 run now, 8 from the store)" in again.stdout
    assert again.stderr == ""
    module.write_text(module.read_text() + "# edited since\n")
    edited = cellsearch(*command, cwd=tmp_path)
    assert edited.returncode == 0
    assert f"reverse.py changed since the run was made (sha256 {digest[:12]} -> " in edited.stderr
    trial = int(reverse[reverse["status"] == "ok"]["trial"].iloc[0])
    rerun = cellsearch("rerun", tmp_path / "run", trial, "--quiet", cwd=experiment.parent.parent)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"trial {trial} reproduced" in rerun.stderr


def test_workers_that_cannot_import_a_task_or_import_other_code_are_refused(ray_workers, monkeypatch):
    """Checked before a search trains, on the real workers: a module they cannot import, and one
    whose code differs from the driver's (here tasks/registry.py, named as a module, so the
    package tasks/, against a made-up digest)."""
    from tasks.registry import Arith
    from tasks.usercode import class_source

    missing = {"class": "no_such_module_on_workers:Copy", "file": "/elsewhere/x.py", "sha256": "0" * 64}
    monkeypatch.setattr(ray_workers, "task_sources", {"no_such_module_on_workers:Copy": missing})
    with pytest.raises(RuntimeError, match=r"a worker on .* cannot import task no_such_module_on_"
                       r"workers:Copy \(no_such_module_on_workers:Copy: importing no_such_module_on_"
                       r"workers failed: ModuleNotFoundError: .*\); its module must be importable on "
                       r"every node: at the same path, installed there, or shipped with the job "
                       r"\(--ship\)$"):  # fmt: skip
        ray_workers._check_workers(ray_workers.actors)
    ours = class_source(Arith)
    monkeypatch.setattr(ray_workers, "task_sources", {"tasks.registry:Arith": {**ours, "sha256": "0" * 64}})
    package = re.escape(ours["package"])  # tasks/: a module in a package, by all of its code
    with pytest.raises(RuntimeError, match=rf"a worker on .* imports task tasks.registry:Arith from "
                                           rf"{package} \(sha256 {ours['sha256'][:12]}\), other code "
                                           rf"than this driver's {package} \(000000000000, over the "
                                           r"package's .py files\); put the same code on every "
                                           r"node, or ship it with the job \(--ship\)$"):  # fmt: skip
        ray_workers._check_workers(ray_workers.actors)
    monkeypatch.setattr(ray_workers, "task_sources", {"tasks.registry:Arith": ours})
    ray_workers._check_workers(ray_workers.actors)  # the same file: accepted


def own_tasks_experiment(directory: pathlib.Path) -> pathlib.Path:
    """The README's two tasks of your own beside a config: reverse.py alone, and charlm.py in a
    package `lab` with its corpus (PTB's first 20 kB) inside. Returns the config's path."""
    lab = directory / "lab"
    lab.mkdir(parents=True)
    (directory / "reverse.py").write_text(readme_example("# reverse.py"))
    (lab / "__init__.py").write_text("")
    (lab / "charlm.py").write_text(readme_example("# charlm.py"))
    (lab / "corpus.txt").write_bytes((DATA / "ptb.train.txt").read_bytes()[:20_000])
    config = directory / "lab.toml"
    config.write_text(QUICK.read_text())
    return config


OWN_TASKS = ("reverse:Reverse", "lab.charlm:CharLM")
OWN_TINY = {"tasks": list(OWN_TASKS), "strategy": "baselines", "baselines.cells": ["lstm"],
            **{f"budget.{task}.{key}": value for task in OWN_TASKS for key, value in TINY_BUDGET}}  # fmt: skip


def test_tasks_of_your_own_ship_to_a_cluster_with_their_data(tmp_path):
    """Joining a separately started Ray head, the driver ships cellsearch's code, reverse.py and
    the package `lab` (its corpus inside) with the job; the workers import them from the copies
    Ray gave them, not from the driver's directories, which they are not told of: as a node
    without them would. The rows name the driver's code version and files."""
    from search.executor import local_ray_environment

    config_path = own_tasks_experiment(tmp_path / "experiment")
    env = os.environ | local_ray_environment()
    with ray_head(cpus=1, env=env) as (address, _):
        script = f"""
import sys
sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})
import ray, search
from search.executor import executor_for
from searchkit import TINY, borrowed

config = search.load_config({str(config_path)!r}, TINY | {OWN_TINY!r})
with executor_for(config, address={address!r})() as executor:
    for found in ray.get([actor.task_sources.remote(list({OWN_TASKS!r})) for actor in executor.actors]):
        print(*(found[task]["file"] for task in {OWN_TASKS!r}))
    where = lambda worker: __import__("tasks").__file__  # its cellsearch, from there
    print(*ray.get([actor.__ray_call__.remote(where) for actor in executor.actors]))
    search.run_search(config, {str(tmp_path / "run")!r}, borrowed(executor))
"""
        (tmp_path / "driver.py").write_text(script)
        driver = subprocess.run([sys.executable, tmp_path / "driver.py"], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=300)  # fmt: skip
    assert driver.returncode == 0, driver.stderr[-2000:]
    from tasks.trainer import code_version

    line, package = driver.stdout.splitlines()  # its one worker's: the files it imported
    reverse, charlm = map(pathlib.Path, line.split())
    assert "runtime_resources" in pathlib.Path(package).parts and package.endswith("tasks/__init__.py")
    assert "runtime_resources" in reverse.parts and reverse.name == "reverse.py"
    assert "runtime_resources" in charlm.parts and charlm.parts[-2:] == ("lab", "charlm.py")
    frame = load(tmp_path / "run")
    assert set(frame["task"]) == set(OWN_TASKS) and set(frame["status"]) <= {"ok", "diverged"}
    drivers = {row["class"]: row for row in RunStore(tmp_path / "run").metadata()["run"]["task_sources"].values()}
    assert drivers["lab.charlm:CharLM"]["file"] == str(tmp_path / "experiment" / "lab" / "charlm.py")
    assert all(row == drivers[row["class"]] for row in frame["task_source"])
    assert set(frame["code_version"]) == {code_version()}  # the driver's name for the same code


def failed_start(executor: str, before: str = "") -> tuple[str, str]:
    """What a fresh process prints that runs `before`, then starts `RayExecutor(executor)`: the
    RuntimeError it raised, and whether Ray is still up after it."""
    from search.executor import local_ray_environment

    probe = (f"import ray\nfrom search.executor import RayExecutor, TrialWorker\n{before}\n"
             f"try:\n    RayExecutor({executor}).__enter__()\nexcept RuntimeError as error:\n"
             "    print(error)\nprint(ray.is_initialized())\n")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", probe], env=os.environ | local_ray_environment(),
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    message, up = result.stdout.splitlines()[-2:]
    return message, up


def test_a_package_too_large_to_ship_is_one_line_and_leaves_no_ray(tmp_path):
    """Ray refuses a package over its message size (512 MiB), here made 100 bytes so that a small
    one is over it; the driver says so in one line and stops the Ray it started."""
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "__init__.py").write_text("x = 1\n" * 100)
    message, up = failed_start(f"workers=1, ship=[{str(tmp_path / 'lab')!r}]",
                               "import ray._private.runtime_env.packaging as packaging\n"
                               "packaging.GCS_STORAGE_MAX_SIZE = 100")  # fmt: skip
    assert message.startswith(f"shipping {tmp_path / 'lab'} to the Ray workers failed: Failed to "
                              f"upload module {tmp_path / 'lab'} to the Ray cluster: Package size")  # fmt: skip
    assert up == "False"


def test_a_worker_that_cannot_start_is_one_line():
    """A node without cellsearch's dependencies: its worker dies importing them, before any
    trial (here a worker class of the script's, sent by value, fails as a missing jax would)."""
    message, up = failed_start("workers=1, worker=WithoutJax",
                               "class WithoutJax(TrialWorker):\n"
                               "    def __init__(self, *args):\n"
                               "        raise ModuleNotFoundError(\"No module named 'jax'\")")  # fmt: skip
    assert message == ("a Ray worker could not start (ModuleNotFoundError: No module named 'jax'); "
                       "every node needs cellsearch's dependencies installed, and without --ship "
                       "its code too")  # fmt: skip
    assert up == "False"


def test_tasks_ship_by_default_when_joining_a_cluster(tmp_path, monkeypatch, ray_workers):
    """`executor_for`'s choice, before any Ray: shipped when an address (or RAY_ADDRESS) is given,
    or `ship` asks: cellsearch's five packages, and a task's module alone as its file, one in a
    package as the package's directory. A process that joined a Ray itself cannot ship (Ray
    uploads code only at `ray.init`)."""
    from search.config import load_config
    from search.executor import RayExecutor, executor_for
    from tasks import usercode
    from tasks.executables import CODE_PACKAGES

    monkeypatch.setattr(sys, "path", list(sys.path))  # the experiment's directory is searched
    monkeypatch.setattr(usercode, "SEARCHED", [])
    for name in ("reverse", "lab", "lab.charlm"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    experiment = tmp_path / "experiment"
    config = load_config(own_tasks_experiment(experiment), TINY | OWN_TINY)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    code = [str(pathlib.Path(__file__).parents[1] / package) for package in CODE_PACKAGES]
    shipped = [*code, str(experiment / "lab"), str(experiment / "reverse.py")]
    assert executor_for(config).keywords["ship"] == []
    assert executor_for(config, ship=True).keywords["ship"] == shipped
    assert executor_for(config, address="10.0.0.5:6379").keywords["ship"] == shipped
    assert executor_for(config, address="10.0.0.5:6379", ship=False).keywords["ship"] == []
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert executor_for(config).keywords["ship"] == shipped
    with pytest.raises(RuntimeError, match=r"^this process has already joined a Ray \(ray.init\), so "
                       rf"cellsearch cannot ship {re.escape(', '.join(shipped))} to its workers: pass "
                       r"runtime_env="):  # fmt: skip
        RayExecutor(ship=shipped).__enter__()


def test_search_from_python_starts_its_own_ray_or_uses_the_one_the_process_joined(tmp_path):
    """As in a notebook: `search.run_search` with no executor starts a local Ray and stops it; after
    `ray.init()` it trains on that Ray and leaves it running; a strategy defined there is
    `__main__:CLASS`."""
    from search.executor import local_ray_environment

    script = f"""
import os, sys
sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})
from searchkit import tiny
import search

config = tiny(strategy="random", max_trials=3)
summary = search.run_search(config, {str(tmp_path / "own")!r})
import ray
print("own", summary.ran, ray.is_initialized())
ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
         logging_level="ERROR", log_to_driver=False)
summary = search.run_search(config, {str(tmp_path / "joined")!r})
print("joined", summary.ran, ray.is_initialized())


class JustTheGru(search.Strategy):  # a strategy defined where the search is run
    def propose(self, round_index, rng):
        return self.evaluate_cells(("gru",), 1) if round_index == 0 else []


config = search.load_config({str(QUICK)!r}, {{"strategy": "__main__:JustTheGru", "max_trials": 10}})
summary = search.run_search(tiny(strategy=config.strategy), {str(tmp_path / "main")!r})
print("main", summary.trials, summary.rounds)
ray.shutdown()
"""
    (tmp_path / "notebook.py").write_text(script)
    driver = subprocess.Popen([sys.executable, tmp_path / "notebook.py"],
                              env=os.environ | local_ray_environment(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        out, err = driver.communicate(timeout=300)
    finally:
        kill_session(driver.pid)
    assert driver.returncode == 0, err[-2000:]
    assert out.splitlines()[-3:] == ["own 3 False", "joined 3 True", "main 3 1"]  # (a round of none ends it)
    assert sequence(tmp_path / "own") == sequence(tmp_path / "joined")
    source = RunStore(tmp_path / "main").metadata()["run"]["strategy_source"]
    assert source["class"] == "__main__:JustTheGru" and source["file"] == str(tmp_path / "notebook.py")


def test_an_executor_in_a_process_that_joined_a_ray_says_where_it_runs(ray_workers):
    """The session's Ray is this process's: an executor asked for another address uses it, and
    says so (here its workers then find no free CPU: the session's hold both)."""
    from search.executor import RayExecutor

    with pytest.warns(UserWarning, match=r"this process has already joined the Ray at 127\.0\.0\.1:\d+: "
                                         r"the workers run there, not at 127\.0\.0\.1:1$"):  # fmt: skip
        with pytest.raises(RuntimeError, match="could not start 1 workers in 1 s"):
            with RayExecutor(workers=1, address="127.0.0.1:1", start_timeout=1):
                pass
    assert ray_workers.worker_pids()  # the session's Ray and workers go on


def test_leaderboard_of_a_real_run(tmp_path, ray_workers, capsys):
    from search.cli import main

    run_search(tiny(max_trials=12), tmp_path / "run", borrowed(ray_workers))
    assert main(["leaderboard", str(tmp_path / "run")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "jozefowicz" in lines[0] and "arith" in lines[0]
    assert "None" not in "\n".join(lines) and "nan" not in "\n".join(lines)
    assert main(["leaderboard", str(tmp_path / "run"), "--format", "csv"]) == 0
    board = pd.read_csv(io.StringIO(capsys.readouterr().out), index_col="cell_hash")
    assert board.set_index("name").loc["gru", "jozefowicz"] == 1.0  # the reference of the score


def test_rerun_trains_a_stored_trial_again_to_the_last_bit(tmp_path, ray_workers):
    run_search(tiny(max_trials=6), tmp_path / "run", borrowed(ray_workers))
    frame = load(tmp_path / "run")
    assert (frame["cpu_threads"] == 1).all()  # a local search's workers are pinned to a core each
    trial = int(frame[frame["status"] == "ok"]["trial"].max())
    result = cellsearch("rerun", tmp_path / "run", trial, "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"trial {trial} reproduced" in result.stderr
    stored = frame.set_index("trial").loc[trial]
    again = json.loads(result.stdout)
    assert again["score"] == stored["score"] and again["loss_curve"] == [list(p) for p in stored["loss_curve"]]
    # a row whose learning rate was edited no longer matches what it records
    edited = tmp_path / "edited"
    shutil.copytree(tmp_path / "run", edited)
    lines = (edited / "trials.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    for row in rows:
        if row["trial"] == trial:
            row["lr"] /= 2
    (edited / "trials.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = cellsearch("rerun", edited, trial, "--quiet")
    assert result.returncode == 1 and f"trial {trial} differs from its row" in result.stderr
    assert "score" in result.stderr and "Traceback" not in result.stderr


def test_resume_continues_exactly_and_replays_without_training(tmp_path, ray_workers):
    whole = run_search(tiny(max_trials=16), tmp_path / "whole", borrowed(ray_workers))
    assert whole.ran == 16
    first = run_search(tiny(max_trials=7), tmp_path / "split", borrowed(ray_workers))
    assert first.ran == 7
    stored_first = load(tmp_path / "split").set_index("trial")["stored_at"]
    rest = run_search(tiny(max_trials=16), tmp_path / "split", borrowed(ray_workers))
    assert (rest.replayed, rest.ran) == (7, 9)
    assert sequence(tmp_path / "split") == sequence(tmp_path / "whole")
    split = load(tmp_path / "split").set_index("trial")["stored_at"]
    assert split[stored_first.index].equals(stored_first)  # replayed rows are the stored ones
    # `status` says when the last row was stored, not when the file was last touched (a copy)
    os.utime(RunStore(tmp_path / "split").trials_path, (time.time() - 86400,) * 2)
    status = cellsearch("status", str(tmp_path / "split"))
    age = re.search(r"the last stored (\d+) s ago", status.stdout)
    assert age and int(age[1]) < 600, status.stdout
    again = run_search(tiny(max_trials=16), tmp_path / "split", borrowed(ray_workers))
    assert again.ran == 0 and again.replayed == 16


def test_settings_grouped_into_one_program_change_no_trial(tmp_path, ray_workers):
    # one layer count: a cell's 4 settings on a task are one program shape, one group of 4
    shape = {"strategy": "baselines", "settings_per_task": 4, "max_trials": 24, "grid.layers": [1]}
    assert run_search(tiny(**shape), tmp_path / "plain", borrowed(ray_workers)).grouped == 0
    summary = run_search(tiny(**shape, vmap_settings=4), tmp_path / "grouped", borrowed(ray_workers))
    assert sequence(tmp_path / "grouped") == sequence(tmp_path / "plain")
    plain, grouped = (load(tmp_path / run).set_index("trial").sort_index() for run in ("plain", "grouped"))
    assert len(grouped) == 24 and grouped.index.is_unique
    assert (grouped["vmapped_settings"] == 4).sum() >= 12  # trials did share programs
    assert summary.grouped == (grouped["vmapped_settings"] > 1).sum()
    assert grouping_line(summary, 4).startswith(f"{summary.grouped} of 24 trials run now trained as "
                                                "lanes of vmapped groups (vmap_settings 4)")  # fmt: skip
    # a config whose trials never share a program is told why it got no groups
    assert grouping_line(SearchSummary(ran=8), 4) == (
        "0 of 8 trials run now trained as lanes of vmapped groups (vmap_settings 4); no two pending trials "
        "shared a cell, task, budget and layer count: more settings_per_task or fewer grid.layers make groups")
    assert (grouped["status"] == plain["status"]).all()
    # A trial that ends worse than guessing uniformly has blown up (lr 5 on ptb); its chaotic
    # trajectory amplifies the vmapped program's different float rounding, so compare the others.
    uniform = plain["task"].astype(str).map(lambda name: math.log(make_task(name).n_outputs))
    stable = (plain["status"] == "ok") & (plain["train_loss"] < uniform)
    assert stable.sum() >= 12
    diff = (grouped["score"][stable] - plain["score"][stable]).abs()
    assert (diff <= 1e-3 * plain["score"][stable].abs() + 1e-6).all()


def test_resume_refuses_a_run_whose_data_changed(tmp_path, ray_workers):
    run_search(tiny(max_trials=2), tmp_path / "run", borrowed(ray_workers))
    config = tmp_path / "run" / "run.toml"
    now = make_task("arith", **tiny().task_options.get("arith", {})).data_checksum()
    before = now.replace(":v2:", ":v1:")  # as a run made before the arith generator's version 2
    assert now in config.read_text()
    config.write_text(config.read_text().replace(now, before))
    with pytest.raises(ConfigError, match=f"data of task 'arith' changed \\({before} -> {now}\\)"):
        run_search(tiny(max_trials=3), tmp_path / "run", borrowed(ray_workers))
    assert len(load(tmp_path / "run")) == 2  # nothing was run or lost


def test_resume_refuses_a_run_whose_preset_budget_changed(tmp_path, ray_workers):
    """A config names its preset, and a preset's budgets may change between versions (the PTB
    budgets' steps per call did in session 38): run.toml keeps each task's resolved budget, and a
    resume that would train new trials under another one is refused in one line."""
    run_search(tiny(max_trials=2), tmp_path / "run", borrowed(ray_workers))
    config = tmp_path / "run" / "run.toml"
    stored = RunStore(tmp_path / "run").metadata()["run"]["budgets"]
    arith = TrialSpec.from_preset("lstm", "arith", "quick", budget_overrides=tiny().budget["arith"])
    assert stored["arith"] == dataclasses.asdict(arith.budget) and set(stored) == {*tiny().tasks, "memorize"}
    text = config.read_text()
    section = text.index("[run.budgets.arith]")
    line = text.index("steps_per_call = 10", section)
    config.write_text(text[:line] + "steps_per_call = 20" + text[line + len("steps_per_call = 10"):])
    refused = r"cannot resume .*: the budget of task 'arith' at preset 'quick' changed since the run " \
              r"was made \(steps_per_call 20 -> 10\), so its new trials"
    with pytest.raises(ConfigError, match=refused):
        run_search(tiny(max_trials=3), tmp_path / "run", borrowed(ray_workers))
    # a run made before run.toml kept budgets: the budgets its rows trained with
    config.write_text(re.sub(r"\[run\.budgets\.[^]]+\]\n(?:[^[\n].*\n)*", "", text))
    assert "budgets" not in RunStore(tmp_path / "run").metadata()["run"]
    run_search(tiny(max_trials=3), tmp_path / "run", borrowed(ray_workers))  # the same: resumed
    trials = tmp_path / "run" / "trials.jsonl"
    rows = [json.loads(line) for line in trials.read_text().splitlines()]
    assert len(rows) == 3 and "arith" in {row["task"] for row in rows}
    trials.write_text("".join(json.dumps(row | {"budget_steps_per_call": 20} if row["task"] == "arith"
                                         else row) + "\n" for row in rows))  # fmt: skip
    with pytest.raises(ConfigError, match=refused):
        run_search(tiny(max_trials=4), tmp_path / "run", borrowed(ray_workers))
    assert len(load(tmp_path / "run")) == 3  # nothing was run or lost


def test_resume_refuses_a_config_that_changes_the_search(tmp_path, ray_workers):
    run_search(tiny(max_trials=3), tmp_path / "run", borrowed(ray_workers))
    with pytest.raises(ConfigError, match="cannot resume .*'seed' was 0, now 1"):
        run_search(tiny(max_trials=3, seed=1), tmp_path / "run", borrowed(ray_workers))
    # how trials run is not part of the search: these resume (here, replay) without complaint
    run_search(tiny(max_trials=3, vmap_settings=2, deterministic=True), tmp_path / "run",
               borrowed(ray_workers))  # fmt: skip


@pytest.mark.parametrize("shapes, held, busy, taken", [
    (["a", "b"], [], [], 0),  # nothing held, nothing running: the queue's order
    (["a", "b", "c"], ["c"], [], 2),  # the program this worker holds: no compile
    (["a", "a", "b"], [], ["a"], 2),  # not the program the other worker is compiling
    (["a", "b"], ["b"], ["b"], 1),  # held beats busy: the worker has it already
    (["a", "a"], ["c"], ["a"], 0),  # only the other worker's program left: it goes on, not waits
])  # fmt: skip
def test_a_free_worker_takes_a_program_it_holds_else_one_nobody_compiles(shapes, held, busy, taken):
    from search.executor import next_for_worker

    assert next_for_worker(shapes, held, busy) == taken


def test_a_worker_takes_the_program_it_holds_from_an_earlier_run_call(ray_workers):
    # a search calls `run` once a round; two programs no other test trains (H = 7 and 9), the
    # second call listing them in the other order: each goes back to the worker holding it in
    # memory (0 s), not to the first free one, which would load it from the store or compile it
    from tasks import Budget, TrialSpec

    spec = {hidden: TrialSpec("tanh", "memorize", budget=Budget(steps=2, hidden=hidden, batch=4,
                                                                eval_sequences=4))
            for hidden in (7, 9)}  # fmt: skip
    rows: dict[int, dict] = {}
    ray_workers.run([(0, spec[7]), (1, spec[9])], rows.__setitem__)
    ray_workers.run([(2, spec[9]), (3, spec[7])], rows.__setitem__)
    assert {rows[t]["status"] for t in rows} == {"ok"}
    assert rows[2]["compile_seconds"] == 0 and rows[3]["compile_seconds"] == 0


# SIGTERM: what `kill PID` or a node's shutdown sends; a Ray worker exits cleanly on it
@pytest.mark.parametrize("victims,signum", [("one", signal.SIGKILL), ("all", signal.SIGKILL),
                                            ("one", signal.SIGTERM)])  # fmt: skip
def test_killed_workers_mid_trial_are_retried(tmp_path, ray_workers, victims, signum):
    config = tiny(max_trials=6, **{f"budget.{t}.steps": 400 for t in ("arith", "xml", "ptb")})
    pids = ray_workers.worker_pids()
    killed = []

    def kill_workers_during_a_trial():
        trials = tmp_path / "run" / "trials.jsonl"
        while not trials.exists() or not trials.read_text().strip():
            time.sleep(0.05)  # the first rows are in: the workers are busy with the next ones
        for pid in pids[:1] if victims == "one" else pids:
            os.kill(pid, signum)
            killed.append(pid)

    thread = threading.Thread(target=kill_workers_during_a_trial, daemon=True)
    thread.start()
    summary = run_search(config, tmp_path / "run", borrowed(ray_workers))
    thread.join(timeout=60)
    assert killed and summary.trials == 6
    frame = load(tmp_path / "run")
    assert sorted(frame["trial"]) == list(range(6))
    assert set(frame["status"]) <= {"ok", "diverged"}  # retried, not recorded as error
    assert not set(killed) & set(ray_workers.worker_pids())  # replaced by fresh workers


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_a_stopped_search_says_so_in_one_line_and_the_same_command_resumes_it(tmp_path, stop):
    """Ctrl-C (SIGINT to the terminal's process group), or SIGTERM to the driver alone (`kill PID`,
    a batch system's time limit, `timeout`), whose handler Ray would otherwise replace with an
    exit after a C++ stack dump."""
    args = [*tiny_args(max_trials=12), "--workers=2", "--quiet"]  # long enough to stop mid-run
    command = [sys.executable, "-m", "search.cli", "search", str(QUICK), "--out", str(tmp_path / "run"), *args]
    # as a terminal starts it: a test run in the background (`pytest &`) passes SIGINT on ignored
    in_a_terminal = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                     "from search.cli import main; sys.exit(main(sys.argv[1:]))")  # fmt: skip
    driver = subprocess.Popen([sys.executable, "-c", in_a_terminal, *command[3:]], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        wait_for_rows(tmp_path / "run", 2, driver, timeout=240)
        assert driver.poll() is None, "the search ended before it could be interrupted"
        ours = descendants(driver.pid)  # the local Ray it started
        if stop == "ctrl-c":
            os.killpg(driver.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group
        else:
            os.kill(driver.pid, signal.SIGTERM)
        stderr = driver.communicate(timeout=120)[1]
    finally:
        kill_session(driver.pid)  # whatever it left behind (checked below), by PID
    assert driver.returncode == (130 if stop == "ctrl-c" else 143), stderr[-2000:]
    how = "interrupted" if stop == "ctrl-c" else "stopped by SIGTERM"
    assert stderr.strip().splitlines()[-1] == (f"cellsearch: {how}; every finished trial is "
                                               "stored, and the same command resumes the run")  # fmt: skip
    assert "Traceback" not in stderr and "SIGTERM received" not in stderr
    deadline = time.monotonic() + 30
    while ours & set(_live_pids()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not ours & set(_live_pids())  # its local Ray went with it
    stored = len(load(tmp_path / "run"))
    assert 2 <= stored < 12
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert sorted(load(tmp_path / "run")["trial"]) == list(range(12))  # each trial exactly once


def _live_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def test_a_claimed_core_is_held_while_its_process_lives(tmp_path):
    env = os.environ | {"TMPDIR": str(tmp_path)}  # lock files of this test's own
    cores = sorted(os.sched_getaffinity(0))[:2]  # each claimant on these: few processes on any machine
    hold = (f"import os, sys; os.sched_setaffinity(0, {cores}); from search.executor import claim_core; "
            "print(claim_core(), flush=True); sys.stdin.read()")  # fmt: skip
    holders, claimed = [], []
    try:
        for _ in range(len(cores) + 1):  # one after the other: every core once, then a second
            holders.append(subprocess.Popen([sys.executable, "-c", hold], env=env, stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, text=True))  # fmt: skip
            claimed.append(int(holders[-1].stdout.readline()))
        assert claimed == [*cores, cores[0]]  # as few per core as can be
        holders[0].stdin.close()
        holders[0].wait(timeout=60)  # its claim ends with it, however it ends
        again = subprocess.run([sys.executable, "-c", hold], env=env, input="", capture_output=True,
                               text=True, timeout=60)  # fmt: skip
        assert int(again.stdout) == claimed[0]
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()


def test_train_cores_takes_the_cores_a_search_leaves_free(tmp_path):
    env = os.environ | {"TMPDIR": str(tmp_path)}  # lock files of this test's own
    cores = sorted(os.sched_getaffinity(0))[:2]
    if len(cores) < 2:
        pytest.skip("needs two cores")
    prefix = f"import os, sys; os.sched_setaffinity(0, {cores}); "
    worker = prefix + ("from search.executor import claim_core; print(claim_core(), flush=True); "
                       "sys.stdin.read()")  # fmt: skip
    train = prefix + ("from search.cli import pin_cores; pin_cores(int(sys.argv[1])); "
                      "print(sorted(os.sched_getaffinity(0)))")  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-c", worker], env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        held = int(holder.stdout.readline())  # a search's worker on the first core
        one = subprocess.run([sys.executable, "-c", train, "1"], env=env, capture_output=True, text=True)
        both = subprocess.run([sys.executable, "-c", train, "2"], env=env, capture_output=True, text=True)
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert held == cores[0]
    assert json.loads(one.stdout) == [cores[1]], one.stderr  # `train --cores 1`: the free core
    assert json.loads(both.stdout) == cores, both.stderr  # two distinct cores, however shared


def test_two_local_searches_at_once_train_on_different_cores():
    # each a local Ray of its own with one worker, as two `cellsearch search` commands on one
    # machine; by index both workers sat on the first core and the second stayed idle
    temp_dir = tempfile.mkdtemp(prefix="cores-")  # their claims only; short: Ray's socket paths
    env = os.environ | {"TMPDIR": temp_dir}
    probe = ("import json, os, sys; from search.executor import RayExecutor\n"
             "with RayExecutor(workers=1) as executor:\n"
             "    print(json.dumps(sorted(os.sched_getaffinity(executor.worker_pids()[0]))), flush=True)\n"
             "    sys.stdin.read()")  # fmt: skip
    drivers = [subprocess.Popen([sys.executable, "-c", probe], env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]  # fmt: skip
    try:
        cores = [json.loads(driver.stdout.readline() or "null") for driver in drivers]
        for driver in drivers:
            driver.stdin.close()
            assert driver.wait(timeout=120) == 0, driver.stderr.read()[-2000:]
        assert all(c is not None and len(c) == 1 for c in cores), cores
        assert cores[0] != cores[1] or len(os.sched_getaffinity(0)) == 1, cores  # (a 1-CPU machine)
    finally:
        for driver in drivers:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_search_joins_a_separately_started_ray_head(tmp_path):
    from search.executor import DETERMINISTIC_XLA_FLAGS, local_ray_environment

    env = os.environ | local_ray_environment()
    # the cluster's workers claim cores among themselves (short: Ray's socket paths): not beside
    # the workers that other tests start and end meanwhile, which may leave either core the freer
    claims = tempfile.mkdtemp(prefix="cores-")
    try:
        with ray_head(cpus=2, env=env | {"TMPDIR": claims}) as (address, head):
            # the workers on the cluster get the driver's cache directory and its cap, trimmed at start
            cache = tmp_path / "cache" / "jax"
            cache.mkdir(parents=True)
            (cache / "old-cache").write_bytes(b"x" * 100_000)
            os.utime(cache / "old-cache", (1e9, 1e9))
            driver_env = env | {"CELLSEARCH_CACHE": str(cache.parent),
                                "CELLSEARCH_CACHE_MAX_GB": "0.00005"}  # fmt: skip
            # deterministic: the workers on the cluster get XLA's deterministic flags (GPU reruns exact)
            args = [*tiny_args(max_trials=4, deterministic="true"), "--quiet"]
            result = subprocess.run(
                [sys.executable, "-m", "search.cli", "search", str(QUICK), "--out", str(tmp_path / "run"),
                 "--address", address, *args],
                env=driver_env, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr[-2000:]
            rows = load(tmp_path / "run")
            assert sorted(rows["trial"]) == [0, 1, 2, 3]
            assert rows["xla_flags"].str.endswith(DETERMINISTIC_XLA_FLAGS).all()
            assert (rows["cpu_threads"] == 1).all()  # as a local search's: the same numbers
            assert not (cache / "old-cache").exists() and list((cache / "executables").glob("*.xla"))
            assert head.poll() is None  # joining a cluster does not stop it
            # the search's workers may still be exiting, holding their claims on the cores, which
            # would send both of the probe's workers to the same core (the least shared just then)
            deadline = time.monotonic() + 60
            while ray_actors(head.pid, "TrialWorker") and time.monotonic() < deadline:
                time.sleep(0.2)
            # the cluster's workers each claimed a core of their own on the node (a driver of its
            # own: this process may hold the session's local Ray)
            probe = ("import json, os; from search.executor import RayExecutor\n"
                     f"with RayExecutor(workers=2, address='{address}') as executor:\n"
                     "    print(json.dumps([sorted(os.sched_getaffinity(p)) for p in executor.worker_pids()]))")
            result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                                    timeout=300)  # fmt: skip
            assert result.returncode == 0, result.stderr[-2000:]
            cores = json.loads(result.stdout.splitlines()[-1])
            assert all(len(c) == 1 for c in cores), cores
            assert cores[0] != cores[1] or len(os.sched_getaffinity(0)) == 1, cores  # (a 1-CPU machine)
            assert list(pathlib.Path(claims).glob("cellsearch-cores-*/*.lock"))  # claimed there
    finally:  # also when an assertion above fails
        shutil.rmtree(claims, ignore_errors=True)


def test_workers_on_a_gpu_node_use_the_share_of_it_they_asked_ray_for(tmp_path):
    # JAX_PLATFORMS=cuda stands for a node whose JAX takes its GPU: here, without one, JAX fails
    # to start instead, so only processes that choose their platform themselves get to train
    from search.executor import local_ray_environment

    env = os.environ | local_ray_environment() | {"JAX_PLATFORMS": "cuda"}
    with ray_head(cpus=2, env=env, gpus=1) as (address, _):
        # CPU workers (the default) train on their cores, and the driver starts no JAX backend
        result = subprocess.run(
            [sys.executable, "-m", "search.cli", "search", str(QUICK), "--out", str(tmp_path / "run"),
             "--address", address, *tiny_args(max_trials=2), "--quiet"],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        rows = load(tmp_path / "run")
        assert (rows["status"] == "ok").all() and (rows["device"] == "cpu").all(), rows["error"]
        assert result.stderr == ("cellsearch: warning: the Ray cluster has 1 GPU(s) and the workers "
                                 "ask for none, so trials train on CPU cores; --gpus-per-worker 1 "
                                 "trains on the GPUs\n")  # fmt: skip
        # by default as many workers as the GPU holds (not one per CPU, which left all but one
        # waiting for a GPU); two sharing it each preallocate half of JAX's 75% of its memory.
        # Probe says its JAX has a GPU, which this machine lacks; a TrialWorker tells the truth
        probe = ("import json, os, ray; from search.executor import RayExecutor, TrialWorker\n"
                 "class Probe(TrialWorker):\n"
                 "    def platform(self):\n"
                 "        return 'gpu'\n"
                 "    def environment(self):\n"
                 "        return [os.environ.get(k) for k in ('CUDA_VISIBLE_DEVICES', 'JAX_PLATFORMS', "
                 "'XLA_CLIENT_MEM_FRACTION')]\n"
                 "for share, workers, wait, cls in ((0.5, None, 60, Probe), (1, None, 60, Probe),\n"
                 "        (2, None, 60, Probe), (1, 2, 5, Probe), (1, None, 60, TrialWorker)):\n"
                 "    try:\n"
                 f"        with RayExecutor(workers, '{address}', gpus_per_worker=share, worker=cls,\n"
                 "                         start_timeout=wait) as ex:\n"
                 "            print(json.dumps(ray.get([a.environment.remote() for a in ex.actors])))\n"
                 "    except RuntimeError as error:\n"
                 "        print(json.dumps(str(error)))")  # fmt: skip
        result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                                text=True, timeout=300)  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        *reports, no_gpu = [json.loads(line) for line in result.stdout.splitlines()[-5:]]
        assert reports == [
            [["0", "cuda", "0.375"]] * 2, [["0", "cuda", None]],
            "the workers ask for 2 GPU(s) each (--gpus-per-worker) and the Ray cluster has 1",
            "the Ray cluster could not start 2 workers in 5 s (it has 2 CPUs, 1 GPU(s)); ask for "
            "fewer with --workers"]  # fmt: skip
        assert re.fullmatch(r"a worker on \S+ has 1 GPU\(s\) from Ray but its JAX trains on nothing: "
                            r"JAX could not start \(JAX_PLATFORMS=cuda; .*\); install JAX with "
                            r"CUDA there \(pip install \"jax\[cuda13\]==0.10.2\"\), or leave out "
                            r"--gpus-per-worker", no_gpu), no_gpu  # fmt: skip
        assert "warning" not in result.stderr


def test_gpu_workers_whose_jax_has_no_gpu_are_refused_in_one_line(tmp_path):
    # a GPU node whose JAX was installed without CUDA (as here): its GPU workers would train on
    # the CPU, each unpinned, and their rows would only say so in their device column
    from search.executor import local_ray_environment

    env = os.environ | local_ray_environment()
    with ray_head(cpus=2, env=env, gpus=1) as (address, _):
        result = subprocess.run(
            [sys.executable, "-m", "search.cli", "search", str(QUICK), "--out", str(tmp_path / "run"),
             "--address", address, "--gpus-per-worker", "1", *tiny_args(max_trials=2), "--quiet"],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr[-2000:]
    assert "has 1 GPU(s) from Ray but its JAX trains on cpu; install JAX with CUDA" in result.stderr
    RunStore(tmp_path / "run").check_new()  # no run left behind: a corrected command starts anew


@pytest.mark.parametrize("gpus, environ, expected", [
    (None, {}, {}),
    (0, {"JAX_PLATFORMS": "cuda"}, {"JAX_PLATFORMS": "cpu"}),
    (0.25, {}, {"XLA_CLIENT_MEM_FRACTION": "0.1875"}),
    (0.5, {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.2"}, {}),  # the node's own choice stays
    (0.5, {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}, {}),
    (1, {}, {}),
    (2, {}, {}),
])  # fmt: skip
def test_worker_environment(gpus, environ, expected):
    from search.executor import worker_environment

    assert worker_environment(gpus, environ) == expected


def test_an_address_where_no_cluster_answers_is_a_prompt_one_line_error(tmp_path):
    port = free_port()  # nothing listens there
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "search.cli", "search", str(QUICK), "--out", str(tmp_path / "run"),
         "--address", f"127.0.0.1:{port}", "--quiet"], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr[-2000:]
    assert f"no Ray cluster answers at 127.0.0.1:{port} (Connection refused)" in result.stderr
    assert time.monotonic() - start < 60  # ray.init alone retried for minutes
    assert not (tmp_path / "run").exists()


def test_a_stale_cluster_address_on_the_machine_does_not_capture_a_local_search(tmp_path):
    # `ray start` leaves /tmp/ray/ray_current_cluster behind; ray.init() would try to join it
    stale = pathlib.Path("/tmp/ray/ray_current_cluster")
    if stale.exists():
        pytest.skip("a Ray cluster address is recorded on this machine; not ours to replace")
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("127.0.0.1:1")
    try:  # a new driver process, as a user runs it (this one already holds the module's Ray)
        args = [*tiny_args(max_trials=2), "--quiet"]
        result = subprocess.run(
            [sys.executable, "-m", "search.cli", "search", str(QUICK), "--out", str(tmp_path / "run"),
             "--workers=1", *args], capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        assert sorted(load(tmp_path / "run")["trial"]) == [0, 1]
    finally:
        stale.unlink()


@pytest.mark.parametrize("extra, warned", [(0, False), (1, True)])
def test_more_workers_than_cpus_on_a_local_ray_is_a_warning(extra, warned, capsys, monkeypatch):
    from search.cli import _executor_factory, build_parser

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cpus = len(os.sched_getaffinity(0))
    args = build_parser().parse_args(["search", str(QUICK), f"--workers={cpus + extra}"])
    executor = _executor_factory(args, tiny())()  # made, not entered: no Ray is started
    assert executor.workers == cpus + extra
    err = capsys.readouterr().err
    assert (f"warning: --workers {cpus + extra} is more than the {cpus} CPUs here" in err) == warned
    assert err.count("\n") == int(warned)
