"""ENAS recurrent-cell search on Penn Treebank with the weight plasticity loss (WPL) in shared training.

The reference WPL command line (RNN): alpha 60, Fisher norm clip 10, alpha decay 1 per epoch after epoch 15, Fisher
reset every 2 epochs, 7 batches per sampled architecture, controller reward 80 / perplexity, 150 epochs of 60
architectures (60 x 7 = 420 shared steps per epoch). Everything else is configs/enas_ptb.py.

Commands:
  python launch.py --config configs/wpl_enas_ptb.py --workdir /tmp/wpl_enas_ptb           # paper-size, GPU
  python launch.py --config configs/wpl_enas_ptb.py:quick --workdir /tmp/wpl_enas_ptb_q   # ~2-3 min, 2 CPU cores
  python launch.py --config configs/wpl_enas_ptb.py:quick,nowpl --workdir /tmp/nowpl_q     # same budget, no WPL
  python launch.py --config configs/wpl_enas_ptb.py:quick,strict --workdir /tmp/wpl_strict     # round-robin forgetting
  python launch.py --config configs/wpl_enas_ptb.py:quick,strict,nowpl --workdir /tmp/nowpl_strict
Variants (commas): quick (small model, 3 epochs of 8 architectures x 5 batches); tiny (test-sized: 2 epochs of 3
architectures x 3 batches); nowpl (WPL off, everything else identical: the baseline of the with/without comparison;
forgetting is measured in both); strict / loose (mode 'multi_model', `nas_forgetting.enas.multi_model`: 4 architectures
sampled once from the seed, trained round-robin from fresh shared weights in bursts of 10 steps, without dropout or
weight drop, at a constant learning rate and WPL strength, every one scored after every burst on one validation
batch 16 reward batches wide; strict stops when the round's mean validation perplexity has not improved for 5 rounds,
checked from round 30 on (at most 60 rounds), loose runs 30 rounds; a killed run resumes from its last round
(checkpointed every train.save_every = 1 round); outputs multi_model/{archs.txt,metrics,forgetting,final}.csv; pair the
two arms over seeds with `python -m nas_forgetting.wpl.multi_model_report --runs '<workdirs glob>' --out <dir>`).
Measured, quick size, loose, 8 seeds, 4-10 min per run on 2 loaded CPU cores (docs/results_wpl.md): forgetting after
the next burst (rounds 10-29) +6.6 perplexity without WPL; with --config.wpl.monitor=all (WPL also over the
embedding, decoder bias and node 0's weights) +11.2 (paired difference +4.6, 95 % interval +0.8 to +8.5) at a
final perplexity 27 points higher: the reference's alpha 60 is too stiff for SGD on the largest-Fisher shared weights
(lr x alpha x max Fisher 1.6-8 > 2) and inert on the edges (< 0.015); on the edges at alpha 1,500
(--config.wpl.alpha_fisher=1500) 12 seeds gave +9.0 without WPL and +4.6 with it (-49 %, interval -8.6 to -0.2).
Measured, strict, 8 seeds, 10-16 min per run on loaded cores (3.5 min alone): the criterion never fired (60 rounds);
forgetting after the next burst over rounds 30-59 +6.2 (median 2.5) without WPL, +5.6 with WPL on the edges at alpha
1,500 with the proximal step (--config.wpl.alpha_fisher=1500 --config.wpl.proximal=True; difference -0.5, interval
-3.9 to +2.9): no reduction; over every shared weight at alpha 60 with the proximal step (--config.wpl.monitor=all
--config.wpl.proximal=True) +0.2 (difference -6.0, 7 of 8 seeds lower, bootstrap interval -12.4 to -1.9, t interval
-13.2 to +1.3) at +8.5 validation perplexity (interval -7 to +25); Kendall's tau of shared-weight against stand-alone
rankings near zero in every arm (add --config.multi_model.stand_alone=True, also to a finished run).
Also any variant of
configs/enas_ptb.py (wikitext2, flexible, derive, ...).
Outputs: as configs/enas_ptb.py, plus forgetting.csv (per epoch mean/max/std/median of the perplexity increase of
each architecture between right after its burst and the epoch end; > 0 = forgetting) and forgetting/* and wpl/*
scalars in TensorBoard. Expected: with WPL the mean forgetting per epoch is lower than without (the paper: ENAS PTB
perplexity 65.01 -> 61.9 with WPL, with train.txt and full retraining; offline runs are not comparable).
A paper-size epoch (420 shared + 2000 controller steps) takes minutes on a GPU and is impractical on a CPU.
"""

import ml_collections

from configs import enas_ptb
from nas_forgetting.config_schema import override
from nas_forgetting.enas import config as enas_config
from nas_forgetting.wpl.state import reference_rnn_wpl_config

# The reference WPL command line outside the wpl group.
REFERENCE = {"controller": {"reward_c": 80.0}, "train": {"max_epoch": 150}}
# Applied after configs/enas_ptb.py's size variant of the same name.
SIZES = {"quick": {"wpl": {"num_batch_per_iter": 5, "alpha_decay_after": 2}, "train": {"max_epoch": 3}},
         "tiny": {"wpl": {"num_batch_per_iter": 3, "alpha_decay_after": 2}, "data": {"eval_max_tokens": 3000},
                  "controller": {"steps_per_epoch": 2}, "train": {"max_epoch": 2, "log_every": 3, "draw_every": 0}}}
ARCHS_PER_EPOCH = {"quick": 8, "tiny": 3}  # sampled architectures (bursts) per epoch
# Round-robin settings of mode 'multi_model' (the paper's strict and loose convergence), applied last. Both train 4
# architectures in bursts of 10 steps without dropout or weight drop (dropout's noise hides the forgetting), at a
# constant learning rate and WPL strength (no decay: a decaying step shrinks the forgetting with it), and score them on
# one validation batch 16 reward batches wide (5,120 tokens).
ROUND_ROBIN = {"rnn": {"dropout_embedding": 0.0, "dropout_input": 0.0, "dropout_output": 0.0, "weight_drop": 0.0},
               "shared": {"decay": 1.0}, "wpl": {"num_batch_per_iter": 10, "alpha_decay": 0.0},
               "multi_model": {"num_archs": 4, "eval_width": 16}}
CONVERGENCE = {"strict": {"multi_model": {"max_rounds": 60, "patience": 5, "min_rounds": 30}},
               "loose": {"multi_model": {"max_rounds": 30, "patience": 0}}}

def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  # wpl.estimator stays 'empirical' (per-sequence Fisher, 1.17x a plain step with the burst amortised: BENCHMARKS.md);
  # 'batch' (square of the batch-mean gradient) reproduces the reference's estimate.
  variants = enas_config.split_variants(arg)
  c = enas_config.wpl_config(
      enas_ptb.get_config, ",".join(v for v in variants if v not in CONVERGENCE),
      wpl=reference_rnn_wpl_config(),  # alpha 60, clip 10, decay 1 after epoch 15, reset every 2 epochs, 7 batches
      reference=REFERENCE, archs_per_epoch=60, base_sizes=enas_ptb.SIZES, sizes=SIZES,
      size_archs_per_epoch=ARCHS_PER_EPOCH)
  for setting in (v for v in variants if v in CONVERGENCE):
    c.mode = "multi_model"
    override(c, ROUND_ROBIN)
    override(c, CONVERGENCE[setting])
  return c
