"""breaching and shieldsplit side by side: the same networks, images and gradients, one run.

The reference library breaching (Geiping et al.) is fetched into its own venv
(``--breaching-env``, default ``<--cache>/breaching-venv``: ``python -m venv
--system-site-packages`` from the running interpreter, whose own site-packages are added
with a ``.pth`` file so that torch is shared; then breaching's other dependencies,
hydra-core and lpips, and breaching itself from ``--breaching-src``, a source tree or a
bare git directory). It is never a dependency of shieldsplit: its attacks run in
``benchmarks/breaching_worker.py`` under that venv's interpreter, and the two processes
exchange weights, gradients, labels and reconstructions as plain tensors through
``torch.save`` / ``torch.load(weights_only=True)`` files.

Victims (trained and cached by ``benchmarks/attack_strength.py``'s ``load``, under
``--cache``): the paper network (``PGSLNet``, BreastMNIST, ``breastmnist``),
torchvision's ResNet-18 on BreastMNIST (grey channel replicated, ``resnet``) and
torchvision's DenseNet-121 on BreastMNIST without its stem's max-pool
(``attack_strength.densenet121_28``, ``densenet``; the victim ``attack_strength_resnet.py``
attacks), all in eval mode as the auditor sees them. Images: the test split drawn with the seed (as
``attack_strength.py``); the auxiliary images (initialisation, line-up) are a seeded
``--aux-limit`` of the training split. Settings, each observed ONCE and given to both tools:

- ``batch1``: ``--batch1-images`` gradients of one image each;
- ``batch8``: one gradient of 8 images;
- ``fedavg``: one FedAvg update of the same 8 images (the auditor's ``FEDAVG``: 5 local
  epochs, local batch 8, lr 1e-3); breaching's attack is told the local protocol and the
  labels of each step, as breaching's ``local_updates`` user shares them;
- ``imprint``: a malicious server's imprint block (Robbing the Fed) in front of the same
  network, 8 images: shieldsplit's ``imprint`` against breaching's ``malicious-model-rtf``
  server and ``imprint`` attack (each tool builds its own block; the client's images are
  the same).

shieldsplit's side is the attack ``shieldsplit.audit`` runs by default at each budget in
``--budgets`` (``inverting-gradients`` on a gradient, ``inverting-gradients-fedavg`` on an
update; ``default_attacks``), at that budget's iterations and restarts. breaching runs its
``invertinggradients`` config (cosine matching, TV 0.2, signed Adam, one trial, labels
inferred by its default ``bias-corrected`` strategy) with ``max_iterations`` set to the
SAME iteration count (on a batch-1 gradient through a classifier narrower than the image,
above the quick budget, shieldsplit then refines its feature path's image by gradient
matching: ``InvertingGradients.path()`` says "features, then gradients", and the page
names the refinement's iterations). A (victim, setting, budget) whose estimated cost
exceeds ``--max-seconds`` is not run; the page says so and why. ``--jobs`` runs that many
settings at once, each (victim, setting, budget) in a process of its own, the longest
estimate first; a setting's two tools still run one after the other. ``--resume`` adds
the settings an earlier run did not measure to ``--out``'s record, and measures again the
rows this run attacks on another number of images (the batch-1 rows under another
``--batch1-images``): it keeps that record's other rows of every victim whose weights have
the same SHA-256 (the cached victims; retraining with the seed on one thread reproduced
the paper network bit for bit on the same machine, not ResNet-18 or DenseNet-121 on
another) and stops if they differ; ``--fresh`` names victims to measure anew instead.

Scored with the auditor's functions: PSNR (capped at 100 dB; batches paired by
``match_order``), the line-up (``lineup_identified`` against the auxiliary images) and
seconds per image (the attack alone, on ``--threads`` torch threads in each process).

Usage:
    python benchmarks/breaching_side_by_side.py --breaching-src PATH
        [--cache out/attack_strength] [--victims breastmnist resnet densenet]
        [--budgets quick standard] [--jobs 1] [--batch1-images 2] [--aux-limit 1000]
        [--threads 1] [--seed 0] [--max-seconds 300] [--resume] [--render]

Writes ``breaching_side_by_side.json`` and ``.md`` under ``--out``; every sentence that
interprets a number is computed from the JSON (``--render`` rewrites the page from it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from itertools import repeat
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import attack_strength
import torch
from pages import add_page_options, command_line, header, publish
from scipy.stats import t as student_t
from torch import Tensor, nn

from shieldsplit._core.provenance import machine_info
from shieldsplit.attacks import AttackContext, create_attack
from shieldsplit.attacks.base import Budget
from shieldsplit.attacks.imprint import ImprintAttack
from shieldsplit.attacks.observe import observe_gradient, observe_update
from shieldsplit.audit.auditor import FEDAVG, default_attacks
from shieldsplit.functional.imprint import EXACT_PSNR_DB
from shieldsplit.functional.metrics import psnr
from shieldsplit.functional.stats import lineup_identified, match_order

HERE = Path(__file__).resolve().parent
WORKER = HERE / "breaching_worker.py"
NAMES = {"breastmnist": "paper network (PGSLNet)", "resnet": "ResNet-18",
         "densenet": "DenseNet-121"}
#: the architecture the worker rebuilds before loading the weights
FACTORIES = {"pgsl": "shieldsplit.models:PGSLNet", "resnet18": "torchvision.models:resnet18",
             "densenet121": "torchvision.models:densenet121"}
#: modules the worker replaces by ``nn.Identity`` after building the architecture
IDENTITY = {"densenet121": list(attack_strength.DENSENET_28_IDENTITY)}
SETTINGS = ("batch1", "batch8", "fedavg")
#: breaching's dependencies besides torch, torchvision and scipy (its setup.cfg)
BREACHING_DEPS = ("hydra-core>=1.1", "lpips")


# --------------------------------------------------------------------------- breaching's venv
def breaching_env(src: Path, env: Path) -> Path:
    """breaching's own venv (built once): the interpreter that runs the worker."""
    env = env.absolute()  # the worker runs in another folder (absolute, not resolved:
    python = env / "bin" / "python"  # the venv's python is a link to the base one)
    if python.exists() and subprocess.run([str(python), "-c", "import breaching"],
                                          capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(env)],
                   check=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], check=True, capture_output=True, text=True)
    paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site.stdout.strip()) / "shared_torch.pth").write_text("\n".join(sorted(paths)) + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", *BREACHING_DEPS], check=True)
    tree = src
    if not (src / "setup.cfg").exists():  # a bare git directory: export its tracked tree
        tree = env / "breaching-src"
        tree.mkdir(parents=True, exist_ok=True)
        names = subprocess.run(["git", "--git-dir", str(src), "ls-tree", "--name-only", "HEAD"],
                               check=True, capture_output=True, text=True).stdout.split()
        keep = [n for n in names if n not in ("examples", "tables")]  # notebooks, results
        archive = subprocess.run(["git", "--git-dir", str(src), "archive", "HEAD", *keep],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(tree)],
                   check=True)
    return python


