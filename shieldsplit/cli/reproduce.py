"""``shieldsplit reproduce``: re-measure a paper's tables on real data, the paper's number
beside ours in every cell (resumable: every finished cell is saved at once).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shieldsplit._core.io import check_output_path
from shieldsplit.cli.choices import PAPERS, REPRO_BUDGETS
from shieldsplit.cli.common import check_choice, check_data, data_names, fail, say
from shieldsplit.errors import ShieldSplitError

#: Where ``shieldsplit reproduce`` writes by default: a folder in the current directory,
#: never the checkout's committed ``docs/results``.
REPRODUCE_OUT = Path("shieldsplit-results")


def reproduce(
    paper: Annotated[str, typer.Argument(help="pgsl | latent")],
    data: Annotated[str, typer.Option(help="breastmnist | pneumoniamnist | mnist")]
    = "breastmnist",
    data_root: Annotated[Path | None, typer.Option(help="folder holding the data files")] = None,
    budget: Annotated[str, typer.Option(help="quick (minutes) | full (committed results)")]
    = "quick",
    out: Annotated[Path, typer.Option(help="folder for the page, plots and cells")]
    = REPRODUCE_OUT,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1)] = 0,
    fresh: Annotated[bool, typer.Option(help="discard finished cells instead of resuming")]
    = False,
    quiet: Annotated[bool, typer.Option(help="no progress bars or progress lines")] = False,
    render: Annotated[bool, typer.Option(
        help="compute nothing: write the page again from the finished cells in --out "
             "(fails if a cell is missing)")] = False,
) -> None:
    """Re-measure a paper's tables on real data; the paper's number beside ours in every cell.

    Every finished cell is saved at once: Ctrl-C or a crash keeps it, a re-run resumes.
    With --render nothing is computed: the page is re-worded from the finished cells.
    """
    try:
        # every option, before torch is imported
        check_choice("reproduce", paper, PAPERS.names())  # the fix: `reproduce pgsl`
        check_choice("--budget", budget, REPRO_BUDGETS.names())
        check_choice("--data", data, [d for d in data_names() if d != "digits"])
        check_data(data, data_root)
        check_output_path(out / f"reproduce_{paper}_{data}_{budget}.md")
        from shieldsplit.data import default_data_root
        from shieldsplit.experiments.reproduce import reproduce as run_reproduce

        result = run_reproduce(
            paper, data=data, data_root=data_root or default_data_root(),  # type: ignore[arg-type]
            budget=budget, out=out, seed=seed, fresh=fresh, progress=not quiet,  # type: ignore[arg-type]
            render=render,
        )
    except ShieldSplitError as exc:
        fail(exc)
    except KeyboardInterrupt as exc:
        typer.echo(f"interrupted: finished cells are kept in {out}; run the same command "
                   "again to resume", err=True)
        raise typer.Exit(code=130) from exc
    say(result.markdown)
    say(f"Written: {result.page} ({result.computed} cells computed, {result.reused} read "
        f"back, {result.seconds / 60:.1f} min); plots: "
        + ", ".join(str(p) for p in result.plots))


__all__ = ["REPRODUCE_OUT", "reproduce"]
