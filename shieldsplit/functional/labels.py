"""Label inference from a gradient as pure functions: iDLG's sign rule and label counts.

For one image with label ``y``, the gradient of the mean cross-entropy loss with respect
to the weight of the classifier's last ``nn.Linear`` is ``(p - onehot(y)) h^T`` (``p``
the softmax output, ``h`` the features that enter the layer), so row ``c`` sums to
``(p_c - [c = y]) * sum(h)``. With non-negative features (after ReLU or Sigmoid) only
the true class's row sum is negative (Zhao, Mopuri, Bilen 2020, "iDLG"). For a batch
the row sums are a mixture of such terms, from which :func:`label_counts_idlg` estimates
how many images of each class it held; :func:`infer_labels_idlg` spells those counts
out as sorted labels (a gradient does not reveal the images' order).

Example:
    >>> import torch
    >>> h = torch.tensor([0.5, 1.0, 0.2])           # non-negative features
    >>> p = torch.tensor([0.3, 0.2, 0.4, 0.1])      # softmax output
    >>> grad = torch.outer(p - torch.eye(4)[2], h)  # the gradient of an image of label 2
    >>> label_counts_idlg(grad).tolist(), infer_labels_idlg(grad).tolist()
    ([0, 0, 1, 0], [2])
"""

from __future__ import annotations

import torch
from torch import Tensor

from shieldsplit.errors import ConfigError, InputShapeError, NonFiniteInputError


