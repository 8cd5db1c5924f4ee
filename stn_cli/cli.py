"""The `stn` command: parses options, calls one library function, renders the result with Rich.

Library code raises `StnError`; only `main` turns errors into one red line and an exit code
(2 for bad options or files, 1 for failed runs, 130 for an interrupt). TensorFlow is imported only by
the commands that train, so `stn plot` and `stn --help` stay fast.
"""

from __future__ import annotations

import math
import signal
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from . import registry
from .config import RunConfig, check_name
from .errors import ConfigError, Interrupted, StnError

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Explicit discrete neurons trained with the straight-through estimator.",
)
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)  # an error is one line, however narrow the terminal

RESULTS_HELP = "Folder for run folders, tables and plots."


def _flags(**values: Any) -> dict[str, Any]:
    """The options the user actually gave (Typer passes None for the others)."""
    return {key: value for key, value in values.items() if value is not None}


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


@contextmanager
def _reporting_interrupts(what_is_kept: str):
    """Typer turns KeyboardInterrupt into a silent exit 130; say what the interrupt left behind."""
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; {what_is_kept}") from None


@app.command()
def train(
    neuron: Optional[str] = typer.Option(None, help=f"One of: {', '.join(registry.NEURONS)}. [default: tanh]"),
    hidden: Optional[int] = typer.Option(None, help="Hidden neurons. [default: 100]"),
    dims: Optional[int] = typer.Option(None, help="One-hot: logits per neuron. [default: 5]"),
    levels: Optional[int] = typer.Option(None, help="N-ary: output levels. [default: 3]"),
    spacing: Optional[float] = typer.Option(None, help="N-ary: distance between staircase steps. [default: 6]"),
    estimator: Optional[str] = typer.Option(
        None, help=f"One-hot gradient estimator: {', '.join(registry.ESTIMATOR_NAMES)}. [default: st]"
    ),
    samples: Optional[int] = typer.Option(None, help="Gumbel-Rao: conditional samples K. [default: 10]"),
    gap: Optional[float] = typer.Option(None, help="GST: gap of the chosen logit. [default: 1]"),
    slope: Optional[float] = typer.Option(None, help="Initial slope (one-hot temperature = 1/slope). [default: 1]"),
    anneal: Optional[float] = typer.Option(None, help="Multiply the slope by this after every epoch. [default: 1]"),
    anneal_rate: Optional[float] = typer.Option(
        None, help="Per-step schedule: temperature = max(min-temperature, exp(-rate*step)/slope). [default: 0]"
    ),
    min_temperature: Optional[float] = typer.Option(None, help="Floor of the per-step schedule. [default: 0.5]"),
    stochastic_train: Optional[bool] = typer.Option(
        None, "--stochastic-train/--deterministic-train", help="Sample neurons in training. [default: stochastic]"
    ),
    stochastic_eval: Optional[bool] = typer.Option(
        None, "--stochastic-eval/--deterministic-eval", help="Sample neurons at evaluation. [default: deterministic]"
    ),
    dataset: Optional[str] = typer.Option(None, help="mnist, fashion-mnist or mnist-5k. [default: mnist]"),
    data_dir: Optional[str] = typer.Option(None, help="Folder with IDX files (raw or .gz)."),
    epochs: Optional[int] = typer.Option(None, help="[default: 20]"),
    steps_per_epoch: Optional[int] = typer.Option(None, help="[default: 1000]"),
    batch_size: Optional[int] = typer.Option(None, help="[default: 50]"),
    lr: Optional[float] = typer.Option(
        None, help="SGD rate on the study's loss (batch sum of mean-over-classes CE): "
        "equal to mean cross-entropy at lr*batch/10. [default: 0.1]"
    ),
    eval_every: Optional[int] = typer.Option(None, help="Validate every this many steps. [default: 100]"),
    seed: Optional[int] = typer.Option(None, help="[default: 0]"),
    results_dir: Path = typer.Option(Path("results"), help=RESULTS_HELP),
    name: Optional[str] = typer.Option(None, help="Run folder name. [default: derived from the options]"),
    tensorboard: bool = typer.Option(False, help="Also write TensorBoard scalars."),
    save_model: bool = typer.Option(False, help="Also write model.keras, the trained network built from stn's Keras layers."),
    jit: bool = typer.Option(True, help="Compile the training loop with XLA."),
) -> None:
    """Train one network with the study's protocol and write results/runs/<name>/."""
    flags = _flags(
        neuron=neuron, hidden=hidden, dims=dims, levels=levels, spacing=spacing, estimator=estimator,
        samples=samples, gap=gap, slope=slope, anneal=anneal, anneal_rate=anneal_rate,
        min_temperature=min_temperature, stochastic_train=stochastic_train, stochastic_eval=stochastic_eval,
        dataset=dataset, data_dir=data_dir, epochs=epochs, steps_per_epoch=steps_per_epoch,
        batch_size=batch_size, lr=lr, eval_every=eval_every, seed=seed,
    )
    config = RunConfig.from_mapping(flags, "options")
    run_name = check_name(name, "--name") if name is not None else config.default_name()

    from . import data, training

    dataset_loaded = data.load(config.dataset, config.data_dir)
    console.print(f"[dim]{config.describe()} on {dataset_loaded.name} {dataset_loaded.sizes()} from {dataset_loaded.source}")
    kept = f"the run is recorded as interrupted in {results_dir / 'runs' / run_name}"
    with _reporting_interrupts(kept), _progress() as progress:
        task = progress.add_task(run_name, total=config.total_steps, status="")

        def show(update: training.Progress) -> None:
            progress.update(task, completed=update.step, status=f"val {update.validation_accuracy[0]:.4f}")

        (run,) = training.train(
            config, dataset_loaded, results_dir, names=[run_name], jit_compile=jit,
            tensorboard=tensorboard, save_model=save_model, on_progress=show,
        )
    if run.status != "complete":
        raise StnError(f"run {run.name} {run.status} at step {run.diverged_step}; metrics so far in {run.folder}")
    console.print(
        f"[green]{run.name}[/]: validation {run.final_validation_accuracy:.4f}, test {run.test_accuracy:.4f}, "
        f"{config.total_steps} steps in {run.wall_seconds:.1f} s ({run.examples_per_second:,.0f} examples/s) "
        f"-> {run.folder}"
    )


