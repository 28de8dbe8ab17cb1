"""Runs one of breaching's attacks for ``breaching_side_by_side.py``, in breaching's own venv.

This script never imports shieldsplit's attacks: it is started by
``benchmarks/breaching_side_by_side.py`` with the interpreter of the venv that benchmark
built for breaching (``--breaching-env``), and it exchanges plain tensors and dicts only,
through files written with ``torch.save`` and read with ``torch.load(weights_only=True)``.

The job file holds:

- ``attack``: ``"invertinggradients"`` or ``"imprint"`` (breaching's attack configs);
- ``model``: ``{"factory": "module:name", "kwargs": {...}, "identity": [...],
  "state": state_dict}``, the victim network (its class is imported by name, the modules
  named in ``identity`` are replaced by ``nn.Identity``, as the 28 px DenseNet-121's stem
  max-pool, and the weights are loaded);
- ``shape`` (C, H, W), ``num_images``, ``seed``, ``threads``;
- ``mean`` and ``std``: the data normalisation breaching works in (its random start,
  box constraint, TV prior and imprint block are made for normalised data);
- for ``invertinggradients``: ``gradients`` (a list in ``model.parameters()`` order: a
  gradient, or a FedAvg update ``weights_after - weights_before``), ``iterations`` and
  ``local`` (None, or breaching's ``local_hyperparams``: ``lr``, ``steps``,
  ``data_per_step``, ``labels``);
- for ``imprint``: ``images`` and ``labels`` (the client computes the gradient of the
  server's modified model here, as breaching's user does).

Usage (by the benchmark): ``<breaching venv>/bin/python benchmarks/breaching_worker.py JOB OUT``.
The result file holds ``images`` (in [0, 1], un-normalised), ``labels``, ``seconds``
(breaching's attack alone: building the attacker, the malicious server's modification
and the reconstruction; not the client's gradient) and ``breaching_version``.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
from typing import Any

import torch


class _GreyMean(torch.nn.Module):
    """RGB -> grey (the channel mean): breaching's TV prior and imprint readout assume
    three channels, so a one-channel network sees breaching's RGB candidates through it
    (no parameters: the gradient is the network's own)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1, keepdim=True)


def _network(spec: dict[str, Any], channels: int) -> tuple[torch.nn.Module, int]:
    """The victim (weights loaded, eval mode) and the channels breaching works in."""
    module, name = spec["factory"].split(":")
    net = getattr(importlib.import_module(module), name)(**spec["kwargs"])
    for path in spec.get("identity", []):
        parent, _, child = path.rpartition(".")
        setattr(net.get_submodule(parent), child, torch.nn.Identity())
    net.load_state_dict(spec["state"])
    if channels == 1:
        return torch.nn.Sequential(_GreyMean(), net).eval(), 3
    return net.eval(), channels


class _Denormalise(torch.nn.Conv2d):
    """``x * std + mean`` per channel as a 1x1 convolution, so that breaching's server finds
    it as the model's first layer and places its imprint block on the normalised data."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__(len(mean), len(mean), 1, groups=len(mean))
        with torch.no_grad():
            self.weight.copy_(torch.tensor(std).view(-1, 1, 1, 1))
            self.bias = torch.nn.Parameter(torch.tensor(mean))


class _Unnormalise(torch.nn.Module):
    """``x * std + mean`` per channel with constant numbers (no parameter, no buffer: the
    gradient and the buffers breaching sees are the network's own)."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.mean, self.std = list(mean), list(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = torch.tensor(self.mean, dtype=x.dtype).view(1, -1, 1, 1)
        s = torch.tensor(self.std, dtype=x.dtype).view(1, -1, 1, 1)
        return x * s + m


def _metadata(shape: list[int], mean: list[float], std: list[float], classes: int) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.create({"modality": "vision", "shape": list(shape), "mean": mean,
                             "std": std, "classes": classes, "name": "side-by-side"})


def inverting_gradients(job: dict[str, Any]) -> dict[str, Any]:
    """breaching's ``invertinggradients`` config, ``max_iterations`` set to the job's."""
    import breaching

    victim, channels = _network(job["model"], job["shape"][0])
    mean, std = job["mean"] * (channels // len(job["mean"])), job["std"] * (
        channels // len(job["std"]))
    # breaching works on normalised data (its random start, box and TV assume it)
    net = torch.nn.Sequential(_Unnormalise(mean, std), victim).eval()
    shape = [channels, *job["shape"][1:]]
    meta = _metadata(shape, mean, std, job["num_classes"])
    cfg = breaching.get_attack_config("invertinggradients", overrides=[
        f"optim.max_iterations={job['iterations']}",
        f"optim.callback={max(job['iterations'], 1)}"])
    loss = torch.nn.CrossEntropyLoss()
    payload = {"parameters": [p.detach() for p in net.parameters()],
               "buffers": [b.detach() for b in net.buffers()], "metadata": meta}
    shared = {"gradients": [g.clone() for g in job["gradients"]], "buffers": None,
              "metadata": {"num_data_points": job["num_images"], "labels": None,
                           "local_hyperparams": job["local"]}}
    torch.manual_seed(job["seed"])
    start = time.perf_counter()
    attacker = breaching.attacks.prepare_attack(net, loss, cfg)
    rec, stats = attacker.reconstruct([payload], [shared], {}, dryrun=False)
    seconds = time.perf_counter() - start
    losses = stats.get("Trial_0_Val", [])
    m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    images = (rec["data"].detach() * s + m).clamp(0, 1)
    images = images.mean(dim=1, keepdim=True) if job["shape"][0] == 1 else images
    return {"images": images, "labels": rec["labels"].detach(),
            "seconds": seconds, "initial_loss": float(losses[0]) if losses else None,
            "final_loss": float(losses[-1]) if losses else None}


def imprint(job: dict[str, Any]) -> dict[str, Any]:
    """breaching's Robbing-the-Fed server (``malicious-model-rtf``: an imprint block of 64
    bins before the first layer) and its ``imprint`` attack."""
    import breaching
    from breaching.cases.servers import MaliciousModelServer
    from omegaconf import OmegaConf

    victim, channels = _network(job["model"], job["shape"][0])
    mean, std = job["mean"] * (channels // len(job["mean"])), job["std"] * (
        channels // len(job["std"]))
    net = torch.nn.Sequential(_Denormalise(mean, std), victim).eval()
    meta = _metadata([channels, *job["shape"][1:]], mean, std, job["num_classes"])
    case = breaching.get_case_config("1_single_image_small",
                                     overrides=["server=malicious-model-rtf"])
    cfg_case = OmegaConf.create({"server": OmegaConf.to_container(case.server),
                                 "data": OmegaConf.to_container(meta)})
    cfg = breaching.get_attack_config("imprint")
    loss = torch.nn.CrossEntropyLoss()
    torch.manual_seed(job["seed"])
    start = time.perf_counter()
    server = MaliciousModelServer(net, loss, cfg_case)
    model = server.vet_model(net)
    payload = server.distribute_payload()
    seconds = time.perf_counter() - start
    # the client: the gradient of the model it was sent, on its normalised images
    m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    model.eval()
    model.zero_grad()
    images = job["images"].expand(-1, channels, -1, -1)
    loss(model((images - m) / s), job["labels"]).backward()
    shared = {"gradients": [p.grad.detach().clone() for p in model.parameters()],
              "buffers": None, "metadata": {"num_data_points": job["num_images"],
                                            "labels": None, "local_hyperparams": None}}
    start = time.perf_counter()
    attacker = breaching.attacks.prepare_attack(model, loss, cfg)
    rec, _ = attacker.reconstruct([payload], [shared], server.secrets, dryrun=False)
    seconds += time.perf_counter() - start
    images = (rec["data"].detach() * s + m).clamp(0, 1).mean(dim=1, keepdim=True) \
        if job["shape"][0] == 1 else (rec["data"].detach() * s + m).clamp(0, 1)
    return {"images": images, "labels": torch.zeros(0, dtype=torch.long), "seconds": seconds}


def main() -> None:
    job = torch.load(sys.argv[1], weights_only=True)
    torch.set_num_threads(int(job["threads"]))
    logging.basicConfig(level=logging.INFO if "-v" in sys.argv else logging.WARNING)
    run = {"invertinggradients": inverting_gradients, "imprint": imprint}[job["attack"]]
    out = run(job)
    from importlib.metadata import version

    out["breaching_version"] = version("breaching")
    torch.save(out, sys.argv[2])


if __name__ == "__main__":
    main()
