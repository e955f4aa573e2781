"""The paper's claims, checked against a run with effect sizes and bootstrap confidence intervals.

Every claim compares cells by their best score over the trials they had (a trial = one
hyperparameter setting and seed), as the paper does. The uncertainty of a best-of-n score comes
from which settings happened to be drawn, so the bootstrap resamples the trials of each
(cell, task) with replacement, takes the best again, and recomputes the effect; the interval is
the central `level` share of those replicates.

Scores are normalised by the GRU's best on the same task (within each replicate), so effects read
as "fractions of the GRU's score"; comparisons that span music tasks (whose per-frame likelihoods
differ by orders of magnitude) use log score ratios instead (`log_ratio`).

A best-of-n score grows with n, so a cell with more trials has an edge (in a search, the LSTM and
GRU are re-run far more often than any mutant). With `equal_trials`, every cell's score on a task
is instead the expected best of k of its trials drawn without replacement, k being the fewest
trials any measured cell has on that task (`expected_best_weights`): the same budget for all.

Every effect is signed so that positive is the paper's direction. A claim's verdict, unless the
claim states another rule (`Finding.rule`, the check's docstring):
- supported: the interval lies entirely above 0, on the side the paper predicts,
- contradicted: it lies entirely below 0,
- inconclusive: it contains 0, or a cell the claim needs was not measured.
Claims about most tasks or about every cell count per-task or per-cell verdicts instead, since one
interval of an average or of the extreme cell does not answer them.
With few settings per cell (the quick preset) most intervals are wide: inconclusive is the honest
answer at that budget. Each verdict is at `level` on its own; for several claims at once, widen it
(Bonferroni: `level = 1 - 0.05 / len(CLAIMS)`, which the report also counts).
"""

from __future__ import annotations

import bisect
import copy
import hashlib
import math
from typing import Any, Callable, NamedTuple

import numpy as np
import pandas as pd

from analysis.leaderboard import REFERENCE, cell_names, trial_scores
from cells import PAPER_CELLS
from tasks import MUSIC_TASKS, SEARCH_TASKS

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
INTERVAL_RULE = "supported if the interval is above 0, contradicted if below 0"
LANGUAGE_TASKS = ("ptb",)


class Finding(NamedTuple):
    """One checked claim."""

    claim: str  # what the paper says
    measure: str  # what `effect` is; positive = the paper's direction
    effect: float  # point estimate (NaN if not measurable)
    low: float  # confidence interval of the effect
    high: float
    verdict: str  # supported | contradicted | inconclusive
    detail: str  # the numbers behind the verdict, or what was missing
    rule: str = INTERVAL_RULE  # how the verdict follows from the numbers; else inconclusive


class Missing(Exception):
    """A cell or task a claim needs has no trials."""


def verdict(low: float, high: float) -> str:
    """supported if the interval is above 0, contradicted if below, else inconclusive."""
    if low > 0:
        return SUPPORTED
    if high < 0:
        return CONTRADICTED
    return INCONCLUSIVE


def expected_best_weights(n: int, k: int) -> np.ndarray:
    """Weights w with `w @ np.sort(scores)` = the expected best of k of the n scores, drawn without
    replacement.

    Args:
      n: how many scores there are.
      k: how many are drawn (1 <= k <= n).

    Returns:
      w, shape (n,): the i-th smallest score is the best of a draw when the other k - 1 come from
      the i - 1 below it, which C(i-1, k-1) of the C(n, k) draws do. Computed from logarithms:
      C(n, k) passes the largest float at a paper-scale run's counts (n = 10,000, k = 200).
    """
    # log C(i, k-1) for i = k-1 .. n-1, from C(i+1, k-1) / C(i, k-1) = (i+1) / (i-k+2)
    i = np.arange(k - 1, n - 1)
    log_comb = np.concatenate([[0.0], np.cumsum(np.log((i + 1) / (i - k + 2)))])
    log_total = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
    return np.concatenate([np.zeros(k - 1), np.exp(log_comb - log_total)])


