"""Smoke runs of every ENAS mode on tiny sizes with real data (PTB and WikiText-2 offline splits, CIFAR-10 JPEG
subset)."""

import json

import numpy as np
import pytest


from configs import enas_cifar10, enas_ptb
from nas_forgetting.data.text import load_corpus
from nas_forgetting.enas import experiment
from nas_forgetting.enas import search_space as ss
from nas_forgetting.enas import state
from nas_forgetting.errors import ArchitectureError
from nas_forgetting.io.metrics import read_csv, read_jsonl


def tiny_rnn_config(shared_data, *variants):
  """configs/enas_ptb.py:tiny (plus `variants`) reading the corpus from the test data folder."""
  c = enas_ptb.get_config(",".join(("tiny",) + variants))
  c.data.path = str(shared_data / c.data.name)
  return c


@pytest.fixture(scope="module")
def trained(shared_data, tmp_path_factory):
  """A 1-epoch search, then the same run resumed to 2 epochs; and the 2 epochs run without interruption."""
  workdir = tmp_path_factory.mktemp("enas_rnn")
  c = tiny_rnn_config(shared_data)
  first = experiment.run(c, str(workdir))
  c.train.max_epoch = 2
  second = experiment.run(c, str(workdir))
  straight = experiment.run(c, str(tmp_path_factory.mktemp("enas_rnn_straight")))
  return c, workdir, first, second, straight


def test_resumed_run_equals_an_uninterrupted_one(trained):
  _, _, _, resumed, straight = trained
  assert resumed["arch"] == straight["arch"]
  assert resumed["eval/test_perplexity"] == pytest.approx(straight["eval/test_perplexity"], rel=1e-6)


def test_tiny_search_gives_what_its_docstring_states(trained, shared_data):
  """configs/enas_ptb.py:tiny: an untrained smoke run whose derived cell's test perplexity is near the vocabulary
  size (a uniform guess over PTB's offline valid + test vocabulary)."""
  c, _, first, _, _ = trained
  vocab = len(load_corpus(c.data.path, allow_missing_train=True).vocab)
  assert vocab == 7596 and "7,596-word vocabulary" in enas_ptb.__doc__
  assert "test perplexity is about 7,000" in enas_ptb.__doc__
  assert 0.85 * vocab < first["eval/test_perplexity"] < 1.05 * vocab


def test_train_writes_outputs_and_resumes(trained):
  c, workdir, first, second, _ = trained
  space = ss.RnnSearchSpace(num_blocks=3)
  for summary in (first, second):
    assert "train.txt unavailable" in summary["data_note"] and "test.txt (first 6000 tokens)" in summary["data_note"]
    assert np.isfinite(summary["eval/test_perplexity"]) and summary["eval/test_perplexity"] > 1
  # The derived cell on disk is the reported one.
  assert space.to_string(ss.load_dag_file(workdir / "derived" / "dag.json", space)) == second["arch"]
  assert (workdir / "derived" / "cell.png").read_bytes().startswith(b"\x89PNG")
  assert (workdir / "curves_shared.png").exists() and (workdir / "curves_controller.png").exists()
  assert len(list((workdir / "networks").glob("*.png"))) == 4 and (workdir / "networks.gif").exists()
  rows = read_jsonl(workdir / "metrics.jsonl")
  shared_steps = [r["step"] for r in rows if "shared/loss" in r]
  assert max(shared_steps) == 12  # the resumed run continued from epoch 1: 6 + 6 steps
  assert sorted({r["epoch"] for r in rows if "forgetting/mean_diff" in r}) == [0, 1]
  controller = read_jsonl(workdir / "controller" / "metrics.jsonl")  # the controller's own step axis
  assert any("controller/reward" in r and "controller/entropy" in r for r in controller)
  assert not any("controller/reward" in r for r in rows)
  assert json.loads((workdir / "summary.json").read_text())["arch"] == second["arch"]


@pytest.mark.slow
def test_modes_on_a_trained_run(trained, tmp_path):
  c, workdir, _, second, _ = trained
  c = c.copy_and_resolve_references()
  c.load_workdir = str(workdir)
  c.mode = "derive"
  derived = experiment.run(c, str(tmp_path / "derive"))
  assert np.isfinite(derived["eval/test_perplexity"])
  c.mode = "evaluate"
  c.dag_path = str(workdir / "derived" / "dag.json")
  evaluated = experiment.run(c, str(tmp_path / "evaluate"))
  assert evaluated["arch"] == second["arch"]
  assert evaluated["eval/test_perplexity"] == pytest.approx(second["eval/test_perplexity"], rel=1e-4)
  c.mode = "ablation_activation"
  experiment.run(c, str(tmp_path / "ablation"))
  rows = read_csv(tmp_path / "ablation" / "ablations" / "activation.csv")
  assert [r["variant"] for r in rows] == ["original", "all_tanh", "all_ReLU", "all_identity", "all_sigmoid"]
  assert float(rows[0]["test_perplexity"]) == pytest.approx(second["eval/test_perplexity"], rel=1e-4)
  c.mode = "ablation_node"
  experiment.run(c, str(tmp_path / "ablation"))
  rows = read_csv(tmp_path / "ablation" / "ablations" / "node.csv")
  assert [r["variant"] for r in rows] == ["original", "without_node_1", "without_node_2"]
  assert (tmp_path / "ablation" / "ablations" / "node.png").exists()
  c.mode = "train_scratch"
  c.dag_path = ""
  scratch = experiment.run(c, str(tmp_path / "scratch"))
  assert np.isfinite(scratch["eval/test_perplexity"])
  assert (tmp_path / "scratch" / "scratch" / "dag.json").exists()
  assert any("shared/loss" in r for r in read_jsonl(tmp_path / "scratch" / "scratch" / "metrics.jsonl"))
  c.mode = "rank_correlation"
  c.train.rank_num_archs = 3
  rank = experiment.run(c, str(tmp_path / "rank"))
  assert -1.0 <= rank["kendall_tau"] <= 1.0 and len(rank["rows"]) == 3
  assert len(read_csv(tmp_path / "rank" / "rank" / "rank.csv")) == 3


