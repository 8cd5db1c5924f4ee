"""`experiments.yaml` grids and `stn compare`: run a grid resumably, then tabulate it with statistics.

File layout:

    defaults: {<RunConfig fields>}          # applied to every experiment of every grid
    grids:
      <grid>:
        description: <text>
        defaults: {<RunConfig fields>}      # applied to this grid's experiments
        experiments:
          <experiment>:
            why: <text>                     # why the experiment exists
            study: <number>                 # the study's reported validation accuracy, if any
            baseline: <experiment>          # the table gives the difference to it, with a 95% CI
            <RunConfig fields>
        figures:
          - {title: <text>, experiments: [<experiment>, ...]}

Run folders are named `<dataset>.<experiment>.seed<k>`; a folder is reused only when its summary is
complete and its config fingerprint equals the one wanted now.
"""

from __future__ import annotations

import math
import statistics
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from . import results
from .config import RunConfig, check_fields, check_name
from .errors import ConfigError, StnError

COMPARE_DIR = "compare"
_EXPERIMENT_KEYS = {"why", "study", "baseline"}
_GRID_KEYS = {"description", "defaults", "experiments", "figures"}


@dataclass(frozen=True)
class Experiment:
    name: str
    config: RunConfig
    why: str = ""
    study: float | None = None
    baseline: str | None = None


@dataclass(frozen=True)
class Figure:
    title: str
    experiments: tuple[str, ...]


@dataclass(frozen=True)
class Grid:
    name: str
    description: str
    experiments: tuple[Experiment, ...]
    figures: tuple[Figure, ...] = ()

    def with_overrides(self, overrides: dict[str, Any]) -> "Grid":
        """The grid with `overrides` (e.g. from command-line flags) applied to every experiment."""
        experiments = []
        for experiment in self.experiments:
            try:
                config = experiment.config.replace(**overrides)
            except ConfigError as error:
                raise ConfigError(f"experiment {experiment.name!r}: {error}") from None
            experiments.append(replace(experiment, config=config))
        return replace(self, experiments=tuple(experiments))

    def select(self, names: Sequence[str]) -> "Grid":
        known = {e.name for e in self.experiments}
        for name in names:
            if name not in known:
                raise ConfigError(f"grid {self.name!r} has no experiment {name!r}; it has: {', '.join(sorted(known))}")
        wanted = set(names) | {e.baseline for e in self.experiments if e.name in names and e.baseline}
        chosen = tuple(e for e in self.experiments if e.name in wanted)
        return Grid(self.name, self.description, chosen, self.figures)