class Bootstrap:
    """Best-of-trials scores per (cell, task, dropout) and their bootstrap replicates.

    Args:
      frame: trials from `results.load`.
      replicates: bootstrap replicates per group.
      level: the confidence level of intervals.
      seed: replicates are a deterministic function of (seed, cell, task, dropout).
      min_trials: a best-of-1 score has no spread to resample; groups with fewer trials count as
        not measured.
      equal_trials: score every cell by its expected best of the same number of trials per
        (task, dropout), the fewest any measured cell has there (see the module docstring).
    """

    def __init__(self, frame: pd.DataFrame, replicates: int = 2000, level: float = 0.95, seed: int = 0,
                 min_trials: int = 2, equal_trials: bool = False):  # fmt: skip
        self.replicates, self.level, self.seed, self.min_trials = replicates, level, seed, min_trials
        frame = frame.assign(_score=trial_scores(frame), _dropout=frame["dropout"] > 0)
        # sorted: a store lists trials in the order they finished, which differs between two runs
        # of the same search; the replicates must depend on the scores alone
        # (row positions per group, not group frames: 60x faster at 30,000 groups)
        scores = frame["_score"].to_numpy()
        positions = frame.groupby(["cell_hash", "task", "_dropout"], observed=True).indices
        self.groups = {
            (cell, str(task), bool(dropout)): np.sort(scores[rows])
            for (cell, task, dropout), rows in positions.items()
        }  # fmt: skip
        self.names = cell_names(frame)
        # for `cell`: a report asks for cells by name or hash prefix about 40 times per cell, so a
        # scan of every cell per question made it quadratic (about 8 hours at 10,000 cells)
        self._hashes = sorted(map(str, self.names.index))
        self._by_name: dict[str, list[str]] = {}
        for cell_hash, name in self.names.items():
            self._by_name.setdefault(name, []).append(str(cell_hash))
        self.tasks = sorted({task for _, task, _ in self.groups})
        # (task, dropout) -> k, the trials behind every cell's score there (None: all of them)
        self.trials_per_score: dict[tuple[str, bool], int] = {}
        if equal_trials:
            for (_, task, dropout), scores in self.groups.items():
                if len(scores) >= min_trials:
                    k = self.trials_per_score.get((task, dropout), len(scores))
                    self.trials_per_score[task, dropout] = min(k, len(scores))
        self._cache: dict = {}

    def with_level(self, level: float) -> "Bootstrap":
        """The same replicates (shared, not drawn again), with intervals at `level`."""
        other = copy.copy(self)
        other.level = level
        return other

    def cell(self, name: str) -> str:
        """The hash of a cell given by name, hash or hash prefix; Missing if absent."""
        matches = set(self._by_name.get(name, ()))
        i = bisect.bisect_left(self._hashes, name)
        while i < len(self._hashes) and self._hashes[i].startswith(name):
            matches.add(self._hashes[i])
            i += 1
        if not matches:
            raise Missing(f"no trials of {name}")
        if len(matches) > 1:
            raise ValueError(f"'{name}' matches several cells: {', '.join(sorted(matches)[:4])}")
        return matches.pop()

    def has(self, name: str, task: str, dropout: bool = False) -> bool:
        """Whether the cell has at least `min_trials` trials on the task."""
        try:
            return len(self.groups.get((self.cell(name), task, dropout), ())) >= self.min_trials
        except Missing:
            return False

    def best(self, name: str, task: str, dropout: bool = False,
             keep: bool = True) -> tuple[float, np.ndarray]:  # fmt: skip
        """(best score, its bootstrap replicates) of a cell on a task; with `equal_trials`, the
        expected best of `trials_per_score[task, dropout]` trials.

        Kept for the next question unless `keep` is False (for a cell asked about once: 2,000
        floats per (cell, task), about 0.5 GB for 10,000 cells on three tasks)."""
        key = (self.cell(name), task, dropout)
        if len(self.groups.get(key, ())) < self.min_trials:
            raise Missing(f"fewer than {self.min_trials} trials of {name} on {task}"
                          + (" with dropout" if dropout else ""))  # fmt: skip
        if key in self._cache:
            return self._cache[key]
        scores = self.groups[key]  # sorted
        digest = hashlib.sha256(repr((self.seed, *key)).encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        picks = rng.integers(0, len(scores), size=(self.replicates, len(scores)))
        k = self.trials_per_score.get((task, dropout))
        if k is None:
            # scores are sorted, so a replicate's best is the score at its largest pick: the same
            # values as the max of scores[picks], without its slow reduction along short rows
            found = (float(scores.max()), scores[picks.max(axis=1)])
        else:
            weights = expected_best_weights(len(scores), k)
            found = (float(scores @ weights), np.sort(scores[picks], axis=1) @ weights)
        if keep:
            self._cache[key] = found
        return found

    def kept(self, key: tuple, compute: Callable[..., Any], *args) -> Any:
        """compute(*args), computed once per `key` and kept, like `best`'s answers (and shared
        with `with_level` copies)."""
        if key not in self._cache:
            self._cache[key] = compute(*args)
        return self._cache[key]

    def normalised(self, name: str, task: str, dropout: bool = False,
                   keep: bool = True) -> tuple[float, np.ndarray]:  # fmt: skip
        """Best score / the GRU's best on the same task, point and replicates (`keep`: see `best`;
        the GRU's are always kept)."""
        point, reps = self.best(name, task, dropout, keep)
        ref_point, ref_reps = self.best(REFERENCE, task, dropout)
        with np.errstate(divide="ignore", invalid="ignore"):
            return point / ref_point if ref_point > 0 else np.nan, np.where(ref_reps > 0, reps / ref_reps, np.nan)

    def interval(self, replicates: np.ndarray) -> tuple[float, float]:
        """(low, high): the percentile interval at `level` of the finite replicates; NaNs where
        fewer than half of them are finite."""
        tail = 100 * (1 - self.level) / 2
        finite = replicates[np.isfinite(replicates)]
        if len(finite) < len(replicates) / 2:
            return np.nan, np.nan
        low, high = np.percentile(finite, [tail, 100 - tail])
        return float(low), float(high)

    def finding(self, claim: str, measure: str, point: float, reps: np.ndarray, detail: str) -> Finding:
        low, high = self.interval(reps)
        return Finding(claim, measure, float(point), low, high, verdict(low, high), detail)


def _fmt(value: float) -> str:
    return f"{value:+.3f}"


def _shared_tasks(boot: Bootstrap, cells: tuple[str, ...], tasks=SEARCH_TASKS) -> list[str]:
    shared = [t for t in tasks if all(boot.has(c, t) for c in cells)]
    if not shared:
        raise Missing(f"no task on which {', '.join(cells)} all have {boot.min_trials}+ trials")
    return shared


def _mean_difference(boot: Bootstrap, a: str, b: str, tasks: list[str]) -> tuple[float, np.ndarray]:
    """mean over tasks of (best a - best b) / best GRU."""
    points, reps = [], []
    for task in tasks:
        pa, ra = boot.normalised(a, task)
        pb, rb = boot.normalised(b, task)
        points.append(pa - pb)
        reps.append(ra - rb)
    return float(np.mean(points)), np.mean(reps, axis=0)


def gate_importance_forget(boot: Bootstrap, claim: str) -> Finding:
    """Forget gate first: the LSTM's loss without f, minus the larger loss without i or o (mean
    over the search tasks, fractions of the GRU's score). Interval rule."""
    tasks = _shared_tasks(boot, ("lstm", "lstm_f", "lstm_i", "lstm_o", REFERENCE))
    drops = {g: _mean_difference(boot, "lstm", f"lstm_{g}", tasks) for g in "fio"}
    point = drops["f"][0] - max(drops["i"][0], drops["o"][0])
    reps = drops["f"][1] - np.maximum(drops["i"][1], drops["o"][1])
    detail = (f"drop from LSTM (fraction of GRU score, mean over {', '.join(tasks)}): "
              + ", ".join(f"{g}: {_fmt(d[0])}" for g, d in drops.items()))  # fmt: skip
    return boot.finding(claim, "drop(f) - max(drop(i), drop(o))", point, reps, detail)


def gate_importance_input(boot: Bootstrap, claim: str) -> Finding:
    """Input over output gate: the LSTM's loss without i minus its loss without o. Interval rule."""
    tasks = _shared_tasks(boot, ("lstm", "lstm_i", "lstm_o", REFERENCE))
    drop_i = _mean_difference(boot, "lstm", "lstm_i", tasks)
    drop_o = _mean_difference(boot, "lstm", "lstm_o", tasks)
    detail = f"drop(i) {_fmt(drop_i[0])}, drop(o) {_fmt(drop_o[0])} over {', '.join(tasks)}"
    return boot.finding(claim, "drop(i) - drop(o)", drop_i[0] - drop_o[0], drop_i[1] - drop_o[1], detail)


def forget_bias_closes_gap(boot: Bootstrap, claim: str) -> Finding:
    """The bias closes the gap: LSTM-b's gain over the LSTM, and the GRU's lead over LSTM-b.

    Supported needs both: the gain's interval above 0, and the GRU not significantly better
    than LSTM-b; contradicted: the gain's interval below 0.
    """
    tasks = _shared_tasks(boot, ("lstm", "lstm_b", REFERENCE))
    gain = _mean_difference(boot, "lstm_b", "lstm", tasks)
    gap_before = _mean_difference(boot, REFERENCE, "lstm", tasks)
    gap_after = _mean_difference(boot, REFERENCE, "lstm_b", tasks)
    after_low, after_high = boot.interval(gap_after[1])
    rule = INTERVAL_RULE + ", but not supported while the GRU stays significantly above LSTM-b"
    found = boot.finding(claim, "LSTM-b - LSTM", *gain, "")._replace(rule=rule)
    if found.verdict == SUPPORTED and after_low > 0:
        found = found._replace(verdict=INCONCLUSIVE)
    detail = (f"GRU - LSTM {_fmt(gap_before[0])}, GRU - LSTM-b {_fmt(gap_after[0])} "
              f"[{after_low:+.3f}, {after_high:+.3f}] over {', '.join(tasks)}")  # fmt: skip
    return found._replace(detail=detail)


def log_ratio(boot: Bootstrap, a: str, b: str, task: str, dropout: bool = False) -> tuple[float, np.ndarray]:
    """log(best a / best b): a relative difference that stays meaningful for every score.

    For accuracies it is about the relative difference; for PTB (1/perplexity) it is the gap in
    NLL per word, for music (per-frame likelihood) the gap in NLL per frame, in nats.
    """
    (pa, ra), (pb, rb) = boot.best(a, task, dropout), boot.best(b, task, dropout)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.log(pa) - np.log(pb)), np.log(ra) - np.log(rb)


