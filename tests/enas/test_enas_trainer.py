"""Shared/controller steps, rewards, derive, whole-split evaluation and ablation edits."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nas_forgetting.enas import reinforce
from nas_forgetting.enas import trainer as tr
from nas_forgetting.enas.search_space import RnnSearchSpace
from nas_forgetting.models import controller as ctl
from nas_forgetting.models.enas_rnn import EnasRnn
from nas_forgetting.wpl import masks as wpl_masks
from nas_forgetting.wpl import state as wpl_lib

V, H, B, BPTT = 17, 8, 3, 5
SPACE = RnnSearchSpace(num_blocks=4)
MODEL = EnasRnn(vocab_size=V, num_blocks=4, hidden_size=H, init_range=0.1)
_batch_ce = jax.jit(lambda *args: tr.rnn_batch_ce(*args, model=MODEL))


_init = jax.jit(lambda k: MODEL.init(k, jnp.zeros((BPTT, B), jnp.int32), jnp.zeros((B, H)),
                                     jnp.zeros((4, 2), jnp.int32), train=False)["params"])  # compiled once


def _params(seed=0):
  return _init(jax.random.key(seed))


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


def test_learning_rate_is_injected_into_the_optimizer_state_and_traced_once():
  """The shared step writes its lr into `optax.inject_hyperparams` state: a new lr each call, one trace."""
  opt = tr.shared_optimizer(grad_clip=0.25, l2_reg=1e-7, momentum=0.9, nesterov=True)

  @chex.assert_max_traces(n=1)
  def step_fn(*args):
    return tr.rnn_shared_step(*args, model=MODEL, optimizer=opt, bptt=BPTT, ar_alpha=0.0, tar_beta=0.0)

  step = jax.jit(step_fn)
  state, hidden = tr.init_shared(_params(), opt), jnp.zeros((B, H))
  arch = jnp.asarray(SPACE.from_string("0:tanh(x,h) 1:ReLU(0) 2:identity(1) 3:tanh(0)"))
  for k, lr in enumerate((20.0, 19.2, 0.5)):
    before = state.params
    state, hidden, m = step(state, _corpus(), jnp.asarray(k * BPTT), hidden, arch, jax.random.key(k),
                            jnp.asarray(lr, jnp.float32))
    assert float(state.opt_state.hyperparams["learning_rate"]) == np.float32(lr) == float(m["shared/lr"])
    moved = optax.tree.norm(jax.tree.map(lambda a, b: a - b, state.params, before))
    assert float(m["shared/update_norm"]) == pytest.approx(float(moved), rel=1e-4)
  chex.clear_trace_counter()


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
  opt = reinforce.controller_optimizer(1e-3)
  cstate = reinforce.init_reinforce(controller, ctl.init_controller(controller, jax.random.key(0)), opt)
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


def _wpl_state(params, seed=0):
  """A WPL state with random positive Fisher and anchors displaced from the current weights."""
  view = wpl_masks.rnn_monitored(params)
  keys = iter(jax.random.split(jax.random.key(seed), 8))
  fisher = jax.tree.map(lambda v: jax.random.uniform(next(keys), v.shape, minval=0.5, maxval=2.0), view)
  anchor = jax.tree.map(lambda v: v + 0.1 * jax.random.normal(next(keys), v.shape), view)
  return wpl_lib.init_wpl_state(view)._replace(fisher=fisher, anchor=anchor)


WPL_HP = wpl_lib.WPLHyperParams(alpha_fisher=3.0, alpha_decay=0.0)
IDENTITY = tr.shared_optimizer(grad_clip=0.0, l2_reg=0.0)  # the update is the gradient
_STEP_KW = dict(model=MODEL, optimizer=IDENTITY, bptt=BPTT, ar_alpha=0.0, tar_beta=0.0)
_wpl_step_fn = functools.partial(tr.rnn_shared_step, **_STEP_KW, wpl_hp=WPL_HP)
_wpl_step = jax.jit(chex.assert_max_traces(lambda *args: _wpl_step_fn(*args), n=1))  # one trace in this module


def test_wpl_step_gradient_is_alpha_fisher_displacement_on_active_edges_only():
  opt, hp = IDENTITY, WPL_HP
  params = _params()
  wpl_state = _wpl_state(params)
  plain = jax.jit(functools.partial(tr.rnn_shared_step, **_STEP_KW))
  with_wpl = _wpl_step
  arch = jnp.asarray(SPACE.from_string("0:tanh(x,h) 1:ReLU(0) 2:identity(0) 3:tanh(2)"))
  args = (_corpus(), jnp.asarray(0), jnp.zeros((B, H)), arch, jax.random.key(1), jnp.asarray(1.0))
  p0, _, m0 = plain(tr.init_shared(params, opt), *args)
  p1, _, m1 = with_wpl(tr.init_shared(params, opt), *args, wpl_state)
  # With lr 1 and no transformation, params(plain) - params(WPL) = the penalty's gradient.
  diff = jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), p0.params, p1.params)
  active = np.asarray(wpl_masks.rnn_active_edges(arch, 4))
  assert active.sum() == 3 and active.size == 6  # edges (0,1), (0,2), (2,3) of the 6 possible
  view, dview = wpl_masks.rnn_monitored(params), wpl_masks.rnn_monitored(diff)
  for name in ("edges_c", "edges_h"):
    expected = 3.0 * np.asarray(wpl_state.fisher[name]) * (np.asarray(view[name]) - np.asarray(wpl_state.anchor[name]))
    np.testing.assert_allclose(dview[name][active], expected[active], rtol=1e-4, atol=1e-6)
    assert np.all(dview[name][~active] == 0.0)
    assert np.abs(expected[~active]).max() > 0  # the inactive edges do have a displacement the penalty ignores
  for name in params:
    if name != "edges":
      assert all(np.all(d == 0.0) for d in jax.tree.leaves(diff[name])), name
  penalty = 0.5 * 3.0 * sum(float(np.sum((np.asarray(wpl_state.fisher[n]) * (np.asarray(view[n]) -
                                          np.asarray(wpl_state.anchor[n])) ** 2)[active])) for n in view)
  assert float(m1["shared/wpl_penalty"]) == pytest.approx(penalty, rel=1e-5)
  assert float(m1["shared/loss"]) == pytest.approx(float(m0["shared/loss"]) + penalty, rel=1e-5)
  assert float(m1["shared/ce"]) == pytest.approx(float(m0["shared/ce"]), rel=1e-6)


@pytest.mark.parametrize("monitor", ["edges", "all"])
def test_proximal_wpl_step_is_the_plain_step_then_the_exact_penalty_solution(monitor):
  """wpl.proximal: the step descends the cross-entropy alone (the plain step), then holds every active monitored
  weight: theta* + (theta - theta*) / (1 + lr alpha F); inactive edges keep the plain step's values."""
  params = _params()
  view = wpl_masks.rnn_monitored(params, monitor)
  keys = iter(jax.random.split(jax.random.key(3), 32))
  fisher = jax.tree.map(lambda v: jax.random.uniform(next(keys), v.shape, minval=0.5, maxval=2.0), view)
  anchor = jax.tree.map(lambda v: v + 0.1 * jax.random.normal(next(keys), v.shape), view)
  wpl_state = wpl_lib.init_wpl_state(view)._replace(fisher=fisher, anchor=anchor)
  hp = WPL_HP._replace(proximal=True, monitor=monitor)
  arch = jnp.asarray(SPACE.from_string("0:tanh(x,h) 1:ReLU(0) 2:identity(0) 3:tanh(2)"))
  lr = 0.7
  args = (_corpus(), jnp.asarray(0), jnp.zeros((B, H)), arch, jax.random.key(1), jnp.asarray(lr))
  plain, _, m0 = jax.jit(functools.partial(tr.rnn_shared_step, **_STEP_KW))(tr.init_shared(params, IDENTITY), *args)
  prox, _, m1 = jax.jit(functools.partial(tr.rnn_shared_step, **_STEP_KW, wpl_hp=hp))(
      tr.init_shared(params, IDENTITY), *args, wpl_state)
  got, stepped = wpl_masks.rnn_monitored(prox.params, monitor), wpl_masks.rnn_monitored(plain.params, monitor)
  active = np.asarray(wpl_masks.rnn_active_edges(arch, 4))
  for name in ("edges_c", "edges_h"):
    a, f, t = (np.asarray(x[name]) for x in (anchor, fisher, stepped))
    expected = a + (t - a) / (1 + lr * 3.0 * f)
    np.testing.assert_allclose(got[name][active], expected[active], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[name][~active], t[~active])
  for name in params:
    if name == "edges":
      continue
    if monitor == "all":
      a, f, t = (np.asarray(x["shared"][name]) for x in (anchor, fisher, stepped))
      np.testing.assert_allclose(got["shared"][name], a + (t - a) / (1 + lr * 3.0 * f), rtol=1e-5, atol=1e-6)
    else:
      np.testing.assert_array_equal(prox.params[name], plain.params[name])
  assert float(m1["shared/ce"]) == pytest.approx(float(m0["shared/ce"]), rel=1e-6)
  assert float(m1["shared/wpl_penalty"]) > 0  # reported, not descended


