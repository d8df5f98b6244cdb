"""Weight plasticity loss (WPL) against multi-model forgetting.

  state        WPL state (moving-average Fisher, anchors, epoch), its pure update functions, the penalty, and the
               `wpl` config group builders (defaults and the reference's RNN / micro-CNN command lines)
  forgetting   per-epoch forgetting measurement (metric right after each architecture's burst vs end of epoch),
               CSV/TensorBoard logging, the with/without-WPL figure, Kendall's tau-b
  masks        which ENAS supernet weights WPL monitors (views of the parameter tree) and an architecture's active masks
  enas_fisher  Fisher estimates of those weights after a burst (per-example `empirical`, or the reference's `batch`)
  two_model    the two-model MNIST demonstration (model B sharing model A's first k layers)
"""
