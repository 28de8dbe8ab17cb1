"""Feature-space hijacking (FSHA): a malicious split server steers the client's training.

In split learning the server sends the client the gradient of the loss with respect to
the activations the client sent, and the client trains its part on whatever gradient
comes back. Pasquini, Ateniese and Bernaschi (CCS 2021) show that a malicious server can
therefore skip the task altogether and *hijack* the client's feature space:

1. On its own auxiliary images ``X_pub`` the server trains an encoder ``f~`` and a decoder
   ``f~^-1`` as an autoencoder (``f~^-1(f~(x)) ~ x``), so ``f~``'s feature space is
   invertible by construction.
2. It trains a discriminator ``D`` (a Wasserstein critic with gradient penalty,
   WGAN-GP, as the paper) to tell ``f~(X_pub)`` from the client's activations
   ``f(X_priv)``, and sends the client, instead of the task's gradient, the gradient of
   ``mean(D(f(X_priv)))`` with respect to the activations it received. The client,
   following the protocol, descends it: its feature space drifts into ``f~``'s.
3. Once the client's feature space is ``f~``'s, the server rebuilds the client's private
   images from what it sends: ``f~^-1(f(x))``.

:class:`FeatureSpaceHijacking` (``"fsha"``) simulates this. :meth:`~FeatureSpaceHijacking.prepare`
builds ``f~``, ``f~^-1`` and ``D`` for the shape of what crosses the cut and pre-trains the
autoencoder on the auxiliary images (the server holds them before the protocol starts).
:meth:`~FeatureSpaceHijacking.hijack` runs the malicious protocol for the configured client
steps on a *copy* of a client part and the victims' private training images, through the
project's one training loop (:func:`~shieldsplit.training.fit_epochs`): each step the client
sends ``f(x)`` of a private batch, the server replies with the critic's gradient only (it
never sees the private images), the client applies that gradient with its own optimiser,
and the server trains ``f~``/``f~^-1`` and ``D`` on its auxiliary images. It returns the
hijacked client; the user's client is never changed.
:meth:`~FeatureSpaceHijacking.reconstruct` decodes activations of the hijacked client with
``f~^-1``.

How an auditor produces the observation (the attack observes the *hijacked* client, so the
audit's usual wire, the honest client's activations, is not what it decodes)::

    attack.prepare(AttackContext(..., model=head, auxiliary_images=aux))
    hijacked = attack.hijack(head, private_images)       # the simulated protocol
    obs = observe_activations(hijacked, victims)        # what the server then sees
    rec = attack.reconstruct(obs)

``private_images`` are the images the client trains on during the hijacked steps; the
victims are the images whose activations the server decodes (the same images, or
others: the hijacked client maps any image into ``f~``'s space). :meth:`reconstruct`
refuses to decode before :meth:`hijack` has run (``StateError``), so an orchestrator that
only hands it the honest wire gets a typed failure rather than a meaningless PSNR.

FSHA is slow (hundreds to thousands of hijacked client steps, each a step of four
networks with a gradient penalty), so it declares ``quick_default = False``: the quick
audit budget leaves it out. Its strength grows with the hijacked steps and the client's
learning rate (``benchmarks/fsha.py`` measures it against the steps). It is built for
spatial activations ``(C, h, w)``; flat ones are accepted (a linear encoder and an MLP
critic), but in our short trials on the digits (300 steps) the hijack of a flat cut did
not beat the mean image.

Example:
    >>> import torch
    >>> import shieldsplit as ss
    >>> from shieldsplit.attacks import AttackContext, create_attack
    >>> from shieldsplit.attacks.observe_split import observe_activations
    >>> head = ss.split_model(ss.PGSLNet(num_classes=2, image_size=8, width=4, hidden=8), 1).head
    >>> before = {k: v.clone() for k, v in head.state_dict().items()}
    >>> attack = create_attack("fsha", seed=0, client_steps=3, pretrain_epochs=1,
    ...                        batch_size=8, width=4, discriminator_width=4, progress=False)
    >>> attack.prepare(AttackContext(image_shape=(1, 8, 8), num_classes=2, model=head,
    ...                              auxiliary_images=torch.rand(32, 1, 8, 8)))
    >>> private = torch.rand(16, 1, 8, 8)
    >>> hijacked = attack.hijack(head, private)
    >>> rec = attack.reconstruct(observe_activations(hijacked, private[:3]))
    >>> tuple(rec.images.shape), rec.meta["client_steps"]
    ((3, 1, 8, 8), 3)
    >>> all(torch.equal(before[k], v) for k, v in head.state_dict().items())
    True

References:
    Pasquini, Ateniese, Bernaschi. "Unleashing the Tiger: Inference Attacks on Split
    Learning". ACM CCS 2021. arXiv:2012.02670.
    Gulrajani, Ahmed, Arjovsky, Dumoulin, Courville. "Improved Training of Wasserstein
    GANs". NeurIPS 2017 (the gradient penalty).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from shieldsplit.attacks.base import (
    Assumption,
    Attack,
    AttackContext,
    Observation,
    ObservationKind,
    Reconstruction,
    Server,
    ThreatModel,
    register_attack,
)
from shieldsplit.attacks.observe_split import check_images, observe_activations
from shieldsplit.attacks.split import (
    FitToSize,
    build_decoder,
    check_activation_observation,
    check_auxiliary,
    check_context,
    decode,
    require_prepared,
)
from shieldsplit.errors import (
    ConfigError,
    EmptyDataError,
    InputShapeError,
    StateError,
    UnsupportedModelError,
)
from shieldsplit.training import fit_epochs, seeded, tensor_batches

#: Hijacked client steps per budget (the paper runs 10^4 and more on MNIST).
CLIENT_STEPS = {"quick": 300, "standard": 1000, "thorough": 3000}
#: Epochs of the attacker's autoencoder pre-training on its auxiliary images, per budget.
PRETRAIN_EPOCHS = {"quick": 5, "standard": 15, "thorough": 40}


# ----------------------------------------------------------------- the attacker's networks


def build_encoder(
    image_shape: tuple[int, int, int], act_shape: tuple[int, ...], *, width: int,
    non_negative: bool,
) -> nn.Module:
    """The server's encoder ``f~`` (the paper's "pilot"): images to features of the
    client's activation shape.

    Linear, as the pilot of the paper's code: a 3x3 convolution at the image resolution,
    4x4 stride-2 convolutions while the map is at least twice the activation resolution,
    a resize to it if needed and a 3x3 convolution to the activation channels (flat
    activations: a linear layer instead), then a batch norm without affine parameters
    that standardises each feature: a neutral scale that a client part can reach in few
    steps (in one seeded 300-step trial on the digits it raised the reconstructions'
    PSNR from 14.0 to 16.5 dB, with an earlier non-linear pilot). A ReLU ends it when the
    client's activations are non-negative, so that the client can reach ``f~``'s
    feature space at all.

    Args:
        image_shape: ``(C, H, W)``.
        act_shape: per-sample activation shape, ``(C, h, w)`` or ``(D,)``.
        width: hidden channels.
        non_negative: end with a ReLU.

    Returns:
        A module ``(B, *image_shape) -> (B, *act_shape)``.

    Example:
        >>> enc = build_encoder((1, 8, 8), (6, 4, 4), width=4, non_negative=False)
        >>> tuple(enc(torch.rand(2, 1, 8, 8)).shape)
        (2, 6, 4, 4)
    """
    c, h, w = image_shape
    layers: list[nn.Module] = [nn.Conv2d(c, width, 3, padding=1)]
    if len(act_shape) == 3:
        c_a, h_a, w_a = act_shape
        while h >= 2 * h_a and w >= 2 * w_a:
            layers.append(nn.Conv2d(width, width, 4, stride=2, padding=1))
            h, w = h // 2, w // 2
        if (h, w) != (h_a, w_a):
            layers.append(FitToSize((h_a, w_a)))
        layers += [nn.Conv2d(width, c_a, 3, padding=1), nn.BatchNorm2d(c_a, affine=False)]
        if non_negative:
            layers.append(nn.ReLU())
        return nn.Sequential(*layers)
    d = int(math.prod(act_shape))
    layers += [nn.Flatten(), nn.Linear(width * h * w, d), nn.BatchNorm1d(d, affine=False)]
    if non_negative:
        layers.append(nn.ReLU())
    layers.append(nn.Unflatten(1, act_shape))
    return nn.Sequential(*layers)


class Critic(nn.Module):
    """The WGAN-GP critic ``D`` on the feature space (no batch normalisation: the gradient
    penalty is per sample).

    Args:
        act_shape: per-sample activation shape, ``(C, h, w)`` or ``(D,)``.
        width: channels of the first convolution (the second has twice as many).

    Example:
        >>> Critic((6, 4, 4), width=4)(torch.rand(3, 6, 4, 4)).shape
        torch.Size([3])
    """

    def __init__(self, act_shape: tuple[int, ...], width: int) -> None:
        super().__init__()
        if len(act_shape) == 3:
            self.features: nn.Module = nn.Sequential(
                nn.Conv2d(act_shape[0], width, 3, padding=1), nn.LeakyReLU(0.2),
                nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
                nn.Flatten(),
            )
        else:
            self.features = nn.Sequential(nn.Flatten(), nn.Linear(int(math.prod(act_shape)),
                                                                  4 * width), nn.LeakyReLU(0.2))
        with torch.no_grad():
            n = int(self.features(torch.zeros(2, *act_shape)).shape[1])
        self.score = nn.Linear(n, 1)

    def forward(self, a: Tensor) -> Tensor:
        return self.score(self.features(a)).squeeze(1)


def wgan_gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor,
                          fake: Tensor) -> Tensor:
    """WGAN-GP's penalty ``mean((||grad D(a_hat)||_2 - 1)^2)`` on random interpolates.

    Args:
        critic: the critic.
        real: ``(B, ...)`` features of one distribution.
        fake: ``(B, ...)`` features of the other (same shape).

    Returns:
        The penalty (a scalar with a graph to the critic's weights).

    Example:
        >>> lin = nn.Linear(3, 1)
        >>> penalty = wgan_gradient_penalty(lambda a: lin(a).squeeze(1), torch.rand(4, 3),
        ...                                 torch.rand(4, 3))
        >>> penalty.dim(), float(penalty.detach()) >= 0
        (0, True)
    """
    eps = torch.rand(real.shape[0], *([1] * (real.dim() - 1)))
    mixed = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


class PairedBatches:
    """``steps`` pairs ``(private batch, auxiliary batch)`` for :func:`fit_epochs`.

    Each side walks its own random permutations (drawn from torch's global generator, so
    under :func:`fit_epochs` they follow its seed) and starts a new one when exhausted.

    Args:
        private: the client's images ``(N, C, H, W)``.
        auxiliary: the server's images ``(M, C, H, W)``.
        steps: pairs per pass.
        batch_size: images per side and step.

    Example:
        >>> pairs = PairedBatches(torch.rand(5, 1, 2, 2), torch.rand(7, 1, 2, 2), steps=3,
        ...                       batch_size=4)
        >>> len(pairs), [tuple(a.shape[:1]) + tuple(b.shape[:1]) for a, b in pairs]
        (3, [(4, 4), (4, 4), (4, 4)])
    """

    def __init__(self, private: Tensor, auxiliary: Tensor, *, steps: int,
                 batch_size: int) -> None:
        self.private, self.auxiliary = private, auxiliary
        self.steps, self.batch_size = steps, batch_size

    def __len__(self) -> int:
        return self.steps

    @staticmethod
    def _stream(n: int, size: int) -> Iterator[Tensor]:
        order, at = torch.randperm(n), 0
        while True:
            if at + size > n:
                order, at = torch.randperm(n), 0
            yield order[at:at + size]
            at += size

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        mine = self._stream(int(self.private.shape[0]), self.batch_size)
        theirs = self._stream(int(self.auxiliary.shape[0]), self.batch_size)
        for _ in range(self.steps):
            yield self.private[next(mine)], self.auxiliary[next(theirs)]


# ----------------------------------------------------------------- the attack


class FeatureSpaceHijackingConfig(BaseModel):
    """Options of :class:`FeatureSpaceHijacking` (see its Args).

    Attributes:
        client_lr: the client's Adam step size during the hijacked steps.
        attacker_lr: Adam step size of the server's encoder and decoder.
        discriminator_lr: Adam step size of the server's critic.
        gradient_penalty: WGAN-GP weight of the critic's gradient penalty (>= 0).
        client_steps: hijacked client steps; None: the budget's (:data:`CLIENT_STEPS`).
        pretrain_epochs: autoencoder pre-training epochs; None: the budget's.
        batch_size: images per step, on each side.
        width: hidden channels of the encoder and decoder.
        discriminator_width: channels of the critic's first convolution.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    client_lr: float = Field(default=1e-3, gt=0.0, allow_inf_nan=False)
    attacker_lr: float = Field(default=1e-3, gt=0.0, allow_inf_nan=False)
    discriminator_lr: float = Field(default=1e-3, gt=0.0, allow_inf_nan=False)
    gradient_penalty: float = Field(default=10.0, ge=0.0, allow_inf_nan=False)
    client_steps: int | None = Field(default=None, ge=1)
    pretrain_epochs: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=64, ge=2)
    width: int = Field(default=32, ge=1)
    discriminator_width: int = Field(default=32, ge=1)


