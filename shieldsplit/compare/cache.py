"""``shieldsplit.compare.cache``: train a defence once per setting, keep it by fingerprint.

``compare``, ``run_defense`` and ``harden`` train every defence through
:func:`train_defense`, the one training loop: given a :class:`DefenseCache`, a setting
already trained (the same model weights, training data, defence, options, cut, seed,
epochs and batch size) is read back instead of trained again, from memory or from the
cache's folder (written atomically with :meth:`~shieldsplit.defenses.base.Defense.save`,
read with ``weights_only=True``). The test split is not part of the fingerprint: a
setting searched on the validation split and confirmed on the test split is trained once.

Example:
    >>> from shieldsplit.data import load_dataset
    >>> from shieldsplit.models import PGSLNet
    >>> ds = load_dataset("digits", seed=0, limit=64)
    >>> net = PGSLNet(num_classes=10, image_size=8, width=8, hidden=16)
    >>> cache = DefenseCache()
    >>> a, _ = train_defense(net, ds, "laplace", {"scale": 0.5}, cut=2, seed=0, epochs=1,
    ...                      batch_size=64, progress=False, cache=cache)
    >>> b, _ = train_defense(net, ds, "laplace", {"scale": 0.5}, cut=2, seed=0, epochs=1,
    ...                      batch_size=64, progress=False, cache=cache)
    >>> cache.trained, cache.hits, a is b
    (1, 1, False)
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shieldsplit._core.io import atomic_write_text
from shieldsplit.data import ImageDataset, make_loaders
from shieldsplit.defenses.base import Defense, create_defense

#: Bumped when what a cached file holds changes (old files are then not read).
CACHE_VERSION = 1


def _tensor_digest(h: Any, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(str((t.dtype, tuple(t.shape))).encode())
    h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())


def fingerprint(model: nn.Module, data: ImageDataset, name: str, options: Mapping[str, Any],
                *, cut: int | str, seed: int, epochs: int, batch_size: int) -> str:
    """The key of one trained setting: a SHA-256 of the model's class and weights, the
    training and validation tensors, the defence, its options, cut, seed, epochs and
    batch size.

    Example:
        >>> from shieldsplit.data import load_dataset
        >>> from shieldsplit.models import PGSLNet
        >>> ds = load_dataset("digits", seed=0, limit=64)
        >>> net = PGSLNet(num_classes=10, image_size=8, width=8, hidden=16)
        >>> k = dict(cut=2, seed=0, epochs=1, batch_size=64)
        >>> fingerprint(net, ds, "laplace", {"scale": 0.5}, **k) == fingerprint(
        ...     net, ds, "laplace", {"scale": 0.6}, **k)
        False
    """
    h = hashlib.sha256()
    h.update(f"v{CACHE_VERSION}|{type(model).__module__}.{type(model).__qualname__}".encode())
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        _tensor_digest(h, value)
    for t in (data.x_train, data.y_train, data.x_val, data.y_val):
        _tensor_digest(h, t)
    h.update(json.dumps({"name": name, "options": options, "cut": cut, "seed": seed,
                         "epochs": epochs, "batch_size": batch_size},
                        sort_keys=True, default=str).encode())
    return h.hexdigest()


class DefenseCache:
    """Trained defences by fingerprint: in memory, and on disk where ``folder`` is given.

    Args:
        folder: where trained settings are kept between runs (created on first write);
            None keeps them in memory only (for one ``harden`` or ``compare`` call).

    Attributes:
        trained: settings trained through this cache.
        hits: settings read back instead of trained.

    Example:
        >>> DefenseCache().folder is None
        True
    """

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = None if folder is None else Path(folder)
        self._memory: dict[str, tuple[Defense, float]] = {}
        self.trained = 0
        self.hits = 0

    def get(self, key: str, model: nn.Module) -> tuple[Defense, float] | None:
        """The trained defence and its training seconds, or None."""
        if key in self._memory:
            self.hits += 1
            defense, seconds = self._memory[key]
            return copy.deepcopy(defense), seconds
        if self.folder is None:
            return None
        weights, meta = self.folder / f"{key}.pt", self.folder / f"{key}.json"
        if not (weights.is_file() and meta.is_file()):
            return None
        try:
            seconds = float(json.loads(meta.read_text())["train_seconds"])
            defense = Defense.load(weights, copy.deepcopy(model))
        except Exception:  # a stale or torn file is retrained, not fatal
            return None
        self.hits += 1
        self._memory[key] = (defense, seconds)
        return copy.deepcopy(defense), seconds

    def put(self, key: str, defense: Defense, seconds: float) -> None:
        """Keep a freshly trained defence (its weights written before its metadata, so a
        torn write leaves no entry that reads as complete)."""
        self.trained += 1
        self._memory[key] = (copy.deepcopy(defense), seconds)
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            defense.save(self.folder / f"{key}.pt")
            atomic_write_text(self.folder / f"{key}.json",
                              json.dumps({"name": defense.name, "train_seconds": seconds}))


def as_cache(cache: DefenseCache | str | Path | None) -> DefenseCache | None:
    """A :class:`DefenseCache` from a cache, a folder, or None (no cache).

    Example:
        >>> as_cache(None) is None, as_cache("/tmp/x").folder.name
        (True, 'x')
    """
    return cache if cache is None or isinstance(cache, DefenseCache) else DefenseCache(cache)


def train_defense(
    model: nn.Module, data: ImageDataset, name: str, options: Mapping[str, Any], *,
    cut: int | str, seed: int, epochs: int, batch_size: int, progress: bool,
    cache: DefenseCache | None = None,
) -> tuple[Defense, float]:
    """Build ``name`` around a copy of ``model`` and train it with its own protocol on
    ``data``'s training split (validation split for its checks), or read it back from
    ``cache``: the one training loop of ``compare`` and ``harden``.

    Args:
        model: the classifier to defend (copied, never modified).
        data: the split data.
        name: a registered defence.
        options: its keyword options (besides cut and seed).
        cut: its cut.
        seed: seeds the copy's defence and training.
        epochs: training epochs.
        batch_size: training batch size.
        progress: show progress bars.
        cache: where trained settings are kept (None: always train).

    Returns:
        The trained defence and the seconds its training took (when it was trained).
    """
    key = None
    if cache is not None:
        key = fingerprint(model, data, name, options, cut=cut, seed=seed, epochs=epochs,
                          batch_size=batch_size)
        found = cache.get(key, model)
        if found is not None:
            return found
    defense = create_defense(name, copy.deepcopy(model), cut=cut, seed=seed, **options)
    loaders = make_loaders(data, batch_size=batch_size, seed=seed)
    start = time.perf_counter()
    defense.train_protocol(loaders.train, epochs=epochs, val_loader=loaders.val, seed=seed,
                           progress=progress)
    seconds = time.perf_counter() - start
    if cache is not None and key is not None:
        cache.put(key, defense, seconds)
    return defense, seconds


__all__ = ["CACHE_VERSION", "DefenseCache", "as_cache", "fingerprint", "train_defense"]