def test_single_mode_and_bad_dag_files(shared_data, tmp_path):
  c = tiny_rnn_config(shared_data, "single", "flexible")
  dag = {"-1": [[0, "tanh"]], "-2": [[0, "tanh"]], "0": [[1, "ReLU"], [2, "sigmoid"]], "1": [[3, "avg"]],
         "2": [[3, "avg"]], "3": [[4, "h[t]"]]}
  (tmp_path / "dag.json").write_text(json.dumps(dag))
  c.dag_path = str(tmp_path / "dag.json")
  summary = experiment.run(c, str(tmp_path / "single"))
  assert summary["arch"] == "0:tanh(x,h) 1:ReLU(0) 2:sigmoid(0)"
  assert (tmp_path / "single" / "single" / "dag.png").exists()
  dag["1"] = [[2, "tanh"]]  # node 2 now has two parents
  (tmp_path / "bad.json").write_text(json.dumps(dag))
  c.dag_path = str(tmp_path / "bad.json")
  with pytest.raises(ArchitectureError, match=r"bad.json: DAG node 2 has 2 parents"):
    experiment.run(c, str(tmp_path / "bad"))


def test_random_search_on_wikitext2(shared_data, tmp_path):
  """A search on WikiText-2 through the same run as the PTB searches, with uniformly random architectures (no
  controller; the controller is covered on PTB). The untrained model predicts about uniformly over WikiText-2's
  vocabulary."""
  c = tiny_rnn_config(shared_data, "wikitext2", "random")
  c.train.draw_every = 0
  c.wpl.measure_forgetting = False
  vocab = len(load_corpus(c.data.path, allow_missing_train=True).vocab)
  summary = experiment.run(c, str(tmp_path))
  assert summary["data_note"].startswith("wikitext2: train.txt unavailable")
  assert np.isfinite(summary["eval/test_perplexity"])
  rows = read_jsonl(tmp_path / "metrics.jsonl")
  first = next(r for r in rows if "shared/perplexity" in r)
  assert 0.8 * vocab < first["shared/perplexity"] < 1.2 * vocab  # logits start near 0: perplexity ~ vocabulary
  assert vocab > 15000  # WikiText-2 valid + test (18k words), not PTB (10k)
  assert not any("controller/loss" in r for r in rows)
  space = ss.RnnSearchSpace(num_blocks=3)
  assert space.to_string(ss.load_dag_file(tmp_path / "derived" / "dag.json", space)) == summary["arch"]


def test_derive_reference_logits_samples_without_squashing(shared_data, tmp_path):
  """controller.derive_reference_logits changes the derive sampler only: it samples with the same parameters from
  the controller without tanh_c (logits / temperature, checked by hand in tests/models/test_models_controller.py)."""
  c = tiny_rnn_config(shared_data)
  runs = {}
  for option in (False, True):
    c.controller.derive_reference_logits = option
    runs[option] = state.Run(c, tmp_path / str(option))
  plain, reference = runs[False], runs[True]
  assert plain.controller.tanh_c == 2.5 and reference.controller == plain.controller
  assert plain.derive_sample is plain.sample and reference.sample is plain.sample
  unsquashed = plain.controller.clone(tanh_c=0.0)
  assert reference.derive_sample is state.sampler(unsquashed, plain.space)
  assert reference.derive_sample is not plain.sample


def test_micro_cnn_search(shared_data, tmp_path, capsys):
  """configs/enas_cifar10.py:tiny without controller training (the WPL micro-CNN search trains it): shared
  training, derive (controller sampling, rewards), evaluation and outputs."""
  c = enas_cifar10.get_config("tiny")
  c.data.image.path = str(shared_data / "cifar10")
  c.controller.steps_per_epoch = 0
  c.wpl.measure_forgetting = False
  summary = experiment.run(c, str(tmp_path))
  assert 0.0 <= summary["eval/test_accuracy"] <= 1.0
  space = ss.CnnSearchSpace(num_blocks=2)
  assert space.to_string(ss.load_dag_file(tmp_path / "derived" / "dag.json", space)) == summary["arch"]
  assert (tmp_path / "derived" / "cell.png").exists()
  block = capsys.readouterr().out  # the result block: data subset and splits, network, derived cell, accuracies
  assert "ENAS search (without WPL) on cifar10" in block and "micro-CNN supernet: 2 nodes per cell" in block
  assert "training images" in block and "test images" in block and summary["arch"] in block
  assert f"test accuracy" in block and f"{summary['eval/test_accuracy']:.4g}" in block
