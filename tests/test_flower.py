"""shieldsplit on Flower (issue 12): partitions, federated training, DP accounting, the
live audit and ``shieldsplit federate`` (runs across real Flower processes and their
faults: test_flower_processes.py).

One simulation (the command line on digits: DP-SGD, 2 clients, 2 rounds, with the live
audit) is shared by the tests that read its result; Ray's start-up is the slow part.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from shieldsplit.errors import ConfigError, EmptyDataError, UnsupportedModelError
from shieldsplit.functional.partition import parse_partition, partition_indices
from shieldsplit.settings import FEDERATED_LR

flower = pytest.importorskip("shieldsplit.adapters.flower", reason="needs shieldsplit[flower]")

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "examples" / "flower_app"

labels_st = st.lists(st.integers(0, 4), min_size=1, max_size=200).map(np.array)


# ------------------------------------------------------------------ partitions
@given(labels=labels_st, clients=st.integers(1, 8), seed=st.integers(0, 2**31 - 1),
       spec=st.sampled_from(["iid", "dirichlet:0.3", "dirichlet:1", "dirichlet:100"]))
@settings(max_examples=60, deadline=None)
def test_every_index_lands_in_exactly_one_nonempty_client(labels: np.ndarray, clients: int,
                                                          seed: int, spec: str) -> None:
    if clients > len(labels):
        with pytest.raises(EmptyDataError):
            partition_indices(labels, clients=clients, spec=spec, seed=seed)
        return
    try:
        parts = partition_indices(labels, clients=clients, spec=spec, seed=seed)
    except ConfigError as exc:  # a Dirichlet draw that keeps starving a client: said so
        assert exc.what == "partition" and spec != "iid"
        return
    assert len(parts) == clients and min(len(p) for p in parts) >= 1
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(labels)))
    again = partition_indices(labels, clients=clients, spec=spec, seed=seed)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def test_iid_sizes_differ_by_at_most_one_and_the_seed_matters() -> None:
    labels = np.arange(103) % 3
    parts = partition_indices(labels, clients=4, spec="iid", seed=0)
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1
    other = partition_indices(labels, clients=4, spec="iid", seed=1)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_small_alpha_skews_the_labels_and_large_alpha_does_not() -> None:
    labels = np.repeat(np.arange(5), 200)

    def mean_majority(spec: str) -> float:
        parts = partition_indices(labels, clients=5, spec=spec, seed=3)
        return float(np.mean([np.bincount(labels[p]).max() / len(p) for p in parts]))

    assert mean_majority("dirichlet:0.1") > 0.6 > 0.3 > mean_majority("dirichlet:1000")


@pytest.mark.parametrize("spec", ["dirichlet:0", "dirichlet:-1", "dirichlet:nan",
                                  "dirichlet:inf", "dirichlet", "dirichlet:x", "zipf:1", "",
                                  None, 0.5])
def test_bad_specs_raise_a_typed_error(spec: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse_partition(spec)
    assert info.value.what == "partition"


def test_bad_clients_labels_and_seed_raise_typed_errors() -> None:
    labels = np.array([0, 1, 0])
    with pytest.raises(EmptyDataError):
        partition_indices(labels, clients=4, spec="iid")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError):
            partition_indices(labels, clients=bad, spec="iid")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        partition_indices(np.array([0.5, 1.0]), clients=1)
    with pytest.raises(ConfigError):
        partition_indices(labels, clients=1, seed=-1)


# ------------------------------------------------------------------ pure helpers
def test_the_metric_maths_is_the_functional_one_under_its_old_names() -> None:
    # the maths is tested against scikit-learn in test_functional_classification.py
    from shieldsplit.attacks.label_counts import replay_label_counts
    from shieldsplit.functional import classification

    assert flower.macro_f1 is classification.macro_f1
    assert flower.nearest_mean_labels is classification.nearest_mean_labels
    assert flower.replay_label_counts is replay_label_counts


def test_the_arrays_cross_without_pickle_and_the_accountant_stays_home() -> None:
    from shieldsplit.models import SmallConvNet

    net = SmallConvNet(num_classes=3, image_size=8, width=4)
    dp = flower.build_defense(net, "dpsgd", {"cut": 1, "seed": 0})
    shared = flower.shared_state(dp)
    assert "rdp" not in shared and "fits" not in shared and shared
    record = flower.to_record(shared)
    back = flower.from_record(record)
    assert all(torch.equal(back[k], v) for k, v in shared.items())
    assert all(array.stype == "numpy.ndarray" for array in record.values())


def test_split_learning_only_defences_are_refused() -> None:
    from shieldsplit.models import PGSLNet

    with pytest.raises(UnsupportedModelError) as info:
        flower.build_defense(PGSLNet(num_classes=2, image_size=8, width=8, hidden=8), "pgsl",
                             {"cut": 2, "seed": 0})
    assert "federated" in str(info.value)


def test_malformed_or_oversized_replies_are_refused_with_a_typed_error() -> None:
    from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict

    sent = ArrayRecord({"w": Array(np.zeros((2, 3), dtype=np.float32))})

    def reply(w: np.ndarray, **metrics: float) -> RecordDict:
        return RecordDict({"arrays": ArrayRecord({"w": Array(w)}),
                           "metrics": MetricRecord({"num-examples": 4, "partition-id": 0,
                                                    **metrics})})

    flower.check_reply(reply(np.ones((2, 3), dtype=np.float32)), sent)
    for bad in (np.ones((200, 3), dtype=np.float32), np.ones((2, 3), dtype=np.float64),
                np.full((2, 3), np.nan, dtype=np.float32)):
        with pytest.raises(ConfigError):
            flower.check_reply(reply(bad), sent)
    with pytest.raises(ConfigError):
        flower.check_reply(reply(np.ones((2, 3), dtype=np.float32), **{"num-examples": 0}),
                           sent)
    with pytest.raises(ConfigError):
        flower.check_reply(RecordDict({"arrays": sent}), sent)


def _binary_images(n: int, seed: int, labels: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Generated 2-class images: class 1 is bright in the top half, class 0 at the bottom
    (labels drawn with 35% of class 1 unless given)."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=g) < 0.35).long() if labels is None else labels
    x = 0.3 * torch.rand(n, 1, 8, 8, generator=g)
    x[y == 1, :, :4] += 0.6
    x[y == 0, :, 4:] += 0.6
    return x.clamp(0, 1), y


def _adam_update(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                 batch_size: int) -> dict[str, torch.Tensor]:
    """What a client that trains ``net`` with the project's loop (Adam) would send."""
    import copy

    from torch.utils.data import DataLoader, TensorDataset

    from shieldsplit.training import fit_plain

    trained = copy.deepcopy(net)
    fit_plain(trained, DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True,
                                  generator=torch.Generator().manual_seed(7)),
              epochs=2, seed=7, progress=False)
    before = dict(net.named_parameters())
    return {k: (v - before[k]).detach() for k, v in trained.named_parameters()}


