"""One module for the whole defended inference path of a trained SplitShield.

:meth:`shieldsplit.SplitShield.export` returns an :class:`ExportedShield`: copies of
the shield's own :class:`~shieldsplit.defenses.pgsl.halves.ClientSteps` (saliency
through the client's part and its probe, the pixel attack, unshuffle and the saliency
channel, the client's layers) and :class:`~shieldsplit.defenses.pgsl.halves.ServerSteps`
(up-sampling, proximal recovery, conv-sum fusion, the three tails, the decision fusion
of eq. 9; Khowaja et al. 2022), in one ``nn.Module`` that runs in a single process and
compiles with :func:`torch.jit.script`. It is the same code the shield runs, so the two
cannot drift apart.

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

from shieldsplit.defenses.pgsl.halves import ClientSteps, ServerSteps


class ExportedShield(nn.Module):
    """A trained SplitShield's inference path as one scriptable module.

    Built by :meth:`shieldsplit.SplitShield.export` (which copies every part, so
    the shield is never changed); not meant to be constructed by hand.

    Args:
        client: the client's steps and layers.
        server: the server's streams and decision fusion.
        weights: the decision weights, one per stream, or None for the fused stream alone.
        input_shape: ``(C, H, W)`` the module accepts.
        target_size: the spatial size the server's layers expect, or None.
    """

    def __init__(
        self,
        *,
        client: ClientSteps,
        server: ServerSteps,
        weights: Tensor | None,
        input_shape: tuple[int, int, int],
        target_size: tuple[int, int] | None,
    ) -> None:
        super().__init__()
        self.client = client
        self.server = server
        self.decides = weights is not None
        self.weights: Tensor
        self.register_buffer("weights", weights if weights is not None else torch.ones(1))
        self.input_shape = list(input_shape)
        self.target_size = target_size
        self.eval()

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
        if self.client.needs_grad() and not torch.is_grad_enabled():
            raise RuntimeError(
                "ExportedShield takes an input gradient for its saliency map: call it "
                "with autograd on, outside torch.no_grad() and torch.inference_mode()"
            )
        a = self.client(x, None, False)
        with torch.no_grad():
            logits = self.server(a, self.target_size)
            probs: dict[str, Tensor] = {}
            for stream, v in logits.items():
                probs[stream] = v.softmax(dim=-1)
            return self.server.decide(probs, self.weights if self.decides else None)


__all__ = ["ExportedShield"]
