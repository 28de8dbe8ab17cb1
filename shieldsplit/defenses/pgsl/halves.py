"""PGSL's defended inference path, written once: the client's steps and the server's streams.

:class:`ClientSteps` is everything before the network (Khowaja et al. 2022, Sec. IV-A/B):
(a) the saliency map through the client's layers and its local probe, (b) the
intentional pixel attack, (c) pixel-unshuffle with the map as one more channel, then
the client's layers. :class:`ServerSteps` is everything after it (Sec. IV-C to IV-E):
up-sampling, (d) proximal-gradient recovery, (e) conv-sum fusion, the three streams'
server layers and (g) the decision fusion of eq. 9.

:class:`~shieldsplit.SplitShield` runs these two modules on its own layers (it builds
them around its live submodules on each call, so they always share its weights, device
and mode); :meth:`~shieldsplit.SplitShield.export` puts copies of the same two modules
into :class:`~shieldsplit.defenses.pgsl.exported.ExportedShield`, which
:func:`torch.jit.script` compiles. There is no second implementation to keep in step.

The saliency gradient is taken with :func:`torch.autograd.grad` (TorchScript cannot
run Captum); it equals Captum's ``Saliency`` / ``InputXGradient`` attribution
(:func:`~shieldsplit.defenses.pgsl.saliency.class_gradient`), which the tests check.

Each step is one method, so a test can switch exactly one step off by patching it
(``tests/pgsl_mutations.py`` does, in eager mode, to show every step is pinned by a
test of what it is for): :meth:`ClientSteps.saliency` (a), :meth:`ClientSteps.perturb`
(b), :meth:`ClientSteps.assemble` (c), :meth:`ClientSteps.probe_loss` (the probe the
saliency is taken through), :meth:`ServerSteps.recover` (d), :meth:`ServerSteps.fuse`
(e) and :meth:`ServerSteps.decide` (g); outside this module,
:meth:`~shieldsplit.defenses.pgsl.fitting.TrainableShield.calibrate` (eqs. 10-11) and
the singular-value and soft thresholds of :mod:`shieldsplit.functional.rpca` (the
nuclear-norm and L1 proximal steps inside (d)).

Example:
    >>> import torch
    >>> from torch import nn
    >>> head = nn.Sequential(nn.Conv2d(5, 4, 3, padding=1), nn.ReLU())
    >>> probe = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    >>> client = ClientSteps(head=head, probe=probe, factor=2, pad="replicate", concat=True,
    ...                      input_x_gradient=False, label_target=False, perturbs=True,
    ...                      pixel_budget=0.05, strength=1.0, clip=(0.0, 1.0))
    >>> x = torch.rand(2, 1, 8, 8)
    >>> images, heat = client.attack(x)
    >>> int((images != x).sum()) <= 2 * 3   # 5% of 64 pixels, rounded: 3 per image
    True
    >>> tuple(client(x).shape)
    (2, 4, 4, 4)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shieldsplit.defenses.pgsl.fusion import weighted_average
from shieldsplit.defenses.pgsl.perturb import budget_kernel, raise_top
from shieldsplit.defenses.pgsl.saliency import jsma_saliency, normalised_heat
from shieldsplit.defenses.pgsl.unshuffle import assemble


@contextlib.contextmanager
def frozen_buffers(module: nn.Module) -> Iterator[None]:
    """Restore every buffer of ``module`` (BatchNorm running statistics) on exit.

    Args:
        module: the module whose buffers a forward pass must not move.

    Example:
        >>> bn = nn.BatchNorm1d(2)
        >>> with frozen_buffers(bn):
        ...     _ = bn(torch.randn(4, 2) + 5)
        >>> bn.running_mean.tolist()
        [0.0, 0.0]
    """
    saved = {name: buf.clone() for name, buf in module.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, buf in module.named_buffers():
                buf.copy_(saved[name])


class ClientSteps(nn.Module):
    """PGSL's client: steps (a)-(c) and the client's layers, ``x -> activations``.

    Args:
        head: the client's layers (its first layer takes the assembled tensor).
        probe: the client's local classifier on the head's output, which the saliency
            is taken through; None with saliency off.
        factor: the unshuffle factor, 0 with unshuffle off.
        pad: unshuffle's padding mode.
        concat: append the saliency map as one channel.
        input_x_gradient: the attribution is input times gradient (else the gradient).
        label_target: take the map against the true label when one is given (eq. 1);
            else against the probe's prediction.
        perturbs: run the pixel attack (b).
        pixel_budget: the fraction of each image's elements the attack raises.
        strength: the attack's step.
        clip: the range the raised elements are clipped to, or None.
    """

    def __init__(
        self,
        *,
        head: nn.Module,
        probe: nn.Module | None,
        factor: int,
        pad: str,
        concat: bool,
        input_x_gradient: bool,
        label_target: bool,
        perturbs: bool,
        pixel_budget: float,
        strength: float,
        clip: tuple[float, float] | None,
    ) -> None:
        super().__init__()
        self.head = head
        self.probe = probe
        self.factor = factor
        self.pad = pad
        self.concat = concat
        self.input_x_gradient = input_x_gradient
        self.label_target = label_target
        self.perturbs = perturbs
        self.pixel_budget = pixel_budget
        self.strength = strength
        self.clip = clip

    def needs_grad(self) -> bool:
        """Whether a call takes an input gradient (the saliency map): with saliency on.

        Returns:
            True when the caller must keep autograd on (compiled: eager turns it on).
        """
        return self.probe is not None

    # ------------------------------------------------------------------ (c)
    def assemble(self, images: Tensor, heat: Tensor | None) -> Tensor:
        """Step (c): unshuffle the images and append the saliency channel.

        Args:
            images: ``(B, C, H, W)`` (attacked) images.
            heat: the one-channel map ``(B, 1, H, W)``, or None for zeros.

        Returns:
            The tensor the client's first layer takes.
        """
        return assemble(images, heat, self.factor, self.pad, self.concat)

    def features(self, images: Tensor, heat: Tensor | None) -> Tensor:
        """The client's layers on step (c)'s tensor: the activations at the cut.

        Args:
            images: ``(B, C, H, W)`` images.
            heat: the one-channel map, or None for zeros.

        Returns:
            The activations.
        """
        return self.head(self.assemble(images, heat))

    # ------------------------------------------------------------------ (a)
    def probe_logits(self, images: Tensor) -> Tensor:
        """The local probe on the client's layers, the map channel zeroed (the map does
        not exist yet when the probe is asked); it is trained on exactly this input.

        Args:
            images: ``(B, C, H, W)`` clean images.

        Returns:
            ``(B, classes)`` logits.
        """
        probe = self.probe
        if probe is None:
            raise RuntimeError("this client has no saliency probe (saliency is off)")
        return probe(self.features(images, None))

    def probe_loss(self, images: Tensor, labels: Tensor) -> Tensor:
        """The probe's training loss; the client's layers are not trained by it.

        Args:
            images: clean images.
            labels: their labels.

        Returns:
            The cross-entropy of :meth:`probe_logits`, with a graph to the probe only.
        """
        probe = self.probe
        if probe is None:
            raise RuntimeError("this client has no saliency probe (saliency is off)")
        with torch.no_grad():
            features = self.features(images, None)
        return F.cross_entropy(probe(features), labels)

    def gradient(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Eq. 1's derivative ``d f_y / d x`` of the probe's softmax, ``y`` the label
        (``label_target`` and a label given) or the probe's prediction; times ``x``
        with ``input_x_gradient``. Needs autograd on; in eager mode in training the
        client's buffers are kept as they were (the map is not a training forward).

        Args:
            x: ``(B, C, H, W)`` images.
            y: labels, or None.

        Returns:
            The attribution, shaped like ``x``, detached.
        """
        if torch.jit.is_scripting():
            return self._gradient(x, y)
        return self._eager_gradient(x, y)

    @torch.jit.unused
    def _eager_gradient(self, x: Tensor, y: Tensor | None) -> Tensor:
        keep = frozen_buffers(self.head) if self.training else contextlib.nullcontext()
        with torch.enable_grad(), keep:
            return self._gradient(x, y)

    def _gradient(self, x: Tensor, y: Tensor | None) -> Tensor:
        xg = x.detach().requires_grad_(True)
        proba = self.probe_logits(xg).softmax(dim=-1)
        target = proba.detach().argmax(dim=-1)
        if y is not None and self.label_target:
            target = y.to(target.device)
        picked = proba.gather(1, target.unsqueeze(1)).sum()
        grad = torch.autograd.grad([picked], [xg])[0]
        if grad is None:
            raise RuntimeError("the saliency gradient is missing")
        grad = grad.detach()
        if self.input_x_gradient:
            grad = grad * x.detach()
        return grad

    def saliency(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Step (a): eq. 1's JSMA scores and the normalised one-channel map.

        Args:
            x: ``(B, C, H, W)`` images.
            y: labels, or None.

        Returns:
            ``(scores, heat)``: non-negative scores shaped like ``x`` and the
            ``(B, 1, H, W)`` map in ``[0, 1]``.
        """
        scores = jsma_saliency(self.gradient(x, y))
        return scores, normalised_heat(scores)

    # ------------------------------------------------------------------ (b)
    def perturb(self, x: Tensor, scores: Tensor) -> Tensor:
        """Step (b): raise each image's top-scoring elements (``x_hat = x + Map'``).

        Args:
            x: ``(B, C, H, W)`` images.
            scores: the saliency scores of step (a).

        Returns:
            The attacked images.
        """
        numel = 1
        for size in x.shape[1:]:
            numel *= size
        k = budget_kernel(numel, self.pixel_budget)
        return raise_top(x, scores, k, self.strength, self.clip)

    def attack(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Steps (a) and (b): the images the client's layers take, and the map.

        Args:
            x: ``(B, C, H, W)`` images.
            y: labels, or None.

        Returns:
            ``(images, heat)``; ``(x, None)`` with saliency off.
        """
        if self.probe is None:
            return x, None
        scores, heat = self.saliency(x, y)
        images = self.perturb(x, scores) if self.perturbs else x
        return images, heat

    def forward(self, x: Tensor, y: Tensor | None = None, track: bool = True) -> Tensor:
        """What leaves the client: steps (a)-(c), then the client's layers.

        Args:
            x: ``(B, C, H, W)`` images.
            y: labels (the saliency target with ``label_target``), or None.
            track: keep the graph of the client's layers (training); else run them
                without autograd.

        Returns:
            The activations at the cut.
        """
        images, heat = self.attack(x, y)
        if track:
            out = self.features(images, heat)
        else:  # (an early return before a ``with`` block trips TorchScript's compiler)
            with torch.no_grad():
                out = self.features(images, heat)
        return out


