"""The PGSL reproduction's Table II and Fig. 3 cells: what each one trains and measures.

A cell takes the run's :class:`~shieldsplit.experiments.reproduce.core.RunContext` and
returns JSON-able numbers (what :class:`~shieldsplit.experiments.reproduce.cells.CellStore`
keeps); :mod:`shieldsplit.experiments.reproduce.pgsl` runs them and writes the page.

Example:
    >>> MUS[:3], len(MUS)
    ([0.05, 0.15, 0.25], 10)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from shieldsplit.attacks import create_attack
from shieldsplit.attacks.base import AttackContext
from shieldsplit.attacks.observe import observe_gradient
from shieldsplit.attacks.observe_split import observe_activations
from shieldsplit.cutting import split_model
from shieldsplit.data import make_loaders
from shieldsplit.defenses.pgsl.perturb import jsma_perturb
from shieldsplit.defenses.pgsl.recovery import recover
from shieldsplit.defenses.pgsl.saliency import class_gradient, jsma_saliency, normalised_heat
from shieldsplit.evasion.adversarial import create_adversary
from shieldsplit.experiments.demo import DemoOptions, run_demo
from shieldsplit.experiments.reproduce.core import RunContext
from shieldsplit.training import accuracy, fit_plain

#: Fig. 3's values of mu.
MUS = [round(0.05 + 0.1 * i, 2) for i in range(10)]


class ReferenceNetwork:
    """The undefended network trained on clean images (built once, only if needed).

    Args:
        ctx: the run (its data, preset and seed).
    """

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self._net: nn.Module | None = None

    def __call__(self) -> nn.Module:
        """The trained network (trained at the first call)."""
        if self._net is None:
            ctx, seed = self.ctx, self.ctx.options.seed
            net = ctx.network(seed)
            loaders = make_loaders(ctx.data, batch_size=64, seed=seed)
            fit_plain(net, loaders.train, epochs=ctx.preset.epochs, seed=seed,
                      progress=ctx.options.progress)
            self._net = net.eval()
        return self._net


def _train_and_test(ctx: RunContext, x_train: Tensor, y_train: Tensor, x_test: Tensor,
                    y_test: Tensor, seed: int) -> float:
    """Train a fresh network on ``(x_train, y_train)``; its accuracy on ``(x_test, y_test)``."""
    net = ctx.network(seed)
    g = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_train, y_train),
                                         batch_size=64, shuffle=True, generator=g)
    fit_plain(net, loader, epochs=ctx.preset.epochs, seed=seed, progress=False)
    return accuracy(net.eval(), [(x_test, y_test)])


def _attack_in_chunks(adversary: Any, model: nn.Module, x: Tensor, y: Tensor,
                      size: int = 64) -> tuple[Tensor, dict[str, float]]:
    """Adversarial images of ``x`` in chunks (JSMA's pairwise map is quadratic in pixels),
    and the attack's success on the images ``model`` classified correctly."""
    chunks = [adversary(model, x[i:i + size], y[i:i + size]) for i in range(0, len(x), size)]
    images = torch.cat([c.images for c in chunks])
    success = torch.cat([c.success for c in chunks])
    delta = (images - x).flatten(1)
    with torch.no_grad():
        correct = model(x).argmax(-1) == y
    return images, {
        "success_rate": float(success[correct].float().mean()) if bool(correct.any()) else 0.0,
        "l0": float((delta != 0).float().mean()),
        "l2": float(delta.norm(dim=1).mean()),
        "linf": float(delta.abs().amax(dim=1).mean()),
    }


def adversarial_cell(ctx: RunContext, ref: ReferenceNetwork, name: str) -> dict[str, Any]:
    """Table II, attacked images: a network trained and tested on images that adversary
    ``name`` attacked against ``ref``; its accuracy and the attack's success and norms."""
    d, seed = ctx.data, ctx.options.seed
    adversary = create_adversary(name, seed=seed) if name in ("cw", "jsma") \
        else create_adversary(name)
    train, _ = _attack_in_chunks(adversary, ref(), d.x_train, d.y_train)
    test, stats = _attack_in_chunks(adversary, ref(), d.x_test, d.y_test)
    return {"accuracy": _train_and_test(ctx, train, d.y_train, test, d.y_test, seed), **stats}


def rebuild(model: nn.Module, attack: str, x: Tensor, y: Tensor, *, auxiliary: Tensor,
            auxiliary_labels: Tensor, num_classes: int, cut: int, budget: Any, seed: int,
            progress: bool) -> Tensor:
    """Images ``attack`` rebuilds from what ``model`` leaks about ``x`` (one per image).

    Gradient attacks observe the per-image gradient of the whole model (eval mode);
    the DCGAN prior observes the activations at ``cut`` and is trained on ``auxiliary``.

    Args:
        model: the trained, undefended classifier.
        attack: a registered attack name (``dlg``, ``idlg``, ``gan-prior``, ...).
        x: the images to rebuild, in [0, 1].
        y: their labels (used to compute the observed gradients).
        auxiliary: the attacker's own images (disjoint from ``x``).
        auxiliary_labels: their labels.
        num_classes: the classifier's classes.
        cut: where a split-learning attack observes the model.
        budget: the attack budget.
        seed: seeds the attack.
        progress: show the attack's progress bar.

    Returns:
        The reconstructions, shaped like ``x``, in [0, 1] (kept in memory only).
    """
    image_shape = (int(x.shape[1]), int(x.shape[2]), int(x.shape[3]))
    att = create_attack(attack, seed=seed, progress=progress)
    if att.observes == "activations":
        head = split_model(model, cut).head.eval()
        att.prepare(AttackContext(image_shape=image_shape, num_classes=num_classes, model=head,
                                  auxiliary_images=auxiliary, auxiliary_labels=auxiliary_labels,
                                  budget=budget, seed=seed))
        return att.reconstruct(observe_activations(head, x)).images.detach().clamp(0, 1)
    fl = model.eval()
    att.prepare(AttackContext(image_shape=image_shape, num_classes=num_classes, model=fl,
                              auxiliary_images=auxiliary, auxiliary_labels=auxiliary_labels,
                              budget=budget, seed=seed))
    obs = [observe_gradient(fl, x[i:i + 1], y[i:i + 1]) for i in range(len(x))]
    many = getattr(att, "reconstruct_many", None)
    recs = many(obs) if many is not None else [att.reconstruct(o) for o in obs]
    return torch.cat([r.images for r in recs]).detach().clamp(0, 1)


def rebuild_cell(ctx: RunContext, ref: ReferenceNetwork, name: str) -> dict[str, Any]:
    """Table II, rebuilt images: a network trained and tested on the images ``name``
    rebuilds from ``ref``; its accuracy, the images per split and the test MSE."""
    d, seed, n = ctx.data, ctx.options.seed, ctx.preset.rebuild
    aux_x, aux_y = d.x_val, d.y_val  # the attacker's own images: disjoint from both
    out = {}
    for split, (x, y) in {"train": (d.x_train[:n], d.y_train[:n]),
                          "test": (d.x_test[:n], d.y_test[:n])}.items():
        out[split] = (rebuild(ref(), name, x, y, auxiliary=aux_x, auxiliary_labels=aux_y,
                              num_classes=d.num_classes, cut=2, budget=ctx.preset.audit, seed=seed,
                              progress=ctx.options.progress), y)
        out[f"{split}_original"] = (x, y)
    mse_test = float(((out["test"][0] - out["test_original"][0]) ** 2).mean())
    return {
        "accuracy": _train_and_test(ctx, *out["train"], *out["test"], seed),
        "images": n, "mse_test": mse_test,
    }


def streams_cell(ctx: RunContext, seed: int) -> dict[str, Any]:
    """Table II, PGSL streams: the demo's test accuracy per stream and of plain training."""
    o, p = ctx.options, ctx.preset
    report = run_demo(DemoOptions(data=o.data, data_root=o.data_root, epochs=p.epochs, seed=seed,
                                  limit=p.limit, width=p.width, hidden=p.hidden, audit=False,
                                  progress=o.progress))
    return {"plain": report.plain_test_accuracy, **report.shield_test_accuracy}


def mu_sweep(net: nn.Module, x: Tensor, y: Tensor, *, mus: Sequence[float] = MUS,
             pixel_budget: float = 0.02, max_iter: int = 100) -> dict[str, Any]:
    """PGSL Fig. 3: attack ``x`` with the JSMA step, recover it at each ``mu``, score MSE.

    Args:
        net: the trained, undefended network whose saliency guides the attack.
        x: images in [0, 1].
        y: their labels (the saliency target).
        mus: the relaxation parameters to sweep.
        pixel_budget: the JSMA step's fraction of pixels.
        max_iter: APG iterations of each recovery.

    Returns:
        ``{"mse_attacked", "attacked_accuracy", "mse_map_subtracted",
        "accuracy_on_map_subtracted", "rows": [{"mu", "mse_recovered",
        "accuracy_on_recovered"}]}`` (``map_subtracted``: the paper's ``x ~ x_hat - Map``).
    """
    net = net.eval()
    grad = class_gradient(lambda t: net(t).softmax(-1), x, y)
    scores = jsma_saliency(grad)
    attacked = jsma_perturb(x, scores, pixel_budget=pixel_budget, strength=1.0,
                            clip=(0.0, 1.0)).adversarial
    # The paper's own approximation (Sec. IV-C): x ~ x_hat - Map, with Map the map
    # PGSL sends along (the normalised saliency channel), clipped to the pixel range.
    subtracted = (attacked - normalised_heat(scores)).clamp(0.0, 1.0)
    rows = []
    for mu in mus:
        rec = recover(attacked, mu=mu, max_iter=max_iter, tol=1e-6, matrix="rows_x_cols")
        rows.append({"mu": mu, "mse_recovered": float(((rec - x) ** 2).mean()),
                     "accuracy_on_recovered": accuracy(net, [(rec, y)])})
    return {"mse_attacked": float(((attacked - x) ** 2).mean()),
            "attacked_accuracy": accuracy(net, [(attacked, y)]),
            "mse_map_subtracted": float(((subtracted - x) ** 2).mean()),
            "accuracy_on_map_subtracted": accuracy(net, [(subtracted, y)]), "rows": rows}


__all__ = ["MUS", "ReferenceNetwork", "adversarial_cell", "mu_sweep", "rebuild", "rebuild_cell",
           "streams_cell"]
