"""The federated run's record: typed results per round, per client and per attack, and its HTML.

:class:`FederatedResult` is what :func:`~shieldsplit.adapters.flower.simulate` returns and a
deployed ``ServerApp`` writes (JSON, atomically); :func:`render_html` is its
self-contained page (inline SVG plots, no plotting library).

Example:
    >>> r = FederatedResult(defense="none", clients=1, rounds=1, partition="iid",
    ...                     partition_sizes=[8], local_epochs=1, batch_size=4, seed=0,
    ...                     history=[RoundRecord(round=1, accuracy=0.75, macro_f1=0.7,
    ...                                          loss=0.5)])
    >>> print(r.table())
    round  accuracy  majority  balanced  macro F1     loss  lost / rejected
        1    0.7500         -         -    0.7000   0.5000  -
    >>> "<svg" in render_html(r)
    True
"""

from __future__ import annotations

import html
import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from shieldsplit._core.io import atomic_write_text


class ClientRound(BaseModel):
    """What one client reported after its local training in one round.

    Attributes:
        round: the server round (1-based).
        client: the client's partition id.
        examples: its training examples.
        train_loss: its mean training loss in the last local epoch.
        epsilon: DP-SGD only: the client's cumulative epsilon after this round (all its
            rounds, those before a restart of its SuperNode included).
        delta: the delta of that epsilon.
        accountant_rounds: DP-SGD only: how many rounds the client's accountant covers
            (its privacy ledger's count); fewer than the rounds the server saw it train
            means its accountant started again.
    """

    model_config = ConfigDict(extra="forbid")

    round: int
    client: int
    examples: int
    train_loss: float
    epsilon: float | None = None
    delta: float | None = None
    accountant_rounds: int | None = None


class RoundRecord(BaseModel):
    """One server round: federated evaluation of the new global model.

    Attributes:
        round: the round (1-based).
        accuracy: accuracy on the clients' held-out shards (summed counts).
        macro_f1: macro F1 of the summed confusion matrix.
        balanced_accuracy: its balanced accuracy (mean recall over the true classes).
        majority_rate: the accuracy of always predicting the commonest true class of the
            held-out examples (the baseline a model stuck at one class scores).
        predicted_classes: how many classes the model predicted at all (1: stuck at one
            class).
        loss: cross-entropy, weighted by each client's examples.
        examples: held-out examples evaluated.
        clients: partition ids that trained this round.
        lost: clients whose training reply was an error (named by partition id when
            known, else ``node <id>``); FedAvg averaged the others.
        errors: the error replies behind ``lost`` (``<name>: <reason>``): a client that
            crashed, or the SuperLink's own reply for a SuperNode that stopped sending
            heartbeats (Flower 1.42: "Node Unavailable", about 70 s after a SIGKILL).
        rejected: replies refused by :func:`check_reply` (malformed or oversized), with
            the typed error's message; the round went on without them.
        refused: clients that refused to train because the round would take them past
            their epsilon budget (``client <id>: <reason>``); they sent no update.
        seconds: wall time of the round.
    """

    model_config = ConfigDict(extra="forbid")

    round: int
    accuracy: float | None = None
    macro_f1: float | None = None
    balanced_accuracy: float | None = None
    majority_rate: float | None = None
    predicted_classes: int | None = None
    loss: float | None = None
    examples: int = 0
    clients: list[int] = Field(default_factory=list)
    lost: list[str] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)
    rejected: list[str] = Field(default_factory=list)
    refused: list[str] = Field(default_factory=list)
    seconds: float = 0.0


