"""The machinery of ``shieldsplit reproduce``: presets, the run context, the experiment
registry and :func:`reproduce`; the papers' experiments live in :mod:`.pgsl` and
:mod:`.latent` and register themselves when :mod:`shieldsplit.experiments.reproduce` is imported.
"""

from __future__ import annotations

import io
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import matplotlib
import torch
from pydantic import BaseModel, ConfigDict, Field

from shieldsplit._core.io import atomic_write_bytes, atomic_write_text
from shieldsplit._core.provenance import machine_info
from shieldsplit._core.registry import Registry
from shieldsplit._core.version import __version__
from shieldsplit.audit.auditor import AuditReport
from shieldsplit.data import ImageDataset, load_dataset
from shieldsplit.defenses.pgsl.config import PGSLConfig
from shieldsplit.errors import ConfigError
from shieldsplit.experiments.reproduce.cells import CellStore
from shieldsplit.models import PGSLNet
from shieldsplit.settings import DataSettings

matplotlib.use("Agg")
logger = logging.getLogger(__name__)

PaperData = Literal["breastmnist", "pneumoniamnist", "mnist"]
ReproBudget = Literal["quick", "full"]


class Preset(BaseModel):
    """How much compute a budget spends (fixed in advance, never tuned on test data).

    Attributes:
        limit: cap on each split's size (None: the whole split).
        epochs: training epochs of every model.
        width: conv channels of the PGSL paper's network (the paper: 64).
        hidden: its first FC layer's width (the paper: 128).
        audit: the auditor's budget.
        victims: victim images of the split-learning attacks.
        seeds: seeds of the headline cells (mean and spread are reported).
        rebuild: images rebuilt per split for Table II's reconstruction rows.
        sweep: ``full`` sweeps every setting, ``short`` a few.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: int | None = Field(ge=16)
    epochs: int = Field(ge=1)
    width: int = Field(ge=1)
    hidden: int = Field(ge=1)
    audit: Literal["quick", "standard", "thorough"]
    victims: int = Field(ge=1)
    seeds: int = Field(ge=1)
    rebuild: int = Field(ge=1)
    sweep: Literal["short", "full"]


#: ``quick`` (two seeds, short sweeps) finishes in under 15 minutes on 2 cores; ``full``
#: makes the committed results (about half an hour per paper, three headline seeds). Both
#: use the auditor's ``quick`` attack budget: its ``standard`` budget runs Inverting
#: Gradients for thousands of iterations per cell, days for the dozens of cells on a CPU.
PRESETS: dict[str, Preset] = {
    "quick": Preset(limit=160, epochs=3, width=8, hidden=32, audit="quick", victims=16,
                    seeds=2, rebuild=16, sweep="short"),
    "full": Preset(limit=600, epochs=10, width=16, hidden=64, audit="quick", victims=64,
                   seeds=3, rebuild=48, sweep="full"),
}


class ReproduceOptions(DataSettings):
    """Options of :func:`reproduce` (and of ``shieldsplit reproduce``), built from the
    run-settings family (:mod:`shieldsplit.settings`).

    Attributes:
        paper: a registered paper: ``pgsl`` (Khowaja et al. 2022) or ``latent``
            (Jiang et al. 2025).
        data: the real data set (BreastMNIST stands in for MIAS and BloodMNIST).
        data_root: the folder with the verified data files.
        budget: ``quick`` or ``full``.
        out: where the page, plots and cells go.
        seed: the first seed (headline cells use ``seed, seed + 1, ...``).
        fresh: discard finished cells of an earlier run instead of resuming.
        progress: show progress bars.
        render: compute nothing: write the page again from the finished cells in ``out``
            (a missing cell is an error, never computed).
    """

    model_config = ConfigDict(extra="forbid")

    paper: str
    data: PaperData = "breastmnist"
    budget: ReproBudget = "quick"
    out: Path = Path("docs/results")
    fresh: bool = False
    render: bool = False


@dataclass
class RunContext:
    """What an experiment needs: the options, the data, the cell store and the page."""

    options: ReproduceOptions
    preset: Preset
    data: ImageDataset
    store: CellStore
    stem: str
    plots: list[Path] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        """The headline seeds."""
        return [self.options.seed + i for i in range(self.preset.seeds)]

    def network(self, seed: int) -> PGSLNet:
        """The PGSL paper's network at the preset's width, initialised from ``seed``."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return PGSLNet(in_channels=self.data.in_channels, num_classes=self.data.num_classes,
                           image_size=self.data.image_size[0], width=self.preset.width,
                           hidden=self.preset.hidden)

    def save_plot(self, name: str, fig: Any) -> Path:
        """Write a matplotlib figure as ``<stem>_<name>.png`` atomically and close it."""
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        path = self.options.out / f"{self.stem}_{name}.png"
        atomic_write_bytes(path, buf.getvalue())
        self.plots.append(path)
        return path


