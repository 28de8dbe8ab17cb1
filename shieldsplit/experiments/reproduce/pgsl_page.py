"""The PGSL reproduction's page text and plot, each computed from finished cells.

Example:
    >>> paper_pgsl_sentence("MIAS", {"DLG": 0.5}).split(":")[0]
    "Reading the paper's table (MIAS column)"
"""

from __future__ import annotations

import statistics
from typing import Any

from shieldsplit.audit.auditor import AttackResult
from shieldsplit.experiments.reproduce.core import RunContext
from shieldsplit.experiments.reproduce.reading import (
    LEVEL,
    ClaimLabel,
    claim,
    control_leaks_images,
    image_control_reason,
    image_leak_sentence,
    psnr_range,
    seed_part,
    verdict_count_sentence,
)

#: Why our numbers differ from the paper's (the most likely reasons, stated on the page).
DATA_DIFFERENCE = {
    "mnist": "**Data.** The paper's MNIST column is compared with MNIST, but ours is the "
    "10,000-image MNIST test set split into train/val/test and capped per split (the "
    "preset's limit), not the 60,000 training images.",
    "other": "**Data.** The paper used MIAS (330 mammograms, 3 classes) and MNIST; the MIAS "
    "column is compared with BreastMNIST or PneumoniaMNIST (ultrasound / X-ray, 2 classes, "
    "28x28), which are different images, classes and sizes.",
}
DIFFERENCES = [
    "**MSE scale.** The paper does not state its scale; its MIAS values (1 to 8) cannot be "
    "MSEs of images in [0, 1]. Only the *ordering* of its rows is comparable with ours, "
    "which is what the ordering table checks.",
    "**DLG and iDLG against PGSL.** A split-learning server receives no weight gradient of "
    "the client, so they cannot observe SplitShield; their PGSL row uses PGSL's two image "
    "steps (JSMA, then proximal-gradient recovery) before a plainly trained network, our "
    "reading of the paper's 'gradients from the proximal gradient method'.",
]


def budget_note(budget: str, results: dict[str, list[AttackResult]],
                undefended: dict[str, list[AttackResult]]) -> str:
    """The page's note on the gradient attacks' strength, from their PSNR and verdicts.

    Args:
        budget: the audit budget.
        results: attack title -> its results over every setting and seed.
        undefended: attack title -> its results on the undefended split (one per seed).

    Returns:
        One bullet's text.

    Example:
        >>> from shieldsplit.audit.auditor import AttackResult
        >>> r = AttackResult(attack="dlg", threat_model="t", observes="gradient", images=8,
        ...                  seconds=1.0, psnr=5.04, verdict="inconclusive")
        >>> note = budget_note("quick", {"DLG": [r, r.model_copy(update={"psnr": 9.2})]},
        ...                    {"DLG": [r]})
        >>> "PSNR 5.0-9.2 dB" in note, "*inconclusive*" in note
        (True, True)
    """
    ranges = {n: psnr_range(rs) for n, rs in results.items()}
    psnr = ", ".join(f"{n} PSNR {lo:.1f}-{hi:.1f} dB" for n, r in ranges.items() if r
                     for lo, hi in [r])
    leak = all(control_leaks_images(rs) for rs in undefended.values())
    return (
        f"**Attack budget.** Every attack runs at the auditor's `{budget}` budget on a CPU. "
        f"Over every setting and seed the gradient attacks reach {psnr or 'no finished run'}; "
        "on the undefended split, "
        + "; ".join(verdict_count_sentence(n, rs) for n, rs in undefended.items()) + "; "
        + "; ".join(image_leak_sentence(n, rs) for n, rs in undefended.items()) + ". "
        + ("Both leak images on every undefended seed, so their ordering rows are decided "
           f"wherever the {LEVEL:.0%} t-intervals across seeds separate." if leak else
           "Where an attack does not leak images (re-identification or rebuilt images) on "
           "every undefended seed, its MSE differences between settings are not evidence, "
           "and its ordering rows read *inconclusive*.")
        + " The paper does not give its attack budgets.")