def test_wpl_step_compiles_once_for_all_architectures():
  state = tr.init_shared(_params(), IDENTITY)
  wpl_state = _wpl_state(state.params)
  data, hidden = _corpus(), jnp.zeros((B, H))
  for k, cell in enumerate(["0:tanh(x,h) 1:ReLU(0) 2:identity(1) 3:tanh(0)",
                            "0:ReLU(x,h) 1:tanh(0) 2:sigmoid(0) 3:ReLU(0)",
                            "0:sigmoid(x,h) 1:identity(0) 2:ReLU(1) 3:tanh(2)"]):
    state, hidden, m = _wpl_step(state, data, jnp.asarray(k * BPTT), hidden, jnp.asarray(SPACE.from_string(cell)),
                                 jax.random.key(k), jnp.asarray(0.1), wpl_state)
    assert np.isfinite(float(m["shared/wpl_penalty"])) and float(m["shared/wpl_penalty"]) > 0


def test_each_architecture_of_a_policy_batch_gets_its_own_reward():
  """Oracle: known rewards per architecture (a fixed linear function of its encoding) and the REINFORCE update
  written out by hand for a batch of 4 architectures: baseline b <- 0.9 b0 + 0.1 mean_k(R_k), advantage
  A_k = R_k - b, loss = -mean_k sum_i log pi(d_ki) A_k, and plain SGD (lr 1) so the step is the gradient. The
  references' bug (every architecture gets the last one's reward) changes the reward metric and the update."""
  import optax

  controller = ctl.Controller(SPACE.num_choices, hidden_size=8, init_range=0.5)
  opt = optax.sgd(1.0)
  weights = jnp.asarray(np.random.default_rng(0).normal(size=SPACE.num_blocks * 2), jnp.float32)

  def oracle(shared_params, batch, archs):  # a different reward for (almost) every architecture
    return 2.0 + archs.reshape(archs.shape[0], -1).astype(jnp.float32) @ weights, {}

  step = jax.jit(functools.partial(
      tr.controller_step, controller=controller, optimizer=opt, decisions_to_arch=SPACE.decisions_to_arch,
      decision_mask=SPACE.decision_mask, reward_fn=oracle, num_samples=4, ema_decay=0.9, entropy_coeff=0.0,
      entropy_mode="reward"))
  params = ctl.init_controller(controller, jax.random.key(0))
  b0 = jnp.full((SPACE.num_decisions,), 1.5)
  cstate = reinforce.init_reinforce(controller, params, opt)._replace(baseline=b0, baseline_ready=jnp.array(True))
  key = jax.random.key(7)
  new, metrics = step(cstate, None, None, key)

  decisions = ctl.sample(controller, params, key, 4).decisions  # the batch the step sampled
  archs = np.asarray(jax.vmap(SPACE.decisions_to_arch)(decisions))
  mask = np.asarray(jax.vmap(SPACE.decision_mask)(decisions), np.float32)
  rewards = 2.0 + archs.reshape(4, -1).astype(np.float64) @ np.asarray(weights, np.float64)
  assert len(set(np.round(rewards, 6))) == 4  # the oracle tells the four architectures apart
  baseline = 0.9 * 1.5 + 0.1 * (rewards[:, None] * mask).mean(0)
  advantages = (rewards[:, None] * mask - baseline[None]) * mask  # (4, decisions)

  def hand_loss(p):
    log_probs, _ = ctl.evaluate(controller, p, decisions)
    return -jnp.mean(jnp.sum(log_probs * jnp.asarray(mask) * jnp.asarray(advantages, jnp.float32), axis=-1))

  grads = jax.grad(hand_loss)(params)
  assert float(metrics["controller/reward"]) == pytest.approx(rewards.mean(), rel=1e-5)
  np.testing.assert_allclose(new.baseline, baseline, rtol=1e-5)
  for name in params:
    np.testing.assert_allclose(new.params[name], params[name] - grads[name], rtol=1e-4, atol=1e-6, err_msg=name)
