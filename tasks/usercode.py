"""Classes of your own, named "MODULE:CLASS" where a config names a task or a search strategy.

    cls = import_class("reverse:Reverse", Task, "tasks.Task")   # reverse.py, where you run
    class_source(cls)   # {"class": "reverse:Reverse", "file": ".../reverse.py", "sha256": ...}
                        # (in a package, the sha256 covers the package's .py files)
    module_package(cls)  # .../reverse.py: what ships the class to a cluster's workers

MODULE is imported as Python imports it, with the current directory and then the config file's
directory searched last: a module where the search is started, or beside its config, is found, and
never shadows an installed one. `SEARCHED` keeps the directories this process added, so that a
search's Ray workers, which import a task's module themselves, search them too.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import pathlib
import sys

SEARCHED: list[str] = []  # directories this process appended to sys.path for code of your own


def search_also(*directories: str | os.PathLike) -> None:
    """Appends `directories` (made absolute) to sys.path, after everything already there."""
    for directory in directories:
        directory = os.path.abspath(directory)
        if directory not in sys.path:
            sys.path.append(directory)
        if directory not in SEARCHED:
            SEARCHED.append(directory)


def named_class(name: str, registry: dict[str, type], base: type, base_name: str, what: str,
                near: str | os.PathLike | None = None) -> type:  # fmt: skip
    """`registry[name]`, or the class "MODULE:CLASS" names (`import_class`).

    Raises:
      ValueError: one line naming the problem; `what` ("task") names the kind of thing.
    """
    if name in registry:
        return registry[name]
    module_name, _, class_name = name.partition(":")
    if not module_name or not class_name:
        raise ValueError(f"unknown {what} '{name}' (known: {', '.join(registry)}; or MODULE:CLASS "
                         f"for a {base.__name__} subclass of your own)")  # fmt: skip
    return import_class(name, base, base_name, near)


def import_class(name: str, base: type, base_name: str, near: str | os.PathLike | None = None) -> type:
    """The class "MODULE:CLASS" names, which must be a subclass of `base`.

    Args:
      name: "MODULE:CLASS" (MODULE may be dotted: "mypackage.tasks:Copy").
      base: the class it must derive from.
      base_name: how messages name `base` ("search.Strategy").
      near: a directory searched after the current one (a config file's).

    Raises:
      ValueError: one line naming the problem (a module that does not import, with the error it
        raised; a class that is missing or not a `base`).
    """
    module_name, _, class_name = name.partition(":")
    search_also(os.getcwd(), *([near] if near else []))
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - the user's module: any failure is one line
        raise ValueError(f"{name}: importing {module_name} failed: "
                         f"{type(error).__name__}: {error}") from error  # fmt: skip
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise ValueError(f"{name}: {module_name} has no class {class_name}")
    if not issubclass(cls, base):
        raise ValueError(f"{name}: {class_name} is not a subclass of {base_name}")
    return cls


def class_source(cls: type) -> dict:
    """What a run records of a class of your own, since cellsearch's `code_version` does not cover
    it: its name, its source file, and the SHA-256 of the code that ships with it
    (`module_package`). For a top-level module that is the file's own SHA-256; for a module inside
    a package it covers every .py file of the top-level package (relative paths and contents), so
    that a helper module the class imports from beside it is covered too, and `package` names the
    package's directory. File and digest are empty where Python has no file (a class defined in a
    notebook)."""
    try:
        path = inspect.getsourcefile(cls) or ""
    except (TypeError, OSError):
        path = ""
    record = {"class": f"{cls.__module__}:{cls.__qualname__}", "file": path, "sha256": ""}
    try:
        shipped = module_package(cls) if path else None
    except ValueError:  # a namespace package: its file alone, as a top-level module's
        shipped = pathlib.Path(path)
    try:
        if shipped is not None and shipped.is_dir():
            record["sha256"] = _package_digest(shipped)
            record["package"] = str(shipped)
        elif path:
            record["sha256"] = hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()
    except OSError:
        record["file"], record["sha256"] = "", ""
    return record


def _package_digest(directory: pathlib.Path) -> str:
    """A SHA-256 of every .py file under `directory` (relative paths, then contents, in order),
    bytecode caches left out."""
    digest = hashlib.sha256()
    files = sorted((path.relative_to(directory).as_posix(), path) for path in directory.rglob("*.py"))
    for relative, path in files:  # by relative path: the same order wherever the package lies
        if "__pycache__" not in relative.split("/") and path.is_file():
            digest.update(relative.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def module_package(cls: type) -> pathlib.Path:
    """What carries `cls`'s module to another machine (Ray's `py_modules`): the module's .py file
    where it is a top-level module, else the directory of its top-level package, with everything
    inside it (data a task reads beside its code travels only this way).

    Raises:
      ValueError: one line naming the class, for a module without a .py file, or a package that
        spans several directories (a namespace package).
    """
    name = f"{cls.__module__}:{cls.__qualname__}"
    top = sys.modules[cls.__module__.partition(".")[0]]
    directories = list(getattr(top, "__path__", []))
    if len(directories) > 1:
        raise ValueError(f"{name}: package {top.__name__} spans {len(directories)} directories "
                         f"({', '.join(directories)}); only a package in one directory can be "
                         "shipped to the workers (give it an __init__.py)")  # fmt: skip
    if directories:
        return pathlib.Path(directories[0])
    file = getattr(top, "__file__", None) or ""
    if not file.endswith(".py"):
        raise ValueError(f"{name}: module {top.__name__} has no .py file to ship to the workers "
                         f"({file or 'none'})")  # fmt: skip
    return pathlib.Path(file)


def source_root(source: dict) -> str:
    """The directory a `class_source` record's module is imported from (for "pkg.mod:Cls" in
    .../pkg/mod.py, the directory that holds pkg): what `cellsearch rerun` searches to train a
    stored row of a task of your own again."""
    module = source["class"].partition(":")[0]
    path = pathlib.Path(source["file"])
    levels = module.count(".") + (2 if path.name == "__init__.py" else 1)
    return str(path.parents[levels - 1])
