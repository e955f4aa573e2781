"""Running trials on Ray: long-lived worker actors, retries, a local Ray bound to 127.0.0.1.

    with RayExecutor(workers=2) as executor:            # local Ray, started and stopped here
        executor.run(jobs, on_row)                      # jobs: [(trial_id, TrialSpec)]

    with RayExecutor(address="10.0.0.5:6379") as ex:    # join an existing cluster (or RAY_ADDRESS)
        ...

Each worker is an actor that lives for the whole search, so compiled programs stay in its memory;
workers share a directory of compiled programs (`tasks.use_compilation_cache`), so a cell that
another worker or an earlier search compiled loads in hundredths of a second. Each CPU worker
pins itself to one core before it imports jax (two pinned workers train about 1.7x faster than
one process using both cores): a core of its machine that no other worker of this user holds,
or as few as can be (`claim_core`), so that two searches on one machine, or a cluster's nodes,
spread over the cores. A trial's numbers depend on its process's core count, so one core each
makes a search's rows the same locally and on a cluster (each CPU worker's rows have
`cpu_threads` 1). A worker whose cellsearch source differs from the driver's (a node installed
from other code) is refused before it trains (`tasks.trainer.code_digest`); so is one that cannot
import a task of your own, or imports another file of it. On a cluster cellsearch's code and that
module go with the job (`ship`: Ray's `py_modules`), so the nodes need only the dependencies. A
worker trains on
what it asked Ray for: without a GPU on its CPU core, even on a node with GPUs; with a share of
one, within that share of its memory (`worker_environment`); one whose JAX has no GPU is
refused. At most one trial per worker is in flight, preferably one whose program the worker holds
or that no other worker is compiling (`next_for_worker`); each finished row is handed to `on_row` at
once. A trial whose worker died is retried on a fresh worker up to `retries` times, then recorded
with status `error`. No process outside this executor's own Ray is ever touched: a local Ray is
stopped with `ray.shutdown()`, never `ray stop`.
"""

from __future__ import annotations

import collections
import fcntl
import functools
import itertools
import math
import os
import pathlib
import secrets
import signal
import socket
import sys
import tempfile
import threading
import time
import warnings
from typing import TYPE_CHECKING, Callable, Collection, Hashable, Mapping, Sequence

if TYPE_CHECKING:  # the worker module must not import jax before the worker pins its core
    from tasks import TrialSpec

CACHE_DIR = pathlib.Path(
    os.environ.get("CELLSEARCH_CACHE", pathlib.Path.home() / ".cache" / "cellsearch")
)


# a free worker looks this far down the queue for a trial whose program it holds, or one no other
# worker is compiling (`RayExecutor.run`); bounded so that a run of thousands of trials stays cheap
AFFINITY_WINDOW = 256
HELD_PROGRAMS = 32  # programs a worker keeps in memory (`tasks.trainer.program`'s cache)

_CORE_LOCKS: list[int] = []  # this process's claims: open lock files, held while it lives
MAX_SLOTS = 64  # claimants per core before the PID decides


def claim_core() -> int:
    """A core of this machine for this process, among those it may run on, shared with as few
    other claimants as can be: the first free slot, taking slot 0 of every core, then slot 1, ...

    A slot is a lock file (`flock`, in a user-only directory of the temporary directory) held
    while the process lives and released however it ends, so a crashed worker's core is free for
    its replacement, and workers of a search that just ended, still exiting, push the next
    search's onto other slots rather than onto the same core.
    """
    return claim_cores(1)[0]