class LeakageRow(BaseModel):
    """One attack of the live audit on one client's real update of one round.

    Attributes:
        round: the round.
        client: the client's partition id.
        attack: ``inverting-gradients-fedavg`` or ``label-inference``.
        images: images the update averages (the client's training images).
        victims: the images the reconstruction attack rebuilt and was scored on: all
            ``images``, or a seeded subsample when the client held more than the audit's
            ``max_images`` (None for label inference, which reads every label).
        psnr: mean PSNR of the order-matched reconstructions (dB).
        baseline_psnr: mean PSNR of the best no-attack guess.
        label_recovery: labels inferred correctly (label inference).
        control_psnr: the same attack on an undefended client's update.
        control_label_recovery: its label recovery.
        verdict: ``leaks``, ``no leakage found`` or ``inconclusive`` (the audit's rule).
        reason: why.
        status: ``ok``, ``failed`` or ``n/a`` (skipped, see reason).
        seconds: wall time.
    """

    model_config = ConfigDict(extra="forbid")

    round: int
    client: int
    attack: str
    images: int
    victims: int | None = None
    psnr: float | None = None
    baseline_psnr: float | None = None
    label_recovery: float | None = None
    control_psnr: float | None = None
    control_label_recovery: float | None = None
    verdict: str
    reason: str
    status: str = "ok"
    seconds: float = 0.0