def source_commit(src: Path) -> str | None:
    """The commit of breaching's source (None for a tree without git)."""
    out = subprocess.run(["git", "--git-dir", str(src if not (src / ".git").exists()
                                                  else src / ".git"), "rev-parse", "HEAD"],
                         capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


def run_worker(python: Path, job: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """One breaching attack in the worker process; its result (plain tensors)."""
    job_path, out_path = workdir / "job.pt", workdir / "result.pt"
    torch.save(job, job_path)
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "OMP_NUM_THREADS": str(job["threads"]),
           "HYDRA_FULL_ERROR": "1"}
    done = subprocess.run([str(python), str(WORKER), str(job_path), str(out_path)], env=env,
                          capture_output=True, text=True, cwd=workdir)
    if done.returncode != 0:
        raise RuntimeError(f"breaching's worker failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = torch.load(out_path, weights_only=True)
    return result


# --------------------------------------------------------------------------- scoring
def score(images: Tensor, x: Tensor, aux: Tensor, batch: int, seconds: float) -> dict[str, Any]:
    """The auditor's scores of one tool's reconstructions of ``x``."""
    paired = torch.cat([match_order(images[i:i + batch], x[i:i + batch]) if batch > 1
                        else images[i:i + 1] for i in range(0, len(x), batch)])
    p = psnr(paired, x).clamp(max=100)
    return {"psnr": float(p.mean()), "psnr_per_image": [round(float(q), 2) for q in p],
            "identified": int(lineup_identified(paired, x, aux).sum()), "images": len(x),
            "seconds": seconds, "seconds_per_image": seconds / len(x)}


def normalisation(aux: Tensor) -> dict[str, list[float]]:
    """The auxiliary images' mean and deviation per channel: the normalisation breaching's
    data pipeline applies (breaching's attacks work on normalised data)."""
    return {"mean": [float(c) for c in aux.mean(dim=(0, 2, 3))],
            "std": [float(c) for c in aux.std(dim=(0, 2, 3))]}


def model_spec(victim: dict[str, Any]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"num_classes": victim["num_classes"]}
    if victim["arch"] == "pgsl":
        kwargs["image_size"] = 28
    return {"factory": FACTORIES[victim["arch"]], "kwargs": kwargs,
            "identity": IDENTITY.get(victim["arch"], []),
            "state": {k: v.detach().clone() for k, v in victim["net"].state_dict().items()}}


def image_shape(x: Tensor) -> tuple[int, int, int]:
    return int(x.shape[1]), int(x.shape[2]), int(x.shape[3])


def ordered(net: nn.Module, tensors: dict[str, Tensor]) -> list[Tensor]:
    """A name -> tensor dict as breaching's list in ``model.parameters()`` order."""
    return [tensors[name].detach().clone() for name, _ in net.named_parameters()]


# --------------------------------------------------------------------------- one victim
def federated(victim: dict[str, Any], x: Tensor, y: Tensor, aux: Tensor, aux_y: Tensor,
              setting: str, budget: Budget, args: argparse.Namespace, python: Path,
              workdir: Path) -> dict[str, Any]:
    """One (setting, budget): shieldsplit's default attack and breaching's IG on the same
    observations, at the same iteration count."""
    net = victim["net"]
    batch = 1 if setting == "batch1" else 8
    n = args.batch1_images if batch == 1 else 8
    x, y = x[:n], y[:n]
    name = "inverting-gradients-fedavg" if setting == "fedavg" else "inverting-gradients"
    if name not in default_attacks(net, budget):
        raise RuntimeError(f"{name} is no longer the auditor's default at {budget}")
    plan, path = planned_path(victim, x, setting, budget)
    chunks = [(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)]
    obs = [observe_update(net, xb, yb, **FEDAVG) if setting == "fedavg"
           else observe_gradient(net, xb, yb) for xb, yb in chunks]
    ctx = AttackContext(image_shape=image_shape(x), num_classes=victim["num_classes"],
                        model=net, auxiliary_images=aux, auxiliary_labels=aux_y,
                        budget=budget, seed=args.seed)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    options = {} if args.iterations is None else {"iterations": args.iterations}
    attack = create_attack(name, seed=args.seed, progress=False, **options)
    attack.prepare(ctx)
    recs = attack.reconstruct_many(obs)
    ours = score(torch.cat([r.images for r in recs]), x, aux, batch,
                 time.perf_counter() - start)
    # breaching runs the budget's iterations: those of shieldsplit's feature path, or of
    # its gradient matching where that is all it runs
    f_its, f_restarts, g_its, g_restarts, refine = schedules(plan, budget, args)
    gradients_only = path == "gradients"
    ours.update(attack=name, path=path,
                iterations=g_its if gradients_only else f_its,
                restarts=g_restarts if gradients_only else f_restarts,
                matched=sorted({str(r.meta.get("matched", "gradients")) for r in recs}))
    if path == "features, then gradients":
        ours["refine_iterations"] = refine
    print(f"  {victim['arch']} shieldsplit {setting} {budget}: {ours['psnr']:.2f} dB, "
          f"{ours['seconds_per_image']:.1f} s/image ({ours['matched']})", flush=True)
    images, seconds, labels_right = [], 0.0, 0
    norm = normalisation(aux)
    for o, (xb, yb) in zip(obs, chunks, strict=True):
        steps = FEDAVG["local_epochs"] * -(-len(xb) // FEDAVG["local_batch_size"])
        local = None if setting != "fedavg" else {
            "lr": FEDAVG["lr"], "steps": steps, "data_per_step": FEDAVG["local_batch_size"],
            "labels": [yb.clone() for _ in range(steps)]}
        job = {"attack": "invertinggradients", "model": model_spec(victim), **norm,
               "num_classes": victim["num_classes"], "shape": list(x.shape[1:]),
               "num_images": len(xb), "seed": args.seed, "threads": args.threads,
               "iterations": ours["iterations"], "local": local,
               "gradients": ordered(net, o.gradients or o.update or {})}
        out = run_worker(python, job, workdir)
        images.append(out["images"])
        seconds += float(out["seconds"])
        labels_right += int((out["labels"].sort().values == yb.sort().values).all())
    theirs = score(torch.cat(images), x, aux, batch, seconds)
    theirs.update(iterations=ours["iterations"], restarts=1, label_sets_right=labels_right,
                  label_sets=len(chunks), breaching_version=out["breaching_version"])
    print(f"  {victim['arch']} breaching   {setting} {budget}: {theirs['psnr']:.2f} dB, "
          f"{theirs['seconds_per_image']:.1f} s/image", flush=True)
    return {"setting": setting, "budget": budget, "batch": batch, "ours": ours,
            "breaching": theirs, "load_average": os.getloadavg()[0]}


def malicious(victim: dict[str, Any], x: Tensor, y: Tensor, aux: Tensor,
              args: argparse.Namespace, python: Path, workdir: Path) -> dict[str, Any]:
    """The imprint attack of each tool on 8 images behind its own imprint block."""
    net = victim["net"]
    x, y = x[:8], y[:8]
    start = time.perf_counter()
    attack = ImprintAttack(seed=args.seed)
    attack.prepare(AttackContext(image_shape=image_shape(x),
                                 num_classes=victim["num_classes"], model=net,
                                 auxiliary_images=aux, seed=args.seed))
    sent = attack.modify(net)
    prep = time.perf_counter() - start
    obs = observe_gradient(sent, x, y)
    start = time.perf_counter()
    rec = attack.reconstruct(obs)
    ours = score(rec.images, x, aux, 8, prep + time.perf_counter() - start)
    ours.update(attack="imprint", bins=int(attack.config.bins))
    try:
        out = run_worker(python, {"attack": "imprint", "model": model_spec(victim),
                                  **normalisation(aux), "num_classes": victim["num_classes"],
                                  "shape": list(x.shape[1:]), "num_images": 8,
                                  "seed": args.seed, "threads": args.threads,
                                  "images": x.clone(), "labels": y.clone()}, workdir)
    except RuntimeError as exc:  # breaching's server cannot modify every architecture
        last = [ln for ln in str(exc).splitlines() if ln.strip()][-1].strip()
        print(f"  {victim['arch']} imprint: breaching failed ({last})", flush=True)
        return {"setting": "imprint", "budget": "any", "batch": 8, "ours": ours,
                "breaching_error": last, "load_average": os.getloadavg()[0]}
    theirs = score(out["images"], x, aux, 8, float(out["seconds"]))
    theirs.update(bins=64)
    print(f"  {victim['arch']} imprint: shieldsplit {ours['psnr']:.2f} dB, "
          f"breaching {theirs['psnr']:.2f} dB", flush=True)
    return {"setting": "imprint", "budget": "any", "batch": 8, "ours": ours,
            "breaching": theirs, "load_average": os.getloadavg()[0]}


#: seconds per iteration per observation, ``(breaching, shieldsplit's feature path)``, what
#: ``estimate`` plans with: 20-iteration probes of both sides (``--iterations 20`` at the
#: quick budget, where shieldsplit took its feature path on every victim; one torch thread
#: each) on this 2-core machine on 2026-12-07 at a 1-minute load of 0.6 to 1.8. The feature
#: path reads the classifier's input from the gradient and inverts those features, one
#: backward pass per iteration. Where that classifier is narrower than an image (ResNet-18,
#: DenseNet-121) and the budget is above quick, the feature path's images then seed one
#: restart of whole-gradient matching (``InvertingGradients.path()``: "features, then
#: gradients"), a double backward through every layer as breaching's, planned at
#: breaching's pace times :data:`GRADIENT_SLOWDOWN`
PACE: dict[str, dict[str, tuple[float, float]]] = {
    "resnet18": {"batch1": (0.16, 0.019), "batch8": (0.22, 0.028), "fedavg": (1.29, 0.033)},
    "densenet121": {"batch1": (0.27, 0.060), "batch8": (0.75, 0.12), "fedavg": (4.82, 0.086)},
    "pgsl": {"batch1": (0.12, 0.018), "batch8": (0.39, 0.12), "fedavg": (1.94, 0.20)},
}


#: shieldsplit's whole-gradient matching per restart against breaching's pace. Its
#: problems are looped, not vmapped, on models this large (``vmap_parameters``): 300
#: iterations of the ResNet-18 refinement on validation images, 2026-12-07, one thread,
#: one other busy core: batch 1 0.21 s per iteration, batch 8 0.29 s (breaching's idle
#: pace 0.16 and 0.22). Only batch-1 gradients are refined today; the others are planned
#: alike should the budget's path match gradients. (Vmapped, before: 3.2x at batch 8.)
GRADIENT_SLOWDOWN: dict[str, float] = {"batch1": 1.3, "batch8": 1.3, "fedavg": 1.3}


def planned_path(victim: dict[str, Any], x: Tensor, setting: str,
                 budget: Budget) -> tuple[Any, str]:
    """shieldsplit's default attack for ``setting``, prepared on the victim at ``budget``
    (its schedules say how long it runs), and the path it plans for the setting."""
    name = "inverting-gradients-fedavg" if setting == "fedavg" else "inverting-gradients"
    attack = create_attack(name, seed=0, progress=False)
    attack.prepare(AttackContext(image_shape=image_shape(x), num_classes=victim["num_classes"],
                                 model=victim["net"], budget=budget))
    path = attack.path(kind="update" if setting == "fedavg" else "gradient",
                       batch_size=1 if setting == "batch1" else 8)
    return attack, path


def schedules(attack: Any, budget: Budget,
              args: argparse.Namespace) -> tuple[int, int, int, int, int]:
    """``(feature iterations, feature restarts, matching iterations, matching restarts,
    refinement iterations)`` of a planned attack; ``--iterations`` overrides every count of
    iterations."""
    f_its, f_restarts = attack.feature_schedule()
    g_its, g_restarts = attack.schedule()
    refine = (attack.refine_budgets or {}).get(budget, g_its)
    if args.iterations is not None:
        f_its = g_its = refine = args.iterations
    return f_its, f_restarts, g_its, g_restarts, refine


def estimate(victim: dict[str, Any], x: Tensor, setting: str, budget: Budget,
             args: argparse.Namespace) -> float:
    """Seconds a (setting, budget) would take at :data:`PACE`: breaching's side at the
    budget's iterations; shieldsplit's feature path at its iterations times its restarts
    at its feature pace, and its whole-gradient matching (the budget's restarts alone, or
    one restart of ``refine_budgets``' iterations after the feature path) at breaching's
    pace times :data:`GRADIENT_SLOWDOWN`."""
    attack, path = planned_path(victim, x, setting, budget)
    theirs, ours = PACE[victim["arch"]][setting]
    f_its, f_restarts, g_its, g_restarts, refine = schedules(attack, budget, args)
    observations = args.batch1_images if setting == "batch1" else 1
    slow = theirs * GRADIENT_SLOWDOWN[setting]
    if path == "features":
        return observations * f_its * (theirs + ours * f_restarts)
    if path == "gradients":
        return observations * g_its * (theirs + slow * g_restarts)
    return observations * (f_its * (theirs + ours * f_restarts) + refine * slow)


def images_for(setting: str, args: argparse.Namespace) -> int:
    """How many test images a setting of this run attacks."""
    return args.batch1_images if setting == "batch1" else 8


def victim_inputs(key: str, args: argparse.Namespace
                  ) -> tuple[dict[str, Any], Tensor, Tensor, Tensor, Tensor]:
    """A victim (trained and cached by ``attack_strength.load``), its test images and
    labels in the seed's order, and the seeded auxiliary images and labels."""
    victim = attack_strength.load(key, args.seed)
    order = torch.randperm(len(victim["x_test"]),
                           generator=torch.Generator().manual_seed(args.seed))
    pick = torch.randperm(len(victim["x_train"]),
                          generator=torch.Generator().manual_seed(args.seed))[:args.aux_limit]
    return (victim, victim["x_test"][order], victim["y_test"][order],
            victim["x_train"][pick], victim["y_train"][pick])


def plan_victim(key: str, args: argparse.Namespace,
                previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """One victim's plan: its rows in page order, each either kept from ``previous``
    (``--resume``: that victim's record from an earlier run, used only if the victim's
    weights are the same, else the run stops) or a task to run (a ``(setting, budget)``
    with its estimated seconds), and the settings over ``--max-seconds``. A kept row is
    measured again when this run names its budget and attacks another number of images
    (a batch-1 row and a different ``--batch1-images``)."""
    victim, x, _, aux, _ = victim_inputs(key, args)
    kept: dict[tuple[str, str], dict[str, Any]] = {}
    earlier_skips: dict[tuple[str, str], dict[str, Any]] = {}
    if previous is not None:
        had = previous["network"].get("weights_sha256")
        if had != victim["weights_sha256"]:
            raise SystemExit(
                f"--resume: {key}'s weights differ from the record's ({had or 'not recorded'} "
                f"against {victim['weights_sha256']}); name it in --fresh to measure it "
                "anew, or run without --resume")
        kept = {(r["setting"], r["budget"]): {**r, "run": r.get("run", 0)}
                for r in previous["rows"]
                if r["budget"] not in args.budgets
                or r["ours"]["images"] == images_for(r["setting"], args)}
        earlier_skips = {(s["setting"], s["budget"]): s for s in previous["not_run"]}
    slots: list[dict[str, Any] | tuple[str, str]] = []
    tasks, skipped = [], []
    # an earlier run's budgets stay on the page even when this run does not name them
    every: tuple[Budget, ...] = ("quick", "standard", "thorough")
    budgets = [b for b in every if b in args.budgets or any(k[1] == b for k in kept)
               or any(k[1] == b for k in earlier_skips)]
    for budget in budgets:
        for setting in SETTINGS:
            if (setting, budget) in kept:
                slots.append(kept[(setting, budget)])
                continue
            if budget not in args.budgets:
                if (setting, budget) in earlier_skips:
                    skipped.append(earlier_skips[(setting, budget)])
                continue
            cost = estimate(victim, x, setting, budget, args)
            if cost > args.max_seconds:
                skipped.append({"setting": setting, "budget": budget, "estimate_seconds": cost,
                                "max_seconds": args.max_seconds})
                print(f"  {key} {setting} {budget}: not run (about {cost / 60:.0f} min)",
                      flush=True)
                continue
            slots.append((setting, budget))
            tasks.append({"victim": key, "setting": setting, "budget": budget,
                          "estimate_seconds": cost})
    if ("imprint", "any") in kept:
        slots.append(kept[("imprint", "any")])
    else:
        slots.append(("imprint", "any"))
        tasks.append({"victim": key, "setting": "imprint", "budget": "any",
                      "estimate_seconds": IMPRINT_SECONDS})
    keep = ("arch", "accuracy", "majority_rate", "params", "train_images", "best_epoch",
            "weights_sha256")
    return {"victim": key, "network": {k: victim[k] for k in keep}, "auxiliary": len(aux),
            "slots": slots, "tasks": tasks, "not_run": skipped, **mean_image_scores(x, aux)}


#: seconds the planner gives an imprint task (both tools read 8 images analytically, in
#: seconds; only the order of the tasks uses it)
IMPRINT_SECONDS = 60.0


def run_task(task: dict[str, Any], args: argparse.Namespace, python: Path,
             workdir: Path) -> dict[str, Any]:
    """One planned row: both tools on one (victim, setting, budget), tagged with the run."""
    victim, x, y, aux, aux_y = victim_inputs(task["victim"], args)
    workdir.mkdir(parents=True, exist_ok=True)
    if task["setting"] == "imprint":
        row = malicious(victim, x, y, aux, args, python, workdir)
    else:
        row = federated(victim, x, y, aux, aux_y, task["setting"], task["budget"], args,
                        python, workdir)
    return {**row, "run": args.run_index}


def assemble(plan: dict[str, Any], done: dict[tuple[str, str, str], dict[str, Any]]
             ) -> dict[str, Any]:
    """A victim's record from its plan and the rows its tasks measured, in page order."""
    rows = [slot if isinstance(slot, dict) else done[(plan["victim"], *slot)]
            for slot in plan["slots"]]
    return {k: v for k, v in plan.items() if k not in ("slots", "tasks")} | {"rows": rows}


def mean_image_scores(x: Tensor, aux: Tensor) -> dict[str, Any]:
    """The mean auxiliary image's PSNR on the first 8 victims: their mean and each's (the
    batch-1 rows score the first few of them)."""
    each = psnr(aux.mean(0, keepdim=True).expand_as(x[:8]), x[:8])
    return {"mean_image_psnr": float(each.mean()),
            "mean_image_psnr_per_image": [round(float(p), 2) for p in each]}


def _child(args: argparse.Namespace) -> None:
    """A victim's process (``--jobs``): the same threads and cache as the parent's."""
    torch.set_num_threads(args.threads)
    attack_strength.CACHE = args.cache


def measure(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    attack_strength.CACHE = args.cache
    if args.breaching_src is None:
        raise SystemExit("--breaching-src is needed to measure (a source tree or git dir)")
    env = args.breaching_env or args.cache / "breaching-venv"
    python = breaching_env(args.breaching_src, env)
    start = time.time()
    earlier: dict[str, Any] = {}
    runs: list[dict[str, Any]] = []
    if args.resume:
        old = json.loads((args.out / "breaching_side_by_side.json").read_text())
        earlier = {v["victim"]: v for v in old["victims"]}
        for v in old["victims"]:  # the cap each setting was not run under
            for skipped in v["not_run"]:
                skipped.setdefault("max_seconds", old["max_seconds"])
        runs = old.get("runs") or [{k: old[k] for k in RUN_FIELDS if k in old}]
    args.run_index = len(runs)
    unknown = sorted(set(args.fresh) - set(args.victims))
    if unknown:
        raise SystemExit(f"--fresh names {unknown}, which --victims does not attack; "
                         "name them in --victims too")
    plans = [plan_victim(k, args, None if k in args.fresh else earlier.get(k))
             for k in args.victims]
    tasks = [t for p in plans for t in p["tasks"]]
    if args.jobs > 1:  # the longest first, so that the processes finish near together
        tasks.sort(key=lambda t: -t["estimate_seconds"])
    print(f"{len(tasks)} settings to run: " + ", ".join(
        f"{t['victim']} {t['setting']} {t['budget']} (~{t['estimate_seconds'] / 60:.0f} min)"
        for t in tasks), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folders = [Path(tmp) / f"{t['victim']}-{t['setting']}-{t['budget']}" for t in tasks]
        if args.jobs == 1:
            rows = [run_task(t, args, python, f) for t, f in zip(tasks, folders, strict=True)]
        else:  # one process per setting, at most --jobs at once, each on --threads threads
            with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn"),
                                     initializer=_child, initargs=(args,)) as pool:
                rows = list(pool.map(run_task, tasks, repeat(args), repeat(python), folders))
    done = {(t["victim"], t["setting"], t["budget"]): r for t, r in zip(tasks, rows,
                                                                         strict=True)}
    victims = [assemble(p, done) for p in plans]
    # victims of the earlier run that this one did not attack stay as they were, in order
    victims += [v for k, v in earlier.items() if k not in args.victims]
    order = [*earlier, *(k for k in args.victims if k not in earlier)]
    victims.sort(key=lambda v: order.index(v["victim"]))
    record = {
        "command": command_line("benchmarks/breaching_side_by_side.py", args,
                                skip=("breaching_env", "run_index", "resume", "fresh"))
        + (" --resume" if args.resume else "")
        + (f" --fresh {' '.join(args.fresh)}" if args.fresh else ""),
        "date": f"{datetime.fromtimestamp(start, timezone.utc):%Y-%m-%d %H:%M} UTC",
        "machine": machine_info(), "load_average": list(os.getloadavg()), "seed": args.seed,
        "threads": args.threads, "breaching_commit": source_commit(args.breaching_src),
        "fedavg": FEDAVG, "budgets": args.budgets, "max_seconds": args.max_seconds,
        "pace": PACE, "jobs": args.jobs, "parallel": "settings", "victims": victims,
        "wall_seconds": time.time() - start,
    }
    record["runs"] = [*runs, {k: record[k] for k in RUN_FIELDS}]
    return record


#: what one run of the benchmark records about itself (``runs``, one per ``--resume``)
RUN_FIELDS = ("command", "date", "load_average", "jobs", "parallel", "wall_seconds",
              "breaching_commit", "max_seconds")


# --------------------------------------------------------------------------- the page
def gradient_pace(record: dict[str, Any]) -> list[tuple[float, str]]:
    """For each row where shieldsplit only matched the whole gradient (not where its
    feature path ran, alone or seeding the matching: that row's time is not split):
    its seconds per image per restart over breaching's seconds per image, and the row's
    name.

    Example:
        >>> row = {"setting": "batch8", "budget": "standard",
        ...        "ours": {"matched": ["gradients"], "restarts": 4, "seconds_per_image": 12.0},
        ...        "breaching": {"seconds_per_image": 1.0}}
        >>> gradient_pace({"victims": [{"victim": "resnet", "rows": [row]}]})
        [(3.0, 'ResNet-18 batch8 at the standard budget')]
    """
    out = []
    for v in record["victims"]:
        for r in v["rows"]:
            ours = r["ours"]
            matching = ours.get("path", "gradients" if ours.get("matched") == ["gradients"]
                                else "features") == "gradients"
            if "matched" in ours and matching and r["breaching"]["seconds_per_image"]:
                out.append((ours["seconds_per_image"] / ours["restarts"]
                            / r["breaching"]["seconds_per_image"],
                            f"{NAMES[v['victim']]} {r['setting']} at the {r['budget']} budget"))
    return out


def runs_lines(record: dict[str, Any]) -> list[str]:
    """Where ``--resume`` added rows to an earlier run's: each run's command, date, wall
    time and load (the header above gives the latest run's); nothing for one run."""
    runs = record.get("runs", [])
    if len(runs) < 2:
        return []
    return [f"The rows come from {len(runs)} runs; each victim's rows were measured on the "
            "same weights (their SHA-256 is checked before a run adds rows to a victim's, and "
            "a victim measured anew loses its earlier rows); each row's note names its run:",
            "",
            *(f"- run {i}: `{r['command']}`, {r['date']}, {r['wall_seconds'] / 60:.1f} min, "
              f"load average at the end {r['load_average'][0]:.1f}" for i, r in enumerate(runs)),
            ""]


def unit(run: dict[str, Any]) -> str:
    """What a run's processes each attacked: a setting (since 2026-12-07) or, in earlier
    runs, which did not record it, a whole victim."""
    return "setting" if run.get("parallel") == "settings" else "victim"


def mean_image_bar(victim: dict[str, Any], row: dict[str, Any]) -> float:
    """The mean auxiliary image's PSNR on the victims a row scores: the first few for a
    batch-1 row of fewer than 8 images (where the record keeps each's), else the first 8.

    Example:
        >>> v = {"mean_image_psnr": 17.0, "mean_image_psnr_per_image": [16.0, 18.0, 17.0]}
        >>> mean_image_bar(v, {"ours": {"images": 2}}), mean_image_bar(v, {"ours": {"images": 8}})
        (17.0, 17.0)
        >>> mean_image_bar(v, {"ours": {"images": 1}})
        16.0
    """
    each = victim.get("mean_image_psnr_per_image")
    n = row["ours"]["images"]
    return (float(sum(each[:n]) / n) if each and n < len(each)
            else float(victim["mean_image_psnr"]))


def meets(row: dict[str, Any]) -> tuple[bool, bool]:
    """(PSNR at least breaching's, seconds per image at most breaching's)."""
    o, b = row["ours"], row["breaching"]
    return o["psnr"] >= b["psnr"], o["seconds_per_image"] <= b["seconds_per_image"]


def separated(row: dict[str, Any]) -> tuple[float, float] | None:
    """The 95% t-interval of the tools' mean per-image PSNR difference (ours minus
    breaching's; batch rows are paired with the victims first, so the lists align image
    by image), or None when it contains 0 (the images do not separate the tools).

    Example:
        >>> separated({"ours": {"psnr_per_image": [20.0, 21.0]},
        ...            "breaching": {"psnr_per_image": [19.0, 22.0]}}) is None
        True
    """
    diffs = [a - b for a, b in zip(row["ours"]["psnr_per_image"],
                                   row["breaching"]["psnr_per_image"], strict=True)]
    n = len(diffs)
    if n < 2:
        return None
    mean = sum(diffs) / n
    sd = (sum((d - mean) ** 2 for d in diffs) / (n - 1)) ** 0.5
    half = float(student_t.ppf(0.975, n - 1)) * sd / n ** 0.5
    low, high = mean - half, mean + half
    return (low, high) if low > 0 or high < 0 else None


def verdict(row: dict[str, Any]) -> str:
    o, b = row["ours"], row["breaching"]
    quality, speed = meets(row)
    words = []
    words.append(("PSNR met" if quality else f"PSNR short by {b['psnr'] - o['psnr']:.2f} dB")
                 + (" (not separated: inconclusive)" if separated(row) is None else ""))
    words.append("time met" if speed else
                 f"time over by {o['seconds_per_image'] / b['seconds_per_image']:.1f}x")
    return ", ".join(words)


def markdown(record: dict[str, Any]) -> str:
    lines = [
        "# breaching and shieldsplit side by side ("
        + ("one run" if len(record.get("runs", [])) < 2 else
           f"{len(record['runs'])} runs; both tools of each row in the same run") + ")", "",
        # the latest run's processes: --jobs of them, each on --threads threads
        *header(record, seed=record["seed"], own=record["threads"] * record.get("jobs", 1)),
        f"breaching: commit `{record['breaching_commit']}`, run in its own venv by "
        "`benchmarks/breaching_worker.py` (never a dependency of shieldsplit).  ",
        f"Wall time {record['wall_seconds'] / 60:.1f} min; {record['threads']} torch thread(s) "
        "in each process.", "",
        "Both tools attack the same trained network (eval mode, as the auditor sees it), the "
        "same test images and the same observed gradient or FedAvg update (the auditor's "
        f"protocol: {record['fedavg']['local_epochs']} local epochs, local batch "
        f"{record['fedavg']['local_batch_size']}, lr {record['fedavg']['lr']}). shieldsplit "
        "runs the attack `shieldsplit.audit` runs by default at each budget (labels "
        "inferred); breaching runs its `invertinggradients` config (cosine matching, TV 0.2, "
        "signed Adam, one trial, labels inferred by its `bias-corrected` rule; on the FedAvg "
        "update it is given the local protocol and each step's labels, as breaching's "
        "`local_updates` user shares them) with `max_iterations` set to the **same "
        "iteration count** as shieldsplit's budget (the `iterations` column). Where "
        "shieldsplit's path is *features, then gradients* (a batch-1 gradient through a "
        "classifier narrower than the image, above the quick budget), its feature path runs "
        "those iterations and restarts and its image then seeds one restart of gradient "
        "matching for the further iterations the column names; the refined image is kept "
        "only if it matches the gradient better. Imprint: each "
        "tool's malicious server builds its own imprint block in front of the same network "
        "(breaching's `malicious-model-rtf`, 64 bins, on data normalised by the auxiliary "
        "images' mean and deviation; shieldsplit's `imprint` at its default bins) and reads "
        "the same 8 images from the client's gradient.", "",
        *runs_lines(record),
        "Scores: PSNR against the victims (capped at 100 dB; batch reconstructions paired "
        "with the victims by minimum MSE), the line-up (reconstructions nearer to their "
        "victim than to every auxiliary image) and seconds per image of the attack alone.",
        "",
    ]
    all_rows = []
    for v in record["victims"]:
        net = v["network"]
        lines += [f"## {NAMES[v['victim']]}", "",
                  f"{net['arch']} ({net['params']:,} parameters) trained on BreastMNIST's "
                  f"{net['train_images']} training images: test accuracy {net['accuracy']:.1%}"
                  f" (majority rate {net['majority_rate']:.1%}). Line-up: the victim and "
                  f"{v['auxiliary']} auxiliary images (chance {1 / (v['auxiliary'] + 1):.2%}). "
                  "The mean auxiliary image scores "
                  f"{v['mean_image_psnr']:.2f} dB on the first 8 victims.", "",
                  "| setting | budget | iterations (restarts: shieldsplit / breaching) | "
                  "images | shieldsplit PSNR | breaching PSNR | shieldsplit line-up | "
                  "breaching line-up | shieldsplit s/image | breaching s/image | target |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in v["rows"]:
            if "breaching_error" in r:
                continue
            o, b = r["ours"], r["breaching"]
            its = (f"{o['iterations']} ({o['restarts']} / {b['restarts']})"
                   if "iterations" in o else f"analytic ({o['bins']} / {b['bins']} bins)")
            if "refine_iterations" in o:
                its += f"; shieldsplit then {o['refine_iterations']} matching the gradient"
            lines.append(
                f"| {r['setting']} | {r['budget']} | {its} | {o['images']} | "
                f"{o['psnr']:.2f} | {b['psnr']:.2f} | {o['identified']}/{o['images']} | "
                f"{b['identified']}/{b['images']} | {o['seconds_per_image']:.2f} | "
                f"{b['seconds_per_image']:.2f} | {verdict(r)} |")
            all_rows.append((v, r))
        lines.append("")
        for s in v["not_run"]:
            lines.append(f"- Not run: {s['setting']} at the {s['budget']} budget (estimated "
                         f"{s['estimate_seconds'] / 60:.0f} min for both tools, over the "
                         f"run's {s.get('max_seconds', record['max_seconds']) / 60:.0f} min "
                         "cap per setting).")
        for r in v["rows"]:
            if "breaching_error" in r:
                o = r["ours"]
                exact_ours = sum(q >= EXACT_PSNR_DB for q in o["psnr_per_image"])
                lines.append(f"- imprint: breaching's imprint attack failed on this network "
                             f"(its worker: `{r['breaching_error']}`), so the row is not "
                             f"compared; shieldsplit's read {exact_ours} of {o['images']} "
                             f"images almost exactly (PSNR at least {EXACT_PSNR_DB:.0f} dB; "
                             f"{o['psnr']:.2f} dB on average, {o['identified']} of "
                             f"{o['images']} picked out of the line-up).")
            elif r["setting"] == "imprint":
                exact = [sum(q >= EXACT_PSNR_DB for q in r[t]["psnr_per_image"])
                         for t in ("ours", "breaching")]
                lines.append(f"- imprint: images read almost exactly (PSNR at least "
                             f"{EXACT_PSNR_DB:.0f} dB): shieldsplit {exact[0]} of "
                             f"{r['ours']['images']}, breaching {exact[1]} of "
                             f"{r['breaching']['images']} (breaching fills the images it "
                             "cannot read with zeros).")
            if "matched" in r["ours"]:
                b = r["breaching"]
                labels = ("breaching was given each local step's labels" if r["setting"] ==
                          "fedavg" else f"breaching's inferred labels right in "
                          f"{b['label_sets_right']} of {b['label_sets']} observation(s)")
                run = (f" (run {r.get('run', 0)})"
                       if len(record.get("runs", [])) > 1 else "")
                lines.append(f"- {r['setting']} at {r['budget']}{run}: shieldsplit's path: "
                             f"{', '.join(r['ours']['matched'])}; {labels}.")
        optimised = [r for r in v["rows"] if "matched" in r["ours"]]
        above = {t: [f"{r['setting']} ({r['budget']})" for r in optimised
                     if r[t]["psnr"] > mean_image_bar(v, r)] for t in ("ours", "breaching")}
        ones = [r for r in optimised if r["setting"] == "batch1"]
        first = (f"; batch 1 scores the first {ones[0]['ours']['images']} of them"
                 + (f", on which it scores {mean_image_bar(v, ones[0]):.2f} dB"
                    if "mean_image_psnr_per_image" in v else "") if ones else "")
        lines.append(
            f"- Against the mean auxiliary image ({v['mean_image_psnr']:.2f} dB on the first 8 "
            "victims" + first + "): "
            f"shieldsplit's optimisation rows above it: {', '.join(above['ours']) or 'none'}; "
            f"breaching's: {', '.join(above['breaching']) or 'none'}"
            + (". At this budget neither tool rebuilds these images better than the mean "
               "image on this network; the comparison is between two failures"
               if not above["ours"] and not above["breaching"] else "") + ".")
        lines.append("")
    reached = [(v, r) for v, r in all_rows if all(meets(r))]
    met = [(v, r) for v, r in reached if separated(r) is not None]
    open_ = [(v, r) for v, r in reached if separated(r) is None]
    short = [(v, r) for v, r in all_rows if not all(meets(r))]
    lines += ["## The target", "",
              "Target (issue 22): the auditor's default attack at each budget reaches at least "
              "breaching's PSNR on every victim at no more than breaching's time per image.", ""]
    lines.append(f"Met in {len(met)} of {len(all_rows)} rows" + (
        f"; inconclusive in {len(open_)} (at least breaching's PSNR on average and no slower, "
        "but the images do not separate the tools; listed below)" if open_ else "") + (
        "." if not short else "; where not: " + "; ".join(
            f"{NAMES[v['victim']]} {r['setting']} ({r['budget']}): {verdict(r)}"
            for v, r in short) + "."))
    failures = [(v, r) for v, r in reached if "matched" in r["ours"]
                and max(r["ours"]["psnr"], r["breaching"]["psnr"]) <= mean_image_bar(v, r)]
    if failures:
        lines += ["", f"Of the met and inconclusive rows, {len(failures)} "
                  f"compare{'s' if len(failures) == 1 else ''} two failures: neither tool "
                  "rebuilds those images better than the mean auxiliary image does "
                  "(shieldsplit and breaching against the mean image; shieldsplit's path): "
                  + "; ".join(
                      f"{NAMES[v['victim']]} {r['setting']} ({r['budget']}): "
                      f"{r['ours']['psnr']:.2f} and {r['breaching']['psnr']:.2f} dB against "
                      f"{mean_image_bar(v, r):.2f} ({', '.join(r['ours']['matched'])})"
                      for v, r in failures) + "."]
    mixed = [(v, r) for v, r in all_rows if separated(r) is None]
    if mixed:
        lines += ["", "PSNR not separated on these images (the 95% t-interval of the mean "
                  "per-image difference, shieldsplit minus breaching, contains 0, so the row's "
                  "PSNR verdict could turn with other images or seeds): " + "; ".join(
                      f"{NAMES[v['victim']]} {r['setting']} ({r['budget']}, "
                      f"{r['ours']['images']} images): "
                      f"{r['ours']['psnr'] - r['breaching']['psnr']:+.2f} dB"
                      for v, r in mixed) + "."]
    failed = [f"{NAMES[v['victim']]} imprint (breaching's attack failed)"
              for v in record["victims"] for r in v["rows"] if "breaching_error" in r]
    if failed:
        lines += ["", "Not compared: " + "; ".join(failed) + "."]
    not_run = [(v, s) for v in record["victims"] for s in v["not_run"]]
    if not_run:
        lines.append("")
        lines.append("Not measured, so not shown to meet the target: " + "; ".join(
            f"{NAMES[v['victim']]} {s['setting']} at the {s['budget']} budget"
            f" (cap {s.get('max_seconds', record['max_seconds']) / 60:.0f} min)"
            for v, s in not_run) + ". Each was estimated above its run's cap per setting "
            "(see the notes above).")
        slow = gradient_pace(record)
        if slow:
            ratio, where = max(slow)
            lines.append("")
            lines.append(
                "The estimates planned shieldsplit's whole-gradient matching at breaching's "
                f"pace per restart; where it took that path in this run it ran at up to "
                f"{ratio:.1f}x that pace ({where}), so "
                + ("the estimates of the rows not run on that path are low by about as much."
                   if ratio > 1 else "those estimates are not low."))
    loads = [r["load_average"] for v in record["victims"] for r in v["rows"]
             if "load_average" in r]
    jobs = record.get("jobs", 1)
    runs = record.get("runs", [])
    lines += ["", "Times: " + (
        "in each run, on each row, both tools ran one after the other, so a row's two "
        "times shared its load; processes at once, each on "
        f"{record['threads']} torch thread(s): " + ", ".join(
            f"run {i} {r.get('jobs', 1)}" + (f" (one per {unit(r)})" if r.get("jobs", 1) > 1
                                             else "") for i, r in enumerate(runs))
        if len(runs) > 1 else
        "both tools ran one after the other in the same run, so they shared the same load"
        if jobs == 1 else
        f"{jobs} {unit(record)}s were attacked at once, each in a process of its own on "
        f"{record['threads']} torch thread(s); on each row both tools ran one after the "
        f"other, so a row's two times shared its load") + (
        f" (1-minute load average at the end of each row between {min(loads):.1f} and "
        f"{max(loads):.1f}, at the end of the run {record['load_average'][0]:.1f})"
        if loads else
        f" (1-minute load average {record['load_average'][0]:.1f} at the end)")
        + f"; the {'latest ' if len(record.get('runs', [])) > 1 else ''}run took "
        f"{record['wall_seconds'] / 60:.1f} min."]
    if "densenet" not in {v["victim"] for v in record["victims"]}:
        lines += ["", "DenseNet-121 is not in this run (`--victims` left it out)."]
    return "\n".join([*lines, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--breaching-src", type=Path, default=None,
                        help="breaching's source tree or bare git directory (to measure)")
    parser.add_argument("--breaching-env", type=Path, default=None)
    parser.add_argument("--cache", type=Path, default=attack_strength.CACHE)
    parser.add_argument("--victims", nargs="+", choices=sorted(NAMES),
                        default=["breastmnist", "resnet", "densenet"])
    parser.add_argument("--budgets", nargs="+", choices=["quick", "standard", "thorough"],
                        default=["quick", "standard"])
    parser.add_argument("--batch1-images", type=int, default=2)
    parser.add_argument("--aux-limit", type=int, default=1000)
    parser.add_argument("--max-seconds", type=float, default=300.0,
                        help="skip a (setting, budget) whose estimated cost is above this")
    parser.add_argument("--iterations", type=int, default=None,
                        help="override every budget's iterations (a smoke test)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1,
                        help="settings (victim, setting, budget) attacked at once, each in a "
                        "process of its own, the longest estimate first (both tools of a "
                        "setting still run one after the other)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true",
                        help="keep --out's rows of victims whose weights are unchanged and run "
                        "only the settings they lack (e.g. with a larger --max-seconds) or "
                        "that this run attacks on another number of images (--batch1-images)")
    parser.add_argument("--fresh", nargs="+", choices=sorted(NAMES), default=[],
                        help="with --resume: measure these victims anew, every row (their "
                        "earlier rows are dropped), e.g. after retraining them on a machine "
                        "whose kernels gave other weights; the other victims resume")
    add_page_options(parser)
    args = parser.parse_args()
    publish(args, "breaching_side_by_side", measure=lambda: measure(args), markdown=markdown)


if __name__ == "__main__":
    main()