def claim_cores(count: int) -> list[int]:
    """`count` distinct cores for this process, claimed as `claim_core` claims one (the least
    shared first), e.g. for `cellsearch train --cores N` beside a running search."""
    cores = sorted(os.sched_getaffinity(0))
    chosen: list[int] = []
    directory = pathlib.Path(tempfile.gettempdir()) / f"cellsearch-cores-{os.getuid()}"
    try:
        directory.mkdir(mode=0o700, exist_ok=True)
        for slot in range(MAX_SLOTS):
            for core in cores:
                if len(chosen) == count:
                    return chosen
                if core in chosen:
                    continue
                lock = os.open(directory / f"{core}.{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(lock)
                    continue
                _CORE_LOCKS.append(lock)
                chosen.append(core)
    except OSError:  # no usable temporary directory
        pass
    if len(chosen) < count:  # every slot taken: by PID, from the cores not chosen yet
        others = [core for core in cores if core not in chosen]
        shift = os.getpid() % len(others)
        chosen += (others[shift:] + others[:shift])[: count - len(chosen)]
    return chosen


class TrialWorker:
    """A Ray actor that trains trials one after another (made remote in `RayExecutor`).

    Args:
      core: the core to run on; None: all the process may use; "claim": one that as few other
        workers on this machine hold as can be (`claim_core`).
      gpus: the share of a GPU Ray gave this worker (`worker_environment`); None: JAX's choice.
      import_paths: directories the driver searched for code of your own (a task's module beside
        its config file; `tasks.usercode.SEARCHED`), searched here too, after the rest.
    """

    def __init__(self, core: int | str | None, cache_dir: str, xla_flags: str = "",
                 cache_max_bytes: int | None = None, gpus: float | None = None,
                 import_paths: Sequence[str] = ()):  # fmt: skip
        sys.path.extend(path for path in import_paths if path not in sys.path)
        if core == "claim":
            core = claim_core()
        if core is not None:
            os.sched_setaffinity(0, {core})  # before jax starts its thread pool
        add_xla_flags(xla_flags)
        os.environ.update(worker_environment(gpus))  # read when jax starts its backend
        from tasks import use_compilation_cache  # imports jax: after the core is pinned

        use_compilation_cache(cache_dir, max_bytes=cache_max_bytes)

    def run(self, spec: TrialSpec) -> dict:
        from tasks import train_trial

        return _stored_row(train_trial(spec))

    def run_group(self, specs: list[TrialSpec]) -> list[dict]:
        """Trains trials of one program shape as one vmapped program (`tasks.train_settings`)."""
        from tasks import train_settings

        return [_stored_row(result) for result in train_settings(specs)]

    def pid(self) -> int:
        return os.getpid()

    def node(self) -> str:
        """The Ray node this worker runs on."""
        import ray

        return ray.get_runtime_context().get_node_id()

    def code(self) -> tuple[str, str, str]:
        """The code this worker trains with: (digest of its source, code version, its host)."""
        from tasks.trainer import code_digest, code_version

        return code_digest(), code_version(), socket.gethostname()

    def task_sources(self, names: list[str]) -> dict[str, dict]:
        """For each task of your own, its source as this worker imports it (`class_source`), or
        {"error": why it cannot}."""
        from tasks import task_class
        from tasks.usercode import class_source

        found = {}
        for name in names:
            try:
                found[name] = class_source(task_class(name))
            except ValueError as error:
                found[name] = {"error": str(error)}
        return found

    def platform(self) -> str:
        """What JAX trains on in this worker ("cpu", "gpu"), or why it cannot start."""
        import jax

        try:
            return jax.devices()[0].platform
        except Exception as error:  # noqa: BLE001 - reported to the driver, which refuses the worker
            return (f"nothing: JAX could not start (JAX_PLATFORMS={os.environ.get('JAX_PLATFORMS')}; "
                    f"{type(error).__name__}: {error})")  # fmt: skip


def worker_environment(gpus: float | None, environ: Mapping[str, str] = os.environ
                       ) -> dict[str, str]:  # fmt: skip
    """The variables a worker given `gpus` of a GPU sets before JAX starts its backend.

    Ray 2.60 no longer hides a node's GPUs from an actor that asked for none, and JAX takes a GPU
    it sees and preallocates 75% of its memory in each process. So a worker without a GPU trains
    on the CPU (`JAX_PLATFORMS=cpu`), and workers sharing one (`--gpus-per-worker 0.5`) each
    preallocate their share of those 75% (`XLA_CLIENT_MEM_FRACTION`), unless the node's
    environment sets a fraction or turns preallocation off.

    Args:
      gpus: GPUs per worker as asked of Ray; None leaves JAX's defaults.
      environ: the environment the worker inherited.
    Returns:
      The variables to set.
    """
    if gpus is None or gpus >= 1:
        return {}
    if gpus == 0:
        return {"JAX_PLATFORMS": "cpu"}
    if {"XLA_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_MEM_FRACTION",
            "XLA_PYTHON_CLIENT_PREALLOCATE"} & set(environ):  # fmt: skip
        return {}
    return {"XLA_CLIENT_MEM_FRACTION": f"{0.75 * gpus:.4g}"}


def _as_the_driver_names_it(on_row: Callable[[int, dict], None], code_version: str,
                            task_sources: Mapping[str, dict], trial_id: int, row: dict) -> None:  # fmt: skip
    """`on_row` of `row` as the driver names its code: a worker that trained from copies shipped
    with the job has the driver's cellsearch source and task files (each worker's SHA-256s are
    checked at its start), but its `code_version` and `task_source` name the copies."""
    row = {**row, "code_version": code_version}
    source = row.get("task_source")
    driver = next((s for s in task_sources.values() if source and s["class"] == source["class"]), None)
    if driver and driver["sha256"] == source["sha256"]:
        row["task_source"] = dict(driver)
    on_row(trial_id, row)


def _stored_row(result) -> dict:
    """A trial's row as the store keeps it (the in-process traceback stays out)."""
    row = result.row()
    row.pop("traceback", None)
    return row


def compilation_cache_dir() -> pathlib.Path:
    """Where workers and `cellsearch train` keep compiled programs (`tasks.use_compilation_cache`);
    user-only, since the executables read back from it run as code."""
    return _private_dir(CACHE_DIR / "jax")


# 10 GB holds about 60,000 programs of the quick preset; the paper's scale writes tens of GB
DEFAULT_CACHE_MAX_GB = 10.0


def cache_max_bytes() -> int | None:
    """The size each worker trims `compilation_cache_dir()` to on its node:
    `CELLSEARCH_CACHE_MAX_GB` (default 10), or None where it is "none" (never trimmed).

    Raises:
      ValueError: the variable is neither a positive number nor "none".
    """
    value = os.environ.get("CELLSEARCH_CACHE_MAX_GB", str(DEFAULT_CACHE_MAX_GB)).strip()
    if value.lower() == "none":
        return None
    try:
        gigabytes = float(value)
    except ValueError:
        gigabytes = 0.0
    if not 0 < gigabytes < math.inf:  # also rejects "nan"
        raise ValueError(
            f"CELLSEARCH_CACHE_MAX_GB={value!r}: expected a positive number of GB or 'none'"
        )
    return int(gigabytes * 1e9)


def _private_dir(path: pathlib.Path) -> pathlib.Path:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)
    except OSError as error:  # under CACHE_DIR: name the variable that moves it
        raise OSError(f"cannot make the cache directory {path} ({error.strerror}); "
                      "set CELLSEARCH_CACHE to a writable directory") from None
    return path


