"""Compiled programs kept on disk and loaded without tracing: a warm start in about 0.04 s.

    store = ExecutableStore(pathlib.Path("cache/executables"))
    key = store.key({"function": "train", "cell": text, ...}, args)
    compiled = store.load(key, args, out_tree)          # None on a miss
    if compiled is None:
        compiled = jax.jit(f).trace(*args).lower().compile()
        store.save(key, compiled, args)

JAX's persistent compilation cache is keyed by a hash of the lowered program, so even a hit first
pays JAX's tracing and lowering: about 0.1 s of Python for a train program, three times what
reading the compiled program takes (benchmarks/README.md, "Compilation"). This store keys a program
by what determines it before tracing: the caller's description (cell, task, shapes, compiler
options), the arguments' tree and types, and the environment (the source of `cells` and `tasks`,
the versions of the packages that are traced, JAX's configuration, XLA_FLAGS, the device and the
host CPU's features). Change any of them and the key changes; the program is then compiled anew.

A file holds a JSON header (what JAX needs around the program: its name, its outputs' types, which
arguments it kept) and XLA's serialized executable (XLA's own format, zlib-compressed, 30-100 KB
for the programs of a quick preset): nothing is unpickled. A hit rebuilds JAX's `Compiled` object
around the executable with JAX's own constructors, so it is called through JAX's usual dispatch.
Those constructors are JAX internals (pinned jax 0.10.2); before saving, the store rebuilds the
program it just compiled from the header and checks that every field equals the original's, and
saves nothing where one differs. A file that cannot be loaded (cut short, written by another
version, a JAX whose internals moved) is a miss, never an error.

Files are written to a temporary name and renamed, so workers sharing the directory never read half
a file. A hit marks its file as used (its modification time), so that `trim_cache`, which keeps a
cache directory under a size by deleting the least recently used files, keeps the programs a
search still loads.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import pathlib
import platform
import stat
import tempfile
import time
import warnings
import zlib
from typing import NamedTuple

import jax
import numpy as np

# The header's layout; a file of another format is a miss. (2: only fresh compiles are stored)
FORMAT = 2
_MAGIC = b"cellsearch-executable\n"


def persistent_cache_hits() -> int:
    """How many programs this process has read from JAX's persistent cache so far.

    Such an executable must not be stored: on a CPU, XLA serialises one it has itself deserialised
    without its compiled code, and running it again fails ("Function ... not found"). A caller
    stores a program only if this count did not move while it compiled.
    """
    return _persistent_cache_hits[0]


_persistent_cache_hits = [0]


def _count_persistent_cache_hits(event: str, **kwargs) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _persistent_cache_hits[0] += 1


jax.monitoring.register_event_listener(_count_persistent_cache_hits)


@dataclasses.dataclass(frozen=True)
class ExecutableStore:
    """A directory of compiled programs, keyed without tracing.

    Args:
      directory: where the files go (created on first save).
    """

    directory: pathlib.Path

    def key(self, description: dict, args: tuple) -> str:
        """The file key of a program: its description, its arguments' types and the environment.

        Args:
          description: JSON-ready facts that determine the program besides its arguments' types
            (function, cell, task, shapes, compiler options).
          args: the positional arguments it will be called with.

        Returns:
          A hex digest.
        """
        leaves, tree = jax.tree_util.tree_flatten(args)
        signature = [str(tree), [repr(jax.typeof(leaf)) for leaf in leaves]]
        facts = {"format": FORMAT, "description": description, "signature": signature,
                 "environment": _environment(), "config": _jax_config()}  # fmt: skip
        return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()

    def path(self, key: str) -> pathlib.Path:
        return self.directory / f"{key}.xla"

    def load(self, key: str, args: tuple, out_tree) -> jax.stages.Compiled | None:
        """The stored program for `key`, ready to call with `args`; None if there is none usable.

        Args:
          key: from `key`.
          args: the arguments it will be called with (only their types are read).
          out_tree: the tree structure of its outputs (the caller knows it without tracing).
        """
        path = self.path(key)
        try:
            data = path.read_bytes()
            os.utime(path)  # used now: `trim_cache` deletes the least recently used first
        except OSError:
            return None
        try:
            header, executable = _split(data)
            device = jax.devices()[0]
            executable = zlib.decompress(executable)
            loaded = device.client.deserialize_executable(executable, _device_list(device))
            return _compiled(loaded, header, args, out_tree, device)
        except Exception:  # noqa: BLE001 -- a file that does not load is a miss; it is rewritten
            return None

    def save(self, key: str, compiled: jax.stages.Compiled, args: tuple) -> bool:
        """Stores `compiled` under `key` if it can be rebuilt exactly from what is stored.

        `compiled` must come from XLA's compiler, not from JAX's persistent cache
        (`persistent_cache_hits`).

        Returns:
          Whether it was stored.
        """
        try:
            header = _header(compiled)
            device = jax.devices()[0]
            rebuilt = _compiled(_executable(compiled).xla_executable, header, args,
                                compiled.out_tree, device)  # fmt: skip
            if not _same(rebuilt, compiled):
                return False
            executable = device.client.serialize_executable(_executable(compiled).xla_executable)
        except Exception as error:  # noqa: BLE001 -- a program that cannot be stored is compiled again
            _warn_once(f"cellsearch: compiled programs are not stored ({type(error).__name__}: {error})")
            return False
        head = json.dumps(header).encode()
        # zlib at its fastest level: a quarter of the size, 1 ms to read back
        data = _MAGIC + len(head).to_bytes(8, "little") + head + zlib.compress(executable, 1)
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)  # its files run as code
            with tempfile.NamedTemporaryFile(dir=self.directory, suffix=".tmp", delete=False) as out:
                out.write(data)
            os.replace(out.name, self.path(key))
        except OSError as error:
            _warn_once(f"cellsearch: cannot write compiled programs to {self.directory}: {error}")
            return False
        return True


# ---------------------------------------------------------------------- the directory's size
class CacheSize(NamedTuple):
    """Files and bytes in a cache directory, or removed from it."""

    files: int
    bytes: int


# A file used this recently may be one a running process is writing or has just stored.
_IN_USE_SECONDS = 60.0


def cache_size(directory: str | os.PathLike, part: str | None = None) -> CacheSize:
    """The compiled programs in `directory` and their size: JAX's cache (`part` "jax"), the
    executable store ("store") or both (None)."""
    files = _files(pathlib.Path(directory), part)
    return CacheSize(len(files), sum(size for _, size, _ in files))


def trim_cache(directory: str | os.PathLike, max_bytes: int) -> CacheSize:
    """Deletes the least recently used compiled programs in `directory` down to `max_bytes`.

    Only the two caches' own files are counted and deleted (`_CACHE_FILES`). A file's last use is
    the later of its modification and access times: the store marks its hits; JAX's cache does not,
    so its entries count as used when last read where the file system records reads (at most daily
    under Linux's default `relatime`), else when written. Files used in the last minute are kept, so
    a cache shared by running workers may stay above `max_bytes` until their next trim. Deleting is
    safe while others use the directory: a deleted program is a miss there, compiled again.

    Args:
      directory: a directory given to `tasks.use_compilation_cache`.
      max_bytes: the size to trim to.

    Returns:
      What was removed.
    """
    files = _files(pathlib.Path(directory))
    excess = sum(size for _, size, _ in files) - max_bytes
    recent = time.time() - _IN_USE_SECONDS
    doomed = []
    for last_used, size, path in files:  # least recently used first
        if excess <= 0 or last_used > recent:
            break
        excess -= size
        doomed.append((size, path))
    return _delete(doomed)


def clear_cache(directory: str | os.PathLike) -> CacheSize:
    """Deletes every compiled program in `directory`, also those in use (a process using one
    compiles it again). Returns what was removed."""
    return _delete([(size, path) for _, size, path in _files(pathlib.Path(directory))])


def _delete(files: list[tuple[int, pathlib.Path]]) -> CacheSize:
    removed = CacheSize(0, 0)
    for size, path in files:
        try:
            path.unlink()
        except FileNotFoundError:  # another process deleted it first
            continue
        removed = CacheSize(removed.files + 1, removed.bytes + size)
    return removed


# The files a cache directory holds, by where they are and how they are named: JAX's entries
# (`jax._src.lru_cache`) at the top, the store's programs and half-written ones in `executables/`.
# Nothing else is counted or deleted, whatever else the directory holds.
_CACHE_FILES = {"jax": ("", ("*-cache", "*-atime")), "store": ("executables", ("*.xla", "*.tmp"))}


def _files(
    directory: pathlib.Path, part: str | None = None
) -> list[tuple[float, int, pathlib.Path]]:
    """(last use, size, path) of the cache's files in `directory` (or in one `part` of it), least
    recently used first."""
    files = []
    for folder, patterns in [_CACHE_FILES[part]] if part else _CACHE_FILES.values():
        for pattern in patterns:
            for path in (directory / folder).glob(pattern):
                try:
                    info = path.lstat()
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(info.st_mode):  # not a link, not a directory
                    files.append((max(info.st_mtime, info.st_atime), info.st_size, path))
    return sorted(files)


# ------------------------------------------------------------------------------ the header
def _executable(compiled: jax.stages.Compiled):
    """JAX's description of a compiled program (`UnloadedMeshExecutable`, internal)."""
    return compiled._executable._unloaded_executable


def _header(compiled: jax.stages.Compiled) -> dict:
    """What JAX needs around the executable that the arguments do not say."""
    unloaded = _executable(compiled)
    return {"format": FORMAT, "name": unloaded.name, "committed": unloaded.committed,
            "kept": sorted(unloaded.kept_var_idx), "no_kwargs": compiled._no_kwargs,
            "outputs": [[list(aval.shape), np.dtype(aval.dtype).name, aval.weak_type]
                        for aval in unloaded.output_avals]}  # fmt: skip


def _split(data: bytes) -> tuple[dict, bytes]:
    if not data.startswith(_MAGIC):
        raise ValueError("not a stored program")
    start = len(_MAGIC) + 8
    end = start + int.from_bytes(data[len(_MAGIC) : start], "little")
    header = json.loads(data[start:end])
    if header.get("format") != FORMAT:
        raise ValueError(f"format {header.get('format')}, expected {FORMAT}")
    return header, data[end:]


def _compiled(xla_executable, header: dict, args: tuple, out_tree, device) -> jax.stages.Compiled:
    """JAX's `Compiled` around `xla_executable`, built as `jit(...).lower().compile()` builds it
    for a program with one device, no effects, no callbacks, no donation and default layouts."""
    from jax._src import core, stages
    from jax._src.interpreters import pxla

    leaves, in_tree = jax.tree_util.tree_flatten((args, {}))  # as `Compiled` flattens a call
    avals = [core.shaped_abstractify(leaf) for leaf in leaves]
    kept = header["kept"]
    in_avals = [avals[i] for i in kept]
    out_avals = [core.ShapedArray(tuple(shape), np.dtype(dtype), weak_type=weak)
                 for shape, dtype, weak in header["outputs"]]  # fmt: skip
    if out_tree.num_leaves != len(out_avals):
        raise ValueError(f"{len(out_avals)} outputs stored, {out_tree.num_leaves} expected")
    sharding = jax.sharding.SingleDeviceSharding(device, memory_kind=device.default_memory().kind)
    in_shardings, out_shardings = [sharding] * len(in_avals), [sharding] * len(out_avals)
    xla_in_layouts, xla_out_layouts = pxla._get_layouts_from_executable(
        xla_executable, [None] * len(in_avals), [None] * len(out_avals), 0, in_avals, out_avals
    )  # fmt: skip
    unloaded = pxla.UnloadedMeshExecutable(
        xla_executable=xla_executable, device_list=_device_list(device),
        backend=device.client, input_avals=in_avals, input_shardings=in_shardings,
        output_avals=out_avals, output_shardings=out_shardings, committed=header["committed"],
        name=header["name"], unordered_effects=[], ordered_effects=[], keepalive=[],
        host_callbacks=[], kept_var_idx=set(kept), mut=None, xla_in_layouts=xla_in_layouts,
        dispatch_in_layouts=pxla.get_dispatch_layouts(xla_in_layouts, in_shardings, in_avals),
        xla_out_layouts=xla_out_layouts, all_args_info=None, pgle_profiler=None,
    )  # fmt: skip
    args_info = in_tree.unflatten([stages.ArgInfo(aval, False) for aval in avals])
    return stages.Compiled(unloaded.load(), [], args_info, out_tree, header["no_kwargs"])


def _device_list(device):
    from jax._src.lib import xla_client

    return xla_client.DeviceList((device,))


# Fields that only shape error messages or profiling, not what the program computes or returns.
_UNCOMPARED = {"all_args_info", "pgle_profiler"}


def _same(rebuilt: jax.stages.Compiled, original: jax.stages.Compiled) -> bool:
    """Whether `rebuilt` is the program `original` is, field by field."""
    a, b = _executable(rebuilt), _executable(original)
    fields = [f.name for f in dataclasses.fields(b) if f.name not in _UNCOMPARED]
    params = original._params
    return (all(_equal(getattr(a, name), getattr(b, name)) for name in fields)
            and rebuilt.in_tree == original.in_tree and rebuilt.out_tree == original.out_tree
            and rebuilt.args_info == original.args_info and not params.const_args
            and not params.is_high)  # fmt: skip


def _equal(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a is b or a == b


# ------------------------------------------------------------------------- the environment
@functools.cache
def _environment() -> dict:
    """What, besides the caller's description, decides the program a process compiles."""
    device = jax.devices()[0]
    return {
        "code": source_digest("cells", "tasks"),
        "versions": package_versions(),
        "python": platform.python_version(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "device": [device.platform, device.device_kind, device.client.platform_version],
        "cpu": _cpu_features(),  # an executable for one CPU may not run on another
    }


def _jax_config() -> list:
    # read at each key: a process may change JAX's configuration after its first program
    return sorted((name, repr(value)) for name, value in jax.config.values.items())


CODE_PACKAGES = ("cells", "tasks", "search", "results", "analysis")  # cellsearch's code, in order


def package_directory(package: str) -> pathlib.Path:
    """Where Python imports cellsearch's `package` from: beside the others where cellsearch is
    installed, in a directory of its own where Ray shipped it with a job (`search.executor`)."""
    return pathlib.Path(next(iter(importlib.util.find_spec(package).submodule_search_locations)))


def source_digest(*packages: str) -> str:
    """A sha256 of the Python source of cellsearch's `packages` (names, then contents, in order)."""
    digest = hashlib.sha256()
    for package in packages:
        for path in sorted(package_directory(package).glob("*.py")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@functools.cache
def package_versions() -> dict[str, str | None]:
    """The installed versions of cellsearch and of the packages its programs are traced from (also
    what every trial row records)."""
    versions = {}
    for name in ("cellsearch", "jax", "jaxlib", "flax", "optax", "numpy"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@functools.cache
def cpu_model() -> str:
    """The CPU as every trial row records it, e.g. "AMD EPYC (family 25 model 1, AVX2)".

    Programs are compiled for the host's instruction set, so another kind of CPU may give other
    numbers: the quick reproduction on this project's usual Zen 4 virtual machine (AVX-512) and on
    a Zen 3 one (AVX2) differed in 77 of 100 baseline rows, and both called themselves "AMD EPYC".
    The family, model and widest vector extension (`describe_cpu`) tell such machines apart.
    """
    return describe_cpu(_cpuinfo("model name", "cpu family", "model\t", "flags"))


def describe_cpu(cpuinfo: list[str] | None) -> str:
    """`cpu_model` from the lines of /proc/cpuinfo (None where there is no such file)."""
    fields: dict[str, str] = {}
    for line in cpuinfo or []:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())  # the first processor's; all are alike
    if "model name" not in fields:
        return platform.processor() or platform.machine()
    details = []
    if "cpu family" in fields and "model" in fields:
        details.append(f"family {fields['cpu family']} model {fields['model']}")
    if "flags" in fields:  # x86: the widest vector extension XLA may compile for
        flags = set(fields["flags"].split())
        details.append(next((name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"),
                                                     ("avx", "AVX")) if flag in flags), "SSE"))  # fmt: skip
    return f"{fields['model name']} ({', '.join(details)})" if details else fields["model name"]


def _cpu_features() -> str:
    lines = _cpuinfo("model name", "flags")
    if lines is None:
        return f"{platform.machine()} {platform.processor()}"
    return "".join(sorted(set(lines)))


def _cpuinfo(*keys: str) -> list[str] | None:
    """The lines of /proc/cpuinfo that start with one of `keys`; None where there is none."""
    try:
        with open("/proc/cpuinfo") as info:
            return [line for line in info if line.startswith(keys)]
    except OSError:
        return None


@functools.cache
def _warn_once(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)