def mean_sd(values: Sequence[float], fmt: str) -> str:
    """``mean ± sd`` of ``values`` formatted with ``fmt`` (one value alone; ``-`` if none).

    Example:
        >>> mean_sd([0.5, 0.7], ".2f"), mean_sd([0.5], ".1%"), mean_sd([], ".2f")
        ('0.60 ± 0.14', '50.0%', '-')
    """
    if not values:
        return "-"
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.mean(values), fmt)} ± {format(statistics.stdev(values), fmt)}"


def differences_section(reasons: Sequence[str]) -> list[str]:
    """The page's closing section: why our numbers differ from the paper's, one bullet each."""
    return ["## Where and why our numbers differ from the paper's", "",
            *(f"- {r}" for r in reasons), ""]


def fmt(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec``, or ``-`` when it is missing."""
    return "-" if value is None else format(value, spec)


Experiment = Callable[[RunContext], list[str]]
_EXPERIMENTS: Registry[Experiment] = Registry(
    "paper", unregister_hint="unregister_experiment() the old one",
    lookup_hint="pick a registered paper or register yours with register_experiment",
)


def register_experiment(paper: str, run: Experiment) -> None:
    """Make ``reproduce(paper)`` run ``run(context) -> Markdown lines``.

    Raises:
        ConfigError: if the name is empty or taken by another function.
    """
    _EXPERIMENTS.register(paper, run)


def unregister_experiment(paper: str) -> None:
    """Forget ``paper`` (a no-op for an unknown name)."""
    _EXPERIMENTS.unregister(paper)


def available_papers() -> list[str]:
    """The papers :func:`reproduce` knows."""
    return _EXPERIMENTS.names()


class ReproduceResult(BaseModel):
    """What a reproduction wrote.

    Attributes:
        page: the Markdown page.
        cells: the JSON file of finished cells.
        plots: the PNG plots.
        computed: cells computed in this run.
        reused: cells read back from an earlier run.
        seconds: wall time of this run.
        markdown: the page's text.
    """

    model_config = ConfigDict(extra="forbid")

    page: Path
    cells: Path
    plots: list[Path]
    computed: int
    reused: int
    seconds: float
    markdown: str


def reproduce(
    paper: str,
    *,
    data: PaperData = "breastmnist",
    data_root: str | Path | None = None,
    budget: ReproBudget = "quick",
    out: str | Path = "docs/results",
    seed: int = 0,
    fresh: bool = False,
    progress: bool = True,
    render: bool = False,
) -> ReproduceResult:
    """Re-measure one paper's tables and figures on real data.

    Args:
        paper: ``"pgsl"`` or ``"latent"``.
        data: ``breastmnist``, ``pneumoniamnist`` or ``mnist`` (the MNIST test set, split).
        data_root: the folder with the verified files (``../shared/data``).
        budget: ``quick`` (minutes) or ``full`` (the committed results).
        out: output folder.
        seed: the first seed.
        fresh: discard finished cells instead of resuming.
        progress: show progress bars.
        render: compute nothing: re-word the page (and plots) from the finished cells
            alone, re-deciding their verdicts under the current rule; the cells may have
            been made by older code (the page says which versions changed).

    Returns:
        Where everything was written, and the page's text.

    Raises:
        ConfigError: for an unknown paper, data set or budget, a cell file of other
            settings in ``out``, or (``render``) a missing cell file or cell.
        DataFileError: for a missing or corrupted data file (named, with its MD5 and the fix).
        KeyboardInterrupt: on Ctrl-C, after every finished cell has been saved.
    """
    experiment = _EXPERIMENTS.get(paper)
    try:
        opts = ReproduceOptions(paper=paper, data=data, data_root=data_root, budget=budget,
                                out=Path(out), seed=seed, fresh=fresh, progress=progress,
                                render=render)
    except ValueError as exc:
        raise ConfigError.build(what="reproduce options",
                                expected="data breastmnist|pneumoniamnist|mnist, budget quick|full",
                                received=f"data={data!r}, budget={budget!r}",
                                fix=f"check the options ({exc})") from exc
    preset = PRESETS[opts.budget]
    start = time.perf_counter()
    ds = load_dataset(opts.data, root=opts.data_root, seed=opts.seed, limit=preset.limit)
    stem = f"reproduce_{opts.paper}_{opts.data}_{opts.budget}"
    opts.out.mkdir(parents=True, exist_ok=True)
    store = CellStore(opts.out / f"{stem}.cells.json", fresh=opts.fresh,
                      read_only=opts.render, versions=VERSION_KEYS, fingerprint={
        "paper": opts.paper, "data": opts.data, "budget": opts.budget, "seed": opts.seed,
        "preset": preset.model_dump(), "shieldsplit": __version__,
        # the defaults every SplitShield cell runs with: a changed default must not resume
        "pgsl_config": PGSLConfig().model_dump(mode="json"),
        # cells audited before verdicts and controls (schema 1) must not resume either
        "audit_schema": AuditReport.model_fields["schema_version"].default})
    ctx = RunContext(options=opts, preset=preset, data=ds, store=store, stem=stem)
    before = len(store)
    try:
        body = experiment(ctx)
    except KeyboardInterrupt:
        logger.warning("interrupted: %d finished cells kept in %s; re-run to resume",
                       len(store), store.path)
        raise
    finally:  # an interrupted run's time counts too: its cells are kept
        seconds = time.perf_counter() - start
        store.record_run(finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         seconds=seconds, computed=len(store) - before,
                         machine=machine_info(), load_average=_load())
    head = header(ctx, seconds)
    text = "\n".join(head + body) + "\n"
    page = opts.out / f"{stem}.md"
    atomic_write_text(page, text)
    return ReproduceResult(page=page, cells=store.path, plots=ctx.plots,
                           computed=len(store) - before, reused=store.reused, seconds=seconds,
                           markdown=text)


#: The fingerprint's keys that name code versions: ``--render`` reads cells made under
#: other versions (their verdicts are decided again under the current rule) and says so.
VERSION_KEYS = ("shieldsplit", "pgsl_config", "audit_schema")
#: What a page says of a run that did not record its load (as ``benchmarks/pages.py``).
NO_LOAD = "not recorded for this run (measured before load was logged)"


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:  # not every platform has it
        return None


def _utc(iso: str) -> str:
    try:
        return f"{datetime.fromisoformat(iso):%Y-%m-%d %H:%M} UTC"
    except ValueError:
        return iso


def runs_sentence(runs: Sequence[dict[str, Any]], cells: int) -> str:
    """What the cells file records of the runs that computed its cells, in words (never
    more than it records).

    Args:
        runs: the file's run records (``finished``, ``seconds``, ``computed``).
        cells: the cells it holds.

    Returns:
        One sentence.

    Example:
        >>> runs_sentence([{"finished": "2026-12-02T01:07:29+00:00", "seconds": 3187.3,
        ...                 "computed": 18}], 22)  # doctest: +NORMALIZE_WHITESPACE
        'The cells file records 1 run that computed cells (finished 2026-12-02 01:07 UTC):
        it computed 18 of the 22 cells in 53.1 min of wall time; the other 4 were computed
        by an earlier run the file does not record; the load during that time was not
        recorded, so the wall time may include other work on the cores.'
        >>> runs_sentence([], 3)
        'The cells file records no run that computed its 3 cells.'
    """
    if not runs:
        return f"The cells file records no run that computed its {cells} cells."
    done = sum(int(r.get("computed", 0)) for r in runs)
    minutes = sum(float(r.get("seconds", 0.0)) for r in runs) / 60
    when = ", ".join(_utc(str(r.get("finished", "?"))) for r in runs)
    text = (f"The cells file records {len(runs)} run{'s' if len(runs) > 1 else ''} that "
            f"computed cells (finished {when}): {'they' if len(runs) > 1 else 'it'} computed "
            f"{done} of the {cells} cells in {minutes:.1f} min of wall time")
    if done < cells:
        text += (f"; the other {cells - done} were computed by an earlier run the file does "
                 "not record")
    if any(r.get("load_average") is None for r in runs):
        text += ("; the load during that time was not recorded, so the wall time may include "
                 "other work on the cores")
    return text + "."


def header(ctx: RunContext, seconds: float) -> list[str]:
    """The page's provenance: command, date, machine, load, seed, data, budget, cells
    (the fields of ``tests/test_results_pages.py``), worded from the cells file's run
    records and, for ``--render``, saying that nothing was computed."""
    o, p, store = ctx.options, ctx.preset, ctx.store
    root = f" --data-root {o.data_root}" if o.data_root is not None else ""
    cmd = (f"shieldsplit reproduce {o.paper} --data {o.data}{root} "
           f"--budget {o.budget} --seed {o.seed} --out {o.out}"
           + (" --render" if o.render else ""))
    now = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
    last = store.runs[-1] if store.runs else {}
    here = machine_info()
    if o.render:
        date = (f"Date: page rendered {now} from the finished cells alone (`--render`: "
                f"nothing computed, {store.reused} cells read). ")
        computed_on = last.get("machine")
        machine = (f"Machine: rendered on {here.get('cpus', os.cpu_count())} cores, no GPU "
                   f"in use, torch {here.get('torch')}, Python {sys.version.split()[0]}, "
                   f"shieldsplit {__version__}; "
                   + (f"the cells were computed on {computed_on.get('cpus', '?')} cores, "
                      f"torch {computed_on.get('torch', '?')}." if computed_on else
                      "the cells file does not record the machine that computed them."))
    else:
        date = (f"Date: {now}; this run took {seconds / 60:.1f} min ({store.reused} cells "
                "read back). ")
        machine = (f"Machine: {here.get('cpus', os.cpu_count())} cores, no GPU, torch "
                   f"{here.get('torch')}, Python {sys.version.split()[0]}, shieldsplit "
                   f"{__version__}.")
    load = last.get("load_average")
    own = float((last.get("machine") or {}).get("torch_threads") or 1)
    from shieldsplit._core.provenance import load_note

    load_line = ("Load: " + (NO_LOAD if load is None else
                             load_note(float(load), own=own) + " (the last computing run)")
                 + ".  ")
    versions = "; ".join(f"{k} {a} (now {b})" if not isinstance(a, dict) else
                         f"{k} (other defaults now)" for k, (a, b) in
                         store.version_changes.items())
    title = {"pgsl": "PGSL (Khowaja et al., IEEE TNSE 2022)",
             "latent": "Learnable latent perturbation (Jiang et al., arXiv:2503.16542, 2025)"}
    lines = [
        f"# Reproduction: {title.get(o.paper, o.paper)} on {o.data}",
        "",
        f"Command: `{cmd}`  ",
        date + runs_sentence(store.runs, len(store)) + "  ",
        machine + "  ",
        load_line,
        f"Seed: {o.seed}; seeds {ctx.seeds} for the headline cells (mean ± sd shown; "
        f"orderings decided on 95% t-intervals across seeds), seed {o.seed} elsewhere.  ",
        f"Data: {ctx.data.summary().splitlines()[0]} (official files, MD5-checked; "
        f"each split capped at {p.limit} images).  ",
        f"Budget `{o.budget}`: {p.epochs} epochs, PGSLNet width {p.width} / hidden {p.hidden} "
        f"(the paper: 64 / 128), audit budget `{p.audit}`, {p.victims} split-attack victims.  ",
        f"Cells: `{store.path.name}` (finished cells; a re-run resumes from it, "
        "`--render` re-words the page from it).  ",
    ]
    if versions:
        lines.append(f"Code: the cells were made under {versions}; every verdict below is "
                     "decided again from their stored evidence under the current rule.  ")
    if o.render and last.get("finished"):
        lines.append(age_line(str(last["finished"]), datetime.now(timezone.utc),
                              quick=o.budget == "quick"))
    return [*lines, ""]


def age_line(finished: str, now: datetime, *, quick: bool = False) -> str:
    """How old a rendered page's cells are: their wall time is that run's, under that
    day's code, not a timing of the code that renders them.

    Example:
        >>> line = age_line("2026-12-01T13:43:30+00:00",
        ...                 datetime(2026, 12, 6, 17, 3, tzinfo=timezone.utc))
        >>> "finished 2026-12-01 13:43 UTC, 5 day(s) before this rendering" in line
        True
    """
    try:
        days = f"{(now - datetime.fromisoformat(finished)).days} day(s)"
    except ValueError:
        days = "an unknown time"
    return (f"Age: the last computing run finished {_utc(finished)}, {days} before this "
            "rendering: its wall time above is that run's, under the code of that day, not a "
            "timing of the code that rendered this page"
            + ("; `reproduce_quick_timing.md` times fresh `--budget quick` runs with their "
               "load recorded" if quick else "") + ".  ")


__all__ = [
    "NO_LOAD",
    "PRESETS",
    "VERSION_KEYS",
    "CellStore",
    "Preset",
    "ReproBudget",
    "ReproduceOptions",
    "ReproduceResult",
    "RunContext",
    "age_line",
    "available_papers",
    "differences_section",
    "fmt",
    "mean_sd",
    "register_experiment",
    "reproduce",
    "runs_sentence",
    "unregister_experiment",
]
