"""The paired with/without-WPL comparison of round-robin runs (ENAS mode 'multi_model'), over seeds.

Input: workdirs of `launch.py` runs in mode 'multi_model' (e.g. configs/wpl_enas_ptb.py:quick,strict and
:quick,strict,nowpl, one per seed). Runs are paired by seed: WPL on (`wpl.enabled`) is the treated arm, off the
control. All runs must have identical configs apart from the seed, the `wpl` group (but its burst length
`wpl.num_batch_per_iter`, the training both arms get) and `multi_model.stand_alone` (a measurement added to a run);
every seed needs both arms.

Per run it reads multi_model/forgetting.csv and multi_model/final.csv and takes:
  late_after_next   the mean over the last `last_rounds` rounds of the round's mean forgetting after the next
                    architecture's burst (`after_next/mean_diff`, > 0 = forgetting; the WPL paper's measure)
  late_end          the same for the forgetting at the end of the round (`end/mean_diff`)
  late_relative     the same forgetting relative to the metric's level: the mean over those rounds of
                    after_next/mean_diff / after_next/mean_after_burst (a fraction; an arm whose perplexity is
                    higher forgets more perplexity points for the same relative change)
  late_frac_worse   the mean over the same rounds of the fraction of architectures worse after the next burst
  valid / test      the architectures' mean metric on the whole validation (reward) and test splits with the final
                    shared weights (the cost side: does WPL make the shared weights worse?)
  kendall_tau       Kendall's tau-b between the run's shared-weight ranking of its architectures (final.csv's
                    shared_<metric>) and their stand-alone ranking (alone_<metric>), for seeds where a run of the
                    pair has the stand-alone column (`multi_model.stand_alone`, which may be switched on for a
                    finished run): one such run serves both arms, since the stand-alone training is the same in both
                    (no penalty, the same initial weights, bursts and learning rates; the control's is used when
                    both have it)
and for each the paired difference treated - control with a paired-t and a bootstrap 95 % interval
(`nas_forgetting.statistics.paired_difference`); for the forgetting also the relative reduction
1 - mean(treated) / mean(control).

Outputs (in --out): comparison.json (every number), comparison.md (the per-seed table and the paired summary, ready
for docs) and forgetting_over_rounds.png (each arm's per-round forgetting after the next burst, mean over seeds
with a 95 % t band, over the averaged window: from `last_rounds` before the shortest run's end, since the first
rounds' changes are orders of magnitude larger; rounds a run did not reach are left out of that round's mean).

  python -m nas_forgetting.wpl.multi_model_report --runs '/tmp/mm/*' --out /tmp/mm_report [--last_rounds 10]
"""

from __future__ import annotations

import glob
import json
import pathlib
from typing import Any, Sequence

import numpy as np
from absl import app, flags

from nas_forgetting.errors import ConfigError, DataError
from nas_forgetting.io import plots
from nas_forgetting.io.atomic import atomic_write_text
from nas_forgetting.io.metrics import read_csv
from nas_forgetting.statistics import kendall_tau_b, paired_difference, t_half_width

ARMS = ("control", "treated")  # WPL off, WPL on
FORGETTING = ("late_after_next", "late_end", "late_relative", "late_frac_worse")


def _config(workdir: pathlib.Path) -> dict[str, Any]:
  path = workdir / "config.json"
  if not path.is_file():
    raise DataError(f"{workdir} has no config.json: not a launch.py workdir")
  config = json.loads(path.read_text(encoding="utf-8"))
  if config.get("mode") != "multi_model":
    raise DataError(f"{workdir} is a run in mode {config.get('mode')!r}; expected 'multi_model'")
  return config


def run_figures(workdir: str | pathlib.Path, *, last_rounds: int) -> dict[str, Any]:
  """One run's numbers (see the module docstring; Kendall's tau is added by `compare`), its architectures' final
  shared-weight and stand-alone scores (None without the stand-alone column) and its per-round forgetting after the
  next burst."""
  workdir = pathlib.Path(workdir)
  out = workdir / "multi_model"
  if not (out / "final.csv").is_file():
    raise DataError(f"{workdir} has no multi_model/final.csv: the run did not finish")
  rounds = read_csv(out / "forgetting.csv")
  final = read_csv(out / "final.csv")
  config = _config(workdir)
  metric = "perplexity" if config.get("network", "rnn") == "rnn" else "accuracy"
  if len(rounds) < last_rounds:  # the window would reach into the first rounds, whose changes are far larger
    raise DataError(f"{workdir} ran {len(rounds)} rounds, fewer than the averaged window of the last {last_rounds}; "
                    f"compare with --last_rounds <= {len(rounds)} (leaving out the first rounds)")
  late = rounds[-last_rounds:]
  figures = {
      "late_after_next": float(np.mean([float(r["after_next/mean_diff"]) for r in late])),
      "late_end": float(np.mean([float(r["end/mean_diff"]) for r in late])),
      "late_relative": float(np.mean([float(r["after_next/mean_diff"]) / float(r["after_next/mean_after_burst"])
                                      for r in late])),
      "late_frac_worse": float(np.mean([float(r["after_next/frac_worse"]) for r in late])),
      "valid": float(np.mean([float(r[f"valid_{metric}"]) for r in final])),
      "test": float(np.mean([float(r[f"test_{metric}"]) for r in final])),
      "rounds": len(rounds),
  }
  alone = [float(r[f"alone_{metric}"]) for r in final] if f"alone_{metric}" in final[0] else None
  return {"workdir": str(workdir), "seed": int(config["seed"]), "wpl": bool(config["wpl"]["enabled"]),
          "metric": metric, "figures": figures, "shared": [float(r[f"shared_{metric}"]) for r in final],
          "alone": alone, "per_round": [float(r["after_next/mean_diff"]) for r in rounds]}