class _StrictLoader(yaml.SafeLoader):
    """safe_load, except that a key given twice in one mapping is an error instead of the last one winning."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"duplicate name {key!r} at line {key_node.start_mark.line + 1}")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def load_grids(path: Path) -> dict[str, Grid]:
    """Parse an experiments file; every error names the grid, experiment and field."""
    try:
        document = yaml.load(Path(path).read_text(), Loader=_StrictLoader)
    except OSError as error:
        raise ConfigError(f"cannot read experiments file {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{at}") from None
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    document = _mapping(document, str(path))
    unknown = set(document) - {"defaults", "grids"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key {sorted(unknown)[0]!r}; expected 'defaults' and 'grids'")
    defaults = check_fields(_mapping(document.get("defaults"), f"{path}: defaults"), f"{path}: defaults")
    grids = {}
    for grid_name, body in _mapping(document.get("grids"), f"{path}: grids").items():
        try:
            grids[grid_name] = _parse_grid(str(grid_name), _mapping(body, f"grid {grid_name!r}"), defaults)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None
    if not grids:
        raise ConfigError(f"{path}: declares no grids")
    return grids


def _parse_grid(name: str, body: dict, defaults: dict) -> Grid:
    where = f"grid {name!r}"
    check_name(name, f"{where}: name")
    unknown = set(body) - _GRID_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}; valid keys: {', '.join(sorted(_GRID_KEYS))}")
    grid_defaults = {**defaults, **check_fields(_mapping(body.get("defaults"), f"{where}: defaults"), f"{where}: defaults")}
    experiments = []
    entries = body.get("experiments")
    if not isinstance(entries, dict) or not entries:
        raise ConfigError(f"{where}: 'experiments' must be a non-empty mapping of name to options")
    for experiment_name, entry in entries.items():
        experiments.append(_parse_experiment(str(experiment_name), _mapping(entry, f"{where}, experiment {experiment_name!r}"), grid_defaults, where))
    names = [e.name for e in experiments]
    for experiment in experiments:
        if experiment.baseline is not None and experiment.baseline not in names:
            raise ConfigError(f"{where}, experiment {experiment.name!r}: baseline {experiment.baseline!r} is not in the grid")
    figures = []
    for index, figure in enumerate(body.get("figures") or []):
        figure = _mapping(figure, f"{where}: figure {index + 1}")
        members = figure.get("experiments")
        if not isinstance(figure.get("title"), str) or not isinstance(members, list) or not members:
            raise ConfigError(f"{where}: figure {index + 1} needs a 'title' and a non-empty 'experiments' list")
        for member in members:
            if member not in names:
                raise ConfigError(f"{where}: figure {figure['title']!r} names unknown experiment {member!r}")
        figures.append(Figure(figure["title"], tuple(members)))
    return Grid(name, str(body.get("description", "")), tuple(experiments), tuple(figures))


def _parse_experiment(name: str, entry: dict, defaults: dict, grid_where: str) -> Experiment:
    where = f"{grid_where}, experiment {name!r}"
    check_name(name, f"{where}: name")
    study = entry.get("study")
    if study is not None and (isinstance(study, bool) or not isinstance(study, (int, float))):
        raise ConfigError(f"{where}: field 'study' must be a number, got {study!r}")
    why = entry.get("why", "")
    if not isinstance(why, str):
        raise ConfigError(f"{where}: field 'why' must be text")
    baseline = entry.get("baseline")
    if baseline is not None and not isinstance(baseline, str):
        raise ConfigError(f"{where}: field 'baseline' must be an experiment name")
    options = {k: v for k, v in entry.items() if k not in _EXPERIMENT_KEYS}
    config = RunConfig.from_mapping({**defaults, **check_fields(options, where)}, where)
    return Experiment(name, config, why, None if study is None else float(study), baseline)


def run_name(experiment: str, dataset: str, seed: int) -> str:
    return f"{dataset}.{experiment}.seed{seed}"


@dataclass
class Job:
    """One experiment's seeds that still need training, trained together in one call."""

    experiment: str
    config: RunConfig
    seeds: list[int]
    names: list[str]


def resolve_datasets(grid: Grid, load: Callable | None = None) -> Grid:
    """Load each data set the grid uses once, before anything runs, and name experiments by the data set
    actually loaded: where full MNIST falls back to mnist-5k, the runs are mnist-5k runs, so they are
    never taken later for full-MNIST results. A data set that cannot be loaded keeps its name."""
    if load is None:
        from .data import load
    loaded: dict[tuple[str, str | None], str] = {}
    experiments = []
    for experiment in grid.experiments:
        key = (experiment.config.dataset, experiment.config.data_dir)
        if key not in loaded:
            try:
                loaded[key] = load(*key).name
            except StnError:  # left as named: its jobs fail and are recorded, and the grid goes on
                loaded[key] = experiment.config.dataset
        experiments.append(replace(experiment, config=experiment.config.replace(dataset=loaded[key])))
    return replace(grid, experiments=tuple(experiments))


def plan(grid: Grid, results_dir: Path, seeds: int) -> tuple[list[Job], int]:
    """The jobs still to run, and how many seed-runs are already complete and reused."""
    if seeds < 1:
        raise ConfigError(f"seeds must be >= 1, got {seeds}")
    jobs, reused = [], 0
    existing = {run.name: run for run in results.list_runs(results_dir)}
    for experiment in grid.experiments:
        base = experiment.config
        todo, names = [], []
        for seed in range(seeds):
            wanted = base.replace(seed=seed)
            name = run_name(experiment.name, wanted.dataset, seed)
            run = existing.get(name)
            if run and run.status == results.COMPLETE and run.summary.get("config_fingerprint") == wanted.fingerprint():
                reused += 1
                continue
            todo.append(seed)
            names.append(name)
        if todo:
            jobs.append(Job(experiment.name, base, todo, names))
    return jobs, reused