class FederatedResult(BaseModel):
    """What :func:`simulate` returns (and ``shieldsplit federate`` writes).

    Attributes:
        defense: the defence trained.
        clients: the number of clients.
        rounds: the rounds asked for.
        partition: the partition spec.
        partition_sizes: training examples per client (partition id order).
        local_epochs: local epochs per round.
        batch_size: the local batch size.
        seed: the run's seed.
        engine: what ran the rounds.
        flwr_version: Flower's version.
        history: one record per finished round.
        client_rounds: every client's report of every round.
        leakage: the live audit's rows (empty without ``audit``).
        audit_budget: the audit's budget, or None.
        delta: DP-SGD's delta (None for other defences).
        epsilon_budget: the clients' declared epsilon budget (None: none).
        min_clients: the fewest clients a round must aggregate (0: all ``clients``).
        complete: True only when every requested round finished with at least
            ``min_clients`` clients (:meth:`finish`); False after Ctrl-C or an error, and
            while the run is going on.
        error: what stopped it, if anything.
        notes: what the numbers mean and what was not deterministic.
        validation_accuracy: accuracy of the final global model on the ``validation``
            data passed to :func:`simulate` (None without it): what a setting is chosen
            on, never the held-out shards.
        validation_macro_f1: its macro F1.
        validation_balanced_accuracy: its balanced accuracy (mean recall).
        validation_majority: the accuracy of always predicting the validation data's
            commonest class (what a model stuck at one class scores).
        validation_examples: the validation examples.
    """

    model_config = ConfigDict(extra="forbid")

    defense: str
    clients: int
    rounds: int
    partition: str
    partition_sizes: list[int]
    local_epochs: int
    batch_size: int
    seed: int
    engine: str = "flower simulation engine (ray backend)"
    flwr_version: str = ""
    history: list[RoundRecord] = Field(default_factory=list)
    client_rounds: list[ClientRound] = Field(default_factory=list)
    leakage: list[LeakageRow] = Field(default_factory=list)
    audit_budget: str | None = None
    delta: float | None = None
    epsilon_budget: float | None = None
    min_clients: int = 0
    complete: bool = True
    error: str | None = None
    notes: list[str] = Field(default_factory=list)
    validation_accuracy: float | None = None
    validation_macro_f1: float | None = None
    validation_balanced_accuracy: float | None = None
    validation_majority: float | None = None
    validation_examples: int = 0

    def epsilons(self) -> dict[int, list[float]]:
        """Each client's epsilon after each of its rounds (DP-SGD), by partition id."""
        out: dict[int, list[float]] = {}
        for r in sorted(self.client_rounds, key=lambda c: (c.client, c.round)):
            if r.epsilon is not None:
                out.setdefault(r.client, []).append(r.epsilon)
        return out

    def accounting_gaps(self) -> list[str]:
        """Where a client's privacy accounting is discontinuous.

        DP-SGD's epsilon covers every round a client trained, so it grows with each one.
        Flagged: an epsilon that does not grow from one of a client's rounds to the next,
        and an accountant that covers fewer rounds than the server saw the client train
        (its ``accountant_rounds``): either means the client's accountant started again
        (e.g. a SuperNode restarted without its privacy ledger) and the epsilon it reports
        from then on under-states what it spent.

        Returns:
            One sentence per discontinuity (empty: every curve grows).

        Example:
            >>> r = FederatedResult(defense="dpsgd", clients=1, rounds=3, partition="iid",
            ...                     partition_sizes=[10], local_epochs=1, batch_size=4,
            ...                     seed=0, delta=1e-5, client_rounds=[
            ...                         ClientRound(round=1, client=1, examples=10,
            ...                                     train_loss=0.1, epsilon=5.2),
            ...                         ClientRound(round=3, client=1, examples=10,
            ...                                     train_loss=0.1, epsilon=5.2)])
            >>> print(r.accounting_gaps()[0])  # doctest: +ELLIPSIS
            client 1: epsilon 5.2 after round 3 is not above 5.2 after round 1: ...
        """
        out = []
        for client in sorted({r.client for r in self.client_rounds}):
            mine = sorted((r for r in self.client_rounds
                           if r.client == client and r.epsilon is not None),
                          key=lambda r: r.round)
            total = max((r.epsilon or 0.0 for r in mine), default=0.0)
            for before, after in itertools.pairwise(mine):
                if after.epsilon is not None and before.epsilon is not None \
                        and after.epsilon <= before.epsilon:
                    out.append(
                        f"client {client}: epsilon {after.epsilon:.3g} after round "
                        f"{after.round} is not above {before.epsilon:.3g} after round "
                        f"{before.round}: its privacy accountant started again, so the "
                        "epsilon it reports from then on under-states what it spent (at "
                        f"least {total:.3g} in all)")
            for seen, r in enumerate(mine, start=1):
                if r.accountant_rounds is not None and r.accountant_rounds < seen:
                    out.append(
                        f"client {client}: after round {r.round} its accountant covers "
                        f"{r.accountant_rounds} round(s) but the server saw it train {seen}: "
                        "its accountant restarted, so its epsilon under-states what it "
                        f"spent (at least {total:.3g} in all)")
        return out

    def learning_warnings(self) -> list[str]:
        """Whether the global model learnt, in words: the last evaluated round's model is
        flagged when it predicts a single class, or when its accuracy is no better than
        always predicting the majority class (then its accuracy says nothing about the
        defence).

        Example:
            >>> r = FederatedResult(defense="none", clients=1, rounds=1, partition="iid",
            ...                     partition_sizes=[8], local_epochs=1, batch_size=4, seed=0,
            ...                     history=[RoundRecord(round=1, accuracy=0.667,
            ...                              majority_rate=0.667, predicted_classes=1)])
            >>> print(r.learning_warnings()[0])  # doctest: +ELLIPSIS
            NOT LEARNING: after round 1 the global model predicts a single class ...
        """
        done = [h for h in self.history if h.accuracy is not None]
        if not done:
            return []
        last, out = done[-1], []
        if last.predicted_classes == 1:
            out.append(f"NOT LEARNING: after round {last.round} the global model predicts a "
                       "single class for every held-out example (stuck at one class): its "
                       "accuracy is the majority rate and says nothing about the defence; "
                       "train more rounds or local epochs")
        elif last.majority_rate is not None and last.accuracy is not None \
                and last.accuracy <= last.majority_rate + 1e-9:
            out.append(f"NOT LEARNING: after round {last.round} the global model's accuracy "
                       f"{last.accuracy:.3f} is no better than always predicting the majority "
                       f"class ({last.majority_rate:.3f}); read its balanced accuracy "
                       f"({_fmt(last.balanced_accuracy, '.3f')}) and macro F1 instead")
        return out

    def shortfall(self) -> str | None:
        """Why the run is not complete: a missing round or one with too few clients.

        Example:
            >>> r = FederatedResult(defense="none", clients=2, rounds=2, partition="iid",
            ...                     partition_sizes=[4, 4], local_epochs=1, batch_size=2,
            ...                     seed=0, history=[RoundRecord(round=1, accuracy=0.5,
            ...                                                  clients=[0, 1])])
            >>> r.shortfall()
            '1 of 2 rounds finished'
        """
        least = self.min_clients or self.clients
        for h in self.history:
            if len(h.clients) < least:
                gone = ", ".join([*h.lost, *(x.split(":")[0] for x in [*h.rejected, *h.refused])])
                return (f"round {h.round} aggregated {len(h.clients)} of the {least} clients "
                        f"required" + (f" ({gone})" if gone else ""))
        done = sum(h.accuracy is not None for h in self.history)
        return None if done >= self.rounds else f"{done} of {self.rounds} rounds finished"

    def finish(self, error: str | None = None) -> FederatedResult:
        """Set ``complete`` and ``error``: complete only with no error and no :meth:`shortfall`.

        Args:
            error: what stopped the run (Ctrl-C, an exception), if anything.

        Returns:
            The result itself.
        """
        self.error = error or self.error or self.shortfall()
        self.complete = self.error is None
        return self

    def table(self) -> str:
        """A plain-text table: one line per round, then the audit's verdicts."""
        lines = [f"{'round':>5} {'accuracy':>9} {'majority':>9} {'balanced':>9} "
                 f"{'macro F1':>9} {'loss':>8}  lost / rejected"]
        for h in self.history:
            refused = [r.split(":")[0] + " (rejected)" for r in h.rejected] \
                + [r.split(":")[0] + " (epsilon budget)" for r in h.refused]
            lines.append(f"{h.round:>5} {_fmt(h.accuracy, '.4f'):>9} "
                         f"{_fmt(h.majority_rate, '.4f'):>9} "
                         f"{_fmt(h.balanced_accuracy, '.4f'):>9} "
                         f"{_fmt(h.macro_f1, '.4f'):>9} {_fmt(h.loss, '.4f'):>8}  "
                         f"{', '.join([*h.lost, *refused]) or '-'}")
        lines += self.learning_warnings()
        lines += [f"round {h.round}: error reply of {r}" for h in self.history for r in h.errors]
        lines += [f"round {h.round}: rejected {r}" for h in self.history for r in h.rejected]
        lines += [f"round {h.round}: refused {r}" for h in self.history for r in h.refused]
        budget = "" if self.epsilon_budget is None else f", budget {self.epsilon_budget:g}"
        for client, eps in self.epsilons().items():
            lines.append(f"client {client}: cumulative epsilon per round "
                         f"{', '.join(f'{e:.3g}' for e in eps)} (delta {self.delta:g}{budget})")
        lines += [f"PRIVACY ACCOUNTING: {gap}" for gap in self.accounting_gaps()]
        for row in self.leakage:
            lines.append(f"round {row.round} client {row.client} {row.attack}: {row.verdict} "
                         f"({row.reason})")
        if not self.complete:
            lines.append(f"stopped early: {self.error}")
        return "\n".join(lines)

    def save_json(self, path: str | Path) -> None:
        """Write the result as JSON, atomically."""
        atomic_write_text(path, self.model_dump_json(indent=2))

    def save_html(self, path: str | Path) -> None:
        """Write :func:`render_html` atomically."""
        atomic_write_text(path, render_html(self))


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _lost_text(h: RoundRecord) -> str:
    """The round's lost clients, each with its error reply's reason where one came."""
    explained = {e.split(":")[0] for e in h.errors}
    return "; ".join([*h.errors, *(n for n in h.lost if n not in explained)]) or "-"


