"""UnSplit-style model inversion of a split-learning cut, given the client's weights.

:class:`UnSplit` (``"unsplit"``) searches the images whose activations at the cut match
the observed ones, as UnSplit does (Erdoğan, Küpçü, Çiçek, WPES 2022), in the white-box
variant: UnSplit's server knows the client's architecture only and estimates its
weights jointly with the input, alternating the two searches; here the attacker holds
the client's weights (the ``split_white_box`` threat model), so only the input is
optimised. The objective is UnSplit's, a distance in activation space plus a
total-variation prior (:func:`~shieldsplit.functional.image.total_variation`):

``||client(x) - a||^2 / ||a||^2 + tv_weight * TV(x)``

per image, with the activation distance made relative to the observation's energy so
that one ``tv_weight`` suits every cut. The pixels are optimised directly and projected
onto [0, 1] after every step (``parametrization="clamp"``, UnSplit's box constraint) or
through a sigmoid; Adam with a cosine-decayed step size; several random starts per image
run in one batch and, per image, the start whose activations match best wins.

It needs no auxiliary data. ``context.model`` is the client part; a
:class:`~shieldsplit.SplitShield` or another
:class:`~shieldsplit.defenses.base.Defense` is inverted through its client network
(:func:`~shieldsplit.attacks.split.client_map`: a shield's saliency channel is a free
input; a defence's wire noise is not modelled).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from shieldsplit.attacks import AttackContext, create_attack
    >>> from shieldsplit.attacks.observe_split import observe_activations
    >>> torch.manual_seed(0) and None
    >>> head = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
    >>> attack = create_attack("unsplit", seed=0, iterations=100, progress=False)
    >>> attack.prepare(AttackContext(image_shape=(1, 8, 8), num_classes=2, model=head))
    >>> rec = attack.reconstruct(observe_activations(head, torch.rand(2, 1, 8, 8)))
    >>> tuple(rec.images.shape), rec.meta["final_loss"] < rec.meta["initial_loss"]
    ((2, 1, 8, 8), True)

References:
    Erdoğan, Küpçü, Çiçek. "UnSplit: Data-Oblivious Model Inversion, Model Stealing, and
    Label Inference Attacks against Split Learning". WPES 2022 (arXiv:2108.09033).
"""

from __future__ import annotations

import time
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from shieldsplit._core.progress import progress_bar
from shieldsplit.attacks.base import (
    Assumption,
    Attack,
    AttackContext,
    Observation,
    ObservationKind,
    Reconstruction,
    ThreatModel,
    register_attack,
)
from shieldsplit.attacks.split import (
    SEARCH_RESTARTS,
    WhiteBoxInversionConfig,
    check_activation_observation,
    check_context,
    client_map,
    require_prepared,
)
from shieldsplit.errors import ConfigError
from shieldsplit.functional.image import total_variation
from shieldsplit.training import eval_mode

#: Optimisation steps per budget.
UNSPLIT_ITERATIONS = {"quick": 300, "standard": 1000, "thorough": 3000}


class UnSplitConfig(WhiteBoxInversionConfig):
    """Options of :class:`UnSplit` (see its Args): the white-box inversion's options (the
    same search, one config), with pixels projected onto [0, 1] by default.

    Attributes:
        iterations: Adam steps; None: the budget's (:data:`UNSPLIT_ITERATIONS`).
        restarts: random starts per image; None: the budget's
            (:data:`~shieldsplit.attacks.split.SEARCH_RESTARTS`).
        lr: Adam's initial step size (cosine-decayed to 1% of it).
        tv_weight: weight of the total-variation prior (>= 0).
        parametrization: ``"clamp"`` (pixels projected onto [0, 1]) or ``"sigmoid"``.

    Example:
        >>> UnSplitConfig(tv_weight=0.01).parametrization
        'clamp'
    """

    parametrization: Literal["clamp", "sigmoid"] = "clamp"


