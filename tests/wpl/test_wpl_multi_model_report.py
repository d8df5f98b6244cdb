"""nas_forgetting.wpl.multi_model_report on hand-built workdirs whose numbers are known: the late-round averages,
the pairing by seed and its refusals, and the written report."""

import json

import numpy as np
import pytest

from nas_forgetting.errors import DataError
from nas_forgetting.io.metrics import write_csv
from nas_forgetting.wpl import multi_model_report as report
from nas_forgetting.wpl.forgetting import ROUND_SUMMARY_KEYS


def _workdir(root, name, *, seed, wpl, after_next, end, frac, valid, test, alone=None, lr=5.0):
  w = root / name
  (w / "multi_model").mkdir(parents=True)
  (w / "config.json").write_text(json.dumps({"mode": "multi_model", "network": "rnn", "seed": seed,
                                             "shared": {"lr": lr}, "wpl": {"enabled": wpl, "alpha_fisher": 60.0}}))
  rows = []
  for r, (a, e, f) in enumerate(zip(after_next, end, frac)):
    row = {k: 0.0 for k in ROUND_SUMMARY_KEYS}
    row.update({"round": r, "after_next/mean_diff": a, "end/mean_diff": e, "after_next/frac_worse": f,
                "after_next/mean_after_burst": 200.0 if r % 2 else 100.0})
    rows.append(row)
  write_csv(str(w / "multi_model" / "forgetting.csv"), rows, fieldnames=["round", *ROUND_SUMMARY_KEYS])
  final = [{"arch": f"a{i}", "shared_perplexity": 100.0 + i, "valid_perplexity": v, "test_perplexity": t,
            **({} if alone is None else {"alone_perplexity": alone[i]})} for i, (v, t) in enumerate(zip(valid, test))]
  write_csv(str(w / "multi_model" / "final.csv"), final)
  return w


def _pair(root, seed, control_late, treated_late, *, alone=None, treated_alone=True):
  # Rounds 0-1 are early (large negative forgetting), the last two hold the late values.
  c = _workdir(root, f"nowpl_{seed}", seed=seed, wpl=False, after_next=[-50.0, -40.0, *control_late],
               end=[-60.0, -10.0, 2.0, 4.0], frac=[0.0, 0.0, 1.0, 0.5], valid=[200.0, 220.0], test=[210.0, 230.0],
               alone=alone)
  t = _workdir(root, f"wpl_{seed}", seed=seed, wpl=True, after_next=[-50.0, -40.0, *treated_late],
               end=[-60.0, -10.0, 1.0, 1.0], frac=[0.0, 0.0, 0.5, 0.0], valid=[201.0, 223.0], test=[211.0, 233.0],
               alone=alone if treated_alone else None)
  return [c, t]