def _svg_lines(series: Mapping[str, Sequence[float]], *, title: str, y_label: str) -> str:
    """A small inline SVG line plot with axes, ticks and a legend (no matplotlib needed).

    The x axis is the round (1-based); every series has its own colour, dash pattern and
    marker size, drawn widest first, so series with equal values (e.g. clients with the
    same epsilon) stay visible on top of each other and the legend names every one.

    Example:
        >>> svg = _svg_lines({"client 0": [1.0, 2.0], "client 1": [1.0, 2.0]},
        ...                  title="epsilon", y_label="epsilon")
        >>> svg.count("<polyline"), "round" in svg, "client 1" in svg
        (2, True, True)
    """
    points = [v for s in series.values() for v in s]
    if not points:
        return ""
    w, h, left, right, top, bottom = 560, 240, 56, 150, 12, 40
    lo, hi = min(points), max(points)
    lo, hi = (lo - 0.5, hi + 0.5) if hi <= lo else (lo, hi)
    longest = max(len(s) for s in series.values())
    pw, ph = w - left - right, h - top - bottom

    def px(j: int) -> float:
        return left + pw * (j / max(1, longest - 1))

    def py(v: float) -> float:
        return top + ph - ph * ((v - lo) / (hi - lo))

    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    dashes = ["", "6,3", "2,3", "8,3,2,3", "4,4", "1,2"]
    axes = [f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" '
            'stroke="black"/>',
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>']
    for j in range(longest):
        axes.append(f'<text x="{px(j):.1f}" y="{top + ph + 14}" font-size="10" '
                    f'text-anchor="middle">{j + 1}</text>')
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        axes.append(f'<line x1="{left - 4}" y1="{py(v):.1f}" x2="{left}" y2="{py(v):.1f}" '
                    f'stroke="black"/><text x="{left - 6}" y="{py(v) + 3:.1f}" font-size="10" '
                    f'text-anchor="end">{v:.3g}</text>')
    axes.append(f'<text x="{left + pw / 2:.0f}" y="{h - 6}" font-size="11" '
                'text-anchor="middle">round</text>')
    axes.append(f'<text x="12" y="{top + ph / 2:.0f}" font-size="11" text-anchor="middle" '
                f'transform="rotate(-90 12 {top + ph / 2:.0f})">{html.escape(y_label)}</text>')
    lines, legend = [], []
    n = len(series)
    for i, (name, s) in enumerate(series.items()):
        colour, dash = colours[i % len(colours)], dashes[i % len(dashes)]
        width = 1.5 + 1.5 * (n - 1 - i) / max(1, n - 1)  # the first widest, under the rest
        path = " ".join(f"{px(j):.1f},{py(v):.1f}" for j, v in enumerate(s))
        style = f'stroke="{colour}" stroke-width="{width:.1f}"' + (
            f' stroke-dasharray="{dash}"' if dash else "")
        marks = "".join(f'<circle cx="{px(j):.1f}" cy="{py(v):.1f}" r="{1.5 + width:.1f}" '
                        f'fill="none" stroke="{colour}"/>' for j, v in enumerate(s))
        lines.append(f'<polyline fill="none" {style} points="{path}"/>{marks}')
        y = top + 10 + 16 * i
        legend.append(f'<line x1="{w - right + 10}" y1="{y}" x2="{w - right + 34}" y2="{y}" '
                      f'{style}/><text x="{w - right + 38}" y="{y + 4}" font-size="11">'
                      f"{html.escape(name)}</text>")
    return (f'<figure><svg width="{w}" height="{h}" role="img" '
            f'aria-label="{html.escape(title)}"><rect width="{w}" height="{h}" fill="white"/>'
            f'{"".join(axes)}{"".join(lines)}{"".join(legend)}</svg>'
            f"<figcaption>{html.escape(title)}</figcaption></figure>")


def render_html(result: FederatedResult) -> str:
    """A self-contained HTML report: accuracy, epsilon per client and leakage per round.

    Each table comes with an inline SVG plot (no plotting library needed).

    Args:
        result: the federated result.

    Returns:
        The page.
    """
    esc = html.escape
    rows = "".join(
        f"<tr><td>{h.round}</td><td>{_fmt(h.accuracy, '.4f')}</td>"
        f"<td>{_fmt(h.majority_rate, '.4f')}</td><td>{_fmt(h.balanced_accuracy, '.4f')}</td>"
        f"<td>{_fmt(h.macro_f1, '.4f')}</td><td>{_fmt(h.loss, '.4f')}</td>"
        f"<td>{esc(_lost_text(h))}</td>"
        f"<td>{esc('; '.join([*h.rejected, *h.refused]) or '-')}</td>"
        "</tr>" for h in result.history)
    acc = {name: [v for v in values if v is not None] for name, values in (
        ("accuracy", [h.accuracy for h in result.history]),
        ("balanced accuracy", [h.balanced_accuracy for h in result.history]),
        ("macro F1", [h.macro_f1 for h in result.history]),
        ("majority class", [h.majority_rate for h in result.history]))}
    acc = {k: v for k, v in acc.items() if v}
    eps = result.epsilons()
    eps_rows = "".join(f"<tr><td>{c}</td><td>{esc(', '.join(f'{e:.4g}' for e in v))}</td></tr>"
                       for c, v in eps.items())
    leak_rows = "".join(
        f"<tr><td>{r.round}</td><td>{r.client}</td><td>{esc(r.attack)}</td>"
        f"<td>{r.images}</td><td>{'-' if r.victims is None else r.victims}</td>"
        f"<td>{_fmt(r.psnr, '.2f')}</td>"
        f"<td>{_fmt(r.baseline_psnr, '.2f')}</td><td>{_fmt(r.control_psnr, '.2f')}</td>"
        f"<td>{_fmt(r.label_recovery, '.2f')}</td>"
        f"<td>{_fmt(r.control_label_recovery, '.2f')}</td><td>{esc(r.verdict)}</td>"
        f"<td>{esc(r.reason)}</td></tr>" for r in result.leakage)
    leak_series: dict[str, list[float]] = {}
    for r in result.leakage:
        if r.label_recovery is not None:
            leak_series.setdefault(f"labels, client {r.client}", []).append(r.label_recovery)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>shieldsplit federated "
        "report</title></head><body>",
        f"<h1>Federated training of {esc(result.defense)}</h1>",
        f"<p>{result.clients} clients, {len(result.history)} of {result.rounds} rounds, "
        f"partition {esc(result.partition)} (sizes {result.partition_sizes}), "
        f"{result.local_epochs} local epoch(s), seed {result.seed}; {esc(result.engine)}, "
        f"flwr {esc(result.flwr_version)}.</p>",
        "" if result.complete else f"<p><b>Stopped early:</b> {esc(str(result.error))}</p>",
        *(f"<p><b>{esc(w)}</b></p>" for w in result.learning_warnings()),
        "<h2>Accuracy per round</h2><p>The global model after each round on the clients' "
        "held-out examples; <i>majority class</i> is the accuracy of always predicting the "
        "commonest class (a model stuck at one class scores it), balanced accuracy is the "
        "mean recall over the classes.</p><table border='1'><tr><th>round</th>"
        "<th>accuracy</th><th>majority class</th><th>balanced accuracy</th>"
        f"<th>macro F1</th><th>loss (nats)</th><th>lost clients</th>"
        f"<th>rejected / refused</th></tr>{rows}</table>",
        _svg_lines(acc, title="accuracy, balanced accuracy, macro F1 and the majority "
                   "class's accuracy per round (fractions)", y_label="fraction"),
    ]
    budget = result.epsilon_budget
    if eps:
        parts += [f"<p><b>Privacy accounting:</b> {esc(gap)}</p>"
                  for gap in result.accounting_gaps()]
        parts += [f"<h2>Epsilon per client (delta {result.delta:g})</h2><table border='1'>"
                  f"<tr><th>client</th><th>cumulative epsilon after each round"
                  f"{'' if budget is None else f' (budget {budget:g})'}"
                  f"</th></tr>{eps_rows}"
                  "</table>",
                  _svg_lines({f"client {c}": v for c, v in eps.items()},
                             title=f"cumulative epsilon per client per round (delta "
                             f"{result.delta:g})", y_label="epsilon")]
    if result.leakage:
        parts += ["<h2>Leakage per round (live audit)</h2><p>PSNR in dB of the "
                  "reconstructions against the attacked images; <i>no-attack PSNR</i>: the "
                  "best guess without the update (the baseline); <i>control</i>: the same "
                  "attack on an undefended client's update from the same data.</p>"
                  "<table border='1'><tr><th>round</th><th>client</th><th>attack</th>"
                  "<th>images</th><th>victims (attacked)</th><th>PSNR (dB)</th>"
                  "<th>no-attack PSNR (dB)</th>"
                  "<th>control PSNR (dB)</th><th>label recovery</th>"
                  "<th>control label recovery</th><th>verdict</th><th>reason</th></tr>"
                  f"{leak_rows}</table>",
                  _svg_lines(leak_series, title="label recovery per round (fraction of the "
                             "client's labels inferred)", y_label="fraction")]
    parts += [f"<ul>{''.join(f'<li>{esc(n)}</li>' for n in result.notes)}</ul>",
              "</body></html>"]
    return "\n".join(p for p in parts if p)


__all__ = ["ClientRound", "FederatedResult", "LeakageRow", "RoundRecord", "render_html"]