def paper_pgsl_sentence(column: str, pgsl_minus_none: dict[str, float]) -> str:
    """How the paper's own PGSL rows sit against its undefended rows, computed from its
    Table I column (the MIAS and MNIST columns differ).

    Args:
        column: the paper's column compared (``MIAS`` or ``MNIST``).
        pgsl_minus_none: attack -> the paper's PGSL MSE minus its undefended MSE.

    Returns:
        One paragraph.

    Example:
        >>> paper_pgsl_sentence("MNIST", {"DLG": -0.07, "DCGAN": 0.02}).split(":")[0]
        "Reading the paper's table (MNIST column)"
        >>> "below its undefended MSE for DLG; above it for DCGAN" in paper_pgsl_sentence(
        ...     "MNIST", {"DLG": -0.07, "DCGAN": 0.02})
        True
    """
    lower = [a for a, d in pgsl_minus_none.items() if d < 0]
    higher = [a for a, d in pgsl_minus_none.items() if d > 0]
    parts = []
    if lower:
        parts.append(f"below its undefended MSE for {', '.join(lower)}")
    if higher:
        parts.append(f"above it for {', '.join(higher)}")
    text = (f"Reading the paper's table ({column} column): its PGSL MSE is "
            + "; ".join(parts) + ".")
    if lower:
        text += (" Where it is lower, PGSL's recovery brings the images back towards the "
                 "originals in the paper, so a lower MSE there means better recovery, not "
                 "more protection.")
    return (text + " We report the same quantity (MSE between the attacker's reconstruction "
            "and the original image) for every row.")


def ordering_rows(control: dict[str, list[AttackResult]], mse: dict[tuple[str, str], list[float]],
                  paper_up: dict[tuple[str, str], bool], *, stuck: dict[str, str] | None = None,
                  ) -> list[tuple[str, str, bool, bool, ClaimLabel, str]]:
    """The ordering table's rows, decided from the numbers.

    Args:
        control: attack -> its results on the undefended split (one per seed).
        mse: ``(attack, setting)`` -> MSE per seed (the undefended setting included, as
            ``"undefended split"``).
        paper_up: ``(attack, setting)`` -> whether the paper's MSE is above its undefended one.
        stuck: setting -> why its classifier learned nothing (such settings, or an
            undefended split listed here, are excluded: *inconclusive*).

    Returns:
        ``(attack, setting, paper above, ours above, holds|does not hold|inconclusive, why)``
        per setting with numbers on both sides.

    Example:
        >>> from shieldsplit.audit.auditor import AttackResult
        >>> noise = AttackResult(attack="dlg", threat_model="t", observes="gradient", images=8,
        ...                      seconds=1.0, verdict="inconclusive")
        >>> rows = ordering_rows({"dlg": [noise]},
        ...                      {("dlg", "undefended split"): [0.1, 0.11], ("dlg", "x"): [0.2]},
        ...                      {("dlg", "x"): True})
        >>> rows[0][4:]
        ('inconclusive', 'the attack does not leak on the undefended run')
    """
    stuck = stuck or {}
    out: list[tuple[str, str, bool, bool, ClaimLabel, str]] = []
    for (attack, label), p_up in paper_up.items():
        base, ours = mse.get((attack, "undefended split"), []), mse.get((attack, label), [])
        if not base or not ours:
            continue
        o_up = statistics.mean(ours) > statistics.mean(base)
        why_stuck = stuck.get(label) or stuck.get("undefended split")
        if why_stuck:
            out.append((attack, label, p_up, o_up, "inconclusive",
                        f"excluded: {why_stuck}"))
            continue
        results = control.get(attack, [])
        verdict, why = claim([seed_part("MSE", o_up == p_up, base, ours)],
                             control_leaks=control_leaks_images(results),
                             control_why=image_control_reason(results))
        out.append((attack, label, p_up, o_up, verdict, why))
    return out


