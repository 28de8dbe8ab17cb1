"""The latent perturbation defence: :class:`LatentPerturb`, its minimax training
(eqs. 2-3) and Algorithm 1 (:meth:`LatentPerturb.pretrain_noise`), registered as
``"latent-fixed"`` and ``"latent-learned"``.

Example:
    >>> from shieldsplit.defenses.base import create_defense
    >>> from shieldsplit.models import PGSLNet
    >>> net = PGSLNet(num_classes=2, image_size=8, width=8, hidden=8)
    >>> create_defense("latent-fixed", net, cut=2, decoder_width=4).strength
    'std'
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shieldsplit._core.validate import check_int, check_loader, check_seed
from shieldsplit.datacontract import as_loader
from shieldsplit.defenses.base import Surface, register_defense
from shieldsplit.defenses.latent.config import (
    LATENT_KNOBS,
    LatentConfig,
    LatentEpoch,
    LatentHistory,
    NoiseKind,
)
from shieldsplit.defenses.latent.model import LatentModel
from shieldsplit.errors import ConfigError, StateError
from shieldsplit.functional.image import pearson_correlation
from shieldsplit.training import (
    TrainConfig,
    accuracy,
    fit_epochs,
    make_optimizer,
    restored_on_error,
)


class LatentPerturb(LatentModel):
    """A classifier whose client perturbs its latent with (learned) Gaussian noise.

    The client runs the encoder and adds the noise (:class:`LatentNoise`); the
    perturbed latent ``z'`` is what crosses the network in split learning and what the
    predictor classifies. A decoder (:class:`LatentDecoder`, built automatically from
    the encoder's output shape and the image shape) stays on the client and plays the
    attacker in the minimax game of :meth:`fit`. In federated learning the shared model
    is the encoder, the noise and the predictor (:meth:`federated_model`), not the
    decoder.

    Choices where the paper is silent (see ``shared/papers/README.md``):

    - ``mean`` defaults to 0: a constant shift of the latent is a bias that the
      predictor and any attacker absorb, so the fixed variant's protection comes from
      ``std`` (the paper's 0.1); the paper's list of means did not survive.
    - ``lam`` (``alpha`` of eq. 3) defaults to 1, which weighs the correlation (in
      ``[-1, 1]``) like the cross-entropy of a few-class problem. As in eq. 3 the
      encoder minimises ``r`` itself, not ``|r|``; the decoder's own step can always
      flip the sign, so the game settles near ``r = 0``.
    - The noise is drawn on every forward, in eval mode too, so that an eavesdropper
      never sees a noise-free latent; predictions are therefore random (seed them with
      ``torch.manual_seed``).
    - The image shape is read off the first batch (of :meth:`fit`,
      :meth:`pretrain_noise`, :meth:`client` or ``forward``) unless ``input_shape`` is
      given; the decoder and the learned noise are built then, with ``seed``.
    - Both optimisers are the library's Adam with its per-step decay
      (:func:`~shieldsplit.training.make_optimizer`); the learned noise's ``m`` and
      ``s`` form a parameter group of their own at ``noise_lr`` (default ``10 * lr``),
      since at the encoder's rate they barely move in a few dozen steps.
    - Built directly from an encoder and a head, :attr:`cut` is ``"encoder"``;
      :meth:`~shieldsplit.defenses.base.Defense.load` needs a defence built with
      :meth:`from_model` (or the registry), which records the real cut.

    The registry has two names: ``"latent-fixed"`` and ``"latent-learned"``. The class's
    :attr:`name` is ``"latent"``; an instance reports its registry name (so that
    :meth:`~shieldsplit.defenses.base.Defense.save` and ``load`` rebuild the right variant)
    and its :attr:`strength`: ``"std"`` for the fixed noise, ``"lam"`` for the learned
    one (whose scale is learned, so a sweep varies the weight of the privacy term).

    Args:
        encoder: the client network ``x -> z`` (deep-copied, never modified).
        head: the predictor ``z' -> logits`` (the server part in split learning;
            deep-copied, never modified).
        noise: ``"fixed"`` or ``"learned"``.
        mean: the fixed noise's mean (default 0, see above).
        std: the fixed noise's standard deviation (> 0; the paper: 0.1).
        init_mean: initial per-element mean of the learned noise (the paper: 1).
        init_std: initial per-element std of the learned noise (the paper: 0.1).
        lam: the weight of the correlation term (>= 0; 0 leaves only the noise).
        lr: Adam's learning rate for the encoder and predictor.
        decoder_lr: Adam's learning rate for the decoder (None: ``lr``).
        noise_lr: Adam's learning rate for the learned noise's ``m`` and ``s``, a
            separate parameter group of the encoder/predictor optimiser (None:
            ``10 * lr``: at the encoder's rate the noise barely moves in a few dozen
            steps; unused by the fixed noise).
        decoder_width: channels of the decoder's hidden layers (the paper: 256; the
            default 64 keeps it cheap on a CPU).
        input_shape: ``(C, H, W)`` of the images; None reads it off the first batch.
        seed: seeds the layers the defence adds (decoder, re-initialisation).

    Raises:
        ConfigError: for an option out of range or an unknown noise kind (naming it).
        UnsupportedModelError: if ``encoder`` or ``head`` is not a module, or the head
            cannot take the encoder's output (checked now when ``input_shape`` is
            given, else at the first batch).

    Reference:
        Jiang et al., "Defending Against Gradient Inversion Attacks for Biomedical
        Images via Learnable Data Perturbation", 2025.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> enc = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        >>> head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 2))
        >>> lp = LatentPerturb(enc, head=head, noise="learned", input_shape=(1, 8, 8),
        ...                    decoder_width=8, seed=0)
        >>> tuple(lp.noise.mean.shape), lp.name, lp.strength
        ((4, 8, 8), 'latent-learned', 'lam')
        >>> tuple(lp(torch.rand(3, 1, 8, 8)).shape)
        (3, 2)
    """

    name: ClassVar[str] = "latent"
    surfaces: ClassVar[frozenset[Surface]] = frozenset({"split", "federated"})

    # --------------------------------------------------------------- training
    def fit(
        self,
        train_loader: Iterable[tuple[Tensor, Tensor]],
        *,
        epochs: int = 5,
        val_loader: Iterable[tuple[Tensor, Tensor]] | None = None,
        seed: int = 0,
        progress: bool = True,
        restore_best: bool = False,
    ) -> LatentHistory:
        """Minimax training (eqs. 2-3), in place.

        Each step: (1) the decoder is updated to maximise the mean Pearson correlation
        between the images and its reconstructions from the detached perturbed latents
        (loss ``-r``); (2) the encoder, the predictor and, for the learned noise that is
        not frozen, ``m`` and ``s`` are updated to minimise ``CE + lam * r`` through the
        updated decoder.

        Args:
            train_loader: labelled images in any form of docs/data.md.
            epochs: passes over the data.
            val_loader: optional; its accuracy (noisy latents) is recorded.
            seed: seeds the noise, dropout and the loader's shuffling (when it uses the
                global generator); the same seed on the same data gives the same history.
            progress: show a progress bar.
            restore_best: with a ``val_loader``, end with the weights of the epoch of best
                validation accuracy (selection on validation data only).

        Returns:
            The per-epoch history.

        Raises:
            ConfigError: if ``epochs < 1``.
            EmptyDataError: if a loader yields no batch.
            InputShapeError, NonFiniteInputError, LabelError, UnsupportedModelError: on a
                bad batch; the weights are restored to what they were before the call.
        """
        return self._guarded(train_loader, epochs, val_loader, seed, progress, restore_best,
                             "fit")

    def train_protocol(
        self,
        train_loader: Iterable[tuple[Tensor, Tensor]],
        *,
        epochs: int = 5,
        val_loader: Iterable[tuple[Tensor, Tensor]] | None = None,
        seed: int = 0,
        progress: bool = True,
    ) -> LatentHistory:
        """The paper's whole protocol: for learned noise Algorithm 1 (:meth:`pretrain_noise`
        for ``epochs``, then :meth:`fit` from re-initialised weights with the noise
        frozen); for fixed noise just :meth:`fit`.

        Args:
            train_loader: labelled images in any form of docs/data.md.
            epochs: epochs of each phase.
            val_loader: optional validation loader (for :meth:`fit`).
            seed: seeds both phases.
            progress: show progress bars.

        Returns:
            The history of the final :meth:`fit`.
        """
        if self.config.noise == "learned" and not self.frozen:
            self.pretrain_noise(train_loader, epochs=epochs, seed=seed, progress=progress)
        return self.fit(train_loader, epochs=epochs, val_loader=val_loader, seed=seed,
                        progress=progress)

    def pretrain_noise(
        self,
        train_loader: Iterable[tuple[Tensor, Tensor]],
        *,
        epochs: int = 5,
        seed: int = 0,
        progress: bool = True,
    ) -> LatentHistory:
        """Algorithm 1, steps 1-2: learn the noise, then re-initialise the model weights.

        Runs the minimax training of :meth:`fit` with the noise parameters trainable,
        then re-initialises the encoder, predictor and decoder at random (seeded with
        ``seed``) and freezes ``m`` and ``s`` (recorded in the state dict, so
        save/load keeps them frozen). Step 3 is a later :meth:`fit`.

        Args:
            train_loader: labelled images in any form of docs/data.md.
            epochs: passes over the data.
            seed: seeds the run and the re-initialisation.
            progress: show a progress bar.

        Returns:
            The history of the pre-training.

        Raises:
            ConfigError: for the fixed noise, which has nothing to learn.
            StateError: if the noise is already pre-trained and frozen.
            EmptyDataError, InputShapeError, NonFiniteInputError, LabelError: as
                :meth:`fit` (nothing changes then).
        """
        if self.config.noise != "learned":
            raise ConfigError.build(
                what="noise", expected="noise='learned' to pre-train the noise",
                received="noise='fixed'",
                fix="the fixed noise has no parameters to learn: call fit directly, or "
                "build LatentPerturb(..., noise='learned')",
            )
        if self.frozen:
            raise StateError.build(
                what="pretrain_noise", expected="noise parameters that are not frozen yet",
                received="noise already pre-trained and frozen",
                fix="call fit to train the model with the learned noise",
            )
        history = self._guarded(train_loader, epochs, None, seed, progress, False, "pretrain")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for part in (self.encoder, self.predictor, self.decoder):
                if part is not None:
                    _reinitialise(part)
        self.noise_frozen.fill_(True)
        self._apply_freeze()
        return history

    def _guarded(
        self,
        train_loader: Iterable[tuple[Tensor, Tensor]],
        epochs: int,
        val_loader: Iterable[tuple[Tensor, Tensor]] | None,
        seed: int,
        progress: bool,
        restore_best: bool,
        phase: Literal["pretrain", "fit"],
    ) -> LatentHistory:
        epochs = check_int("epochs", epochs, low=1, fix="pass epochs=1 or more")
        seed = check_seed(seed)
        check_loader(train_loader, "train_loader")
        # the data contract of docs/data.md; no probe here: the first batch builds the
        # decoder and noise (inside the guard below), and _prepare checks its shape
        train_loader = as_loader(train_loader, seed=seed, num_classes=self.num_classes)
        if val_loader is not None:
            check_loader(val_loader, "val_loader")
            val_loader = as_loader(val_loader, seed=seed, shuffle=False,
                                   num_classes=self.num_classes, what="val_loader")
        was_built = self.built

        def unbuild() -> None:  # a first batch that failed leaves the defence lazy again
            if not was_built and self.built:
                self._unbuild()

        with restored_on_error(self, undo=unbuild):
            return self._run(train_loader, epochs, val_loader, seed, progress, restore_best,
                             phase)

    def _optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer, list[Any]]:
        noise, decoder = self._modules_built()
        cfg = self.config
        main = [p for p in (*self.encoder.parameters(), *self.predictor.parameters())
                if p.requires_grad]
        # parameter groups (torch's optimisers take them where they take parameters)
        groups: list[Any] = [{"params": main}]
        if cfg.noise == "learned" and not self.frozen:
            # a group of its own: at the encoder's rate m and s barely move
            groups.append({"params": [p for p in noise.parameters() if p.requires_grad],
                           "lr": self.noise_lr})
        # make_optimizer's Adam and Keras-style decay, applied to every group
        main_opt, main_sched = make_optimizer(groups, TrainConfig(lr=cfg.lr))
        dec_opt, dec_sched = make_optimizer(decoder.parameters(),
                                            TrainConfig(lr=cfg.decoder_lr or cfg.lr))
        return main_opt, dec_opt, [main_sched, dec_sched]

    def _run(
        self,
        train_loader: Iterable[tuple[Tensor, Tensor]],
        epochs: int,
        val_loader: Iterable[tuple[Tensor, Tensor]] | None,
        seed: int,
        progress: bool,
        restore_best: bool,
        phase: Literal["pretrain", "fit"],
    ) -> LatentHistory:
        lam = self.config.lam
        optimizers: list[tuple[torch.optim.Optimizer, torch.optim.Optimizer, list[Any]]] = []
        sums = {"loss": 0.0, "ce": 0.0, "r": 0.0, "correct": 0.0, "seen": 0.0}

        def step(x_raw: Tensor, y_raw: Tensor) -> int:
            x, y = self._prepare(x_raw, y_raw)
            if y is None:  # _prepare returns the labels it was given
                raise StateError.build(what="y", expected="labels", received=None,
                                       fix="report this bug")
            if not optimizers:  # the first batch built the decoder and the noise
                optimizers.append(self._optimizers())
            main_opt, dec_opt, scheds = optimizers[0]
            noise, decoder = self._modules_built()
            self.train()
            z = noise(self.encoder(x))
            # (1) the decoder maximises r(x, decoder(z')) on the detached latent
            dec_opt.zero_grad(set_to_none=True)
            (-pearson_correlation(x, decoder(z.detach())).mean()).backward()
            dec_opt.step()
            # (2) encoder, predictor (and noise) minimise CE + lam * r
            main_opt.zero_grad(set_to_none=True)
            logits = self.predictor(z)
            ce = F.cross_entropy(logits, y)
            r = pearson_correlation(x, decoder(z)).mean()
            loss = ce + lam * r
            loss.backward()
            main_opt.step()
            for sched in scheds:
                sched.step()
            n = int(y.shape[0])
            sums["seen"] += n
            sums["loss"] += float(loss.detach()) * n
            sums["ce"] += float(ce.detach()) * n
            sums["r"] += float(r.detach()) * n
            sums["correct"] += int((logits.detach().argmax(-1) == y).sum())
            return n

        def end_epoch(epoch: int, seconds: float) -> LatentEpoch:
            noise, _ = self._modules_built()
            n = sums["seen"]
            record = LatentEpoch(
                epoch=epoch, train_loss=sums["loss"] / n, train_cross_entropy=sums["ce"] / n,
                train_correlation=sums["r"] / n, train_accuracy=sums["correct"] / n,
                val_accuracy=accuracy(self, val_loader) if val_loader is not None else None,
                noise_mean=float(noise.mean.detach().float().mean()),
                noise_std=float(noise.std.detach().float().mean()),
                seconds=seconds,
            )
            sums.update(loss=0.0, ce=0.0, r=0.0, correct=0.0, seen=0.0)
            return record

        records, kept = fit_epochs(
            self, train_loader, epochs=epochs, step=step, end_epoch=end_epoch,
            score=lambda r: r.val_accuracy, seed=seed, description=f"latent {phase}",
            progress=progress, restore_best=restore_best,
        )
        return LatentHistory(seed=seed, phase=phase, noise=self.config.noise,
                             noise_frozen=self.frozen, epochs=records, best_epoch=kept)


def _reinitialise(module: nn.Module) -> None:
    """Reset every submodule that can reset itself (weights and BatchNorm statistics)."""
    for m in module.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()


def _factory(kind: NoiseKind) -> Any:
    def build(model: nn.Module, *, cut: int | str = 2, seed: int = 0,
              **options: Any) -> LatentPerturb:
        given = options.pop("noise", kind)
        if given != kind:
            raise ConfigError.build(
                what="noise", expected=f"noise={kind!r} for 'latent-{kind}'",
                received=repr(given), fix=f"drop noise= or use 'latent-{given}'",
            )
        return LatentPerturb.from_model(model, cut=cut, seed=seed, noise=kind, **options)

    build.Config = LatentConfig  # type: ignore[attr-defined]
    build.knob = LATENT_KNOBS[kind]  # type: ignore[attr-defined]
    build.__name__ = build.__qualname__ = f"latent_{kind}"
    build.__doc__ = f"Build a LatentPerturb with {kind} noise (the 'latent-{kind}' factory)."
    return build


register_defense("latent-fixed", _factory("fixed"))
register_defense("latent-learned", _factory("learned"))


__all__ = ["LatentPerturb"]
