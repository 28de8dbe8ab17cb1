"""Switch each PGSL step off in turn and show which efficacy test catches it (issue 23).

Every step of SplitShield's pipeline is one method or kernel (the mutation points
the docstring of ``shieldsplit.defenses.pgsl.halves`` lists: the methods of
``ClientSteps`` and ``ServerSteps``, ``TrainableShield.calibrate`` and the two
proximal kernels of ``shieldsplit.functional.rpca``). For each step this script patches
that one point to "off" (``unittest.mock.patch``, in this process; no file is
edited), runs the efficacy tests (``-k efficacy`` in tests/test_pgsl_steps.py and
tests/test_recovery.py) and records which of them failed. A step that no test
catches is a step no test pins.

Usage::

    python tests/pgsl_mutations.py

Prints a table ``step -> tests that caught it``. Exit status: 0 when every step is
caught, 1 when a step is caught by none, 2 when an efficacy test fails with every step
on (the table would mean nothing). ``tests/test_pgsl_mutations.py`` runs it in CI.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: import this checkout's shieldsplit
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402
import torch  # noqa: E402

import shieldsplit.functional.rpca as rpca  # noqa: E402
from shieldsplit.defenses.pgsl.fitting import TrainableShield  # noqa: E402
from shieldsplit.defenses.pgsl.halves import ClientSteps, ServerSteps  # noqa: E402
from shieldsplit.defenses.pgsl.saliency import normalised_heat  # noqa: E402
from shieldsplit.defenses.pgsl.unshuffle import pad_to_multiple  # noqa: E402

#: The efficacy tests: files, and the ``-k`` expression that selects them.
EFFICACY_FILES = ("tests/test_pgsl_steps.py", "tests/test_recovery.py")
EFFICACY_SELECT = "efficacy"


# --------------------------------------------------------------------------- the steps, off
def _blind_saliency(self: ClientSteps, x: torch.Tensor,
                    y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(a) off: the map no longer looks at the classifier (random scores)."""
    scores = torch.rand_like(x)
    return scores, normalised_heat(scores)


def _no_probe_training(self: ClientSteps, images: torch.Tensor,
                       labels: torch.Tensor) -> torch.Tensor:
    """The probe's training off: a loss with no parameter behind it."""
    return torch.zeros((), requires_grad=True)


def _no_perturbation(self: ClientSteps, x: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """(b) off: the images leave unattacked."""
    return x


_REAL_ASSEMBLE = ClientSteps.assemble


def _lossy_downsampling(self: ClientSteps, images: torch.Tensor,
                        heat: torch.Tensor | None) -> torch.Tensor:
    """(c) off: a plain strided down-sampling (one pixel of each ``f x f`` block,
    repeated) in place of the reversible unshuffle; shapes are unchanged."""
    f = self.factor
    if f == 0:
        return _REAL_ASSEMBLE(self, images, heat)
    h, w = images.shape[-2:]
    kept = pad_to_multiple(images, f, self.pad)[..., ::f, ::f]
    blocky = kept.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1)[..., :h, :w]
    return _REAL_ASSEMBLE(self, blocky, heat)


def _no_recovery(self: ServerSteps, a: torch.Tensor) -> torch.Tensor:
    """(d) off: the recovered map is the received one."""
    return a.detach()


def _no_fusion(self: ServerSteps, u: torch.Tensor, recovered: torch.Tensor) -> torch.Tensor:
    """(e) off: the fused stream takes the attacked map alone."""
    return u


def _no_decision_fusion(self: ServerSteps, probs: dict[str, torch.Tensor],
                        weights: torch.Tensor | None) -> torch.Tensor:
    """(g) off: the fused stream decides alone."""
    return probs["fused"]


def _no_calibration(self: TrainableShield, s_max: dict[str, torch.Tensor]) -> None:
    """Eqs. 10-11 off: the decision weights never move."""


Switch = Callable[[], contextlib.AbstractContextManager[Any]]