def local_ray_environment() -> dict[str, str]:
    """Environment for a local Ray: loopback only, token authentication on, no usage stats."""
    token = _private_dir(CACHE_DIR) / "ray_token"
    if not token.exists():
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # makes every Ray listener bind 127.0.0.1
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_USAGE_STATS_ENABLED": "0",
    }


def _reread_ray_environment() -> None:
    """Makes a Ray imported before `local_ray_environment` was set (a notebook's `import ray`)
    read it again. Else the new Ray would listen on every interface (the node's address is chosen
    from a constant read at import) and the driver would not send the token it asks for."""
    from ray._private import ray_constants
    from ray._raylet import AuthenticationTokenLoader, Config

    variable = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    ray_constants.ENABLE_RAY_CLUSTER = ray_constants.env_bool(variable, True)
    Config.initialize("")  # as Ray does itself when it turns token authentication on
    AuthenticationTokenLoader.instance().reset_cache()


def ray_address(address: str | None = None) -> str | None:
    """The Ray cluster to join: `address`, else `RAY_ADDRESS`; None means a new local Ray."""
    return address or os.environ.get("RAY_ADDRESS") or None


def check_reachable(address: str, wait: float = 10.0) -> None:
    """Raises RuntimeError (one line) when nothing answers at a Ray cluster's "host:port".

    `ray.init` keeps retrying an address where nothing listens, for minutes and with a screen of
    log lines; a mistyped `--address` should fail within `wait` seconds instead. A head that is
    still starting gets those seconds to open its port. "auto" and addresses that are not
    host:port are left to Ray.

    Args:
      address: the cluster's address, as given to `ray.init` (a "ray://" prefix is allowed).
      wait: seconds to keep trying.
    """
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    deadline = time.monotonic() + wait
    while True:
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=wait).close()
            return
        except OSError as error:
            if time.monotonic() + 0.5 >= deadline:
                reason = error.strerror or type(error).__name__
                raise RuntimeError(f"no Ray cluster answers at {address} ({reason}); start one there "
                                   "with `ray start --head`, or correct the host and port") from None
            time.sleep(0.5)