def _differing_fields(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
  """The dotted config paths whose values differ between `a` and `b` (a field only one of them has included)."""
  fields = []
  for k in sorted(set(a) | set(b)):
    x, y = a.get(k, "<absent>"), b.get(k, "<absent>")
    if isinstance(x, dict) and isinstance(y, dict):
      fields += _differing_fields(x, y, f"{prefix}{k}.")
    elif x != y:
      fields.append(f"{prefix}{k}: {x!r} vs {y!r}")
  return fields


def pair_runs(workdirs: Sequence[str | pathlib.Path]) -> dict[int, dict[str, pathlib.Path]]:
  """{seed: {'control': workdir, 'treated': workdir}}; DataError when a seed lacks an arm or has one twice, or when
  two runs' configs differ in a field every run must share (see the module docstring)."""
  pairs: dict[int, dict[str, pathlib.Path]] = {}
  configs: dict[pathlib.Path, dict[str, Any]] = {}
  for w in map(pathlib.Path, workdirs):
    config = configs[w] = _config(w)
    arm = ARMS[1] if config["wpl"]["enabled"] else ARMS[0]
    seed_pairs = pairs.setdefault(int(config["seed"]), {})
    if arm in seed_pairs:
      raise DataError(f"seed {config['seed']} has two {arm} runs: {seed_pairs[arm]} and {w}")
    seed_pairs[arm] = w
  if not pairs:
    raise DataError("no runs to compare")
  def strip(config):  # the fields every run must share
    shared = {k: v for k, v in config.items() if k not in ("wpl", "seed")}
    shared["wpl.num_batch_per_iter"] = config["wpl"].get("num_batch_per_iter")
    if "multi_model" in shared:
      shared["multi_model"] = {k: v for k, v in shared["multi_model"].items() if k != "stand_alone"}
    return shared

  reference = None
  for seed, arms in sorted(pairs.items()):
    if set(arms) != set(ARMS):
      raise DataError(f"seed {seed} has only a {', '.join(arms)} run ({', '.join(map(str, arms.values()))}); "
                      "every seed needs a run with WPL and one without")
    for w in arms.values():
      reference = reference or (w, strip(configs[w]))
      if strip(configs[w]) != reference[1]:
        fields = ", ".join(_differing_fields(strip(configs[w]), reference[1]))
        raise DataError(f"{w} and {reference[0]} differ in settings every run must share ({fields}): not one "
                        "comparison")
  return pairs


def compare(workdirs: Sequence[str | pathlib.Path], *, last_rounds: int = 10) -> dict[str, Any]:
  """Every number of the comparison (see the module docstring), as a JSON-ready dict."""
  if last_rounds < 1:
    raise ConfigError(f"last_rounds={last_rounds}; expected an integer >= 1")
  pairs = pair_runs(workdirs)
  seeds = sorted(pairs)
  runs = {seed: {arm: run_figures(pairs[seed][arm], last_rounds=last_rounds) for arm in ARMS} for seed in seeds}
  for seed in seeds:
    alone = [runs[seed][arm]["alone"] for arm in ARMS if runs[seed][arm]["alone"] is not None]
    for arm in ARMS if alone else ():
      runs[seed][arm]["figures"]["kendall_tau"] = kendall_tau_b(runs[seed][arm]["shared"], alone[0])
  keys = [k for k in (*FORGETTING, "valid", "test", "kendall_tau")
          if all(k in runs[s][arm]["figures"] for s in seeds for arm in ARMS)]
  paired = {}
  for k in keys:
    treated = [runs[s]["treated"]["figures"][k] for s in seeds]
    control = [runs[s]["control"]["figures"][k] for s in seeds]
    paired[k] = paired_difference(treated, control)
    if k in FORGETTING[:3]:
      paired[k]["relative_reduction"] = float(1 - np.mean(treated) / np.mean(control))
  return {"seeds": seeds, "last_rounds": last_rounds, "metric": runs[seeds[0]]["control"]["metric"],
          "runs": {str(s): runs[s] for s in seeds}, "paired": paired}


def _band(curves: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Rounds, mean over runs, and the 95 % t band of the mean, per round (only the runs that reached the round)."""
  length = max(len(c) for c in curves)
  table = np.full((len(curves), length), np.nan)
  for i, c in enumerate(curves):
    table[i, :len(c)] = c
  n = np.sum(np.isfinite(table), axis=0)
  mean = np.nanmean(table, axis=0)
  sd = np.array([np.nanstd(col, ddof=1) if k > 1 else 0.0 for col, k in zip(table.T, n)])
  half = np.array([t_half_width(s, k) for s, k in zip(sd, n)])
  return np.arange(length, dtype=np.float64), mean, mean - half, mean + half


def markdown(result: dict[str, Any]) -> str:
  """The per-seed table and the paired summary."""
  m = result["metric"]
  keys = list(result["paired"])
  head = " | ".join(f"{k} no WPL / WPL" for k in keys)
  lines = [f"| seed | rounds | {head} |", "|---" * (len(keys) + 2) + "|"]
  for seed in result["seeds"]:
    run = result["runs"][str(seed)]
    cells = " | ".join(f"{run['control']['figures'][k]:.3f} / {run['treated']['figures'][k]:.3f}" for k in keys)
    rounds = f"{run['control']['figures']['rounds']} / {run['treated']['figures']['rounds']}"
    lines.append(f"| {seed} | {rounds} | {cells} |")
  lines += ["", f"Paired differences WPL - no WPL over {len(result['seeds'])} seeds (forgetting: the mean of the "
                f"last {result['last_rounds']} rounds, {m}; > 0 = forgetting):", "",
            "| quantity | no WPL | WPL | WPL - no WPL (sd) | 95 % t interval | 95 % bootstrap interval | p (paired t) "
            "| seeds lower with WPL | relative reduction |", "|---" * 9 + "|"]
  for k in keys:
    p = result["paired"][k]
    reduction = f"{100 * p['relative_reduction']:.0f} %" if "relative_reduction" in p else ""
    lines.append(f"| {k} | {p['mean_control']:.3f} | {p['mean_treated']:.3f} | {p['mean']:+.3f} ({p['sd']:.3f}) "
                 f"| [{p['t_low']:+.3f}, {p['t_high']:+.3f}] | [{p['bootstrap_low']:+.3f}, {p['bootstrap_high']:+.3f}] "
                 f"| {p['p']:.3g} | {round(p['frac_lower'] * p['n'])} / {p['n']} | {reduction} |")
  return "\n".join(lines) + "\n"


def write_report(result: dict[str, Any], out: str | pathlib.Path, *, title: str = "") -> list[pathlib.Path]:
  """comparison.json, comparison.md and forgetting_over_rounds.png in `out`."""
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  atomic_write_text(out / "comparison.json", json.dumps(result, indent=2))
  atomic_write_text(out / "comparison.md", markdown(result))
  series, bands = {}, {}
  curves = {arm: [result["runs"][str(s)][arm]["per_round"] for s in result["seeds"]] for arm in ARMS}
  first = max(0, min(len(c) for arm in ARMS for c in curves[arm]) - result["last_rounds"])
  for arm, label in zip(ARMS, ("no WPL", "WPL")):
    x, mean, low, high = (v[first:] for v in _band(curves[arm]))
    series[label], bands[label] = (x, mean), (low, high)
  figure = plots.line_plot(out / "forgetting_over_rounds.png", series, bands=bands, xlabel="round",
                           ylabel=f"forgetting after the next burst ({result['metric']}; > 0 = forgetting)",
                           title=title or f"rounds {first}+ (the averaged window): mean over {len(result['seeds'])} "
                                          "seeds, 95 % t band")
  return [out / "comparison.json", out / "comparison.md", *figure]


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:  # e.g. an unquoted glob the shell expanded: its second match would be silently left out
    raise app.UsageError(f"unexpected arguments {' '.join(argv[1:])}; give each glob to --runs in quotes "
                         "(--runs '/tmp/mm/*') or repeat --runs once per workdir")
  workdirs = sorted({w for pattern in FLAGS.runs for w in glob.glob(pattern)})
  result = compare(workdirs, last_rounds=FLAGS.last_rounds)
  for path in write_report(result, FLAGS.out, title=FLAGS.title):
    print(path)
  print(markdown(result))


if __name__ == "__main__":
  FLAGS = flags.FLAGS
  flags.DEFINE_multi_string("runs", None, "glob(s) of multi_model workdirs (both arms, every seed)", required=True)
  flags.DEFINE_string("out", None, "folder for comparison.{json,md} and forgetting_over_rounds.png", required=True)
  flags.DEFINE_integer("last_rounds", 10, "the forgetting is averaged over each run's last this many rounds")
  flags.DEFINE_string("title", "", "figure title (default: the number of seeds and the band)")
  app.run(main)