def gru_beats_lstm(boot: Bootstrap, claim: str) -> Finding:
    """The GRU ahead on most non-language tasks: log(best GRU / best LSTM), averaged for the effect.

    "Most tasks" is counted: each task's own interval decides it; supported if more than half of
    the tasks are, contradicted if at least half are contradicted.
    """
    tasks = [t for t in boot.tasks if t not in LANGUAGE_TASKS and t != "memorize"
             and boot.has("lstm", t) and boot.has(REFERENCE, t)]  # fmt: skip
    if not tasks:
        raise Missing("no non-language task on which LSTM and GRU both have trials")
    per_task = {t: log_ratio(boot, REFERENCE, "lstm", t) for t in tasks}
    verdicts = [verdict(*boot.interval(r)) for _, r in per_task.values()]
    point = float(np.mean([p for p, _ in per_task.values()]))
    reps = np.mean([r for _, r in per_task.values()], axis=0)
    detail = "log(GRU / LSTM) per task: " + ", ".join(
        f"{t} {_fmt(p)} {v}" for (t, (p, _)), v in zip(per_task.items(), verdicts)
    )
    found = boot.finding(claim, "mean over non-LM tasks of log(best GRU / best LSTM)", point, reps, detail)
    wins, losses = verdicts.count(SUPPORTED), verdicts.count(CONTRADICTED)
    outcome = SUPPORTED if wins > len(tasks) / 2 else CONTRADICTED if losses >= len(tasks) / 2 else INCONCLUSIVE
    rule = ("counted over tasks, each decided by its own interval: supported if more than half are "
            "supported, contradicted if at least half are contradicted")  # fmt: skip
    return found._replace(verdict=outcome, rule=rule)