def add_xla_flags(flags: str) -> None:
    """Appends `flags` to this process's `XLA_FLAGS`; they apply only if JAX has not yet started its
    backend (the first computation does), which reads them once."""
    if flags:
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()


# Some of XLA's GPU kernels (atomic scatters, reductions) may add in another order on every run,
# so a trial run again differs slightly; with these flags it is exact, at 11-18% of the throughput
# on an H200 (benchmarks/README.md). A CPU is deterministic either way, on a given number of cores.
DETERMINISTIC_XLA_FLAGS = "--xla_gpu_deterministic_ops=true"


def next_for_worker(shapes: Sequence[Hashable], held: Collection, busy: Collection) -> int:
    """Which of the pending trials a free worker takes (`RayExecutor.run`).

    The first whose program the worker holds (no compile); else the first whose program no other
    worker is running (it may be compiling it: two workers would pay the same compile side by
    side); else the first.

    Args:
      shapes: the pending trials' program shapes (`TrialSpec.program_shape`), in queue order.
      held: the programs the worker trained last.
      busy: the programs other workers are running now.

    Returns:
      An index into `shapes`.
    """
    for wanted in (lambda shape: shape in held, lambda shape: shape not in busy):
        found = next((i for i, shape in enumerate(shapes) if wanted(shape)), None)
        if found is not None:
            return found
    return 0


def executor_for(config, workers: int | None = None, address: str | None = None,
                 gpus_per_worker: float = 0, ship: bool | None = None
                 ) -> Callable[[], "RayExecutor"]:  # fmt: skip
    """The executor factory `search.run_search` takes, as `config` asks: its `retries`, and
    `DETERMINISTIC_XLA_FLAGS` where it sets `deterministic`.

    Args:
      config: the run's `SearchConfig`.
      workers, address, gpus_per_worker: as `RayExecutor` takes them (`--workers`, `--address`,
        `--gpus-per-worker` of the command line).
      ship: whether cellsearch's code and the module of each task of your own go to the workers
        with the job (`RayExecutor`'s `ship`); None (`--ship` left out): when joining a cluster.

    Raises:
      ValueError: a task of your own that cannot be shipped, in one line.
    """
    from tasks import task_class
    from tasks.executables import CODE_PACKAGES, package_directory
    from tasks.usercode import class_source, module_package

    xla_flags = DETERMINISTIC_XLA_FLAGS if config.deterministic else ""
    classes = {task: task_class(task) for task in config.own_tasks()}
    if ship is None:
        ship = ray_address(address) is not None
    paths = []
    if ship:
        paths = [str(package_directory(package)) for package in CODE_PACKAGES]
        paths += sorted({str(module_package(cls)) for cls in classes.values()} - set(paths))
    return functools.partial(RayExecutor, workers=workers, address=address,
                             gpus_per_worker=gpus_per_worker, retries=config.retries,
                             xla_flags=xla_flags, ship=paths,
                             task_sources={task: class_source(cls) for task, cls in classes.items()})  # fmt: skip