def _checked_row_sums(grad: Tensor, batch_size: int) -> Tensor:
    """The row sums of a validated last-layer weight gradient, in float64."""
    if not isinstance(grad, Tensor) or grad.dim() != 2:
        received = tuple(grad.shape) if isinstance(grad, Tensor) else type(grad).__name__
        raise InputShapeError.build(
            what="last_layer_weight_grad", expected="a 2-D tensor (num_classes, features)",
            received=received, fix="pass the gradient of the last nn.Linear's weight",
        )
    if not bool(torch.isfinite(grad).all()):
        raise NonFiniteInputError.build(
            what="last_layer_weight_grad", expected="finite values", received="NaN or infinity",
            fix="pass an undefended gradient",
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError.build(
            what="batch_size", expected="a positive int", received=repr(batch_size),
            fix="pass the number of images in the batch",
        )
    return grad.detach().double().sum(dim=1)


def label_counts_idlg(
    last_layer_weight_grad: Tensor,
    *,
    batch_size: int = 1,
    mean_probs: Tensor | None = None,
    feature_sum: float | None = None,
) -> Tensor:
    """How many images of each class a batch held, read from its last-layer weight gradient.

    One image (``batch_size=1``): iDLG's sign rule, the class of the most negative row
    sum (exact for non-negative features). A batch (a count heuristic in the spirit of
    Wainakh et al.'s LLG): row ``c`` sums to about ``S * (mean_probs[c] - n_c / B)``,
    with ``S`` the mean feature sum and ``n_c`` the number of images of class ``c``, so
    ``n_c ~ B * (mean_probs[c] - rowsum[c] / S)``. Every class with a negative row sum
    is certainly present (non-negative features) and gets at least one image (the ``B``
    most negative, when more are negative); the remaining images go, one at a time, to
    the class whose estimated count exceeds its allocation the most. ``mean_probs``
    defaults to uniform (an untrained model) and ``S`` to ``K`` times the mean of the
    positive row sums (or the sum of the row sums' magnitudes when none is positive);
    an attacker who holds the model should measure both on some inputs. The counts are
    exact for one image, and for a batch when ``mean_probs`` and ``S`` are exact.

    Args:
        last_layer_weight_grad: ``(K, F)`` gradient of the mean cross-entropy loss with
            respect to the last ``nn.Linear``'s weight (minus a FedAvg update's block
            of it works as well: a positive multiple of a sum of gradients).
        batch_size: number of images ``B`` in the batch.
        mean_probs: ``(K,)`` the model's mean softmax output, if known.
        feature_sum: the mean over images of the features' sum, if known (a value that
            is not positive counts as unknown).

    Returns:
        ``(K,)`` int64 counts summing to ``batch_size``.

    Raises:
        InputShapeError: if the gradient is not a 2-D tensor.
        NonFiniteInputError: if it holds NaN or infinity.
        ConfigError: if ``batch_size`` is not a positive int or ``mean_probs`` has
            the wrong shape.

    Example:
        >>> import torch
        >>> h = torch.tensor([1.0, 2.0, 1.0])                    # feature sum 4
        >>> p = torch.tensor([0.25, 0.25, 0.25, 0.25])           # an untrained model
        >>> y = torch.eye(4)[[1, 1, 3]]                          # labels 1, 1, 3
        >>> grad = torch.outer(p - y.mean(0), h)                 # the batch's mean gradient
        >>> label_counts_idlg(grad, batch_size=3, mean_probs=p, feature_sum=4.0).tolist()
        [0, 2, 0, 1]
    """
    rows = _checked_row_sums(last_layer_weight_grad, batch_size)
    k = rows.shape[0]
    counts = torch.zeros(k, dtype=torch.int64)
    if batch_size == 1:
        counts[int(rows.argmin())] = 1
        return counts
    if mean_probs is None:
        probs = torch.full((k,), 1.0 / k, dtype=torch.float64)
    else:
        if not isinstance(mean_probs, Tensor) or mean_probs.shape != (k,):
            raise ConfigError.build(
                what="mean_probs", expected=f"a tensor of shape ({k},)",
                received=getattr(mean_probs, "shape", type(mean_probs).__name__),
                fix="pass the mean softmax output per class, or None",
            )
        probs = mean_probs.detach().double().cpu()
    rows = rows.cpu()
    if feature_sum is None or not feature_sum > 0:
        positive = rows[rows > 0]
        feature_sum = float(k * positive.mean()) if positive.numel() else float(rows.abs().sum())
    scale = max(float(feature_sum), 1e-30)
    estimate = batch_size * (probs - rows / scale)
    present = torch.nonzero(rows < 0).flatten()
    present = present[rows[present].argsort()][:batch_size]  # most negative first
    counts[present] = 1
    while int(counts.sum()) < batch_size:
        counts[int((estimate - counts.double()).argmax())] += 1
    return counts


def infer_labels_idlg(
    last_layer_weight_grad: Tensor,
    *,
    batch_size: int = 1,
    mean_probs: Tensor | None = None,
    feature_sum: float | None = None,
) -> Tensor:
    """Labels of a batch read from the gradient of the last linear layer's weight.

    The counts of :func:`label_counts_idlg` (same arguments), as one label per image:
    exact for one image (iDLG's sign rule: the argmin of the row sums, Zhao et al. 2020)
    and a best guess beyond.

    Args:
        last_layer_weight_grad: ``(K, F)`` gradient of the last layer's weight.
        batch_size: number of images ``B`` in the batch.
        mean_probs: ``(K,)`` the model's mean softmax output, if known.
        feature_sum: the mean over images of the features' sum, if known.

    Returns:
        ``(B,)`` int64 labels, sorted (a gradient does not reveal the order).

    Raises:
        InputShapeError: if the gradient is not a 2-D tensor.
        NonFiniteInputError: if it holds NaN or infinity.
        ConfigError: if ``batch_size`` is not a positive int or ``mean_probs`` has
            the wrong shape.

    Example:
        >>> import torch
        >>> h = torch.tensor([0.5, 1.0, 0.2])           # non-negative features
        >>> p = torch.tensor([0.3, 0.2, 0.4, 0.1])      # softmax output
        >>> grad = torch.outer(p - torch.eye(4)[2], h)  # label 2
        >>> infer_labels_idlg(grad)
        tensor([2])
    """
    counts = label_counts_idlg(last_layer_weight_grad, batch_size=batch_size,
                               mean_probs=mean_probs, feature_sum=feature_sum)
    return torch.repeat_interleave(torch.arange(counts.shape[0]), counts)


__all__ = ["infer_labels_idlg", "label_counts_idlg"]