def test_replaying_the_local_training_reads_label_counts_that_idlg_cannot() -> None:
    from torch.utils.data import DataLoader, TensorDataset

    from shieldsplit.attacks.gradient import infer_labels_idlg
    from shieldsplit.functional.stats import align_labels, majority_rate
    from shieldsplit.models import SmallConvNet
    from shieldsplit.training import fit_plain

    torch.manual_seed(0)
    net = SmallConvNet(num_classes=2, image_size=8, width=4, activation="tanh")
    # the global model of a later round: it has learned the class prior
    fit_plain(net, DataLoader(TensorDataset(*_binary_images(200, seed=5)), batch_size=8,
                              shuffle=True, generator=torch.Generator().manual_seed(0)),
              epochs=3, progress=False)
    aux = _binary_images(40, seed=1)
    for share in (0.2, 0.7):  # a client mostly of class 1, then mostly of class 0
        x, y = _binary_images(60, seed=2,
                              labels=(torch.arange(60) >= round(share * 60)).long())
        update = _adam_update(net, x, y, batch_size=8)
        inferred = flower.replay_label_counts(net, update, images=60, auxiliary=aux,
                                              local_epochs=2, local_batch_size=8, seed=0)
        right = float((align_labels(inferred, y) == y).double().mean())
        idlg = infer_labels_idlg(-update["7.weight"], batch_size=60)  # the last Linear
        idlg_right = float((align_labels(idlg, y) == y).double().mean())
        # Adam's normalised steps leave the count heuristic at the majority rate at best
        assert idlg_right <= majority_rate(y) + 1e-9
        assert right >= 0.9 > majority_rate(y)


