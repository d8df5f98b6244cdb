"""Mode 'multi_model': the round-robin training of a fixed set of architectures, smoke-tested on the tiny strict
setting of configs/wpl_enas_ptb.py (offline PTB), and the loose setting's config."""

import jax
import numpy as np
import pytest

from configs import wpl_enas_ptb
from nas_forgetting.enas import experiment
from nas_forgetting.enas import multi_model
from nas_forgetting.enas.state import Run
from nas_forgetting.errors import ConfigError
from nas_forgetting.io.metrics import read_csv, read_jsonl
from nas_forgetting.statistics import kendall_tau_b
from nas_forgetting.wpl.forgetting import ROUND_SUMMARY_KEYS, round_forgetting_summary


def test_strict_and_loose_settings():
  strict, loose = wpl_enas_ptb.get_config("strict"), wpl_enas_ptb.get_config("quick,loose,nowpl")
  assert strict.mode == loose.mode == "multi_model"
  assert strict.multi_model.patience > 0 and loose.multi_model.patience == 0
  assert strict.wpl.enabled and not loose.wpl.enabled
  for c in (strict, loose):
    experiment.validate_config(c)


def test_round_robin_writes_the_round_tensor_and_its_forgetting_with_one_compilation(shared_data, tmp_path):
  c = wpl_enas_ptb.get_config("tiny,strict")
  c.data.path = str(shared_data / "ptb")
  c.multi_model.num_archs, c.multi_model.max_rounds = 3, 3
  experiment.validate_config(c)
  run = Run(c, tmp_path)
  summary = multi_model.round_robin(run)
  experiment.print_result(run, summary)
  # One compiled evaluation for all architectures, one compiled shared step for every architecture.
  assert run.metric._cache_size() == 1 and run.task._step._cache_size() == 1
  out = tmp_path / "multi_model"
  rounds = summary["rounds"]
  assert 1 <= rounds <= 3 and (summary["converged"] or rounds == 3)
  assert len((out / "archs.txt").read_text().splitlines()) == 3
  long_rows = read_csv(out / "metrics.csv")
  assert len(long_rows) == rounds * 3 * 3
  tensor = np.array([float(r["perplexity"]) for r in long_rows]).reshape(rounds, 3, 3)
  assert np.all(np.isfinite(tensor)) and np.all(tensor > 1)
  rows = read_csv(out / "forgetting.csv")
  assert [int(r["round"]) for r in rows] == list(range(rounds))
  for r, row in enumerate(rows):  # the CSV's summaries are those of the written tensor
    expected = round_forgetting_summary(tensor[r], higher_is_better=False)
    assert [float(row[k]) for k in ROUND_SUMMARY_KEYS] == pytest.approx([expected[k] for k in ROUND_SUMMARY_KEYS])
  assert summary["forgetting/after_next/mean_diff_last_round"] == pytest.approx(float(rows[-1]["after_next/mean_diff"]))
  final = read_csv(out / "final.csv")  # per architecture: last score on the wide batch, whole validation and test
  assert [r["arch"] for r in final] == (out / "archs.txt").read_text().splitlines()
  assert [float(r["shared_perplexity"]) for r in final] == pytest.approx(tensor[-1, :, -1])
  assert summary["final_valid_perplexity_mean"] == pytest.approx(np.mean([float(r["valid_perplexity"]) for r in final]))
  assert all(1 < float(r["test_perplexity"]) < 1e5 for r in final) and "kendall_tau" not in summary
  stiffness = [rec["multi_model/wpl_sgd_stiffness"] for rec in read_jsonl(tmp_path / "metrics.jsonl")]
  assert len(stiffness) == rounds and summary["wpl_sgd_stiffness_max"] == pytest.approx(max(stiffness))
  assert max(stiffness) > 0


def test_stand_alone_ranking_and_wpl_over_every_shared_weight(shared_data, tmp_path):
  """stand_alone: each architecture trained alone for the bursts it got, Kendall's tau against the shared ranking;
  with wpl.monitor='all' the WPL state covers the weights every architecture shares."""
  c = wpl_enas_ptb.get_config("tiny,loose")
  c.data.path = str(shared_data / "ptb")
  c.multi_model.num_archs, c.multi_model.max_rounds, c.multi_model.stand_alone = 3, 1, True
  c.multi_model.eval_width = 2
  c.wpl.monitor = "all"
  experiment.validate_config(c)
  run = Run(c, tmp_path)
  assert sorted(run.task.monitored(run.task.init_params(jax.random.key(0)))["shared"]) == [
      "b_x", "decoder_bias", "embedding", "w_h", "w_x"]
  summary = multi_model.round_robin(run)
  final = read_csv(tmp_path / "multi_model" / "final.csv")
  shared, alone = ([float(r[k]) for r in final] for k in ("shared_perplexity", "alone_perplexity"))
  assert summary["kendall_tau"] == pytest.approx(kendall_tau_b(shared, alone))
  assert all(a != s for a, s in zip(alone, shared))  # alone: trained on its own bursts only


def test_strict_convergence_rule():
  assert not multi_model.converged([5.0, 4.0, 4.5], patience=2, higher_is_better=False)  # round 1 improved
  assert multi_model.converged([5.0, 4.0, 4.5, 4.2], patience=2, higher_is_better=False)  # 2 rounds above 4.0
  assert not multi_model.converged([5.0, 4.0, 4.5, 3.9], patience=2, higher_is_better=False)
  assert multi_model.converged([0.5, 0.6, 0.6], patience=1, higher_is_better=True)  # a tie is no improvement
  assert not multi_model.converged([0.5, 0.6, 0.7], patience=1, higher_is_better=True)
  assert not multi_model.converged([5.0, 6.0], patience=2, higher_is_better=False)  # too few rounds to judge
  assert not multi_model.converged([5.0, 6.0, 7.0, 8.0], patience=0, higher_is_better=False)  # loose
  # min_rounds: not judged before that many rounds, then as without it
  assert not multi_model.converged([5.0, 4.0, 4.5, 4.2], patience=2, higher_is_better=False, min_rounds=5)
  assert multi_model.converged([5.0, 4.0, 4.5, 4.2], patience=2, higher_is_better=False, min_rounds=4)
  assert multi_model.converged([5.0, 4.0, 4.5, 4.2, 4.1], patience=2, higher_is_better=False, min_rounds=5)