@app.command()
def compare(
    config_file: Path = typer.Option(Path("experiments.yaml"), "--config", help="Experiments file."),
    grid_name: str = typer.Option("study", "--grid", help="Which grid of the file to run."),
    only: Optional[List[str]] = typer.Option(None, "--only", help="Run only these experiments (repeatable), and the baselines they are compared with."),
    epochs: Optional[int] = typer.Option(None, help="Override every experiment's epochs."),
    steps_per_epoch: Optional[int] = typer.Option(None, help="Override every experiment's steps per epoch."),
    dataset: Optional[str] = typer.Option(None, help="Override every experiment's data set."),
    data_dir: Optional[str] = typer.Option(None, help="Folder with IDX files for every experiment."),
    seeds: int = typer.Option(1, help="Repeat each experiment with seeds 0..N-1 (trained side by side)."),
    jobs: int = typer.Option(1, help="Experiments run in parallel processes."),
    results_dir: Path = typer.Option(Path("results"), help=RESULTS_HELP),
) -> None:
    """Run a grid of experiments (resumably) and print and write its table with statistics."""
    from . import grid as grids

    overrides = _flags(epochs=epochs, steps_per_epoch=steps_per_epoch, dataset=dataset, data_dir=data_dir)
    RunConfig.from_mapping(overrides, "options")  # rejects bad values before anything runs
    all_grids = grids.load_grids(config_file)
    if grid_name not in all_grids:
        raise ConfigError(f"{config_file} has no grid {grid_name!r}; it has: {', '.join(all_grids)}")
    chosen = all_grids[grid_name].select(only) if only else all_grids[grid_name]
    chosen = grids.resolve_datasets(chosen.with_overrides(overrides))
    todo, reused = grids.plan(chosen, results_dir, seeds)
    if reused:
        console.print(f"[dim]reusing {reused} complete run(s) with identical configs")
    failures = []
    kept = "finished runs are kept and the running ones recorded as interrupted; run the same command to resume"
    with _reporting_interrupts(kept), _progress() as progress:
        task = progress.add_task(f"grid {grid_name}", total=len(todo), status="")

        def done(job, summaries) -> None:
            bad = [s for s in summaries if s.get("status") != "complete"]
            failures.extend(bad)
            accuracies = [s["final_validation_accuracy"] for s in summaries if s.get("status") == "complete"]
            status = f"{job.experiment}: " + (f"val {sum(accuracies) / len(accuracies):.4f}" if accuracies else "failed")
            progress.update(task, advance=1, status=status)

        grids.run_jobs(todo, results_dir, jobs=jobs, on_job_done=done)
    rows = grids.table(chosen, results_dir, seeds)
    _print_table(rows, grid_name)
    csv_path, md_path = grids.write_table(rows, results_dir, grid_name)
    console.print(f"[dim]table written to {csv_path} and {md_path}")
    if failures:
        reasons = "; ".join(f"{f['name']}: {f.get('error') or f.get('status')}" for f in failures[:3])
        raise StnError(f"{len(failures)} run(s) did not complete ({reasons})")