class UnSplit(Attack):
    """UnSplit's inversion in its white-box variant: optimise the input, TV prior.

    Args:
        seed: seeds the random starts.
        iterations: Adam steps; None takes the budget's (300 quick, 1000 standard, 3000
            thorough).
        restarts: random starts per image; None takes the budget's (1, 2, 4).
        lr: Adam's initial step size.
        tv_weight: weight of the total-variation prior.
        parametrization: ``"clamp"`` (projected pixels, UnSplit's) or ``"sigmoid"``.
        progress: show a progress bar.

    Example:
        >>> attack = UnSplit(seed=0, iterations=50, progress=False)
        >>> attack.declaration().threat_model, sorted(attack.assumes)
        ('split_white_box', ['client_weights'])
    """

    name: ClassVar[str] = "unsplit"
    threat_model: ClassVar[ThreatModel] = "split_white_box"
    assumes: ClassVar[frozenset[Assumption]] = frozenset({"client_weights"})
    observes: ClassVar[ObservationKind] = "activations"
    #: The quick budget's split-white-box search stands for it.
    quick_default: ClassVar[bool] = False

    Config = UnSplitConfig
    config: UnSplitConfig
    iterations: int | None
    restarts: int | None
    lr: float
    tv_weight: float
    parametrization: str

    def prepare(self, context: AttackContext) -> None:
        """Remember the client part whose weights the attacker holds.

        Args:
            context: needs ``model``, the client part (or a defence).

        Raises:
            ConfigError: no client in the context (the message names the attack and the
                capability it assumes), or a bad budget.
        """
        context = check_context(context)
        if not isinstance(context.model, nn.Module):
            raise ConfigError.build(
                what=f"{self.name}: context.model",
                expected="the client part whose weights the attacker holds (the "
                "'client_weights' capability that unsplit assumes)",
                received=type(context.model).__name__,
                fix="pass AttackContext(model=split_model(model, cut).head), or run an "
                "attack that does not assume the client's weights")
        self.context = context

    def reconstruct(self, observation: Observation) -> Reconstruction:
        """Search the images whose activations match the observation.

        Args:
            observation: an ``"activations"`` observation of the client prepared on.

        Returns:
            Images in [0, 1]; ``meta`` has ``initial_loss`` and ``final_loss`` (the mean
            relative activation distance of the chosen starts before and after),
            ``iterations``, ``restarts`` and ``tv_weight``.

        Raises:
            StateError: before :meth:`prepare`.
            ConfigError: for another observation kind.
            InputShapeError: when the image shape disagrees with the context.
        """
        context = require_prepared(self.context, self.name)
        a = check_activation_observation(observation, self.name,
                                         image_shape=context.image_shape)
        start = time.perf_counter()
        iterations = self.iterations or UNSPLIT_ITERATIONS[context.budget]
        restarts = self.restarts or SEARCH_RESTARTS[context.budget]
        fn, needs_map = client_map(context.model)
        b = int(a.shape[0])
        c, h, w = context.image_shape
        sigmoid = self.parametrization == "sigmoid"
        noise = torch.randn(restarts * b, c, h, w, generator=self.generator())
        z = (0.5 * noise if sigmoid else (0.5 + 0.1 * noise).clamp(0, 1)).requires_grad_(True)
        params = [z]
        saliency = None
        if needs_map:  # a SplitShield's saliency channel: a free input
            saliency = torch.zeros(restarts * b, 1, h, w, requires_grad=True)
            params.append(saliency)
        target = a.repeat(restarts, *([1] * (a.dim() - 1)))
        energy = target.flatten(1).pow(2).mean(1).clamp_min(1e-12)
        opt = torch.optim.Adam(params, lr=self.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iterations,
                                                           eta_min=0.01 * self.lr)

        def image() -> Tensor:
            return torch.sigmoid(z) if sigmoid else z

        def distance() -> Tensor:
            m = torch.sigmoid(saliency) if saliency is not None else None
            return (fn(image(), m) - target).flatten(1).pow(2).mean(1) / energy

        with eval_mode(context.model):
            with torch.no_grad():
                initial = distance().view(restarts, b)
            with progress_bar(range(iterations), total=iterations,
                              description=f"{self.name}: inversion",
                              enabled=self.progress) as bar:
                for _ in bar:
                    loss = (distance() + self.tv_weight * total_variation(image())).sum()
                    grads = torch.autograd.grad(loss, params)
                    for p, g in zip(params, grads, strict=True):
                        p.grad = g
                    opt.step()
                    sched.step()
                    if not sigmoid:
                        with torch.no_grad():
                            z.clamp_(0, 1)
            with torch.no_grad():
                final = distance().view(restarts, b)
        best = final.argmin(dim=0)
        cols = torch.arange(b)
        images = image().detach().view(restarts, b, c, h, w)[best, cols]
        return Reconstruction(
            images=images.clamp(0, 1), attack=self.name, seconds=time.perf_counter() - start,
            meta={"initial_loss": float(initial[best, cols].mean()),
                  "final_loss": float(final[best, cols].mean()),
                  "iterations": iterations, "restarts": restarts,
                  "tv_weight": self.tv_weight},
        )


register_attack(UnSplit.name, UnSplit)

__all__ = ["UNSPLIT_ITERATIONS", "UnSplit", "UnSplitConfig"]