def run_job(job: Job, results_dir: Path, jit_compile: bool = True) -> list[dict]:
    """Train one job (in this process or a worker); return its seed-runs' summaries.

    A data or training failure is recorded as a failed entry rather than raised, so the grid goes on.
    """
    from . import data, training

    try:
        dataset = data.load(job.config.dataset, job.config.data_dir)
        runs = training.train(
            job.config, dataset, results_dir, seeds=job.seeds, names=job.names,
            experiment=job.experiment, jit_compile=jit_compile,
        )
    except StnError as error:
        return [{"name": name, "experiment": job.experiment, "seed": seed, "status": "failed", "error": str(error)}
                for name, seed in zip(job.names, job.seeds)]
    return [run.summary for run in runs]


def run_jobs(
    todo: list[Job],
    results_dir: Path,
    *,
    jobs: int = 1,
    on_job_done: Callable[[Job, list[dict]], None] | None = None,
    jit_compile: bool = True,
) -> list[dict]:
    """Run the jobs `plan` returned, `jobs` at a time; return the new runs' summaries.

    Seeds of one experiment train side by side in one call; experiments go to parallel processes."""
    if jobs < 1:
        raise ConfigError(f"jobs must be >= 1, got {jobs}")
    summaries: list[dict] = []
    if jobs == 1 or len(todo) <= 1:
        for job in todo:
            done = run_job(job, results_dir, jit_compile)
            summaries.extend(done)
            if on_job_done:
                on_job_done(job, done)
        return summaries
    # TensorFlow does not survive fork; each worker starts a fresh interpreter (and inherits the CLI's
    # file descriptor 2, so TensorFlow's C++ notices stay hidden there too).
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(run_job, job, results_dir, jit_compile): job for job in todo}
        for future in as_completed(futures):
            done = future.result()
            summaries.extend(done)
            if on_job_done:
                on_job_done(futures[future], done)
    return summaries


# ---------------------------------------------------------------------------------------------------
# The table

# Two-sided 95% Student t quantiles by degrees of freedom; beyond 30 the normal 1.96 is close enough.
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042]


def t95(degrees_of_freedom: int) -> float:
    return _T95[degrees_of_freedom - 1] if degrees_of_freedom <= len(_T95) else 1.96


@dataclass
class Row:
    experiment: str
    description: str
    dataset: str
    seeds: int
    validation: list[float]
    test: list[float]
    study: float | None
    wall_seconds: float
    failed: int = 0
    statuses: list[str] = field(default_factory=list)
    baseline: "Row | None" = None

    @property
    def mean(self) -> float:
        return statistics.fmean(self.validation) if self.validation else math.nan

    @property
    def std(self) -> float:
        return statistics.stdev(self.validation) if len(self.validation) >= 2 else math.nan

    @property
    def ci95(self) -> tuple[float, float] | None:
        n = len(self.validation)
        if n < 2:
            return None
        half = t95(n - 1) * self.std / math.sqrt(n)
        return self.mean - half, self.mean + half

    @property
    def difference(self) -> tuple[float, float, float] | None:
        """Mean validation accuracy minus the baseline's, with Welch's 95% confidence interval."""
        other = self.baseline
        if other is None or len(self.validation) < 2 or len(other.validation) < 2:
            return None
        a, b = self.std**2 / len(self.validation), other.std**2 / len(other.validation)
        delta = self.mean - other.mean
        if a + b == 0:
            return delta, delta, delta
        dof = (a + b) ** 2 / (a**2 / (len(self.validation) - 1) + b**2 / (len(other.validation) - 1))
        half = t95(max(1, math.floor(dof))) * math.sqrt(a + b)
        return delta, delta - half, delta + half

    @property
    def test_mean(self) -> float:
        return statistics.fmean(self.test) if self.test else math.nan