def _tiny_round_robin(shared_data, rounds):
  c = wpl_enas_ptb.get_config("tiny,loose")
  c.data.path = str(shared_data / "ptb")
  c.multi_model.num_archs, c.multi_model.max_rounds, c.multi_model.eval_width = 2, rounds, 2
  c.train.save_every = 1
  return c


def _outputs(workdir):
  """Everything a round-robin run writes that must not depend on interruptions (the clock aside)."""
  files = {name: (workdir / "multi_model" / name).read_text() for name in ("metrics.csv", "forgetting.csv",
                                                                          "final.csv", "archs.txt")}
  records = [{k: v for k, v in rec.items() if k != "time"} for rec in read_jsonl(workdir / "metrics.jsonl")]
  return files, records


def test_round_robin_resumes_exactly_and_continues_to_more_rounds(shared_data, tmp_path, monkeypatch):
  """Killed in round 2 (after round 1's checkpoint), relaunched: the outputs equal an uninterrupted run's, the
  records logged after the checkpoint dropped; a finished run's relaunch writes nothing; a 2-round run relaunched
  with max_rounds 3 equals the 3-round run."""
  straight = _tiny_round_robin(shared_data, 3)
  expected_summary = multi_model.round_robin(Run(straight, tmp_path / "straight"))
  expected = _outputs(tmp_path / "straight")

  calls = {"n": 0}
  summarise = multi_model.forgetting_lib.round_forgetting_summary

  def dies_in_round_2(matrix, **kw):
    calls["n"] += 1
    if calls["n"] == 3:
      raise KeyboardInterrupt  # after round 2's training and scoring, before its logs and checkpoint
    return summarise(matrix, **kw)

  monkeypatch.setattr(multi_model.forgetting_lib, "round_forgetting_summary", dies_in_round_2)
  with pytest.raises(KeyboardInterrupt):
    multi_model.round_robin(Run(_tiny_round_robin(shared_data, 3), tmp_path / "killed"))
  monkeypatch.setattr(multi_model.forgetting_lib, "round_forgetting_summary", summarise)
  assert not (tmp_path / "killed" / "summary.json").exists()
  resumed = multi_model.round_robin(Run(_tiny_round_robin(shared_data, 3), tmp_path / "killed"))
  assert _outputs(tmp_path / "killed") == expected
  strip = lambda s: {k: v for k, v in s.items() if k != "seconds"}
  assert strip(resumed) == strip(expected_summary)

  again = multi_model.round_robin(Run(_tiny_round_robin(shared_data, 3), tmp_path / "killed"))
  assert again["finished_before"] and _outputs(tmp_path / "killed") == expected

  multi_model.round_robin(Run(_tiny_round_robin(shared_data, 2), tmp_path / "longer"))
  continued = multi_model.round_robin(Run(_tiny_round_robin(shared_data, 3), tmp_path / "longer"))
  assert _outputs(tmp_path / "longer") == expected and strip(continued) == strip(expected_summary)
  with pytest.raises(ConfigError, match="max_rounds >= 3"):
    multi_model.round_robin(Run(_tiny_round_robin(shared_data, 2), tmp_path / "longer"))


def test_stand_alone_added_to_a_finished_run_and_independent_of_wpl(shared_data, tmp_path):
  """A finished run relaunched with stand_alone on gains the alone column and Kendall's tau, its round-robin numbers
  unchanged; the alone scores do not depend on WPL (a WPL run's equal its no-WPL twin's), so one run of a
  with/without pair serves both arms' tau (nas_forgetting.wpl.multi_model_report)."""
  assert "multi_model.stand_alone" in experiment.RESUME_SAFE_FIELDS
  nowpl = _tiny_round_robin(shared_data, 2)
  nowpl.wpl.enabled = False
  multi_model.round_robin(Run(nowpl, tmp_path / "nowpl"))
  before = read_csv(tmp_path / "nowpl" / "multi_model" / "final.csv")
  nowpl.multi_model.stand_alone = True
  summary = multi_model.round_robin(Run(nowpl, tmp_path / "nowpl"))
  assert "finished_before" not in summary
  after = read_csv(tmp_path / "nowpl" / "multi_model" / "final.csv")
  assert [{k: v for k, v in row.items() if k != "alone_perplexity"} for row in after] == before
  alone = [float(row["alone_perplexity"]) for row in after]
  assert summary["kendall_tau"] == pytest.approx(kendall_tau_b([float(r["shared_perplexity"]) for r in after], alone))
  assert multi_model.round_robin(Run(nowpl, tmp_path / "nowpl"))["finished_before"]

  wpl = _tiny_round_robin(shared_data, 2)
  wpl.multi_model.stand_alone = True
  assert wpl.wpl.enabled
  multi_model.round_robin(Run(wpl, tmp_path / "wpl"))
  final = read_csv(tmp_path / "wpl" / "multi_model" / "final.csv")
  assert [float(row["alone_perplexity"]) for row in final] == pytest.approx(alone, rel=1e-6)
  assert [row["shared_perplexity"] for row in final] != [row["shared_perplexity"] for row in after]
