"""Weight plasticity loss (WPL) against multi-model forgetting.

  state        WPL state (moving-average Fisher, anchors, epoch), its pure update functions, the penalty, and the
               `wpl` config group builders (defaults and the reference's RNN / micro-CNN command lines)
  forgetting   per-epoch forgetting measurement (metric right after each architecture's burst vs end of epoch),
               CSV logging, the with/without-WPL figure
  masks        which ENAS supernet weights WPL monitors (views of the parameter tree) and an architecture's active masks
  enas_fisher  Fisher estimates of those weights after a burst (per-example `empirical`, or the reference's `batch`)
  config       the two-model experiment's declared config
  two_model_training  models A and B of the two-model demonstration and their jitted training
  two_model    the two-model MNIST demonstration (model B sharing model A's first k layers): experiment, outputs
"""