def client_activations(client: nn.Module, images: Tensor) -> Tensor:
    """What ``client`` sends for ``images`` (the activations crossing the cut).

    Raises:
        UnsupportedModelError: a client whose output carries no activations.
    """
    probe = observe_activations(client, images).activations
    if probe is None:
        raise UnsupportedModelError.build(
            what="client", expected="a client part whose output crosses the cut",
            received=type(client).__name__, fix="pass split_model(model, cut).head")
    return probe


class FeatureSpaceHijacking(Attack):
    """FSHA (Pasquini et al., CCS 2021): a malicious split server hijacks the client's
    feature space, then inverts it with its own decoder.

    Args:
        seed: seeds the attacker's networks, the batches and the critic's interpolates.
        client_lr: the client's Adam step size during the hijacked steps (the client's
            own optimiser: a setting of the simulated victim, not of the attacker).
        attacker_lr: Adam step size of the encoder ``f~`` and decoder ``f~^-1``.
        discriminator_lr: Adam step size of the critic ``D``.
        gradient_penalty: WGAN-GP weight (Gulrajani et al. 2017's 10 by default; the
            paper's code uses 500 on its larger networks).
        client_steps: hijacked client steps; None takes the budget's
            (:data:`CLIENT_STEPS`: 300 quick, 1000 standard, 3000 thorough).
        pretrain_epochs: epochs of the autoencoder's pre-training on the auxiliary
            images; None takes the budget's (:data:`PRETRAIN_EPOCHS`).
        batch_size: images per step on each side (the client's private batch and the
            server's auxiliary batch).
        width: hidden channels of ``f~`` and ``f~^-1``.
        discriminator_width: channels of the critic's first convolution.
        progress: show progress bars.

    Threat model: ``malicious_split``; the server is malicious (it replies with gradients
    of its own choosing) and holds auxiliary images from the victims' distribution. It
    never sees the private images, only the activations the client sends. It needs the
    client part (``context.model``) in :meth:`prepare` only for the shape (and sign) of
    what crosses the cut, which a split server reads off the first batch it receives.

    ``quick_default`` is False: hundreds of hijacked steps are too slow for the quick
    audit budget. The observation must come from :meth:`hijack`'s client (see the
    module's docstring for the auditor's recipe).
    """

    name: ClassVar[str] = "fsha"
    threat_model: ClassVar[ThreatModel] = "malicious_split"
    observes: ClassVar[ObservationKind] = "activations"
    server: ClassVar[Server] = "malicious"
    assumes: ClassVar[frozenset[Assumption]] = frozenset({"auxiliary_data"})
    quick_default: ClassVar[bool] = False
    #: The fewest auxiliary images the attacker trains on.
    min_auxiliary = 16

    Config = FeatureSpaceHijackingConfig
    config: FeatureSpaceHijackingConfig
    client_lr: float
    attacker_lr: float
    discriminator_lr: float
    gradient_penalty: float
    client_steps: int | None
    pretrain_epochs: int | None
    batch_size: int
    width: int
    discriminator_width: int

    def __init__(self, *, seed: int = 0, progress: bool = True, **options: Any) -> None:
        super().__init__(seed=seed, progress=progress, **options)
        self.encoder: nn.Module | None = None
        self.decoder: nn.Module | None = None
        self.critic: Critic | None = None
        self.act_shape: tuple[int, ...] | None = None
        self.opt_attacker: torch.optim.Optimizer | None = None
        self.opt_critic: torch.optim.Optimizer | None = None
        self.pretrain_losses: list[float] = []
        #: the client part the last :meth:`hijack` returned, and its steps
        self.hijacked: nn.Module | None = None
        self.hijacked_steps = 0
        self.client_optimizer_state: dict[str, Any] | None = None
        #: per hijack: the mean (client loss, critic loss, autoencoder MSE) of its steps
        self.hijack_losses: list[tuple[float, float, float]] = []
        self.steps_run = 0

    # ------------------------------------------------------------------ prepare
    def prepare(self, context: AttackContext) -> None:
        """Build ``f~``, ``f~^-1`` and ``D`` and pre-train the autoencoder on the auxiliary data.

        Args:
            context: needs ``auxiliary_images`` (at least :attr:`min_auxiliary`) and the
                client part ``model`` (or ``defense``), run once (in eval mode, unchanged)
                on 16 auxiliary images for the shape and sign of its activations.

        Raises:
            ConfigError: no auxiliary data, no client, or a bad budget.
            EmptyDataError: too few auxiliary images.
            InputShapeError: auxiliary images of the wrong shape.
        """
        context = check_context(context)
        if context.auxiliary_images is None:
            raise ConfigError.build(
                what="context.auxiliary_images",
                expected=f"auxiliary data for {self.name} (it trains its own encoder, decoder "
                "and critic on images from the victims' distribution)",
                received="no auxiliary images",
                fix="pass AttackContext(auxiliary_images=...) with images disjoint from the "
                "victims'",
            )
        images = check_auxiliary(context, self.min_auxiliary, self.name)
        client = context.model if context.model is not None else context.defense
        if not isinstance(client, nn.Module):
            raise ConfigError.build(
                what="context.model",
                expected=f"the client part whose cut {self.name} hijacks "
                "(split_model(model, cut).head)",
                received=type(client).__name__, fix="pass AttackContext(model=head)",
            )
        probe = client_activations(client, images[:16])
        act_shape = tuple(int(s) for s in probe.shape[1:])
        with seeded(self.seed):
            encoder = build_encoder(context.image_shape, act_shape, width=self.width,
                                    non_negative=bool(probe.min() >= 0))
            decoder = build_decoder(act_shape, context.image_shape, width=self.width)
            critic = Critic(act_shape, self.discriminator_width)
        autoencoder = nn.Sequential(encoder, decoder)
        opt = torch.optim.Adam(autoencoder.parameters(), lr=self.attacker_lr)
        epochs = self.pretrain_epochs or PRETRAIN_EPOCHS[context.budget]
        sums = {"loss": 0.0, "seen": 0.0}

        def step(x: Tensor, target: Tensor) -> int:
            loss = F.mse_loss(autoencoder(x), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums["loss"] += float(loss.detach()) * len(x)
            sums["seen"] += len(x)
            return len(x)

        def end_epoch(epoch: int, seconds: float) -> float:
            mean = sums["loss"] / sums["seen"]
            sums.update(loss=0.0, seen=0.0)
            return mean

        losses, _ = fit_epochs(
            autoencoder, tensor_batches(images, images, batch_size=self.batch_size),
            epochs=epochs, step=step, end_epoch=end_epoch, score=lambda r: None,
            seed=self.seed, description=f"{self.name}: autoencoder", progress=self.progress,
            progress_unit="epoch",
        )
        self.context = context
        self.encoder, self.decoder, self.critic = encoder, decoder, critic
        self.opt_attacker = opt
        self.opt_critic = torch.optim.Adam(critic.parameters(), lr=self.discriminator_lr)
        self.act_shape = act_shape
        self.pretrain_losses = losses
        self.hijack_losses = []
        self.steps_run = 0
        self.hijacked, self.hijacked_steps, self.client_optimizer_state = None, 0, None

    # ------------------------------------------------------------------ the protocol
    def modify(self, model: nn.Module, images: Tensor | None = None) -> nn.Module:
        """The hijacked client part: :meth:`hijack` on the client's private ``images``
        (the one hook through which the auditor asks a malicious server for the client it
        observes, :meth:`~shieldsplit.attacks.base.Attack.modify`).

        Raises:
            ConfigError: without ``images`` (FSHA steers the client's training on them).
        """
        if images is None:
            raise ConfigError.build(
                what="images", expected="the client's private training images (FSHA steers "
                "the client's training on them)", received=None,
                fix="pass images=, the client's training batch")
        return self.hijack(model, images)

    def hijack(self, client: nn.Module, private_images: Tensor, *,
               steps: int | None = None) -> nn.Module:
        """Run the malicious protocol on a copy of ``client`` and return the hijacked copy.

        Each step the client computes ``a = f(x)`` on a batch of ``private_images`` and
        sends it; the server replies with ``d mean(D(a)) / d a`` (the critic's gradient,
        in place of the task's) and the client backpropagates that reply through its part
        and steps its Adam (``client_lr``). The server also takes one step of its
        autoencoder on an auxiliary batch and one WGAN-GP step of its critic
        (``f~(X_pub)`` as "real", the received ``a`` as "fake"). The server's networks
        keep their state across calls. Passing the client that the last call returned
        continues the protocol (the client's optimiser state carries over and
        ``meta["client_steps"]`` counts every step since the first call); any other
        client starts a new hijack with a new optimiser, from the server's current
        networks.

        Args:
            client: the client part (``split_model(model, cut).head``); not modified.
            private_images: ``(N, C, H, W)`` in [0, 1], the images the client trains on
                (N >= 2). The server never reads them; only the client's copy does.
            steps: hijacked client steps; None takes ``client_steps`` or the budget's.

        Returns:
            The hijacked client part (a new module, in eval mode, its weights frozen).

        Raises:
            StateError: before :meth:`prepare`.
            UnsupportedModelError: ``client`` is not a module returning one tensor.
            InputShapeError: images of another shape than the context's, or a client
                whose activations differ in shape from those :meth:`prepare` saw.
            EmptyDataError: fewer than two private images.
            ConfigError: ``steps`` below 1.
        """
        decoder = require_prepared(self.decoder, self.name)
        encoder, critic = self.encoder, self.critic
        opt_attacker, opt_critic = self.opt_attacker, self.opt_critic
        if (encoder is None or critic is None or self.context is None or opt_attacker is None
                or opt_critic is None):  # all set by prepare, with the decoder
            raise StateError.build(what=self.name, expected="a prepared attack",
                                   received="an unprepared one", fix="call prepare() first")
        check_images(private_images, "private_images")
        if tuple(private_images.shape[1:]) != tuple(self.context.image_shape):
            raise InputShapeError.build(
                what="private_images",
                expected=f"images of shape (N, {', '.join(map(str, self.context.image_shape))})",
                received=tuple(private_images.shape),
                fix="pass the client's training images, of the shape prepare() saw",
            )
        if private_images.shape[0] < 2:
            raise EmptyDataError.build(
                what="private_images", expected="at least 2 images (a batch norm needs two)",
                received=f"{private_images.shape[0]} image(s)",
                fix="pass the client's training set",
            )
        total = steps if steps is not None else (self.client_steps
                                                 or CLIENT_STEPS[self.context.budget])
        if isinstance(total, bool) or not isinstance(total, int) or total < 1:
            raise ConfigError.build(what="steps", expected="an int >= 1 or None",
                                    received=repr(steps), fix="pass steps=100")
        probe = client_activations(client, private_images[:2])
        if tuple(probe.shape[1:]) != self.act_shape:
            raise InputShapeError.build(
                what="client", expected=f"activations of per-sample shape {self.act_shape}, "
                "as in prepare()", received=tuple(probe.shape[1:]),
                fix="hijack the client part (and cut) the attack was prepared on",
            )
        resumed = client is self.hijacked and self.client_optimizer_state is not None
        victim = copy.deepcopy(client)
        victim.requires_grad_(True)
        opt_client = torch.optim.Adam(victim.parameters(), lr=self.client_lr)
        if resumed and self.client_optimizer_state is not None:  # the protocol goes on
            opt_client.load_state_dict(self.client_optimizer_state)
        aux = self.context.auxiliary_images
        if aux is None:  # prepare() refused a context without it; a changed context
            raise ConfigError.build(what=self.name, expected="auxiliary data",
                                    received=None, fix="pass AttackContext(auxiliary_images=)")
        batch = min(self.batch_size, int(private_images.shape[0]), int(aux.shape[0]))
        pairs = PairedBatches(private_images.float(), aux.float(), steps=total,
                              batch_size=batch)
        sums = {"client": 0.0, "critic": 0.0, "rec": 0.0, "n": 0.0}

        def step(x_private: Tensor, x_public: Tensor) -> int:
            # the client: forward its private batch and send the activations
            sent = victim(x_private)
            received = sent.detach().requires_grad_(True)  # what crosses the wire
            # the server: its reply is the critic's gradient, not the task's
            client_loss = critic(received).mean()
            (reply,) = torch.autograd.grad(client_loss, received)
            # the server trains its autoencoder and its critic on its own images
            features = encoder(x_public)
            rec_loss = F.mse_loss(decoder(features), x_public)
            opt_attacker.zero_grad(set_to_none=True)
            rec_loss.backward()
            opt_attacker.step()
            public = features.detach()
            critic_loss = critic(public).mean() - critic(received.detach()).mean()
            if self.gradient_penalty > 0:
                critic_loss = critic_loss + self.gradient_penalty * wgan_gradient_penalty(
                    critic, public, received)
            opt_critic.zero_grad(set_to_none=True)
            critic_loss.backward()
            opt_critic.step()
            # the client, following the protocol, backpropagates the reply
            opt_client.zero_grad(set_to_none=True)
            sent.backward(reply)
            opt_client.step()
            sums["client"] += float(client_loss.detach())
            sums["critic"] += float(critic_loss.detach())
            sums["rec"] += float(rec_loss.detach())
            sums["n"] += 1
            return int(x_private.shape[0])

        def end_epoch(epoch: int, seconds: float) -> tuple[float, float, float]:
            n = max(sums["n"], 1.0)
            return (sums["client"] / n, sums["critic"] / n, sums["rec"] / n)

        records, _ = fit_epochs(
            nn.ModuleList([victim, encoder, decoder, critic]), pairs, epochs=1, step=step,
            end_epoch=end_epoch, score=lambda r: None, seed=self.seed + self.steps_run,
            description=f"{self.name}: hijacked client steps", progress=self.progress,
        )  # leaves every network in eval mode
        victim.requires_grad_(False)
        self.hijack_losses.extend(records)
        self.steps_run += total
        self.hijacked_steps = total + (self.hijacked_steps if resumed else 0)
        self.hijacked = victim
        self.client_optimizer_state = copy.deepcopy(opt_client.state_dict())
        return victim

    # ------------------------------------------------------------------ reconstruct
    def reconstruct(self, observation: Observation) -> Reconstruction:
        """Decode activations of the hijacked client with the server's decoder ``f~^-1``.

        Args:
            observation: an ``"activations"`` observation of the client :meth:`hijack`
                returned (``observe_activations(hijacked, victims)``).

        Returns:
            Images in [0, 1]; ``meta`` has the hijacked ``client_steps``, the last
            hijack's mean client, critic and autoencoder losses (``train_loss`` is the
            autoencoder's MSE on the auxiliary images) and ``pretrain_loss``.

        Raises:
            StateError: before :meth:`prepare`, or before :meth:`hijack` (the honest
                client's activations are not in ``f~``'s feature space).
            ConfigError: for another observation kind.
            InputShapeError: activations of another shape than in prepare.
        """
        decoder = require_prepared(self.decoder, self.name)
        if self.hijacked is None:
            raise StateError.build(
                what=self.name,
                expected="activations of the client that hijack() returned (FSHA decodes "
                "the feature space it steered the client into)",
                received="no hijacked client yet",
                fix="call hijacked = attack.hijack(client, private_images), then "
                "attack.reconstruct(observe_activations(hijacked, victims))",
            )
        start = time.perf_counter()
        a = check_activation_observation(observation, self.name, self.act_shape)
        images = decode(decoder, a)
        client_loss, critic_loss, rec_loss = self.hijack_losses[-1]
        return Reconstruction(
            images=images, attack=self.name, seconds=time.perf_counter() - start,
            meta={"client_steps": self.hijacked_steps, "client_loss": client_loss,
                  "critic_loss": critic_loss, "train_loss": rec_loss,
                  "pretrain_loss": self.pretrain_losses[-1] if self.pretrain_losses
                  else None},
        )


register_attack(FeatureSpaceHijacking.name, FeatureSpaceHijacking)

__all__ = [
    "CLIENT_STEPS",
    "PRETRAIN_EPOCHS",
    "Critic",
    "FeatureSpaceHijacking",
    "FeatureSpaceHijackingConfig",
    "PairedBatches",
    "build_encoder",
    "client_activations",
    "wgan_gradient_penalty",
]
