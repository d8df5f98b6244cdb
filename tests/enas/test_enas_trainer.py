"""Shared/controller steps, rewards, derive, whole-split evaluation and ablation edits."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_forgetting.enas import trainer as tr
from nas_forgetting.enas.search_space import RnnSearchSpace
from nas_forgetting.models import controller as ctl
from nas_forgetting.models.enas_rnn import EnasRnn

V, H, B, BPTT = 17, 8, 3, 5
SPACE = RnnSearchSpace(num_blocks=4)
MODEL = EnasRnn(vocab_size=V, num_blocks=4, hidden_size=H, init_range=0.1)
_batch_ce = jax.jit(lambda *args: tr.rnn_batch_ce(*args, model=MODEL))


def _params(seed=0):
  arch = np.zeros((4, 2), np.int32)
  return jax.jit(lambda k: MODEL.init(k, jnp.zeros((BPTT, B), jnp.int32), jnp.zeros((B, H)), arch, train=False))(
      jax.random.key(seed))["params"]


def _corpus(steps=41, seed=0):
  # A learnable sequence: each column counts up modulo V from a random offset.
  offsets = np.random.default_rng(seed).integers(0, V, B)
  return jnp.asarray((np.arange(steps)[:, None] + offsets[None]) % V, jnp.int32)


def test_shared_training_lowers_the_loss_of_a_fixed_cell():
  opt = tr.shared_optimizer(grad_clip=0.25, l2_reg=1e-7)
  state = tr.init_shared(_params(), opt)
  model = EnasRnn(vocab_size=V, num_blocks=4, hidden_size=H, init_range=0.1, dropout_input=0.1, dropout_output=0.1,
                  weight_drop=0.1, dropout_embedding=0.0)
  step = jax.jit(functools.partial(tr.rnn_shared_step, model=model, optimizer=opt, bptt=BPTT, ar_alpha=0.0,
                                   tar_beta=0.0))
  data, arch = _corpus(), jnp.asarray(SPACE.from_string("0:tanh(x,h) 1:ReLU(0) 2:identity(1) 3:tanh(0)"))
  hidden = jnp.zeros((B, H))
  first = None
  for k in range(100):
    state, hidden, m = step(state, data, jnp.asarray((k * BPTT) % 35), hidden, arch, jax.random.key(k),
                            jnp.asarray(20.0))
    first = first if first is not None else float(m["shared/ce"])
  assert float(m["shared/ce"]) < 0.6 * first
  assert int(state.step) == 100
  ce, ppl = tr.rnn_evaluate(state.params, data, arch, model=MODEL, bptt=BPTT)
  assert ppl < np.exp(first) and ppl == pytest.approx(np.exp(ce))


def test_learning_rate_schedule():
  lr = functools.partial(tr.shared_learning_rate, lr=20.0, decay=0.96, decay_after=15)
  assert lr(0) == lr(15) == 20.0
  assert lr(16) == pytest.approx(20 * 0.96) and lr(20) == pytest.approx(20 * 0.96 ** 5)


def test_rewards_match_single_scoring_and_derive_picks_the_best():
  params, data = _params(1), _corpus(seed=1)
  archs = jax.vmap(SPACE.random_arch)(jax.random.split(jax.random.key(2), 6))
  inputs, targets = tr.lm_window(data, 0, BPTT)
  rewards, ppl = jax.jit(functools.partial(tr.rnn_rewards, model=MODEL, reward_c=80.0, ppl_square=False))(
      params, inputs, targets, archs)
  single = [float(_batch_ce(params, inputs, targets, jnp.zeros((B, H)), a)[0]) for a in archs]
  np.testing.assert_allclose(ppl, np.exp(single), rtol=1e-4)
  np.testing.assert_allclose(rewards, 80.0 / np.exp(single), rtol=1e-4)
  best, score, index = tr.pick_best(archs, rewards)
  assert index == int(np.argmin(single)) and score == pytest.approx(float(rewards.max()))
  np.testing.assert_array_equal(best, np.asarray(archs[index]))
  with pytest.raises(ValueError, match="one score per architecture"):
    tr.pick_best(archs, rewards[:3])


def test_whole_split_evaluation_equals_a_window_loop():
  params, data = _params(2), _corpus(steps=24, seed=3)  # 23 targets: 4 full windows of 5 and one of 3
  arch = jnp.asarray(SPACE.random_arch(jax.random.key(4)))
  ce, _ = tr.rnn_evaluate(params, data, arch, model=MODEL, bptt=BPTT)
  hidden, total = jnp.zeros((B, H)), 0.0
  for s in range(0, 23, BPTT):
    n = min(BPTT, 23 - s)
    c, hidden = _batch_ce(params, data[s:s + n], data[s + 1:s + 1 + n], hidden, arch)
    total += float(c) * n
  assert ce == pytest.approx(total / 23, rel=1e-5)


def test_controller_step_one_trace_and_per_architecture_rewards():
  controller = ctl.Controller(SPACE.num_choices, hidden_size=8)
  opt = ctl.controller_optimizer(1e-3)
  cstate = ctl.init_reinforce(controller, ctl.init_controller(controller, jax.random.key(0)), opt)
  reward_fn = functools.partial(tr.rnn_reward_fn, model=MODEL, bptt=BPTT, reward_c=80.0, ppl_square=False)
  fn = functools.partial(
      tr.controller_step, controller=controller, optimizer=opt, decisions_to_arch=SPACE.decisions_to_arch,
      decision_mask=SPACE.decision_mask, reward_fn=reward_fn, num_samples=4, ema_decay=0.95, entropy_coeff=1e-4,
      entropy_mode="reward")
  step = jax.jit(chex.assert_max_traces(lambda *args: fn(*args), n=1))
  params, data = _params(), _corpus()
  for k in range(5):
    cstate, m = step(cstate, params, (data, jnp.asarray(k * BPTT)), jax.random.key(k))
  assert int(cstate.step) == 5 and bool(cstate.baseline_ready)
  assert np.isfinite(float(m["controller/loss"])) and float(m["controller/reward"]) > 0


def test_ablation_edits():
  arch = SPACE.from_string("0:tanh(x,h) 1:ReLU(0) 2:identity(1) 3:tanh(1)")
  np.testing.assert_array_equal(tr.replace_activations(arch, 3)[:, 1], [3, 3, 3, 3])
  removed = tr.remove_node(arch, 1)
  assert removed.tolist() == [[-1, 0], [-1, -1], [0, 2], [0, 0]]
  with pytest.raises(ValueError, match="node 0"):
    tr.remove_node(arch, 0)


def test_forgetting_stats_sign_convention():
  ppl = tr.forgetting_stats(np.array([100.0, 120.0]), np.array([110.0, 120.0]), higher_is_better=False)
  assert ppl["forgetting/mean"] == pytest.approx(5.0) and ppl["forgetting/max"] == pytest.approx(10.0)
  acc = tr.forgetting_stats(np.array([0.8, 0.6]), np.array([0.7, 0.7]), higher_is_better=True)
  assert acc["forgetting/mean"] == pytest.approx(0.0) and acc["forgetting/max"] == pytest.approx(0.1)
  assert acc["forgetting/std"] == pytest.approx(0.1) and acc["forgetting/median"] == pytest.approx(0.0)
  with pytest.raises(ValueError, match="matching"):
    tr.forgetting_stats(np.array([1.0]), np.array([1.0, 2.0]), higher_is_better=True)


def test_kendall_tau():
  assert tr.kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
  assert tr.kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
  # 5 concordant, 1 discordant pair out of 6: (5 - 1) / 6.
  assert tr.kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
  # tau-b with a tie in b: pairs (1,2),(1,3),(1,4),(2,3),(2,4),(3,4); b = [1, 1, 2, 3] ties pair (1,2).
  assert tr.kendall_tau([1, 2, 3, 4], [1, 1, 2, 3]) == pytest.approx(5 / np.sqrt(6 * 5))
  assert tr.kendall_tau([1, 1, 1], [1, 2, 3]) == 0.0
