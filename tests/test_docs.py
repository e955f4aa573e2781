"""The documentation says what the code does: every `cellsearch` command it shows parses (and its
search config and settings are accepted), every
option (of the command line and of the benchmark scripts) and API name it mentions exists, every import of its Python examples works, every file it
links to is there, and CI runs exactly the README's test command."""

import contextlib
import importlib
import inspect
import io
import pathlib
import re
import shlex
import shutil
import sys

import pytest

from cells import BASELINES
from search.cli import UsageError, build_parser, parse_overrides, trial_spec_from_args
from search.config import load_config
from searchkit import readme_example

ROOT = pathlib.Path(__file__).parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md",
        ROOT / "tasks" / "data" / "README.md"]  # fmt: skip


def _commands(path: pathlib.Path):
    """(line number, arguments after `cellsearch`, whole) for each cellsearch command in `path`:
    the lines of its bash blocks (whole commands) and its inline code spans (often fragments)."""
    text = path.read_text(encoding="utf-8")
    for block in re.finditer(r"```bash\n(.*?)```", text, re.S):
        first = text.count("\n", 0, block.start(1)) + 1
        for offset, line in enumerate(block.group(1).splitlines()):
            for part in re.split(r"&&|\|", line):
                words = shlex.split(part, comments=True)
                for i, word in enumerate(words):
                    if pathlib.PurePath(word).name == "cellsearch":
                        yield first + offset, words[i + 1:], True
                        break
    for span in re.finditer(r"`((?:\S*/)?cellsearch [^`]+)`", text):
        line = text.count("\n", 0, span.start()) + 1
        words = shlex.split(span.group(1).replace("...", ""))
        yield line, words[1:], False


def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return parser, action.choices


def test_every_documented_command_and_option_exists(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)  # where `configs/quick.toml` is
    # the README's strategy and task of one's own, where its commands expect them: importable
    for name in ("hillclimb", "reverse", "charlm"):
        (tmp_path / f"{name}.py").write_text(readme_example(f"# {name}.py"))
        monkeypatch.delitem(sys.modules, name, raising=False)
    # and charlm's corpus, as the README's `head -c 300000 tasks/data/ptb.train.txt` makes it
    (tmp_path / "corpus.txt").write_bytes((ROOT / "tasks/data/ptb.train.txt").read_bytes()[:300_000])
    # and the package `lab` the README moves charlm.py and its corpus into, for a cluster
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "__init__.py").write_text("")
    for name in ("charlm.py", "corpus.txt"):
        shutil.copy(tmp_path / name, tmp_path / "lab" / name)
    for name in ("lab", "lab.charlm"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(tmp_path)
    parser, commands = _subparsers()
    wrong, seen = [], 0
    for path in DOCS:
        for line, args, whole in _commands(path):
            seen += 1
            where = f"{path.relative_to(ROOT)}:{line}: cellsearch {' '.join(args)}"
            if not args or not re.fullmatch(r"[a-z]+", args[0]):
                continue  # `cellsearch --help`; a message such as `cellsearch PID N on HOST`
            if args[0] not in commands:
                wrong.append(f"{where}: no command {args[0]!r}")
                continue
            options = commands[args[0]]._option_string_actions
            for word in args[1:]:
                if word.startswith("--") and word.split("=")[0] not in options:
                    wrong.append(f"{where}: {args[0]} has no option {word.split('=')[0]}")
            if whole:  # a command as a user would paste it: it must parse as written
                err = io.StringIO()
                with contextlib.redirect_stderr(err), contextlib.suppress(SystemExit):
                    namespace = parser.parse_args(args)
                if err.getvalue():
                    wrong.append(f"{where}: {err.getvalue().strip().splitlines()[-1]}")
                else:  # and its config and settings must be accepted
                    problem = _settings_problem(namespace)
                    if problem:
                        wrong.append(f"{where}: {problem}")
    assert seen > 50  # the README alone shows more; a broken pattern would find none
    assert not wrong, "\n".join(wrong)


def test_every_name_the_python_examples_import_exists():
    imports = []
    for path in DOCS:
        for block in re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.S):
            imports += [line.split("#")[0].strip() for line in block.splitlines()
                        if re.match(r"(from \S+ )?import ", line)]  # fmt: skip
    assert len(imports) > 5
    for statement in imports:
        exec(statement, {})  # an ImportError names what the docs promise and the code lacks


def _settings_problem(namespace) -> str | None:
    """What `search`'s config with its `--set` keys, or `train`'s settings of a baseline cell,
    would be refused for (the command's own checks, run without training)."""
    try:
        if namespace.command == "search":
            load_config(namespace.config, parse_overrides(namespace.set))
        elif namespace.command == "train" and namespace.cell in BASELINES:
            trial_spec_from_args(namespace.cell, namespace.task, namespace.preset, namespace.seed,
                                 parse_overrides(namespace.set))  # fmt: skip
    except (UsageError, ValueError) as error:
        return str(error)
    return None


def test_every_documented_benchmark_option_exists():
    wrong, seen = [], 0
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"(?:python|bash) (benchmarks/\w+\.(?:py|sh))([^`\n]*)", text):
            seen += 1
            script, where = ROOT / match.group(1), f"{path.relative_to(ROOT)}: {match.group(0)}"
            if not script.exists():
                wrong.append(f"{where}: no such script")
                continue
            source = script.read_text(encoding="utf-8")
            for option in re.findall(r"(?<![\w-])--[a-z][\w-]*", match.group(2)):
                # a Python script's options are add_argument("--..."); a shell script tests "$1"
                if (f'"{option}"' if script.suffix == ".py" else option) not in source:
                    wrong.append(f"{where}: {script.name} has no option {option}")
    assert seen > 20
    assert not wrong, "\n".join(wrong)


def _exists(dotted: str) -> bool:
    """Whether `cells.compile_cell`, `tasks.model.argmax_hits`, ... names something: a module's
    attribute, or an attribute a class's instances get in `__init__`."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            if hasattr(obj, attribute):
                obj = getattr(obj, attribute)
            elif inspect.isclass(obj) and f"self.{attribute}" in inspect.getsource(obj.__init__):
                return attribute == parts[-1]
            else:
                return False
        return True
    return False


def test_every_api_name_the_docs_mention_exists():
    names = set()
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for code in re.findall(r"`([^`\n]+)`", text) + re.findall(r"```python\n(.*?)```", text, re.S):
            names |= set(re.findall(r"(?<![\w/.])((?:cells|tasks|search|results|analysis)(?:\.[A-Za-z_]\w*)+)",
                                    code))  # fmt: skip
    assert len(names) > 30
    missing = sorted(name for name in names if not _exists(name))
    assert not missing, f"the docs name what the code does not have: {missing}"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    text = path.read_text(encoding="utf-8")
    links = [link for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text) if "://" not in link]
    missing = [link for link in links if not (path.parent / link).exists()]
    assert not missing, f"{path.relative_to(ROOT)} links to missing files: {missing}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Two commands.*?```bash\n(.*?)```", readme, re.S).group(1)
    commands = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2 and "cellsearch reproduce --preset quick" in commands[0]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1] in ci.splitlines()