def test_a_label_control_that_leaked_labels_vouches_for_the_label_attack() -> None:
    from shieldsplit.functional.verdict import decide

    where = "federated, Flower client update of 1 local epochs at batch 8"
    leak = flower.LabelEvidence(images=50, label_recovery=0.98, label_low=0.9,
                                label_high=0.99, majority=0.6, setting=where)
    blind = flower.LabelEvidence(images=50, label_recovery=0.6, label_low=0.47,
                                 label_high=0.72, majority=0.6, setting=where)
    assert decide(leak, blind).verdict == "leaks"
    d = decide(blind, leak)
    assert d.verdict == "no leakage found" and "tolerance: majority + 15%" in d.reason
    assert decide(blind, blind).verdict == "inconclusive"
    # a control in another setting, or a target not bounded under the tolerance, does not do
    other = leak.model_copy(update={"setting": "federated, one image"})
    assert "another setting" in decide(blind, other).reason
    loose = blind.model_copy(update={"label_high": 0.8})
    assert "label recovery up to" in decide(loose, leak).reason
    with pytest.raises(ConfigError):
        flower.replay_label_counts(torch.nn.Sequential(torch.nn.Flatten(),
                                                       torch.nn.Linear(4, 3)), {},
                                   images=4, auxiliary=_binary_images(8, 0),
                                   local_epochs=1, local_batch_size=4)


def test_the_undefended_federated_model_beats_the_majority_class_on_validation() -> None:
    """The regression behind docs/results/federated_breastmnist.md's first page: every
    federated model ended at the majority class. Here a skewed 2-client federation must
    learn a separable task, scored on validation data no client holds."""
    from shieldsplit.models import SmallConvNet

    x, y = _binary_images(240, seed=3)
    vx, vy = _binary_images(80, seed=4)
    torch.manual_seed(0)
    net = SmallConvNet(num_classes=2, image_size=8, width=4, activation="tanh")
    result = flower.simulate(net, data=(x, y), defense="none", clients=2, rounds=3,
                             partition="dirichlet:0.5", batch_size=8, local_epochs=2, cut=1,
                             seed=0, progress=False, validation=(vx, vy))
    share = float(torch.bincount(vy).max()) / len(vy)
    majority_f1 = (2 * share / (1 + share)) / 2
    assert result.complete and result.validation_examples == 80
    assert result.validation_macro_f1 is not None
    assert result.validation_macro_f1 > majority_f1 + 0.2
    assert result.history[-1].macro_f1 is not None and result.history[-1].macro_f1 > majority_f1
    # every round records the majority rate and balanced accuracy; a model that learnt
    # predicts both classes and draws no warning
    last = result.history[-1]
    assert last.majority_rate is not None and 0.5 <= last.majority_rate < 1
    assert last.balanced_accuracy is not None and last.balanced_accuracy > 0.5
    assert last.predicted_classes == 2 and result.learning_warnings() == []
    assert result.validation_majority == pytest.approx(share)
    assert result.validation_balanced_accuracy is not None
    assert result.validation_balanced_accuracy > 0.5


def test_a_model_stuck_at_one_class_is_flagged_in_words() -> None:
    stuck = flower.RoundRecord(round=2, accuracy=0.667, macro_f1=0.4, majority_rate=0.667,
                               balanced_accuracy=0.5, predicted_classes=1)
    result = flower.FederatedResult(defense="none", clients=2, rounds=2, partition="iid",
                                    partition_sizes=[9, 9], local_epochs=1, batch_size=4,
                                    seed=0, history=[stuck])
    for text in (result.table(), flower.render_html(result)):
        assert "NOT LEARNING" in text and "single class" in text
    page = flower.render_html(result)
    assert "majority class" in page and "balanced accuracy" in page and "0.6670" in page
    # two classes predicted, but no better than the majority class: flagged too
    result.history[0] = stuck.model_copy(update={"predicted_classes": 2})
    assert "no better than always predicting the majority" in result.learning_warnings()[0]
    result.history[0] = stuck.model_copy(update={"predicted_classes": 2, "accuracy": 0.8})
    assert result.learning_warnings() == []