def _print_table(rows, grid_name: str) -> None:
    from . import grid as grids

    table = Table(title=f"grid {grid_name}")
    for column in ("experiment", "neuron", "data set", "seeds", "validation mean ± sd", "95% CI", "difference [95% CI]",
                   "test", "study", "wall s"):
        table.add_column(column, justify="left" if column in ("experiment", "neuron", "data set") else "right")
    for row in rows:
        ci = row.ci95
        spread = "" if math.isnan(row.std) else f" ± {row.std:.4f}"
        table.add_row(
            row.experiment, row.description, row.dataset, str(row.seeds),
            ("" if math.isnan(row.mean) else f"{row.mean:.4f}") + spread,
            f"{ci[0]:.4f}–{ci[1]:.4f}" if ci else "",
            grids.describe_difference(row),
            "" if math.isnan(row.test_mean) else f"{row.test_mean:.4f}",
            "" if row.study is None else f"{row.study:.4f}",
            f"{row.wall_seconds:.0f}",
        )
    console.print(table)


@app.command()
def plot(
    runs: Optional[List[str]] = typer.Argument(None, help="Run names to draw (default: every figure group and run)."),
    results_dir: Path = typer.Option(Path("results"), help=RESULTS_HELP),
    out: Optional[Path] = typer.Option(None, help="Output folder. [default: <results-dir>/plots]"),
    image_format: str = typer.Option("png", "--format", help="png, svg or pdf."),
    config_file: Path = typer.Option(Path("experiments.yaml"), "--config", help="Experiments file with figure groups."),
    grid_name: Optional[str] = typer.Option(None, "--grid", help="Whose figure groups to draw. [default: every grid]"),
    ylim: Optional[float] = typer.Option(None, help="Lower limit of the accuracy axis."),
) -> None:
    """Draw learning curves and activation histograms from the results folder (no TensorFlow)."""
    from . import plot as plotting

    report = plotting.plot(
        results_dir, out or results_dir / "plots", image_format=image_format, runs=runs or None,
        config_file=config_file, grid_name=grid_name, ylim=ylim,
    )
    for path in report.written:
        console.print(f"[green]wrote[/] {path}")
    for problem in report.missing:
        errors.print(f"[yellow]skipped:[/] {problem}")
    if not report.written:
        raise StnError(f"nothing to plot in {results_dir}: " + ("; ".join(report.missing[:3]) or "no runs"))


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    errors.print(f"[yellow]warning:[/] {message}", highlight=False)


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point: run the app and turn every expected failure into one line and an exit code."""
    warnings.showwarning = _show_warning
    signal.signal(signal.SIGTERM, _terminate)
    argv = sys.argv[1:] if argv is None else argv
    try:
        result = app(args=argv or ["--help"], prog_name="stn", standalone_mode=False)
    except typer.TyperException as error:  # bad options: Typer's usage errors
        errors.print(f"[red]error:[/] {error.format_message()}", highlight=False)
        return 2
    except StnError as error:
        errors.print(f"[red]error:[/] {error}", highlight=False)
        return error.exit_code
    except KeyboardInterrupt:  # outside a command's own handling, e.g. while importing
        errors.print("[red]interrupted[/]")
        return 130
    return result if isinstance(result, int) else 0


def entry() -> None:
    """The `stn` console script: `main` with TensorFlow's C++ chatter kept off the terminal."""
    from .quiet import hide_native_stderr

    hide_native_stderr()
    sys.exit(main())