def test_late_averages_and_paired_differences_match_hand_computation(tmp_path):
  dirs = (_pair(tmp_path, 1, [10.0, 6.0], [4.0, 2.0], alone=[50.0, 40.0], treated_alone=False)
          + _pair(tmp_path, 2, [3.0, 5.0], [3.0, 3.0], alone=[50.0, 40.0])
          + _pair(tmp_path, 3, [8.0, 8.0], [5.0, 5.0], alone=[50.0, 40.0]))
  result = report.compare(dirs, last_rounds=2)
  assert result["seeds"] == [1, 2, 3]
  seed1 = result["runs"]["1"]
  assert seed1["control"]["figures"]["late_after_next"] == 8.0 and seed1["treated"]["figures"]["late_after_next"] == 3.0
  assert seed1["control"]["figures"]["late_end"] == 3.0 and seed1["treated"]["figures"]["late_end"] == 1.0
  assert seed1["control"]["figures"]["late_frac_worse"] == 0.75
  assert seed1["control"]["figures"]["late_relative"] == pytest.approx((10.0 / 100 + 6.0 / 200) / 2)
  assert seed1["control"]["figures"]["valid"] == 210.0 and seed1["treated"]["figures"]["test"] == 222.0
  assert seed1["control"]["figures"]["kendall_tau"] == -1.0  # shared 100 < 101, alone 50 > 40: opposite ranks
  assert seed1["treated"]["figures"]["kendall_tau"] == -1.0  # from the control's stand-alone column
  assert result["paired"]["kendall_tau"]["mean"] == 0.0
  # Late forgetting after the next burst: control 8, 4, 8; WPL 3, 3, 5: differences -5, -1, -3.
  p = result["paired"]["late_after_next"]
  assert p["mean"] == pytest.approx(-3.0) and p["sd"] == pytest.approx(2.0) and p["frac_lower"] == 1.0
  half = 4.302653 * 2.0 / np.sqrt(3)  # t_{0.975, 2} = 4.302653 (tables)
  assert (p["t_low"], p["t_high"]) == pytest.approx((-3.0 - half, -3.0 + half), abs=1e-5)
  assert p["relative_reduction"] == pytest.approx(1 - (11 / 3) / (20 / 3))
  assert result["paired"]["valid"]["mean"] == pytest.approx(2.0)
  written = report.write_report(result, tmp_path / "out")
  assert all(path.is_file() for path in written)
  table = (tmp_path / "out" / "comparison.md").read_text()
  assert "| 1 | 4 / 4 | 8.000 / 3.000 |" in table and "| late_after_next | 6.667 | 3.667 | -3.000 (2.000) |" in table
  assert json.loads((tmp_path / "out" / "comparison.json").read_text())["paired"]["late_after_next"]["mean"] == -3.0
  with pytest.raises(DataError, match="ran 4 rounds, fewer than the averaged window of the last 5"):
    report.compare(dirs, last_rounds=5)  # the window would take in rounds 0-1


def test_pairing_refuses_missing_arms_duplicates_and_mixed_settings(tmp_path):
  dirs = _pair(tmp_path, 1, [1.0, 1.0], [1.0, 1.0])
  with pytest.raises(DataError, match="seed 1 has only a control run"):
    report.pair_runs(dirs[:1])
  with pytest.raises(DataError, match="seed 1 has two treated runs"):
    report.pair_runs(dirs + [_workdir(tmp_path, "again", seed=1, wpl=True, after_next=[1.0], end=[1.0], frac=[1.0],
                                      valid=[1.0], test=[1.0])])
  other = _workdir(tmp_path, "other_lr", seed=2, wpl=False, after_next=[1.0], end=[1.0], frac=[1.0], valid=[1.0],
                   test=[1.0], lr=1.0)
  twin = _workdir(tmp_path, "other_lr_wpl", seed=2, wpl=True, after_next=[1.0], end=[1.0], frac=[1.0], valid=[1.0],
                  test=[1.0], lr=1.0)
  with pytest.raises(DataError, match=r"differ in settings every run must share \(shared.lr: 1.0 vs 5.0\)"):
    report.pair_runs(dirs + [other, twin])
  with pytest.raises(DataError, match="no config.json"):
    report.pair_runs([tmp_path])


def _edit_config(workdir, edit):
  config = json.loads((workdir / "config.json").read_text())
  edit(config)
  (workdir / "config.json").write_text(json.dumps(config))


def test_pairing_ignores_the_stand_alone_switch_but_not_the_burst_length(tmp_path):
  control, treated = _pair(tmp_path, 1, [1.0, 1.0], [1.0, 1.0])
  _edit_config(control, lambda c: c.update(multi_model={"num_archs": 4, "stand_alone": True}))
  _edit_config(treated, lambda c: c.update(multi_model={"num_archs": 4, "stand_alone": False}))
  assert report.pair_runs([control, treated]) == {1: {"control": control, "treated": treated}}
  _edit_config(control, lambda c: c["wpl"].update(num_batch_per_iter=10))
  with pytest.raises(DataError, match=r"wpl.num_batch_per_iter: None vs 10"):
    report.pair_runs([control, treated])
  _edit_config(treated, lambda c: c["wpl"].update(num_batch_per_iter=10, alpha_fisher=1500.0, proximal=True))
  assert report.pair_runs([control, treated])[1]["treated"] == treated