def test_flower_and_ray_logs_go_through_the_projects_logging_once() -> None:
    import logging

    flwr_logger, project = logging.getLogger("flwr"), logging.getLogger("shieldsplit")
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    keep, level = Keep(), project.level
    logging.getLogger().addHandler(keep)
    try:
        own = list(flwr_logger.handlers)
        project.setLevel(logging.WARNING)  # shieldsplit without --verbose: silent
        with flower.engine_logs() as verbose:
            assert not verbose and flwr_logger.handlers == []
            flwr_logger.info("info line")
            flwr_logger.warning("DEPRECATED FEATURE")
            flwr_logger.error("an error")
        project.setLevel(logging.INFO)  # --verbose: Flower's INFO, once, at the root
        with flower.engine_logs() as verbose:
            assert verbose
            flwr_logger.info("verbose line")
            flwr_logger.debug("debug line")
        assert seen == ["an error", "verbose line"]
        assert flwr_logger.handlers == own  # restored after the run
    finally:
        logging.getLogger().removeHandler(keep)
        project.setLevel(level)


# ------------------------------------------------------------------ one simulation
#: the noise multiplier the command line's run passes through ``--option`` (not the default
#: 1.0, so the accountant test below shows it reached every client)
NOISE = 1.3


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """``shieldsplit federate`` on digits: DP-SGD, 2 clients, 2 rounds, live audit."""
    from shieldsplit.cli import app

    out = tmp_path_factory.mktemp("federate")
    args = ["federate", "--defense", "dpsgd", "--clients", "2", "--rounds", "2",
            "--local-epochs", "1", "--data", "digits", "--limit", "150", "--partition", "iid",
            "--batch-size", "16", "--cut", "1", "--audit", "quick", "--seed", "0",
            "--option", f"dpsgd.noise_multiplier={NOISE}",
            "--json", str(out / "fl.json"), "--out", str(out / "fl.html")]
    done = CliRunner().invoke(app, args)
    return {"done": done, "json": out / "fl.json", "html": out / "fl.html"}


def result_of(cli_run: dict[str, object]) -> Any:
    return flower.FederatedResult.model_validate_json(Path(str(cli_run["json"])).read_text())


def test_the_command_line_trains_on_flower_and_writes_both_reports(cli_run: dict) -> None:
    done = cli_run["done"]
    assert done.exit_code == 0, done.output
    assert "federated rounds: done, 2/2" in done.stderr
    assert "round  accuracy" in done.output and "epsilon per round" in done.output
    page = Path(cli_run["html"]).read_text()
    for heading in ("Accuracy per round", "Epsilon per client", "Leakage per round"):
        assert heading in page
    assert page.count("<svg") == 3
    # plots with an axis title, units and a legend; the table with the baselines
    assert page.count(">round</text>") == 3 and ">epsilon</text>" in page
    for column in ("majority class", "balanced accuracy", "no-attack PSNR (dB)",
                   "control label recovery", "victims (attacked)"):
        assert column in page, column
    assert "majority" in done.output and "balanced" in done.output


def test_each_round_is_aggregated_over_every_client(cli_run: dict) -> None:
    result = result_of(cli_run)
    assert result.complete and [h.round for h in result.history] == [1, 2]
    sizes = result.partition_sizes
    assert len(sizes) == 2 and sum(sizes) > 0
    for h in result.history:
        assert h.clients == [0, 1] and h.lost == [] and h.rejected == []
        assert h.accuracy is not None and h.macro_f1 is not None and h.loss is not None
        # the held-out shards: every example of the 134 not kept by the server, less training
        assert h.examples == 150 - 16 - sum(sizes)
        assert math.isfinite(h.loss) and h.loss > 0
    reports = {(c.round, c.client): c for c in result.client_rounds}
    assert sorted(reports) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert [reports[(1, c)].examples for c in (0, 1)] == sizes


