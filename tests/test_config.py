"""Search configs: the shipped files load, and every mistake names its key."""

import json
import pathlib
import sys

import pytest

from search.config import ConfigError, load_config, parse_config, to_dict, to_toml

CONFIGS_DIR = pathlib.Path(__file__).parents[1] / "configs"
CONFIGS = sorted(CONFIGS_DIR.glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_load_and_round_trip(path):
    config = load_config(path)
    assert parse_config(to_toml(to_dict(config))) == config


def test_shipped_configs_go_by_name_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config("quick") == load_config("quick.toml") == load_config(CONFIGS_DIR / "quick.toml")
    (tmp_path / "quick.toml").write_text("name = 'mine'\n")  # a file of that name comes first
    assert load_config("quick").name == "mine"
    with pytest.raises(ConfigError) as error:  # a path is never looked up among the shipped ones
        load_config("configs/quick.toml")
    assert str(error.value) == (
        "configs/quick.toml: cannot read (No such file or directory); the configs that ship with "
        "cellsearch go by name alone: baselines-paper, baselines-quick, baselines-small, paper, "
        "quick, small")


def test_overrides_use_dotted_keys():
    config = load_config(CONFIGS[0], {"seed": 3, "jozefowicz.list_size": 7,
                                      "budget.arith.steps": 10})  # fmt: skip
    assert (config.seed, config.jozefowicz.list_size) == (3, 7)
    assert config.budget == {"arith": {"steps": 10}}


def test_a_budget_that_is_not_whole_calls_is_named_in_a_warning(recwarn):
    """A valid budget that does not train as written (the trainer runs whole calls): the config
    loads, with one warning naming the task, the numbers and what trains instead; whole calls say
    nothing."""
    load_config("quick", {"budget.arith.steps": 250, "budget.ptb.steps": 100})
    assert not recwarn.list
    with pytest.warns(UserWarning, match=r"^quick: budget of ptb: steps 1000 is not a multiple of "
                                         r"steps_per_call 28: the trainer runs whole calls, so it "
                                         r"trains 1008 steps$"):  # fmt: skip
        load_config("quick", {"budget.ptb.steps": 1000, "budget.ptb.steps_per_call": 28})


@pytest.mark.parametrize(
    "text, message",
    [
        ("nmae = 'x'", "config: unknown key 'nmae' (known here: name, strategy"),
        ("seed = 'one'", "config: seed: must be int, got str 'one'"),
        ("seed = true", "config: seed: must be int, got bool True"),
        ("strategy = 'annealing'", "config: strategy: unknown strategy 'annealing'"),
        ("preset = 'huge'", "config: preset: unknown preset 'huge'"),
        ("tasks = ['arith', 'chess']", "config: tasks: unknown task 'chess'"),
        ("tasks = []", "config: tasks: needs at least one task"),
        ("tasks = 'arith'", "config: tasks: must be a list of names"),
        ("settings_per_task = 0", "config: settings_per_task: must be >= 1, got 0"),
        ("tasks = ['arith', 'xml', 'arith']", "config: tasks: lists arith more than once"),
        ("[baselines]\ncells = ['lstm', 'gru', 'lstm']", "config: baselines.cells: lists lstm more than once"),
        ("[baselines]\ncells = ['lstm', 'lsmt']", "config: baselines.cells: unknown baseline 'lsmt'"),
        ("seed_cells = ['lstm', 'lsmt']", "config: seed_cells: unknown baseline 'lsmt'"),
        ("seed_cells = ['gru', 'h_new = tanh(W(x) + W(h))', 'h_new = tanh(W(h) + W(x))']",
         "config: seed_cells: lists one cell twice (v1-"),
        ("strategy = 'random'\nseed_cells = ['mut1']",
         "config: seed_cells: the random strategy starts from no seed cells (only jozefowicz and "
         "regularized_evolution do)"),
        ("[baselines]\ncells = ['h_new = tanh(W(x) + W(h)']",
         "config: baselines.cells: h_new = tanh(W(x) + W(h): cell: line 1: invalid syntax"),
        ("[baselines]\ncells = ['h_new = tanh(W(x))']", "baselines.cells: h_new = tanh(W(x)): cell: line 1: the cell ignores its input 'h'"),
        # the same cell twice: equations equal to a baseline, or two spellings of one cell
        ('[baselines]\ncells = ["tanh", "h_new = tanh(W(h) + W(x))"]',
         "baselines.cells: lists one cell twice (v1-"),
        ('[baselines]\ncells = ["u = W(x)\\nh_new = tanh(u + W(h))", "h_new = tanh(W(h) + W(x))"]',
         "lists one cell twice"),
        ("name = '../elsewhere'", "config: name: must name one directory"),
        ("name = ''", "config: name: must name one directory"),
        ("[jozefowicz]\np_reevaluate = 2.0", "config: jozefowicz.p_reevaluate: must be in [0, 1]"),
        ("[jozefowicz]\nscreen_treshold = 0.5", "unknown key 'jozefowicz.screen_treshold'"),
        ("jozefowicz = 3", "config: jozefowicz: must be a table [jozefowicz]"),
        ("[regularized_evolution]\ntournament = 50", "tournament: must be in [1, population]"),
        ("[budget.chess]\nsteps = 3", "config: budget.chess: unknown task"),
        ("seed = = 1", "config: invalid TOML"),
        ("[budget.arith]\nsteps = 0", "budget/task_options of arith: steps must be >= 1, got 0"),
        ("[task_options.arith]\ndigits = 3", "budget/task_options of arith: unknown option 'digits'"),
        ("[budget.arith]\nhidden = 'big'", "budget/task_options of arith: hidden must be int, got str 'big'"),
        ("[task_options.arith]\nend_token = 1", "of arith: task arith: end_token must be bool, got int 1"),
        ("[grid]\nspeed = [1]", "config: grid.speed: unknown hyperparameter (known: init_scale, lr, clip, layers)"),
        ("[grid]\nlayers = [1, 2.5]", "config: grid.layers: must be a non-empty list of whole numbers >= 1, got [1, 2.5]"),
        ("[grid]\nlayers = [0]", "grid.layers: must be a non-empty list of whole numbers >= 1"),
        ("[grid]\nlr = []", "config: grid.lr: must be a non-empty list of numbers > 0, got []"),
        ("[grid]\nclip = 5", "config: grid.clip: must be a non-empty list of numbers > 0, got 5"),
        ("[grid]\ninit_scale = [1, true]", "grid.init_scale: must be a non-empty list of numbers > 0"),
        ("[grid]\nlr = [0.5, 0.5]", "config: grid.lr: lists a value more than once: [0.5, 0.5]"),
        ("grid = 'small'", "config: grid: must be a table, got 'small'"),
    ],
)
def test_bad_configs_name_the_key(text, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert message in str(caught.value) and "\n" not in str(caught.value)


MY_STRATEGIES = """
import search


class Tuned(search.Strategy):
    options = {"children": 2, "temperature": 1.0, "greedy": False, "parent": "best", "ops": ("tanh",)}

    def propose(self, round_index, rng):
        return []


class NotAStrategy:
    pass


raise_here = False
"""


@pytest.mark.parametrize("text, message", [
    ("strategy = 'my_strategies:Tuned'\n[strategy_options]\nchilds = 3",
     "config: strategy_options.childs: not an option of strategy 'my_strategies:Tuned' (its "
     "options: children, temperature, greedy, parent, ops)"),
    ("strategy = 'my_strategies:Tuned'\n[strategy_options]\nops = 'relu'",
     "config: strategy_options.ops: must be tuple like its default ('tanh',), got str 'relu'"),
    ("strategy = 'my_strategies:Tuned'\n[strategy_options]\nchildren = 2.5",
     "config: strategy_options.children: must be int like its default 2, got float 2.5"),
    ("strategy = 'my_strategies:Tuned'\n[strategy_options]\ngreedy = 1",
     "config: strategy_options.greedy: must be bool like its default False, got int 1"),
    ("strategy = 'my_strategies:Tuned'\n[strategy_options]\nparent = 3",
     "config: strategy_options.parent: must be str like its default 'best', got int 3"),
    ("strategy = 'my_strategies:Tuned'\nseed_cells = ['mut1']",
     "config: seed_cells: the my_strategies:Tuned strategy starts from no seed cells"),
    ("[strategy_options]\nchildren = 3",
     "config: strategy_options.children: not an option of strategy 'jozefowicz' (its options: none; "
     "a built-in strategy's options are its own table, such as [jozefowicz])"),
    ("strategy = 'my_strategies:Missing'", "config: strategy: my_strategies:Missing: my_strategies "
                                           "has no class Missing"),
    ("strategy = 'my_strategies:raise_here'", "my_strategies has no class raise_here"),
    ("strategy = 'my_strategies:NotAStrategy'",
     "config: strategy: my_strategies:NotAStrategy: NotAStrategy is not a subclass of search.Strategy"),
    ("strategy = 'no_such_module_here:X'", "config: strategy: no_such_module_here:X: importing "
     "no_such_module_here failed: ModuleNotFoundError: No module named 'no_such_module_here'"),
    ("strategy = 'broken_strategies:X'", "config: strategy: broken_strategies:X: importing "
     "broken_strategies failed: SyntaxError: invalid syntax (broken_strategies.py, line 1)"),
    ("strategy = ':X'", "config: strategy: unknown strategy ':X' (known: jozefowicz, "
     "regularized_evolution, random, nasbench_nlp_random, baselines; or MODULE:CLASS"),
])  # fmt: skip
def test_a_strategy_of_your_own_and_its_options_are_checked(tmp_path, monkeypatch, text, message):
    modules = {"my_strategies.py": MY_STRATEGIES, "broken_strategies.py": "def f(:\n"}
    assert message in refusal(tmp_path, monkeypatch, modules, text)


def refusal(tmp_path, monkeypatch, modules: dict[str, str], text: str) -> str:
    """The one-line ConfigError of config `text`, with `modules` (file name -> source) importable."""
    monkeypatch.syspath_prepend(tmp_path)
    for name, source in modules.items():
        (tmp_path / name).write_text(source)
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_a_strategy_of_your_own_gets_its_options_over_its_defaults(tmp_path, monkeypatch):
    from search.strategies import strategy_class

    monkeypatch.syspath_prepend(tmp_path)
    (tmp_path / "my_strategies.py").write_text(MY_STRATEGIES)
    config = parse_config("strategy = 'my_strategies:Tuned'\n[strategy_options]\ntemperature = 2\n"
                          "ops = ['relu', 'tanh']")
    assert parse_config(to_toml(to_dict(config))) == config  # as run.toml keeps it
    strategy = strategy_class(config.strategy)(config)
    assert strategy.options == {"children": 2, "temperature": 2, "greedy": False, "parent": "best",
                                "ops": ["relu", "tanh"]}
    assert type(strategy).options["temperature"] == 1.0  # the class's defaults stay as they were


def test_a_strategy_of_your_own_is_found_beside_its_config_file(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_config adds the config's directory
    monkeypatch.chdir(tmp_path)
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "strategies_beside.py").write_text(MY_STRATEGIES)
    (tmp_path / "experiments" / "tuned.toml").write_text(
        "strategy = 'strategies_beside:Tuned'\n[strategy_options]\nchildren = 5\n")
    config = load_config("experiments/tuned.toml")
    assert (config.strategy, config.strategy_options) == ("strategies_beside:Tuned", {"children": 5})
    sys.modules.pop("strategies_beside", None)


MY_TASKS = """
import dataclasses

import tasks

QUICK = {"quick": tasks.Budget(steps=10, hidden=8, batch=8, seq_len=10)}


@dataclasses.dataclass(frozen=True)
class Copy(tasks.Generated):
    name = "copy"
    symbols: int = 5
    alphabet = "ab"
    budgets = QUICK

    def generate(self, rng, n, seq_len):
        ids = rng.integers(0, 2, size=(n, seq_len), dtype="int32")
        return tasks.Batch(ids, ids, 1.0 + 0 * ids, 0.0 * ids)


@dataclasses.dataclass
class NotFrozen(tasks.Generated):
    name = "not_frozen"
    budgets = QUICK


class NotADataclass(tasks.Generated):
    name = "plain"
    budgets = QUICK


@dataclasses.dataclass(frozen=True)
class Nameless(tasks.Generated):
    budgets = QUICK


@dataclasses.dataclass(frozen=True)
class BadBudgets(tasks.Generated):
    name = "bad_budgets"
    budgets = {"quick": {"steps": 10}}


class NotATask:
    pass
"""


@pytest.mark.parametrize("text, message", [
    ("tasks = ['my_tasks:Copy']\npreset = 'paper'",
     "config: tasks: task my_tasks:Copy has no budget for preset 'paper' (its class's budgets: quick)"),
    ("tasks = ['my_tasks:Missing']", "config: tasks: my_tasks:Missing: my_tasks has no class Missing"),
    ("tasks = ['my_tasks:NotATask']",
     "config: tasks: my_tasks:NotATask: NotATask is not a subclass of tasks.Task"),
    ("tasks = ['my_tasks:NotFrozen']", "config: tasks: my_tasks:NotFrozen: NotFrozen must be a "
     "@dataclasses.dataclass(frozen=True) (its fields are the task's options)"),
    ("tasks = ['my_tasks:NotADataclass']", "NotADataclass must be a @dataclasses.dataclass(frozen=True)"),
    ("tasks = ['my_tasks:Nameless']", "config: tasks: my_tasks:Nameless: Nameless needs a name"),
    ("tasks = ['my_tasks:BadBudgets']", "config: tasks: my_tasks:BadBudgets: BadBudgets.budgets must "
     "map preset names to tasks.Budget, got {'quick': {'steps': 10}}"),
    ("tasks = ['no_such_tasks_here:X']", "config: tasks: no_such_tasks_here:X: importing "
     "no_such_tasks_here failed: ModuleNotFoundError: No module named 'no_such_tasks_here'"),
    ("tasks = ['__main__:Copy']", "config: tasks: __main__:Copy: a task of your own must be in a "
     "module file, which the Ray workers that train it import by name, not in __main__"),
    ("tasks = ['copy']", "config: tasks: unknown task 'copy' (known: memorize, arith, xml, ptb, jsb, "
     "nottingham, musedata, piano; or MODULE:CLASS for a Task subclass of your own)"),
    ("tasks = ['my_tasks:Copy']\n[task_options.'my_tasks:Copy']\nsymbols = 2.5",
     "config: budget/task_options of my_tasks:Copy: task my_tasks:Copy: symbols must be int, got float 2.5"),
    ("tasks = ['my_tasks:Copy']\n[task_options.'my_tasks:Copy']\nletters = 3",
     "unknown option 'letters' for task my_tasks:Copy (options: symbols)"),
    ("tasks = ['my_tasks:Copy']\n[budget.'my_tasks:Copy']\nsteps = 0",
     "config: budget/task_options of my_tasks:Copy: steps must be >= 1, got 0"),
    ("[budget.'my_tasks:Copy']\nsteps = 5", "config: budget.my_tasks:Copy: unknown task (known: "
     "memorize, arith, xml, ptb, jsb, nottingham, musedata, piano; and the config's tasks of your own)"),
])  # fmt: skip
def test_a_task_of_your_own_is_checked(tmp_path, monkeypatch, text, message):
    assert message in refusal(tmp_path, monkeypatch, {"my_tasks.py": MY_TASKS}, text)


BAD_BATCHES = """
import dataclasses

import numpy as np

import tasks


def batch(n, steps, top=2, dtype=np.int32, mask_steps=None):
    ids = np.full((n, steps), top, dtype)
    mask = np.ones((n, mask_steps or steps), np.float32)
    return tasks.Batch(ids, ids, mask, 0 * mask)


@dataclasses.dataclass(frozen=True)
class Good(tasks.Generated):
    name = "letters"
    alphabet = "abc"
    budgets = {"quick": tasks.Budget(steps=10, hidden=8, batch=4, seq_len=5)}

    def generate(self, rng, n, seq_len):
        return batch(n, seq_len)


@dataclasses.dataclass(frozen=True)
class TooLong(Good):
    def generate(self, rng, n, seq_len):
        return batch(n, seq_len + 1)


@dataclasses.dataclass(frozen=True)
class OutOfRange(Good):
    def generate(self, rng, n, seq_len):
        return batch(n, seq_len, top=3)


@dataclasses.dataclass(frozen=True)
class Floats(Good):
    def generate(self, rng, n, seq_len):
        return batch(n, seq_len, dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class Raises(Good):
    def generate(self, rng, n, seq_len):
        raise KeyError("vocab")


@dataclasses.dataclass(frozen=True)
class NotABatch(Good):
    def generate(self, rng, n, seq_len):
        return tuple(batch(n, seq_len))


@dataclasses.dataclass(frozen=True)
class MaskSteps(Good):
    def generate(self, rng, n, seq_len):
        return batch(n, seq_len, mask_steps=seq_len + 2)


@dataclasses.dataclass(frozen=True)
class NoValidation(Good):
    def eval_batches(self, split, batch, seq_len, sequences):
        return iter(())
"""


@pytest.mark.parametrize("name, message", [
    ("TooLong", "train_batches gave inputs of shape (4, 6) and dtype int32, not integer token ids of "
                "shape (4, 5)"),
    ("OutOfRange", "train_batches gave inputs from 3 to 3, outside 0..2 (n_inputs is 3)"),
    ("Floats", "train_batches gave inputs of shape (4, 5) and dtype float32, not integer token ids of "
               "shape (4, 5)"),
    ("Raises", "train_batches raised KeyError: 'vocab'"),
    ("NotABatch", "train_batches must give tasks.Batch, got tuple"),
    ("MaskSteps", "train_batches gave mask of shape (4, 7), not (4, 5) like the inputs' rows and steps"),
    ("NoValidation", "eval_batches gave no batch"),
])  # fmt: skip
def test_a_task_of_your_own_gives_batches_the_trainer_reads(tmp_path, monkeypatch, name, message):
    """One training and one validation batch are drawn when the config is checked: a wrong shape
    would fail every trial, and an id out of range would train silently on a clamped one."""
    text = f"tasks = ['bad_batches:{name}']"
    refused = refusal(tmp_path, monkeypatch, {"bad_batches.py": BAD_BATCHES}, text)
    assert refused == f"config: tasks: bad_batches:{name}: {message}"
    assert parse_config("tasks = ['bad_batches:Good']").tasks == ("bad_batches:Good",)


def test_a_task_of_your_own_takes_its_budget_options_and_dotted_overrides(tmp_path, monkeypatch):
    """Its class's budget at the preset, the config's over it; a `--set` key whose task is in a
    package keeps the module's dots ("budget.pkg.tasks:Copy.steps")."""
    from tasks import TrialSpec

    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "my_tasks.py").write_text(MY_TASKS)
    (tmp_path / "search.toml").write_text("tasks = ['pkg.my_tasks:Copy', 'arith']\n"
                                          "[task_options.'pkg.my_tasks:Copy']\nsymbols = 3\n")
    config = load_config(tmp_path / "search.toml", {"budget.pkg.my_tasks:Copy.steps": 70})
    assert config.budget == {"pkg.my_tasks:Copy": {"steps": 70}}
    assert parse_config(to_toml(to_dict(config))) == config  # as run.toml keeps it
    spec = TrialSpec.from_preset("gru", "pkg.my_tasks:Copy", "quick", None, 0,
                                 config.budget["pkg.my_tasks:Copy"], config.task_options["pkg.my_tasks:Copy"])
    assert (spec.budget.steps, spec.budget.hidden, spec.task_options) == (70, 8, (("symbols", 3),))
    assert spec.make_task().symbols == 3
    for name in ("pkg", "pkg.my_tasks"):
        sys.modules.pop(name, None)


def test_baselines_take_cells_as_equations_too():
    found = "z = sigmoid(W(x) + W(h))\nh_new = z * h + (1 - z) * tanh(W(x) + W(h))\n"
    config = parse_config(f"strategy = 'baselines'\n[baselines]\ncells = ['lstm', {json.dumps(found)}]")
    assert config.baselines.cells == ("lstm", found)
    again = parse_config(to_toml(to_dict(config)))  # as run.toml keeps it, for the resume check
    assert again == config


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.toml: cannot read"):
        load_config(tmp_path / "nope.toml")


def test_a_grid_narrows_the_papers_grid_and_resumes_only_with_it():
    from tasks import GRID

    paper = parse_config("")
    assert paper.settings_grid() == GRID  # no [grid]: the paper's, so old runs draw as they did
    assert parse_config(to_toml(to_dict(paper))).search_fields() == paper.search_fields()
    narrowed = parse_config("[grid]\nlayers = [1, 2]\nlr = [1, 2]")
    assert narrowed.settings_grid() == GRID | {"layers": (1, 2), "lr": (1.0, 2.0)}
    assert parse_config(to_toml(to_dict(narrowed))) == narrowed  # as run.toml keeps it
    assert narrowed.search_fields() != paper.search_fields()  # a resume with another grid is refused
