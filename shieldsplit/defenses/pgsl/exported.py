"""One module for the whole defended inference path of a trained SplitShield.

:meth:`shieldsplit.SplitShield.export` returns an :class:`ExportedShield`: the
client's steps (saliency through the client's part and its probe, the pixel
attack, unshuffle and the saliency channel, the client's layers), the server's
streams (up-sampling, proximal recovery, conv-sum fusion, the three tails) and the
decision fusion of eq. 9 (Khowaja et al. 2022), in one ``nn.Module`` that runs in
a single process and compiles with :func:`torch.jit.script`.

Why TorchScript and not :func:`torch.export.export`: the saliency map of step (a)
is an input gradient, taken at inference too, and ``torch.export`` (torch 2.14)
cannot trace ``torch.autograd.grad`` or ``torch.func.grad`` inside ``forward``;
TorchScript can. For the same reason the module must be called with autograd on
(not under ``torch.no_grad()`` or ``torch.inference_mode()``); it switches
gradient recording off itself after the saliency step.

Example:
    >>> import torch
    >>> from shieldsplit import PGSLNet, SplitShield
    >>> shield = SplitShield(PGSLNet(num_classes=3, image_size=8, width=4, hidden=8), cut=2,
    ...                      input_shape=(1, 8, 8)).eval()
    >>> x = torch.rand(2, 1, 8, 8)
    >>> exported = shield.export()
    >>> torch.allclose(exported(x), shield.predict_proba(x), atol=1e-6)
    True
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from shieldsplit.defenses.pgsl.fusion import weighted_average
from shieldsplit.defenses.pgsl.perturb import raise_top
from shieldsplit.defenses.pgsl.saliency import jsma_saliency, normalised_heat
from shieldsplit.defenses.pgsl.unshuffle import assemble


class ExportedShield(nn.Module):
    """A trained SplitShield's inference path as one scriptable module.

    Built by :meth:`shieldsplit.SplitShield.export` (which copies every part, so
    the shield is never changed); not meant to be constructed by hand.

    Args:
        head: the client's layers.
        probe: the client's saliency probe, or None with saliency off.
        upsample: the server's sub-pixel up-sampler, or None.
        recovery: the proximal recovery, or None.
        fusion: the conv-sum fusion, or None.
        tails: the server part of each stream, by stream name.
        streams: the stream names in eq. 9's order.
        weights: the decision weights, one per stream, or None for the fused stream alone.
        input_shape: ``(C, H, W)`` the module accepts.
        target_size: the spatial size the server's layers expect, or None.
        unshuffle_factor: 0 when unshuffle is off.
        pad: unshuffle's padding mode.
        concat: whether the saliency channel is appended.
        input_x_gradient: the saliency is input times gradient (else the gradient).
        pixel_count: the pixel attack's budget in elements per image, 0 when off.
        strength: the pixel attack's step.
        clip: the pixel attack's clip range, or None.
    """

    def __init__(
        self,
        *,
        head: nn.Module,
        probe: nn.Module | None,
        upsample: nn.Module | None,
        recovery: nn.Module | None,
        fusion: nn.Module | None,
        tails: dict[str, nn.Module],
        streams: tuple[str, ...],
        weights: Tensor | None,
        input_shape: tuple[int, int, int],
        target_size: tuple[int, int] | None,
        unshuffle_factor: int,
        pad: str,
        concat: bool,
        input_x_gradient: bool,
        pixel_count: int,
        strength: float,
        clip: tuple[float, float] | None,
    ) -> None:
        super().__init__()
        self.head = head
        self.probe = probe
        self.upsample = upsample
        self.recovery = recovery
        self.fusion = fusion
        self.tail_recovered = tails.get("recovered")
        self.tail_fused = tails["fused"]
        self.tail_attacked = tails.get("attacked")
        self.streams = list(streams)
        self.decide = weights is not None
        self.weights: Tensor
        self.register_buffer("weights", weights if weights is not None else torch.ones(1))
        self.input_shape = list(input_shape)
        self.target_size = target_size
        self.unshuffle_factor = unshuffle_factor
        self.pad = pad
        self.concat = concat
        self.input_x_gradient = input_x_gradient
        self.pixel_count = pixel_count
        self.strength = strength
        self.clip = clip
        self.eval()

    def _saliency(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Step (a) at inference: JSMA scores against the probe's prediction."""
        probe = self.probe
        if probe is None:
            raise RuntimeError("saliency is off in this shield")
        xg = x.detach().requires_grad_(True)
        feats = self.head(assemble(xg, None, self.unshuffle_factor, self.pad, self.concat))
        proba = probe(feats).softmax(dim=-1)
        picked = proba.gather(1, proba.argmax(dim=-1, keepdim=True)).sum()
        grad = torch.autograd.grad([picked], [xg])[0]
        if grad is None:
            raise RuntimeError("the saliency gradient is missing")
        grad = grad.detach()
        if self.input_x_gradient:
            grad = grad * x
        scores = jsma_saliency(grad)
        return scores, normalised_heat(scores)

    def _server(self, a: Tensor) -> dict[str, Tensor]:
        """The server's streams on the client's activations: logits by stream."""
        u = a
        upsample = self.upsample
        if upsample is not None:
            u = upsample(a, self.target_size)
        out: dict[str, Tensor] = {}
        recovery = self.recovery
        tail_recovered = self.tail_recovered
        if recovery is not None and tail_recovered is not None:
            recovered = recovery(a)
            if upsample is not None:
                recovered = upsample(recovered, self.target_size)
            out["recovered"] = tail_recovered(recovered)
            fusion = self.fusion
            tail_attacked = self.tail_attacked
            if fusion is not None and tail_attacked is not None:
                out["fused"] = self.tail_fused(fusion(u, recovered))
                out["attacked"] = tail_attacked(u)
                return out
        out["fused"] = self.tail_fused(u)
        return out

    def forward(self, x: Tensor) -> Tensor:
        """Class probabilities of the defended model (what ``predict_proba`` returns).

        Args:
            x: ``(B, C, H, W)`` images in ``[0, 1]`` of the exported ``input_shape``.

        Returns:
            ``(B, classes)`` probabilities.
        """
        if x.dim() != 4 or list(x.shape[1:]) != self.input_shape:
            raise RuntimeError(
                "ExportedShield: expected images of shape (B, " + str(self.input_shape)
                + "), got " + str(list(x.shape))
            )
        heat: Tensor | None = None
        images = x
        if self.probe is not None:
            if not torch.is_grad_enabled():
                raise RuntimeError(
                    "ExportedShield takes an input gradient for its saliency map: call it "
                    "with autograd on, outside torch.no_grad() and torch.inference_mode()"
                )
            scores, heat = self._saliency(x)
            if self.pixel_count > 0:
                images = raise_top(x, scores, self.pixel_count, self.strength, self.clip)
        with torch.no_grad():
            a = self.head(assemble(images, heat, self.unshuffle_factor, self.pad, self.concat))
            logits = self._server(a)
            probs = [logits[s].softmax(dim=-1) for s in self.streams]
            if not self.decide:
                return logits["fused"].softmax(dim=-1)
            return weighted_average(torch.stack(probs), self.weights)


__all__ = ["ExportedShield"]