def test_each_clients_epsilon_equals_opacus_accountant_over_its_steps(cli_run: dict) -> None:
    from opacus.accountants import RDPAccountant

    result = result_of(cli_run)
    assert result.delta == 1e-5
    eps = result.epsilons()
    assert sorted(eps) == [0, 1]
    for client, n in enumerate(result.partition_sizes):
        batches = math.ceil(n / result.batch_size)
        accountant = RDPAccountant()
        expected = []
        for _ in range(result.rounds):  # one local epoch a round, Poisson rate 1/batches
            for _ in range(batches * result.local_epochs):
                accountant.step(noise_multiplier=NOISE, sample_rate=1.0 / batches)
            expected.append(accountant.get_epsilon(delta=result.delta))
        assert eps[client] == pytest.approx(expected, rel=1e-9)
        assert eps[client][1] > eps[client][0]  # the state persisted across rounds


def test_the_auditing_strategy_adds_a_leakage_table(cli_run: dict) -> None:
    result = result_of(cli_run)
    rows = {(r.round, r.client, r.attack): r for r in result.leakage}
    assert sorted(rows) == sorted((rnd, c, a) for rnd in (1, 2) for c in (0, 1)
                                  for a in (flower.LABEL_ATTACK, flower.UPDATE_ATTACK))
    for (_, client, attack), row in rows.items():
        assert row.verdict in ("leaks", "no leakage found", "inconclusive") and row.reason
        assert row.images == result.partition_sizes[client]
        if attack == flower.UPDATE_ATTACK:
            assert row.status == "ok" and row.psnr is not None and row.control_psnr is not None
            # every client holds more than the 16 images the audit attacks: a seeded
            # subsample of 16 are the victims, and the row says so
            assert row.images > 16 and row.victims == 16 and "subsample of 16" in row.reason
        else:
            assert row.label_recovery is not None and row.control_label_recovery is not None


def test_a_bad_option_fails_before_any_work() -> None:
    from shieldsplit.cli import app

    for args in (["--defense", "pgsl"], ["--partition", "dirichlet:0"], ["--audit", "x"],
                 ["--defense", "dpsgd", "--epsilon-budget", "0"],
                 ["--defense", "none", "--epsilon-budget", "8", "--limit", "40"],
                 ["--defense", "dpsgd", "--lr", "0"],
                 ["--defense", "none", "--lr", "0.1", "--limit", "40"],
                 ["--out", "/dev/null/sub/r.html"], ["--privacy-dir", "/dev/null/x"],
                 ["--defense", "dpsgd", "--option", "dpsgd.noise=1", "--limit", "40"],
                 ["--defense", "dpsgd", "--option", "dpsgd.noise_multiplier=-1",
                  "--limit", "40"],
                 ["--defense", "dpsgd", "--option", "laplace.scale=1"],
                 ["--defense", "dpsgd", "--option", "dpsgd.lr=0.1", "--lr", "0.1"]):
        done = CliRunner().invoke(app, ["federate", *args])
        assert done.exit_code == 2 and done.stderr.startswith("error: "), done.output


def test_a_deployments_run_config_carries_the_defences_own_options() -> None:
    from shieldsplit.adapters.flower.deployment import spec_from_config

    spec = spec_from_config({"defense": "dpsgd", "limit": 40,
                             "options": '{"noise_multiplier": 0.5, "lr": 0.01}'})
    assert (spec.options["noise_multiplier"], spec.options["lr"]) == (0.5, 0.01)
    plain = spec_from_config({"defense": "dpsgd"}).options  # federate's learning rate
    assert "noise_multiplier" not in plain and plain["lr"] == FEDERATED_LR["dpsgd"] == 0.03
    for bad in ("[0.5]", "{noise}", '{"noise": 0.5}', '{"noise_multiplier": -1}'):
        with pytest.raises(ConfigError, match=r"options|noise"):
            spec_from_config({"defense": "dpsgd", "options": bad})


def test_a_restarted_accountant_is_flagged_in_the_table_and_the_html() -> None:
    # issue 25's restart: client 1 reported 5.20 after round 1 and, after its SuperNode
    # restarted, 5.20 again after round 3: the report must say the loss is under-reported
    rounds = [flower.ClientRound(round=r, client=c, examples=10, train_loss=0.1, epsilon=e)
              for r, c, e in ((1, 0, 5.2), (2, 0, 6.1), (3, 0, 6.9), (1, 1, 5.2), (3, 1, 5.2))]
    result = flower.FederatedResult(defense="dpsgd", clients=2, rounds=3, partition="iid",
                                    partition_sizes=[10, 10], local_epochs=1, batch_size=4,
                                    seed=0, delta=1e-5, client_rounds=rounds)
    gaps = result.accounting_gaps()
    assert len(gaps) == 1 and gaps[0].startswith("client 1:") and "at least 5.2" in gaps[0]
    assert "PRIVACY ACCOUNTING: client 1" in result.table()
    assert "Privacy accounting:" in flower.render_html(result)
    growing = result.model_copy(update={"client_rounds": rounds[:3]})
    assert growing.accounting_gaps() == []