def table2_notes(adversarial: dict[str, float], rebuilt_accuracy: dict[str, float], *,
                 plain: float, attacked_stream: float, majority: float, rebuilt: int,
                 paper_jsma: str, stuck: dict[str, str] | None = None) -> list[str]:
    """Table II's notes, each computed from its accuracies.

    Args:
        adversarial: attack -> accuracy of the network trained and tested on its images.
        rebuilt_accuracy: attack -> accuracy of the network trained on its reconstructions.
        plain: plain training's clean test accuracy.
        attacked_stream: PGSL's attacked stream's accuracy.
        majority: the whole test split's majority-class rate.
        rebuilt: images rebuilt per split.
        paper_jsma: the paper's accuracy of its attacked stream.
        stuck: row (attack) -> why its network learned nothing
            (:func:`~shieldsplit.experiments.reproduce.reading.stuck_reason`, on the
            exact images it was tested on): reported, and left out of every comparison.

    Returns:
        Three bullets' text.

    Example:
        >>> notes = table2_notes({"FGSM": 0.9, "BIM": 0.731}, {"DLG": 0.646}, plain=0.7,
        ...                      attacked_stream=0.78, majority=0.731, rebuilt=48,
        ...                      paper_jsma="46.3", stuck={"BIM": "stuck at 73.1%",
        ...                      "DLG": "scores exactly the majority rate (31/48)"})
        >>> "FGSM (90.0%)" in notes[0], "BIM (73.1%)" in notes[0], "1 of 1 networks" in notes[1]
        (True, False, True)
        >>> "+8.0 points" in notes[2]
        True
    """
    stuck = stuck or {}
    # a stuck row learned nothing: it is not evidence of a feature
    above = [f"{n} ({a:.1%})" for n, a in adversarial.items() if a > plain and n not in stuck]
    first = (f"**Table II, attacked images.** Trained and tested on images attacked against a "
             f"fixed undefended network, the network scores above plain training's clean "
             f"accuracy ({plain:.1%}) on {', '.join(above)}: it can learn the attack's "
             "class-dependent perturbation as a feature. The paper's lower numbers suggest a "
             "different protocol (for example training on clean and testing on attacked "
             "images), which it does not describe." if above else
             f"**Table II, attacked images.** No attacked-image row that learned scores above "
             f"plain training's clean accuracy ({plain:.1%}); the paper does not describe its "
             "protocol (trained and tested on attacked images, as ours, or not).")
    adv_stuck = [n for n in adversarial if n in stuck]
    if adv_stuck:
        first += (f" {len(adv_stuck)} of {len(adversarial)} attacked-image networks are stuck "
                  "(" + "; ".join(f"{n}: {stuck[n]}" for n in adv_stuck) + ") and left out.")
    reb_stuck = [n for n in rebuilt_accuracy if n in stuck]
    second = (f"**Table II, rebuilt images.** Trained on {rebuilt} reconstructions per split "
              f"and tested on the first {rebuilt} test images (the whole test split's "
              f"majority rate, {majority:.1%}, is not theirs), {len(reb_stuck)} of "
              f"{len(rebuilt_accuracy)} networks are stuck")
    second += (": " + "; ".join(f"{n} {stuck[n]}" for n in reb_stuck) + ". They learned "
               "nothing from the reconstructions, so their rows are reported as stuck and "
               "left out of every comparison with the paper" if reb_stuck else "")
    second += "; the paper does not say how many images it rebuilt."
    third = (f"**Table II, PGSL streams.** Our JSMA step changes 2% of the pixels; our attacked "
             f"stream scores {attacked_stream:.1%}, {100 * (attacked_stream - plain):+.1f} "
             f"points from plain training ({plain:.1%}), where the paper's falls to "
             f"{paper_jsma}%.")
    return [first, second, third]