class RayExecutor:
    """Runs trials on Ray worker actors (see the module docstring).

    Args:
      workers: number of worker actors; default one per CPU of the local machine or cluster
        (with `gpus_per_worker`, no more than its GPUs hold).
      address: an existing Ray cluster ("host:port" or "auto"); default `RAY_ADDRESS`, else a new
        local Ray bound to 127.0.0.1 that lives as long as this executor. A Ray this process has
        already joined (`ray.init()` in a notebook) is used instead, and left running.
      gpus_per_worker: GPUs each worker asks for (0.5: two workers share a GPU);
        `worker_environment` says what a worker does with them.
      xla_flags: added to each worker's `XLA_FLAGS` (e.g. `DETERMINISTIC_XLA_FLAGS`).
      retries: how often a trial whose worker died is retried.
      start_timeout: seconds a replacement worker has to start before its slot is given up.
      worker: the actor class; `benchmarks/ray_execution.py` passes one whose trials do nothing,
        to measure what the driver, Ray and the store cost per trial.
      task_sources: for each task of your own the search trains, its source as the driver
        imports it (`tasks.usercode.class_source`); a worker that cannot import it, or imports a
        file with another SHA-256, is refused.
      ship: files and package directories that go to every worker with the job (Ray's
        `py_modules`, uploaded once): cellsearch's packages and the modules of tasks of your own
        (`executor_for`), so that the cluster's nodes need only the dependencies. The workers
        import those copies first; their rows name the driver's code version and files, which
        the copies equal (checked at each worker's start).
    """

    def __init__(self, workers: int | None = None, address: str | None = None,
                 gpus_per_worker: float = 0, retries: int = 2, start_timeout: float = 60,
                 worker: type = TrialWorker, xla_flags: str = "",
                 task_sources: Mapping[str, dict] | None = None, ship: Sequence[str] = ()):  # fmt: skip
        self.workers = workers
        self.task_sources = dict(task_sources or {})
        self.ship = list(ship)
        self.worker = worker
        self.start_timeout = start_timeout
        self.poll_seconds = 10.0  # how often a wait for results also checks for lost nodes
        self.nodes: list[str] = []
        self.address = ray_address(address)
        self.given_address = address
        self.gpus_per_worker = gpus_per_worker
        self.xla_flags = xla_flags
        self.cache_max_bytes = cache_max_bytes()  # read here: a bad value fails before Ray starts
        self.retries = retries
        self.connected = False  # to a Ray of our own, or to a cluster
        self.actors: list = []
        # per worker, the programs it trained last (as many as `tasks.program` keeps in memory),
        # kept across `run` calls: a search's next round often trains the same programs again
        self.held: list[collections.deque] = []

    def __enter__(self) -> "RayExecutor":
        imported = "ray._raylet" in sys.modules
        # a Ray this process has joined itself (a notebook's `ray.init()`) is used as it is and
        # left running: Ray allows one per process
        joined = imported and sys.modules["ray"].is_initialized()
        if self.address is None and not joined:  # Ray reads these when it is first imported
            os.environ.update(local_ray_environment())
        import ray

        if self.address is None and imported and not joined:
            _reread_ray_environment()

        # Ray's init replaces the process's SIGTERM handler (with sys.exit, after a C++ stack
        # dump); a caller's own handler (the CLI stops a search on SIGTERM as on Ctrl-C) is kept
        main_thread = threading.current_thread() is threading.main_thread()
        sigterm = signal.getsignal(signal.SIGTERM) if main_thread else None
        if joined and self.ship:
            raise RuntimeError(
                "this process has already joined a Ray (ray.init), so cellsearch cannot ship "
                f"{', '.join(self.ship)} to its workers: pass runtime_env={{'py_modules': "
                f"{self.ship}}} to your ray.init, or ship=False where every node has them")  # fmt: skip
        # the job's runtime environment (Ray uploads local paths only for a whole job); one field
        # alone, which a `ray job submit` environment that leaves it out merges with
        job = {"runtime_env": {"py_modules": self.ship}} if self.ship else {}
        if self.address is None and not joined:
            cpus = len(os.sched_getaffinity(0))
            with warnings.catch_warnings():
                # JAX warns at every fork once it has a backend; Ray's fork starts its own
                # processes with an exec right after, where no JAX thread can deadlock
                warnings.filterwarnings("ignore", r"os\.fork\(\) was called", RuntimeWarning)
                # address="local": always a new Ray of our own, never one found on the machine
                self._init(address="local", num_cpus=max(cpus, self.workers or 0),
                           include_dashboard=False, _node_ip_address="127.0.0.1", **job)  # fmt: skip
            node_address = ray.util.get_node_ip_address()
            if node_address != "127.0.0.1":  # never a local Ray on the network
                self.__exit__()
                raise RuntimeError(f"the local Ray came up on {node_address}, not 127.0.0.1; "
                                   "stopped")  # fmt: skip
        elif not joined:
            check_reachable(self.address)
            self._init(address=self.address, **job)
        if callable(sigterm):
            signal.signal(signal.SIGTERM, sigterm)
        if joined and self.given_address not in (None, "auto"):
            joined_at = ray.get_runtime_context().gcs_address
            if joined_at != self.given_address.removeprefix("ray://"):
                warnings.warn(f"this process has already joined the Ray at {joined_at}: the workers "
                              f"run there, not at {self.given_address}", stacklevel=2)  # fmt: skip
        resources = ray.cluster_resources()
        cpus, gpus = int(resources.get("CPU", 1)), resources.get("GPU", 0)
        if self.gpus_per_worker > gpus:
            self.__exit__()
            raise RuntimeError(f"the workers ask for {self.gpus_per_worker:g} GPU(s) each "
                               f"(--gpus-per-worker) and the Ray cluster has {gpus:g}")  # fmt: skip
        if self.workers is None:  # one per CPU, or per GPU share where those are fewer
            shares = int(gpus / self.gpus_per_worker + 1e-9) if self.gpus_per_worker else cpus
            self.workers = max(1, min(cpus, shares))
        if gpus and not self.gpus_per_worker:
            print(f"cellsearch: warning: the Ray cluster has {gpus:g} GPU(s) and the workers ask "
                  "for none, so trials train on CPU cores; --gpus-per-worker 1 trains on the GPUs",
                  file=sys.stderr)  # fmt: skip
        self._remote = ray.remote(num_cpus=1, num_gpus=self.gpus_per_worker)(self.worker)
        self.actors = [self._new_actor() for _ in range(self.workers)]
        self.held = [collections.deque(maxlen=HELD_PROGRAMS) for _ in self.actors]
        try:  # where each worker runs; also proves that every one of them could start
            self.nodes = ray.get([actor.node.remote() for actor in self.actors], timeout=self.start_timeout)
            self._check_workers(self.actors)
        except ray.exceptions.GetTimeoutError:
            has = f"{cpus} CPUs" + (f", {gpus:g} GPU(s)" if self.gpus_per_worker else "")
            self.__exit__()
            raise RuntimeError(f"the Ray cluster could not start {self.workers} workers in "
                               f"{self.start_timeout:g} s (it has {has}); ask for fewer with "
                               "--workers") from None
        except ray.exceptions.RayActorError as error:  # its process could not even start
            self.__exit__()
            cause = [line for line in str(error).splitlines() if line.strip()][-1].strip()
            raise RuntimeError(f"a Ray worker could not start ({cause}); every node needs "
                               "cellsearch's dependencies installed, and without --ship its code "
                               "too") from None  # fmt: skip
        except RuntimeError:
            self.__exit__()
            raise
        return self

    def _init(self, **options) -> None:
        """`ray.init` with `options`; a failure to upload `self.ship` is one line."""
        import ray
        from ray.exceptions import RuntimeEnvSetupError

        try:
            ray.init(logging_level="ERROR", log_to_driver=False, **options)
        except RuntimeEnvSetupError as error:  # Ray's own: a traceback's worth, the cause last
            if ray.is_initialized():
                ray.shutdown()
            raise RuntimeError(f"shipping {', '.join(self.ship)} to the Ray workers failed: "
                               f"{str(error).strip().splitlines()[-1]}") from None  # fmt: skip
        self.connected = True

    def _check_workers(self, actors) -> None:
        """Refuses workers whose cellsearch source differs from the driver's (a node of a cluster
        installed from another commit, or, even on one machine, another checkout in the driver's
        working directory, which Ray puts on its workers' path): their rows would name code the
        run was not made with. Refuses GPU workers whose JAX has no GPU (installed without CUDA):
        they would train on the CPU, unpinned."""
        import ray

        from tasks.trainer import code_digest, code_version, package_versions

        ours = code_digest()
        codes = ray.get([actor.code.remote() for actor in actors], timeout=self.start_timeout)
        for digest, version, host in codes:
            if digest != ours:
                raise RuntimeError(
                    f"a worker on {host} runs other cellsearch code ({version}, source "
                    f"{digest[:12]}) than this driver ({code_version()}, source {ours[:12]}); "
                    + ("" if self.ship else "ship the driver's with the job (--ship) or install "
                       "the same code on every node, and ")
                    + "run cellsearch from a directory without another copy of it (Ray puts the "
                    "driver's working directory first on its workers' path)")  # fmt: skip
        if self.task_sources:
            names = list(self.task_sources)
            imported = ray.get([actor.task_sources.remote(names) for actor in actors],
                               timeout=self.start_timeout)  # fmt: skip
            how = ("its module was shipped with the job: what it imports from beside it must be "
                   "inside its package, or installed on every node" if self.ship else
                   "its module must be importable on every node: at the same path, installed "
                   "there, or shipped with the job (--ship)")  # fmt: skip
            for found, (_, _, host) in zip(imported, codes):
                for name, source in self.task_sources.items():
                    if "error" in found[name]:
                        raise RuntimeError(f"a worker on {host} cannot import task {name} "
                                           f"({found[name]['error']}); {how}")  # fmt: skip
                    if found[name]["sha256"] != source["sha256"]:
                        where = found[name].get("package") or found[name]["file"]
                        raise RuntimeError(
                            f"a worker on {host} imports task {name} from {where} (sha256 "
                            f"{found[name]['sha256'][:12]}), other code than this driver's "
                            f"{source.get('package') or source['file']} ({source['sha256'][:12]}"
                            + (", over the package's .py files" if "package" in source else "")
                            + "); "
                            + ("Ray puts the driver's working directory first on its workers' "
                               "path: start the search from a directory that has no other copy, "
                               "and let no .gitignore or .rayignore leave out a .py file"
                               if self.ship else "put the same code on every node, or ship it "
                               "with the job (--ship)"))  # fmt: skip
        if self.gpus_per_worker:
            platforms = ray.get([actor.platform.remote() for actor in actors],
                                timeout=self.start_timeout)  # fmt: skip
            for platform, (_, _, host) in zip(platforms, codes):
                if platform != "gpu":
                    raise RuntimeError(
                        f"a worker on {host} has {self.gpus_per_worker:g} GPU(s) from Ray but its "
                        f"JAX trains on {platform}; install JAX with CUDA there (pip install "
                        f'"jax[cuda13]=={package_versions()["jax"]}"), or leave out '
                        "--gpus-per-worker")  # fmt: skip

    def _new_actor(self):
        # claimed on the worker's machine, not given by index: another search there, or the
        # workers of one that just ended, may hold the first cores; GPU workers keep the
        # machine's cores, which XLA's GPU compiler uses
        core = None if self.gpus_per_worker else "claim"
        from tasks.usercode import SEARCHED

        # shipped modules are on the workers' path already; the driver's directories are not
        # searched then, as on a node that lacks them
        searched = [] if self.ship else list(SEARCHED)
        return self._remote.remote(core, str(compilation_cache_dir()), self.xla_flags,
                                   self.cache_max_bytes, self.gpus_per_worker, searched)  # fmt: skip

    def _replacement(self, index: int):
        """A fresh actor for a dead one, or None when the cluster has no room for it (a node died):
        the search goes on with fewer workers instead of waiting for one that never starts.

        Ray may still count a lost node as alive for a while, so the new actor must also answer
        within `start_timeout` seconds.
        """
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        alive = sum(n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive"))
        others = sum(a is not None for i, a in enumerate(self.actors) if i != index)
        if others + 1 > alive:
            return None
        actor = self._new_actor()
        try:
            self.nodes[index] = ray.get(actor.node.remote(), timeout=self.start_timeout)
            self._check_workers([actor])
        except (GetTimeoutError, RayActorError):
            ray.kill(actor)
            return None
        except RuntimeError:
            ray.kill(actor)
            raise
        return actor

    def __exit__(self, *exc) -> None:
        import ray

        for actor in filter(None, self.actors):
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.actors, self.held = [], []
        if self.connected:  # stops a Ray of our own; from a cluster it only disconnects, so that
            ray.shutdown()  # another executor in this process can join it again
            self.connected = False

    def worker_pids(self) -> list[int]:
        import ray

        return ray.get([actor.pid.remote() for actor in self.actors if actor is not None])

    def run(self, jobs: list[tuple[int, TrialSpec]], on_row: Callable[[int, dict], None],
            group: int = 1) -> None:  # fmt: skip
        """Runs `jobs`, calling `on_row(trial_id, row)` as each finishes (in completion order).

        A free worker takes the first pending trial whose program it already holds (trained in
        this call or an earlier one: a search calls `run` once a round, and its next round often
        trains the same programs), else the first whose program no other worker is compiling,
        else the first: two workers never compile the same program side by side while other
        work waits (a baselines run's settings of one cell and task used to, and paid each
        compile twice), and the jobs' order decides nothing else, since every trial has its own
        seed and row.

        With `group` > 1, up to that many pending trials of one program shape (cell, task, budget,
        layers; `TrialSpec.program_shape`) go to a worker together and train as one vmapped
        program (`tasks.train_settings`): for GPU workers. A failed group's trials are retried
        one by one.
        """
        import ray
        from ray.exceptions import RayActorError, RayTaskError, WorkerCrashedError

        from tasks import TrialResult

        if self.ship:  # rows name the driver's code and files, not the copies in Ray's session directory
            from tasks.trainer import code_version

            on_row = functools.partial(_as_the_driver_names_it, on_row, code_version(), self.task_sources)
        pending = collections.deque((tid, spec, 0) for tid, spec in jobs)
        shapes = {tid: spec.program_shape() for tid, spec in jobs}
        idle = [i for i, actor in enumerate(self.actors) if actor is not None]
        in_flight: dict = {}  # ref -> ([(trial_id, spec, attempts)], worker index)
        held = self.held

        def take(index: int) -> list[tuple]:
            busy = {shapes[tid] for batch, _ in in_flight.values() for tid, _, _ in batch}
            first = pending[next_for_worker([shapes[tid] for tid, _, _ in
                                             itertools.islice(pending, AFFINITY_WINDOW)],
                                            held[index], busy)]  # fmt: skip
            pending.remove(first)
            batch, shape = [first], shapes[first[0]]
            if group > 1 and first[2] == 0:  # a retried trial runs alone
                for job in list(pending):
                    if len(batch) == group:
                        break
                    if job[2] == 0 and shapes[job[0]] == shape:
                        pending.remove(job)
                        batch.append(job)
            if shape in held[index]:
                held[index].remove(shape)
            held[index].append(shape)  # the most recent last, as the worker's cache keeps them
            return batch

        def failed(batch, index, error) -> list[tuple[int, dict]]:
            """Replaces the worker; each trial goes back in the queue, or becomes an error row."""
            try:
                ray.kill(self.actors[index])
            except Exception:  # noqa: BLE001 - already gone
                pass
            self.actors[index] = self._replacement(index)
            held[index].clear()
            if self.actors[index] is not None:
                idle.append(index)
            elif not any(a is not None for a in self.actors):
                raise RuntimeError("every Ray worker is gone and the cluster has no CPU left for a "
                                   "new one; resume with the same command when it is back")  # fmt: skip
            rows = []
            for tid, spec, attempts in reversed(batch):  # back at the front, in their order
                if attempts < self.retries:
                    pending.appendleft((tid, spec, attempts + 1))
                    continue
                result = TrialResult(spec, status="error")
                message = str(error).strip().splitlines()[0] if str(error).strip() else ""
                result.error = f"worker failed {attempts + 1} times: {type(error).__name__}: {message}"[:500]
                rows.append((tid, result.row()))
            return rows[::-1]

        while pending or in_flight:
            while pending and idle:
                index = idle.pop(0)
                batch = take(index)
                actor = self.actors[index]
                specs = [spec for _, spec, _ in batch]
                ref = actor.run.remote(specs[0]) if len(batch) == 1 else actor.run_group.remote(specs)
                in_flight[ref] = (batch, index)
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=self.poll_seconds)
            if not ready:  # a lost node's tasks may never fail by themselves: look for them
                alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
                for ref, (batch, index) in list(in_flight.items()):
                    if self.nodes[index] not in alive:
                        del in_flight[ref]
                        for tid, row in failed(batch, index, RuntimeError("its node was lost")):
                            on_row(tid, row)
                continue
            for ref in ready:
                batch, index = in_flight.pop(ref)
                try:
                    rows = ray.get(ref)
                except (RayActorError, WorkerCrashedError, RayTaskError) as error:
                    for tid, row in failed(batch, index, error):
                        on_row(tid, row)
                    continue
                idle.append(index)
                for (tid, _, _), row in zip(batch, rows if len(batch) > 1 else [rows]):
                    on_row(tid, row)