def lstm_wins_language(boot: Bootstrap, claim: str) -> Finding:
    """The LSTM ahead on PTB: log(best LSTM / best GRU), the GRU's NLL per word minus the LSTM's.
    Interval rule."""
    _shared_tasks(boot, ("lstm", REFERENCE), LANGUAGE_TASKS)
    point, reps = log_ratio(boot, "lstm", REFERENCE, "ptb")
    return boot.finding(claim, "log(best LSTM / best GRU) on PTB = GRU's NLL - LSTM's (nats/word)", point,
                        reps, "")  # fmt: skip


def no_cell_beats_both(boot: Bootstrap, claim: str) -> Finding:
    """No cell above both: each other cell's shortfall, the most it falls below the better of LSTM
    and GRU on any search task; the effect is the closest challenger's (the smallest shortfall).

    Counted over cells, each decided by its own interval: supported if every cell falls
    significantly short somewhere, contradicted if any is significantly above on every task.
    """
    tasks = _shared_tasks(boot, ("lstm", REFERENCE))
    bar = {}  # per task: the better of LSTM and GRU, as fractions of the GRU (point, replicates)
    for task in tasks:
        pl, rl = boot.normalised("lstm", task)
        bar[task] = (max(pl, 1.0), np.maximum(rl, 1.0))

    def shortfall(cell):  # max over the tasks of (the bar - cell), point and replicates
        per_task = []
        for task in tasks:
            p, r = boot.normalised(cell, task, keep=False)  # asked once: keep only the shortfall
            per_task.append((bar[task][0] - p, bar[task][1] - r))
        return max(p for p, _ in per_task), np.max([r for _, r in per_task], axis=0)

    shortfalls = {}
    for cell, name in boot.names.items():
        if name in ("lstm", REFERENCE) or not all(boot.has(cell, t) for t in tasks):
            continue
        shortfalls[name] = boot.kept(("no_cell_beats_both", cell, *tasks), shortfall, cell)
    if not shortfalls:
        raise Missing(f"no other cell was trained on every task ({', '.join(tasks)})")
    intervals = {n: boot.interval(r) for n, (p, r) in shortfalls.items()}
    challenger = min(shortfalls, key=lambda n: shortfalls[n][0])
    beats = [n for n, (low, high) in intervals.items() if high < 0]
    loses = [n for n, (low, high) in intervals.items() if low > 0]
    point, reps = shortfalls[challenger]
    low, high = intervals[challenger]
    outcome = CONTRADICTED if beats else SUPPORTED if len(loses) == len(shortfalls) else INCONCLUSIVE
    detail = (f"{len(shortfalls)} cells on {', '.join(tasks)}: {len(loses)} significantly worse than "
              f"LSTM or GRU on some task, {len(beats)} significantly better on all"
              + (f" ({', '.join(beats[:5])})" if beats else "")
              + f"; closest challenger {challenger}")  # fmt: skip
    rule = ("counted over cells, each decided by its own interval: supported if every cell falls "
            "significantly short on some task, contradicted if one is significantly above on all")  # fmt: skip
    return Finding(claim, "min over cells of max over tasks (max(LSTM, GRU) - cell)", point, low,
                   high, outcome, detail, rule)  # fmt: skip