def table(grid: Grid, results_dir: Path, seeds: int) -> list[Row]:
    """One row per experiment from the run summaries on disk (only runs of the wanted configs)."""
    existing = {run.name: run for run in results.list_runs(results_dir)}
    rows = []
    for experiment in grid.experiments:
        base = experiment.config
        row = Row(experiment.name, base.describe(), base.dataset, 0, [], [], experiment.study, 0.0)
        for seed in range(seeds):
            wanted = base.replace(seed=seed)
            run = existing.get(run_name(experiment.name, wanted.dataset, seed))
            if run is None or run.summary.get("config_fingerprint") != wanted.fingerprint():
                continue
            row.statuses.append(run.status)
            row.dataset = run.summary["dataset"]["name"]
            # Seeds trained together share one wall clock: count each run's share of it.
            row.wall_seconds += (run.summary.get("wall_seconds") or 0.0) / run.summary.get("seeds_trained_together", 1)
            if run.status != results.COMPLETE:
                row.failed += 1
                continue
            row.seeds += 1
            row.validation.append(run.summary["final_validation_accuracy"])
            row.test.append(run.summary["test_accuracy"])
        rows.append(row)
    by_name = {row.experiment: row for row in rows}
    for experiment, row in zip(grid.experiments, rows):
        row.baseline = by_name.get(experiment.baseline) if experiment.baseline else None
    return rows


TABLE_COLUMNS = (
    "experiment", "neuron", "dataset", "seeds", "validation_mean", "validation_std",
    "ci95_low", "ci95_high", "baseline", "difference", "difference_ci95_low", "difference_ci95_high",
    "test_mean", "study", "wall_seconds", "failed",
)


def _fmt(value: float | None, digits: int = 4) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def table_records(rows: list[Row]) -> list[dict[str, str]]:
    records = []
    for row in rows:
        ci, difference = row.ci95, row.difference or (None, None, None)
        records.append({
            "experiment": row.experiment, "neuron": row.description, "dataset": row.dataset,
            "seeds": str(row.seeds), "validation_mean": _fmt(row.mean), "validation_std": _fmt(row.std),
            "ci95_low": _fmt(ci[0] if ci else None), "ci95_high": _fmt(ci[1] if ci else None),
            "baseline": row.baseline.experiment if row.baseline else "",
            "difference": _fmt(difference[0]), "difference_ci95_low": _fmt(difference[1]),
            "difference_ci95_high": _fmt(difference[2]),
            "test_mean": _fmt(row.test_mean), "study": _fmt(row.study), "wall_seconds": _fmt(row.wall_seconds, 1),
            "failed": str(row.failed),
        })
    return records


def describe_difference(row: Row) -> str:
    """'+0.0123 [+0.0040, +0.0206] vs tanh', with '(n.s.)' where the interval contains 0."""
    if row.difference is None:
        return ""
    delta, low, high = row.difference
    verdict = "" if low > 0 or high < 0 else " (n.s.)"
    return f"{delta:+.4f} [{low:+.4f}, {high:+.4f}] vs {row.baseline.experiment}{verdict}"


def markdown(rows: list[Row]) -> str:
    lines = [
        "| experiment | neuron | data set | seeds | validation accuracy (mean ± sd) | 95% CI | difference [95% CI] "
        "| test | study | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ci = row.ci95
        spread = f" ± {row.std:.4f}" if not math.isnan(row.std) else ""
        lines.append(
            f"| {row.experiment} | {row.description} | {row.dataset} | {row.seeds}"
            f"{f' ({row.failed} failed)' if row.failed else ''} | {_fmt(row.mean)}{spread} | "
            f"{f'{ci[0]:.4f}–{ci[1]:.4f}' if ci else ''} | {describe_difference(row)} | {_fmt(row.test_mean)} | "
            f"{_fmt(row.study)} | {row.wall_seconds:.0f} |"
        )
    return "\n".join(lines) + "\n"


def write_table(rows: list[Row], results_dir: Path, grid_name: str) -> tuple[Path, Path]:
    folder = Path(results_dir) / COMPARE_DIR
    csv_path, md_path = folder / f"{grid_name}.csv", folder / f"{grid_name}.md"
    results.write_csv(csv_path, TABLE_COLUMNS, table_records(rows))
    results.atomic_write_text(md_path, markdown(rows))
    return csv_path, md_path

