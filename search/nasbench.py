"""Random cells by NAS-Bench-NLP's generator rules, so its search space can be run under the
Jozefowicz protocol (strategy `nasbench_nlp_random`).

The rules, as the issue and NAS-Bench-NLP's published cells give them:
- `vertices` (7) intermediate vertices, each an op drawn with weights linear : blend :
  elementwise_prod : elementwise_sum = 3 : 1 : 1 : 1, reading distinct earlier values (the inputs
  `x`, `h_prev_0` [, `h_prev_1`] and earlier vertices);
- a linear has 2 or 3 inputs, with weights 4 : 1;
- every linear is followed by an activation (tanh, sigm or leaky_relu, uniformly) that later
  vertices can read, as they can read the linear itself; activations are not counted as vertices;
- the last value made is `h_new_0` (with memory, a random earlier vertex is `h_new_1`); values that
  no output reads are pruned;
- a cell that ignores an input, or whose output is an input (an `h_prev` wired straight into an
  `h_new`), is rejected and drawn again.
Vertices are named `node_k` in creation order, activations included, as in NAS-Bench-NLP's files.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

OP_WEIGHTS = {"linear": 3, "blend": 1, "elementwise_prod": 1, "elementwise_sum": 1}
FAN_IN_WEIGHTS = {2: 4, 3: 1}
ACTIVATIONS = ("activation_tanh", "activation_sigm", "activation_leaky_relu")


def _choice(rng: np.random.Generator, weights: Mapping):
    keys = list(weights)
    p = np.array([weights[k] for k in keys], float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def prune(recipe: dict) -> dict:
    """The recipe without the nodes that no output reads."""
    keep, stack = set(), [n for n in ("h_new_0", "h_new_1") if n in recipe]
    while stack:
        name = stack.pop()
        if name in recipe and name not in keep:
            keep.add(name)
            stack.extend(recipe[name]["input"])
    return {name: spec for name, spec in recipe.items() if name in keep}


def inputs_used(recipe: dict) -> set[str]:
    return {i for spec in recipe.values() for i in spec["input"] if i == "x" or i.startswith("h_prev_")}


def draw(rng: np.random.Generator, vertices: int = 7, memory: bool = False) -> dict | None:
    """One unpruned draw of the generator (outputs named), or None if it could not be completed."""
    sources = ["x", "h_prev_0"] + (["h_prev_1"] if memory else [])
    recipe: dict[str, dict] = {}
    values = list(sources)
    for _ in range(vertices):
        op = _choice(rng, OP_WEIGHTS)
        arity = _choice(rng, FAN_IN_WEIGHTS) if op == "linear" else 3 if op == "blend" else 2
        if arity > len(values):
            return None
        picks = rng.choice(len(values), size=arity, replace=False)
        name = f"node_{len(recipe)}"
        recipe[name] = {"op": op, "input": [values[int(k)] for k in picks]}
        values.append(name)
        if op == "linear":
            act = f"node_{len(recipe)}"
            recipe[act] = {"op": ACTIVATIONS[int(rng.integers(len(ACTIVATIONS)))], "input": [name]}
            values.append(act)
    made = values[len(sources):]
    outputs = {made[-1]: "h_new_0"}
    if memory:
        outputs[made[int(rng.integers(len(made) - 1))]] = "h_new_1"
    return {outputs.get(n, n): {"op": s["op"], "input": [outputs.get(i, i) for i in s["input"]]}
            for n, s in recipe.items()}  # fmt: skip


def sample_recipe(rng: np.random.Generator, vertices: int = 7, memory: bool = False,
                  max_tries: int = 1000) -> dict:  # fmt: skip
    """One random NAS-Bench-NLP recipe, pruned and checked (see the module docstring).

    Args:
      rng: the source of every random decision.
      vertices: intermediate vertices before pruning.
      memory: whether the cell has a second state (`h_prev_1` / `h_new_1`).
      max_tries: draws before giving up.
    """
    slots = {"x", "h_prev_0"} | ({"h_prev_1"} if memory else set())
    for _ in range(max_tries):
        raw = draw(rng, vertices, memory)
        if raw is None:
            continue
        recipe = prune(raw)
        if inputs_used(recipe) == slots:
            return recipe
    raise RuntimeError(f"no valid NAS-Bench-NLP cell in {max_tries} draws")


def draw_violations(raw: Mapping, vertices: int = 7) -> list[str]:
    """What in an unpruned draw breaks the generator rules (empty: none); used by the tests."""
    problems = []
    readers: dict[str, list[str]] = {}
    for name, spec in raw.items():
        for i in spec["input"]:
            readers.setdefault(i, []).append(name)
    counted = [n for n, s in raw.items() if not s["op"].startswith("activation_")]
    if len(counted) != vertices:
        problems.append(f"{len(counted)} vertices, not {vertices}")
    for name, spec in raw.items():
        op, inputs = spec["op"], spec["input"]
        if op not in (*OP_WEIGHTS, *ACTIVATIONS):
            problems.append(f"{name}: op {op}")
        if op == "linear" and len(inputs) not in FAN_IN_WEIGHTS:
            problems.append(f"{name}: linear fan-in {len(inputs)}")
        if op == "linear" and not any(raw[r]["op"].startswith("activation_") for r in readers.get(name, [])):
            problems.append(f"{name}: linear not followed by an activation")
        if op in ("blend",) and len(inputs) != 3 or op.startswith("elementwise") and len(inputs) != 2:
            problems.append(f"{name}: {op} with {len(inputs)} inputs")
        if len(set(inputs)) != len(inputs):
            problems.append(f"{name}: repeated input")
    return problems


def recipe_violations(recipe: Mapping) -> list[str]:
    """What in a pruned recipe breaks the rules: unreachable nodes, unused inputs, an output that
    is an input."""
    problems = []
    read = {i for spec in recipe.values() for i in spec["input"]}
    for name in recipe:
        if name not in ("h_new_0", "h_new_1") and name not in read:
            problems.append(f"{name}: unreachable")
    slots = {"x", "h_prev_0"} | ({"h_prev_1"} if "h_new_1" in recipe else set())
    if inputs_used(dict(recipe)) != slots:
        problems.append(f"inputs used {sorted(inputs_used(dict(recipe)))} != {sorted(slots)}")
    if "h_new_0" not in recipe:
        problems.append("no h_new_0")
    return problems