def mut1_strongest(boot: Bootstrap, claim: str) -> Finding:
    """MUT1 first on Arith and XML: MUT1 minus the best other baseline, on its worse task.
    Interval rule."""
    tasks = _shared_tasks(boot, ("mut1", REFERENCE), ("arith", "xml"))
    others = [c for c in PAPER_CELLS if c != "mut1" and all(boot.has(c, t) for t in tasks)]
    if len(others) < 2:
        raise Missing("fewer than two other baselines on arith/xml")
    margins = []
    for task in tasks:
        p, r = boot.normalised("mut1", task)
        rivals = [boot.normalised(c, task) for c in others]
        margins.append((p - max(q for q, _ in rivals), r - np.max([s for _, s in rivals], axis=0)))
    point, reps = min(m for m, _ in margins), np.min([r for _, r in margins], axis=0)
    detail = f"MUT1 - best of {len(others)} other baselines on {', '.join(tasks)}: " + ", ".join(
        f"{t} {_fmt(m)}" for t, (m, _) in zip(tasks, margins)
    )
    return boot.finding(claim, "min over tasks (MUT1 - best other baseline)", point, reps, detail)


def _kendall(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Kendall's tau between the last axes of `a` and `b` (cells), for every leading index."""
    i, j = np.triu_indices(a.shape[-1], k=1)
    agree = np.sign(a[..., i] - a[..., j]) * np.sign(b[..., i] - b[..., j])
    return agree.mean(axis=-1)


def dropout_changes_ranking(boot: Bootstrap, claim: str) -> Finding:
    """Dropout reorders the baselines on music: the share of cell pairs whose order differs
    without and with dropout, (1 - Kendall tau) / 2 (ties count half), mean over music tasks.

    Supported if some pair's order flips significantly (each order's interval on its own side of
    0); contradicted if the rankings clearly agree: the share's interval at most 0.2 (tau at least
    0.6).
    """
    taus, flips, used = [], [], []
    for task in MUSIC_TASKS:
        cells = [c for c in PAPER_CELLS if boot.has(c, task, False) and boot.has(c, task, True)]
        if len(cells) < 3:
            continue
        plain = [boot.best(c, task, False) for c in cells]
        dropped = [boot.best(c, task, True) for c in cells]
        point = _kendall(np.array([p for p, _ in plain]), np.array([p for p, _ in dropped]))
        reps = _kendall(np.stack([r for _, r in plain], 1), np.stack([r for _, r in dropped], 1))
        taus.append((float(point), reps))
        used.append(task)
        for x in range(len(cells)):
            for y in range(len(cells)):
                before = boot.interval(plain[x][1] - plain[y][1])
                after = boot.interval(dropped[x][1] - dropped[y][1])
                if before[0] > 0 and after[1] < 0:
                    flips.append(f"{cells[x]}>{cells[y]} on {task} becomes <")
    if not taus:
        raise Missing("no music task with at least three baselines trained with and without dropout")
    tau = float(np.mean([t for t, _ in taus]))
    tau_reps = np.mean([r for _, r in taus], axis=0)
    tau_low, tau_high = np.percentile(tau_reps, [100 * (1 - boot.level) / 2, 100 * (1 + boot.level) / 2])
    # decided on tau itself, so that the threshold is exact: (1 - 0.6) / 2 need not round to 0.2
    outcome = SUPPORTED if flips else CONTRADICTED if tau_low >= 0.6 else INCONCLUSIVE
    detail = (f"Kendall tau of the rankings without/with dropout {tau:+.3f} [{tau_low:+.3f}, "
              f"{tau_high:+.3f}] on {', '.join(used)}; significant order flips: "
              f"{'; '.join(flips[:4]) if flips else 'none'}")  # fmt: skip
    rule = ("supported if some pair of cells is significantly in opposite orders without and with "
            "dropout, contradicted if the interval is at most 0.2 (Kendall tau at least 0.6)")  # fmt: skip
    return Finding(claim, "share of cell pairs in another order with dropout, (1 - Kendall tau) / 2",
                   (1 - tau) / 2, float(1 - tau_high) / 2, float(1 - tau_low) / 2, outcome, detail, rule)  # fmt: skip


class Claim(NamedTuple):
    """A claim of the paper and the function that checks it against a `Bootstrap`."""

    text: str
    check: Callable[[Bootstrap, str], Finding]


CLAIMS: dict[str, Claim] = {
    "forget_gate_most": Claim(
        "The forget gate matters most: removing it hurts the LSTM more than removing the input or output gate.",
        gate_importance_forget,
    ),
    "input_over_output": Claim(
        "The input gate matters more than the output gate.",
        gate_importance_input,
    ),
    "forget_bias_closes_gap": Claim(
        "A forget-gate bias of 1 closes the gap between the LSTM and the GRU.",
        forget_bias_closes_gap,
    ),
    "gru_beats_lstm": Claim(
        "The GRU beats the LSTM on most tasks other than language modelling.",
        gru_beats_lstm,
    ),
    "lstm_wins_language": Claim(
        "On language modelling (PTB) the LSTM beats the GRU (the exception to the GRU's lead).",
        lstm_wins_language,
    ),
    "no_cell_beats_both": Claim(
        "No cell beats both the LSTM and the GRU on every task.",
        no_cell_beats_both,
    ),
    "mut1_strongest": Claim(
        "MUT1 is the strongest cell on arithmetic and XML.",
        mut1_strongest,
    ),
    "dropout_changes_ranking": Claim(
        "With dropout the ranking of the cells on music changes (the no-dropout pattern does not hold).",
        dropout_changes_ranking,
    ),
}
"""name -> claim, in the order of the report."""


def findings(frame: pd.DataFrame, replicates: int = 2000, level: float = 0.95, seed: int = 0,
             min_trials: int = 2, equal_trials: bool = False,
             boot: Bootstrap | None = None) -> pd.DataFrame:  # fmt: skip
    """Checks every claim of `CLAIMS` against the trials of `frame`.

    Args:
      frame: trials from `results.load` (one or several runs: baselines and searches together).
      replicates: bootstrap replicates.
      level: confidence level of the intervals.
      seed: seed of the bootstrap.
      min_trials: fewest trials of a (cell, task) that count as measured.
      equal_trials: compare every cell at the same number of trials per task (`Bootstrap`).
      boot: a `Bootstrap` of `frame` already built (replaces the five arguments above).

    Returns:
      One row per claim (index: the claim's name) with the columns of `Finding`.
    """
    boot = boot or Bootstrap(frame, replicates, level, seed, min_trials, equal_trials)
    rows = {}
    for name, (claim, check) in CLAIMS.items():
        try:
            rows[name] = check(boot, claim)
        except Missing as missing:
            rows[name] = Finding(claim, "", np.nan, np.nan, np.nan, INCONCLUSIVE, f"not measured: {missing}")
    return pd.DataFrame(list(rows.values()), index=pd.Index(list(rows), name="finding"))


def compare(frame: pd.DataFrame, a: str, b: str, replicates: int = 2000, level: float = 0.95,
            seed: int = 0, equal_trials: bool = False) -> pd.DataFrame:  # fmt: skip
    """Cell `a` vs cell `b` on every task both were trained on (without dropout), and on average.

    Args:
      frame: trials from `results.load`.
      a, b: cells by baseline name, structural hash, or a unique hash prefix.
      equal_trials: score both by their expected best of the same number of trials per task (the
        fewer of the two has), instead of the best of all their trials.

    Returns:
      One row per task plus `mean`, columns of `Finding`: the effect is log(best a / best b)
      (see `log_ratio`); `supported` means a is better than b.
    """
    boot = Bootstrap(frame, replicates, level, seed)
    pair = [boot.cell(a), boot.cell(b)]  # Missing names the cell that is not there
    if pair[0] == pair[1]:
        raise Missing(f"{a} and {b} are the same cell ({pair[0]})")
    if equal_trials:  # k from these two cells alone
        boot = Bootstrap(frame[frame["cell_hash"].isin(pair)], replicates, level, seed, equal_trials=True)
    tasks = [t for t in boot.tasks if boot.has(a, t) and boot.has(b, t)]
    if not tasks:
        raise Missing(f"{a} and {b} share no task with {boot.min_trials}+ trials each")
    rows, diffs = {}, []
    for task in tasks:
        point, reps = log_ratio(boot, a, task=task, b=b)
        diffs.append((point, reps))
        (pa, _), (pb, _) = boot.best(a, task), boot.best(b, task)
        na, nb = (len(boot.groups[(boot.cell(c), task, False)]) for c in (a, b))
        k = boot.trials_per_score.get((task, False))
        best = f"best of {na} vs {nb} trials" if k is None else f"expected best of {k} of {na} vs {nb}"
        rows[task] = boot.finding(f"{a} beats {b} on {task}", f"log({a} / {b})", point, reps,
                                  f"{best}: {pa:.4g} vs {pb:.4g}")  # fmt: skip
    point, reps = float(np.mean([d for d, _ in diffs])), np.mean([r for _, r in diffs], axis=0)
    rows["mean"] = boot.finding(f"{a} beats {b} on average", f"mean log({a} / {b})", point, reps,
                                f"over {', '.join(tasks)}")  # fmt: skip
    return pd.DataFrame(list(rows.values()), index=pd.Index(list(rows), name="task"))