class ServerSteps(nn.Module):
    """PGSL's server: the streams on the received activations, and the decision fusion.

    Args:
        upsample: the sub-pixel up-sampler, or None with unshuffle off.
        recovery: the proximal recovery, or None with recovery off.
        fusion: the conv-sum fusion, or None with fusion off.
        tails: the server layers of each stream, by name (``"fused"`` always).
        streams: the stream names in eq. 9's order.
    """

    def __init__(
        self,
        *,
        upsample: nn.Module | None,
        recovery: nn.Module | None,
        fusion: nn.Module | None,
        tails: Mapping[str, nn.Module],
        streams: Sequence[str],
    ) -> None:
        super().__init__()
        self.upsample = upsample
        self.recovery = recovery
        self.fusion = fusion
        self.tail_recovered = tails.get("recovered")
        self.tail_fused = tails["fused"]
        self.tail_attacked = tails.get("attacked")
        self.streams = list(streams)

    def upsampled(self, a: Tensor, size: tuple[int, int] | None) -> Tensor:
        """Step (c) on the server: back to the resolution its layers expect.

        Args:
            a: activations.
            size: the spatial size the server's layers expect, or None.

        Returns:
            The up-sampled activations (``a`` itself with unshuffle off).
        """
        upsample = self.upsample
        if upsample is None:
            return a
        return upsample(a, size)

    def recover(self, a: Tensor) -> Tensor:
        """Step (d): the low-rank part of the received activations (eqs. 2-6); no
        gradient flows through it.

        Args:
            a: ``(B, C, H, W)`` activations as received.

        Returns:
            The recovered activations, detached.
        """
        recovery = self.recovery
        if recovery is None:
            raise RuntimeError("this server has no recovery (recovery is off)")
        return recovery(a.detach())

    def fuse(self, u: Tensor, recovered: Tensor) -> Tensor:
        """Step (e): conv-sum fusion of the attacked and recovered maps (eqs. 7-8).

        Args:
            u: the (up-sampled) attacked map.
            recovered: the (up-sampled) recovered map.

        Returns:
            The fused map.
        """
        fusion = self.fusion
        if fusion is None:
            raise RuntimeError("this server has no fusion (fusion is off)")
        return fusion(u, recovered)

    def forward(self, a: Tensor, size: tuple[int, int] | None = None) -> dict[str, Tensor]:
        """Step (f): every stream's logits; only the fused stream has a gradient path
        to ``a`` (the recovered stream starts from :meth:`recover`'s detached output,
        the attacked stream from a detached copy).

        Args:
            a: the client's activations.
            size: the spatial size the server's layers expect, or None.

        Returns:
            Logits by stream, in the order recovered, fused, attacked.
        """
        u = self.upsampled(a, size)
        out: dict[str, Tensor] = {}
        tail_recovered = self.tail_recovered
        if self.recovery is not None and tail_recovered is not None:
            with torch.no_grad():
                recovered = self.upsampled(self.recover(a), size)
            out["recovered"] = tail_recovered(recovered)
            tail_attacked = self.tail_attacked
            if self.fusion is not None and tail_attacked is not None:
                out["fused"] = self.tail_fused(self.fuse(u, recovered))
                out["attacked"] = tail_attacked(u.detach())
                return out
        out["fused"] = self.tail_fused(u)
        return out

    def decide(self, probs: dict[str, Tensor], weights: Tensor | None) -> Tensor:
        """Step (g), eq. 9: the weighted average of the streams' class probabilities.

        Args:
            probs: class probabilities by stream.
            weights: one weight per stream in :attr:`streams` order, or None for the
                fused stream alone (decision fusion off).

        Returns:
            ``(B, classes)`` probabilities.
        """
        if weights is None:
            return probs["fused"]
        return weighted_average(torch.stack([probs[s] for s in self.streams]), weights)


__all__ = ["ClientSteps", "ServerSteps", "frozen_buffers"]