def _patch(target: Any, name: str, new: Any) -> Switch:
    """Switching a step off: ``target.name`` replaced by ``new`` for the block."""
    return lambda: mock.patch.object(target, name, new)


@contextlib.contextmanager
def _no_nuclear_prox() -> Iterator[None]:
    """(d)'s nuclear-norm proximal step off: singular values are not shrunk."""
    with mock.patch.object(rpca, "svt_gram_kernel", lambda m, tau: m), \
            mock.patch.object(rpca, "svt_svd_kernel", lambda m, tau: m):
        yield


#: Step -> a context manager that switches it off.
MUTATIONS: dict[str, Switch] = {
    "(a) saliency map": _patch(ClientSteps, "saliency", _blind_saliency),
    "(a) local probe training": _patch(ClientSteps, "probe_loss", _no_probe_training),
    "(b) pixel attack": _patch(ClientSteps, "perturb", _no_perturbation),
    "(c) reversible unshuffle": _patch(ClientSteps, "assemble", _lossy_downsampling),
    "(d) proximal recovery": _patch(ServerSteps, "recover", _no_recovery),
    "(d) nuclear-norm prox (SVT)": _no_nuclear_prox,
    "(d) L1 prox (soft threshold)": _patch(rpca, "soft_threshold_kernel", lambda x, tau: x),
    "(e) conv-sum fusion": _patch(ServerSteps, "fuse", _no_fusion),
    "(g) decision fusion (eq. 9)": _patch(ServerSteps, "decide", _no_decision_fusion),
    "(g) weight calibration (eqs. 10-11)": _patch(TrainableShield, "calibrate", _no_calibration),
}


# --------------------------------------------------------------------------- running
class _Outcomes:
    """A pytest plugin that records each selected test's outcome."""

    def __init__(self) -> None:
        self.failed: set[str] = set()
        self.ran: set[str] = set()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        name = report.nodeid.split("::", 1)[-1]
        if report.when == "call":
            self.ran.add(name)
        if report.failed:  # a failing fixture fails its test too
            self.failed.add(name)
            self.ran.add(name)


def run_efficacy() -> _Outcomes:
    """Run the efficacy tests once, in this process.

    Returns:
        The names of the tests that ran and of those that failed.
    """
    outcomes = _Outcomes()
    args = [*(str(ROOT / f) for f in EFFICACY_FILES), "-k", EFFICACY_SELECT, "-q",
            "--no-header", "-p", "no:cacheprovider", "-p", "no:xdist", "-o", "addopts=",
            "-W", "ignore::DeprecationWarning", f"--rootdir={ROOT}", "--tb=no", "-rN"]
    with contextlib.redirect_stdout(io.StringIO()):  # the table is the report
        pytest.main(args, plugins=[outcomes])
    return outcomes


def main() -> int:
    """Run the baseline and every mutation; print the table.

    Returns:
        The exit status (see the module docstring).
    """
    torch.set_num_threads(1)
    baseline = run_efficacy()
    if not baseline.ran or baseline.failed:
        print(f"efficacy tests fail with every step on: {sorted(baseline.failed)}"
              if baseline.ran else "no efficacy test ran")
        return 2
    caught: dict[str, list[str]] = {}
    for step, switched_off in MUTATIONS.items():
        with switched_off():
            caught[step] = sorted(run_efficacy().failed)
        print(f"{step} off: {len(caught[step])} of {len(baseline.ran)} fail", flush=True)
    width = max(len(step) for step in caught)
    print(f"\n{len(baseline.ran)} efficacy tests, all passing with every step on.\n")
    print(f"| {'step switched off'.ljust(width)} | caught by |")
    print(f"| {'-' * width} | --- |")
    for step, tests in caught.items():
        print(f"| {step.ljust(width)} | {', '.join(tests) if tests else 'NONE'} |")
    missed = [step for step, tests in caught.items() if not tests]
    if missed:
        print(f"\nno efficacy test catches: {', '.join(missed)}")
        return 1
    print("\nevery step is caught by at least one efficacy test")
    return 0


if __name__ == "__main__":
    sys.exit(main())