# ------------------------------------------------------------------ durable accounting (issue 25)
def _train_message(arrays: Any, server_round: int) -> Any:
    """A server's training message of one round, as a SuperNode receives it."""
    import time

    from flwr.app import ConfigRecord, Message, Metadata, RecordDict

    meta = Metadata(run_id=7, message_id=f"train-{server_round}", src_node_id=0,
                    dst_node_id=1, reply_to_message_id="", group_id=str(server_round),
                    created_at=time.time(), ttl=3600, message_type="train")
    return Message(RecordDict({"arrays": arrays,  # type: ignore[call-overload]
                               "config": ConfigRecord({"server-round": server_round})}),
                   metadata=meta)


def _fresh_context(**node: Any) -> Any:
    """A SuperNode's context right after it (re)started: nothing in memory."""
    from flwr.app import Context, RecordDict

    return Context(run_id=7, node_id=1, node_config={"partition-id": 0, "num-partitions": 1,
                                                     **node},
                   state=RecordDict(), run_config={})


@pytest.fixture(scope="module")
def dp_spec() -> Any:
    from shieldsplit.models import SmallConvNet

    torch.manual_seed(0)
    x, y = torch.rand(24, 1, 8, 8), torch.arange(24) % 2
    shards = flower.make_shards(x, y, clients=1, partition="iid", seed=0)
    return flower.ClientSpec(model=SmallConvNet(num_classes=2, image_size=8, width=4),
                             defense="dpsgd", options={"cut": 1, "noise_multiplier": 1.0},
                             shards=shards, batch_size=8)


def test_the_ledger_round_trips_exactly_and_is_keyed_by_its_fingerprint(tmp_path: Path) -> None:
    from shieldsplit.adapters.flower.ledger import fingerprint

    key = fingerprint({"run": 7, "partition-id": 0, "seed": 0})
    ledger = flower.PrivacyLedger(tmp_path, key)
    curve = torch.tensor([0.1, 1 / 3, 2.0**-40], dtype=torch.float64)
    ledger.save({"rdp": curve, "fits": torch.tensor(3)}, epsilon=1.5)
    ledger.save({"rdp": 2 * curve, "fits": torch.tensor(4)}, epsilon=2.5)
    back = flower.PrivacyLedger(tmp_path, key).load()
    assert back.rounds == 2 and back.epsilons == [1.5, 2.5]
    assert torch.equal(back.tensors()["rdp"], 2 * curve)  # float64 survives JSON exactly
    assert back.tensors()["fits"].dtype == torch.int64 and int(back.tensors()["fits"]) == 4
    assert json.loads(ledger.path.read_text())["format"].startswith("shieldsplit.privacy")
    # another run, seed or partition: another file, starting at zero
    for other in ({"run": 8, "partition-id": 0, "seed": 0},
                  {"run": 7, "partition-id": 1, "seed": 0},
                  {"run": 7, "partition-id": 0, "seed": 1}):
        assert fingerprint(other) != key
        assert flower.PrivacyLedger(tmp_path, fingerprint(other)).load().rounds == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{key}.json"]  # no temp file