def map_subtraction_sentence(sweep: dict[str, Any], best_recovered: float) -> str:
    """The computed reading of the paper's ``x ~ x_hat - Map`` beside robust PCA.

    Args:
        sweep: :func:`~shieldsplit.experiments.reproduce.pgsl_cells.mu_sweep`'s result.
        best_recovered: the lowest MSE of the robust-PCA recovery over ``mu``.

    Returns:
        One sentence (empty for a result made before the map row existed).

    Example:
        >>> s = map_subtraction_sentence({"mse_attacked": 0.02, "mse_map_subtracted": 0.03}, 0.01)
        >>> s.endswith("worse than the attacked images (0.02000) and worse than robust PCA "
        ...            "at its best mu (0.01000).")
        True
    """
    sub = sweep.get("mse_map_subtracted")
    if sub is None:
        return ""
    attacked = sweep["mse_attacked"]
    vs_attacked = "better than" if sub < attacked else "worse than"
    vs_rpca = "better than" if sub < best_recovered else "worse than"
    return (f"The paper's own approximation x ~ x_hat - Map (the saliency channel subtracted) "
            f"gives MSE {sub:.5f}: {vs_attacked} the attacked images ({attacked:.5f}) and "
            f"{vs_rpca} robust PCA at its best mu ({best_recovered:.5f}).")


def recovered_accuracy_sentence(sweep: dict[str, Any], classes: int) -> str:
    """What the sweep's accuracies on recovered images say, computed; below chance is
    flagged as unexplained (the cells hold accuracies only, not predictions).

    Args:
        sweep: :func:`~shieldsplit.experiments.reproduce.pgsl_cells.mu_sweep`'s result.
        classes: the task's classes (chance is ``1 / classes``).

    Returns:
        One paragraph.

    Example:
        >>> sweep = {"attacked_accuracy": 0.59, "rows": [
        ...     {"mu": 0.05, "accuracy_on_recovered": 0.45},
        ...     {"mu": 0.15, "accuracy_on_recovered": 0.62}]}
        >>> text = recovered_accuracy_sentence(sweep, 2)
        >>> "below chance (50.0%) at 1 of 2 values of mu" in text, "Unexplained" in text
        (True, True)
        >>> fine = {"attacked_accuracy": 0.59,
        ...         "rows": [{"mu": 0.05, "accuracy_on_recovered": 0.7}]}
        >>> "Unexplained" in recovered_accuracy_sentence(fine, 2)
        False
    """
    accs = [float(r["accuracy_on_recovered"]) for r in sweep["rows"]]
    if not accs:
        return ""
    chance, attacked = 1 / classes, float(sweep["attacked_accuracy"])
    below = sum(a < chance for a in accs)
    worse = sum(a < attacked for a in accs)
    text = (f"The undefended network scores {min(accs):.1%}-{max(accs):.1%} on the recovered "
            f"images, below its {attacked:.1%} on the attacked images at {worse} of "
            f"{len(accs)} values of mu")
    sub = sweep.get("accuracy_on_map_subtracted")
    if sub is not None:
        text += f", and {float(sub):.1%} on the map-subtracted images"
    text += "."
    if below:
        text += (f" It is below chance ({chance:.1%}) at {below} of {len(accs)} values of mu: "
                 "on the recovered images the network picks the wrong class more often than "
                 "a guess would. "
                 "Unexplained: the cells record these accuracies only (no predictions per "
                 "class, nor the network's accuracy on the clean test images), so the cause "
                 "cannot be read from them; `benchmarks/mu_sweep.py` measures the same "
                 "quantity with its own network (see its page).")
    return text


def plot_mu(ctx: RunContext, sweep: dict[str, Any]) -> None:
    """Fig. 3's plot (MSE over mu, the attacked images' MSE, the paper's mu), saved as
    ``<stem>_fig3.png``.

    Args:
        ctx: the run (where the plot goes).
        sweep: :func:`~shieldsplit.experiments.reproduce.pgsl_cells.mu_sweep`'s result.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot([r["mu"] for r in sweep["rows"]], [r["mse_recovered"] for r in sweep["rows"]],
            marker="o", label="recovered vs original")
    ax.axhline(sweep["mse_attacked"], color="grey", ls="--", label="attacked vs original")
    ax.axvline(0.55, color="red", ls=":", label="paper's choice (0.55)")
    ax.set_xlabel("mu")
    ax.set_ylabel("MSE")
    ax.legend(fontsize=8)
    ctx.save_plot("fig3", fig)


__all__ = ["DATA_DIFFERENCE", "DIFFERENCES", "budget_note", "map_subtraction_sentence",
           "ordering_rows", "paper_pgsl_sentence", "plot_mu", "recovered_accuracy_sentence",
           "table2_notes"]