def test_a_failed_ledger_write_keeps_the_previous_entry(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from shieldsplit.errors import OutputPathError

    ledger = flower.PrivacyLedger(tmp_path, "k")
    ledger.save({"rdp": torch.ones(2, dtype=torch.float64)}, epsilon=1.0)

    def broken(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OutputPathError):
        ledger.save({"rdp": torch.full((2,), 5.0, dtype=torch.float64)}, epsilon=9.0)
    monkeypatch.undo()
    kept = ledger.load()
    assert kept.epsilons == [1.0] and kept.tensors()["rdp"].tolist() == [1.0, 1.0]
    assert [p.name for p in tmp_path.iterdir()] == ["k.json"]


def test_a_corrupt_or_foreign_ledger_is_a_typed_error_not_a_silent_zero(tmp_path: Path) -> None:
    ledger = flower.PrivacyLedger(tmp_path, "k")
    ledger.path.write_text("{not json")
    with pytest.raises(ConfigError, match="privacy-ledger"):
        ledger.load()
    flower.PrivacyLedger(tmp_path, "other").save({"rdp": torch.ones(1)}, epsilon=1.0)
    (tmp_path / "other.json").rename(ledger.path)  # someone else's curve under our name
    with pytest.raises(ConfigError, match="key k"):
        ledger.load()


def test_a_restarted_client_continues_its_epsilon_from_its_ledger(dp_spec: Any,
                                                                   tmp_path: Path) -> None:
    app = flower.client_app(dp_spec)
    arrays = flower.to_record(flower.shared_state(dp_spec.build()))
    replies = [app(_train_message(arrays, r), _fresh_context(**{"privacy-dir": str(tmp_path)}))
               for r in (1, 2, 3)]
    eps = [float(m.content["metrics"]["epsilon"]) for m in replies]
    assert eps[0] < eps[1] < eps[2]
    assert [int(m.content["metrics"]["accountant-rounds"]) for m in replies] == [1, 2, 3]
    # the same three rounds on one SuperNode that never restarted: the same curve
    kept = _fresh_context(**{"privacy-dir": str(tmp_path / "kept")})
    steady = [float(app(_train_message(arrays, r), kept).content["metrics"]["epsilon"])
              for r in (1, 2, 3)]
    assert eps == pytest.approx(steady, rel=1e-9)
    # without its ledger a restart would have started again at round 1's value
    lost = app(_train_message(arrays, 3), _fresh_context(**{"privacy-dir": str(tmp_path / "x")}))
    assert float(lost.content["metrics"]["epsilon"]) == pytest.approx(eps[0], rel=1e-9)


def test_a_client_refuses_to_train_past_its_epsilon_budget(dp_spec: Any, tmp_path: Path) -> None:
    from dataclasses import replace

    from flwr.app import ArrayRecord

    node = {"privacy-dir": str(tmp_path)}
    first = flower.client_app(dp_spec)(
        _train_message(flower.to_record(flower.shared_state(dp_spec.build())), 1),
        _fresh_context(**node))
    spent = float(first.content["metrics"]["epsilon"])
    budgeted = flower.client_app(replace(dp_spec, epsilon_budget=spent * 1.01))
    arrays = flower.to_record(flower.shared_state(dp_spec.build()))
    reply = budgeted(_train_message(arrays, 2), _fresh_context(**node))
    metrics = reply.content["metrics"]
    assert metrics["refused"] == 1 and float(metrics["epsilon"]) == pytest.approx(spent)
    assert not any(isinstance(v, ArrayRecord) for v in reply.content.values())  # no update
    assert "budget" in str(reply.content["refusal"]["reason"])
    ledger_files = list(tmp_path.iterdir())
    assert len(ledger_files) == 1
    assert json.loads(ledger_files[0].read_text())["rounds"] == 1  # the accountant is unchanged
    # a node's own, tighter budget refuses even when the run declares none
    tight = flower.client_app(dp_spec)(_train_message(arrays, 2),
                                       _fresh_context(**node, **{"epsilon-budget": 0.5}))
    assert tight.content["metrics"]["refused"] == 1


def test_the_server_records_a_refusal_and_the_run_is_then_not_complete() -> None:
    from flwr.app import ConfigRecord, MetricRecord, RecordDict
    from flwr.serverapp.strategy import FedAvg

    result = flower.FederatedResult(defense="dpsgd", clients=2, rounds=1, partition="iid",
                                    partition_sizes=[], local_epochs=1, batch_size=4, seed=0,
                                    complete=False)
    strategy = flower.RecordingStrategy(FedAvg(), result)
    refusal = _train_message(flower.to_record({"w": torch.zeros(2)}), 1)
    refusal.__dict__["_content"] = RecordDict({
        "metrics": MetricRecord({"num-examples": 5, "partition-id": 1, "refused": 1,
                                 "epsilon": 9.0}),
        "refusal": ConfigRecord({"reason": "past its epsilon budget 8"})})
    good, bad, rejected, refused = strategy._sorted([refusal])
    assert good == bad == rejected == [] and refused == ["client 1: past its epsilon budget 8"]
    result.history.append(flower.RoundRecord(round=1, accuracy=0.5, clients=[0],
                                             refused=refused))
    result.finish()
    assert not result.complete and "1 of the 2 clients" in str(result.error)
    assert "client 1 (epsilon budget)" in result.table()


def test_a_run_is_complete_only_with_every_round_and_its_clients() -> None:
    def run(*history: Any, min_clients: int = 0) -> Any:
        return flower.FederatedResult(
            defense="none", clients=2, rounds=2, partition="iid", partition_sizes=[4, 4],
            local_epochs=1, batch_size=2, seed=0, min_clients=min_clients,
            history=list(history), complete=False).finish()

    full = [flower.RoundRecord(round=r, accuracy=0.5, clients=[0, 1]) for r in (1, 2)]
    assert run(*full).complete and run(*full).error is None
    short = flower.RoundRecord(round=2, accuracy=0.5, clients=[0], lost=["client 1"])
    assert not run(full[0], short).complete
    assert "client 1" in str(run(full[0], short).error)
    assert run(full[0], short, min_clients=1).complete
    assert not run(full[0]).complete
    interrupted = flower.FederatedResult.model_validate(run(*full).model_dump())
    interrupted.error = None
    assert interrupted.finish("interrupted (Ctrl-C)").complete is False


def test_an_offline_client_is_named_lost_even_when_it_was_sent_nothing() -> None:
    from flwr.serverapp.strategy import FedAvg

    result = flower.FederatedResult(defense="none", clients=3, rounds=1, partition="iid",
                                    partition_sizes=[], local_epochs=1, batch_size=4, seed=0)
    strategy = flower.RecordingStrategy(FedAvg(), result)
    record = flower.RoundRecord(round=2, clients=[0], rejected=["client 2: bad arrays"])
    assert strategy.absent(record) == ["client 1 (no reply: offline)"]
    unnamed = flower.RoundRecord(round=2, clients=[0], lost=["node 99"])
    assert strategy.absent(unnamed) == []  # node 99 may be client 1 or 2: not guessed


def test_the_report_flags_an_accountant_that_covers_fewer_rounds_than_were_trained() -> None:
    rounds = [flower.ClientRound(round=r, client=0, examples=10, train_loss=0.1, epsilon=e,
                                 accountant_rounds=a)
              for r, e, a in ((1, 5.2, 1), (2, 6.8, 2), (3, 7.1, 1))]
    result = flower.FederatedResult(defense="dpsgd", clients=1, rounds=3, partition="iid",
                                    partition_sizes=[10], local_epochs=1, batch_size=4, seed=0,
                                    delta=1e-5, epsilon_budget=9.0, client_rounds=rounds)
    gaps = result.accounting_gaps()
    assert len(gaps) == 1 and "covers 1 round(s) but the server saw it train 3" in gaps[0]
    assert "cumulative epsilon per round 5.2, 6.8, 7.1" in result.table()
    assert "budget 9" in flower.render_html(result)
    continued = [r.model_copy(update={"accountant_rounds": i + 1}) for i, r in enumerate(rounds)]
    assert result.model_copy(update={"client_rounds": continued}).accounting_gaps() == []


def test_a_simulation_past_its_budget_records_every_refusal_and_is_not_complete() -> None:
    from shieldsplit.data import load_dataset
    from shieldsplit.models import SmallConvNet

    ds = load_dataset("digits", seed=0, limit=60)
    torch.manual_seed(0)
    result = flower.simulate(SmallConvNet(num_classes=10, image_size=8, width=4),
                             data=(ds.x_train, ds.y_train), defense="dpsgd", clients=2,
                             rounds=1, batch_size=16, cut=1, progress=False,
                             epsilon_budget=1e-3)
    assert len(result.history) == 1, result.error
    assert all(len(h.refused) == 2 and h.clients == [] for h in result.history)
    assert all("Privacy budget exhausted" in r for h in result.history for r in h.refused)
    assert result.client_rounds == [] and not result.complete
    assert "0 of the 2 clients" in str(result.error) and result.epsilon_budget == 1e-3
