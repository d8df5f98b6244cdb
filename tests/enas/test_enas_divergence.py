"""A diverged ENAS run stops with a DivergenceError naming the quantity, the step and where (epoch, phase,
architecture) instead of deriving a cell; bad settings are refused up front (validate_config) with the field's name."""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import enas_cifar10, enas_ptb, wpl_enas_cifar10, wpl_enas_ptb
from nas_forgetting.enas import experiment
from nas_forgetting.enas import reinforce
from nas_forgetting.enas import trainer as tr
from nas_forgetting.enas.search_space import RnnSearchSpace
from nas_forgetting.errors import ConfigError, DivergenceError
from nas_forgetting.models import controller as ctl
from nas_forgetting.models.enas_rnn import EnasRnn


def tiny_rnn_config(shared_data=None):
  c = enas_ptb.get_config("tiny")
  c.data.path = str(shared_data / "ptb") if shared_data else "/nonexistent/ptb"
  c.train.draw_every = 0
  c.wpl.measure_forgetting = False
  return c


# ---------------------------------------------------------------------------------------------------------------
# Up front: every field, with its name
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field, value, message", [
    ("controller.lr", math.nan, "controller.lr=nan; expected a finite number > 0"),
    ("shared.lr", math.nan, "shared.lr=nan"),
    ("shared.lr", math.inf, "shared.lr=inf"),
    ("shared.lr", -1.0, "shared.lr=-1.0; expected a finite number > 0"),
    ("shared.bptt", 0, "shared.bptt=0; expected an integer >= 1"),
    ("shared.steps_per_epoch", -1, "shared.steps_per_epoch=-1; expected an integer >= 0"),
    ("shared.batch_size", 0, "shared.batch_size=0"),
    ("shared.grad_clip", math.nan, "shared.grad_clip=nan"),
    ("train.max_epoch", 0, "train.max_epoch=0; expected an integer >= 1"),
    ("train.save_every", 0, "train.save_every=0; expected an integer >= 1"),
    ("train.eval_batch_size", 0, "train.eval_batch_size=0"),
    ("train.log_every", 0, "train.log_every=0"),
    ("train.derive_num_sample", 0, "train.derive_num_sample=0"),
    ("data.path", "", "data.path is empty"),
    ("data.reward_fraction", 1.0, "data.reward_fraction=1"),
    ("seed", -1, "seed=-1; expected an integer >= 0 and <= 2147483647"),
    ("search.num_blocks", 0, "search.num_blocks=0"),
    ("rnn.hidden_size", 0, "rnn.hidden_size=0"),
    ("rnn.dropout_input", 1.0, "rnn.dropout_input=1"),
    ("controller.num_samples", 0, "controller.num_samples=0"),
    ("controller.temperature", 0.0, "controller.temperature=0"),
    ("controller.ema_decay", math.nan, "controller.ema_decay=nan"),
    ("controller.entropy_mode", "bonus", "controller.entropy_mode='bonus'"),
    ("wpl.alpha_fisher", math.nan, "wpl.alpha_fisher=nan; expected a finite number"),
    ("wpl.num_batch_per_iter", 0, "wpl.num_batch_per_iter=0"),
    ("wpl.lambda_fisher", math.inf, "wpl.lambda_fisher=inf"),
])
def test_bad_fields_are_refused_by_name(field, value, message):
  c = tiny_rnn_config()
  group, _, name = field.rpartition(".")
  (c[group] if group else c)[name] = value
  with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
    experiment.validate_config(c)


def test_every_enas_config_and_variant_is_valid():
  for module, variants in ((enas_ptb, ("", "quick", "tiny", "reduced", "quick,flexible", "tiny,random", "derive")),
                           (enas_cifar10, ("", "quick", "tiny")), (wpl_enas_ptb, ("", "quick", "tiny,nowpl")),
                           (wpl_enas_cifar10, ("", "quick", "tiny"))):
    for variant in variants:
      experiment.validate_config(module.get_config(variant))


def test_single_mode_needs_a_dag_and_ablations_need_the_rnn():
  c = tiny_rnn_config()
  c.mode = "single"
  with pytest.raises(ConfigError, match="dag_path is empty; mode 'single'"):
    experiment.validate_config(c)
  c = enas_cifar10.get_config("tiny")
  c.mode = "ablation_node"
  with pytest.raises(ConfigError, match="ablation_node.*recurrent cell"):
    experiment.validate_config(c)


def test_run_refuses_a_bad_config_before_creating_anything(tmp_path):
  c = tiny_rnn_config()
  c.shared.bptt = 0
  with pytest.raises(ConfigError, match="shared.bptt=0"):
    experiment.run(c, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_resume_safe_fields_are_only_the_schedule_length_and_added_measurements():
  assert experiment.RESUME_SAFE_FIELDS == ("train.max_epoch", "multi_model.max_rounds", "multi_model.stand_alone")


# ---------------------------------------------------------------------------------------------------------------
# In the steps: finiteness computed in the compiled step, checked on the host per logging interval
# ---------------------------------------------------------------------------------------------------------------


def test_a_huge_finite_shared_learning_rate_stops_the_search(shared_data, tmp_path):
  """lr 1e30 passes validation (finite, > 0); the weights overflow and the shared training stops there, naming the
  quantity, the step, the epoch and the step's architecture; nothing is derived."""
  c = tiny_rnn_config(shared_data)
  c.shared.lr = 1e30
  with pytest.raises(DivergenceError, match=r"the run diverged: shared.* at step \d+, epoch 0, shared training, "
                                            r"architecture 0:\w+\(x,h\)"):
    experiment.run(c, str(tmp_path))
  assert not (tmp_path / "derived").exists() and not (tmp_path / "summary.json").exists()
  assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("field", ["controller.lr", "shared.lr"])
def test_nan_learning_rates_are_caught_inside_the_steps(field, shared_data, tmp_path, monkeypatch):
  """With the up-front check switched off, a NaN learning rate is still caught by the steps' own flags: NaN
  controller weights still sample valid architectures and NaN shared weights still give an accuracy, so only the
  finiteness of the parameters and losses shows it."""
  monkeypatch.setattr(experiment, "validate_config", lambda config: None)
  c = tiny_rnn_config(shared_data)
  group, name = field.split(".")
  c[group][name] = math.nan
  if group == "controller":
    # The controller's first step applies a NaN update: its parameters are named at step 1 of its phase.
    pattern = r"controller parameters or optimizer state after the step is not finite at step 1, epoch 0, controller"
  else:
    pattern = r"shared/lr is nan at step 1, epoch 0, shared training, architecture 0:"  # the step's own input
  with pytest.raises(DivergenceError, match=pattern):
    experiment.run(c, str(tmp_path))
  assert not (tmp_path / "derived").exists() and not (tmp_path / "summary.json").exists()


def test_the_steps_flag_nan_parameters_without_a_new_compilation():
  """The traced flags of the shared and controller steps: False for parameters with a NaN injected, True otherwise;
  the step is compiled once for both."""
  space = RnnSearchSpace(num_blocks=3)
  model = EnasRnn(vocab_size=11, num_blocks=3, hidden_size=4, init_range=0.1)
  opt = tr.shared_optimizer(grad_clip=0.25, l2_reg=0.0)
  params = model.init(jax.random.key(0), jnp.zeros((5, 2), jnp.int32), jnp.zeros((2, 4)),
                      jnp.zeros((3, 2), jnp.int32), train=False)["params"]
  shared_fn = functools.partial(tr.rnn_shared_step, model=model, optimizer=opt, bptt=5, ar_alpha=0.0, tar_beta=0.0)
  step = jax.jit(chex.assert_max_traces(lambda *args: shared_fn(*args), n=1))
  data = jnp.asarray(np.arange(24).reshape(12, 2) % 11, jnp.int32)
  arch = jnp.asarray(space.from_string("0:tanh(x,h) 1:ReLU(0) 2:tanh(1)"))
  args = (data, jnp.asarray(0), jnp.zeros((2, 4)), arch, jax.random.key(1), jnp.asarray(1.0))
  _, _, good = step(tr.init_shared(params, opt), *args)
  poisoned = jax.tree.map(lambda p: p.at[(0,) * p.ndim].set(jnp.nan), params)
  _, _, bad = step(tr.init_shared(poisoned, opt), *args)
  assert bool(good["shared/params_finite"]) and not bool(bad["shared/params_finite"])
  assert np.isfinite(float(good["shared/loss"])) and not np.isfinite(float(bad["shared/loss"]))

  controller = ctl.Controller(space.num_choices, hidden_size=4)
  copt = reinforce.controller_optimizer(1e-3)
  reward_fn = lambda shared, batch, archs: (jnp.ones(archs.shape[0]), {})
  controller_fn = functools.partial(
      tr.controller_step, controller=controller, optimizer=copt, decisions_to_arch=space.decisions_to_arch,
      decision_mask=space.decision_mask, reward_fn=reward_fn, num_samples=2, ema_decay=0.9, entropy_coeff=0.0,
      entropy_mode="reward")
  cstep = jax.jit(chex.assert_max_traces(lambda *args: controller_fn(*args), n=1))
  cparams = ctl.init_controller(controller, jax.random.key(2))
  _, good = cstep(reinforce.init_reinforce(controller, cparams, copt), None, None, jax.random.key(3))
  cparams = dict(cparams, b_lstm=cparams["b_lstm"].at[0].set(jnp.nan))
  _, bad = cstep(reinforce.init_reinforce(controller, cparams, copt), None, None, jax.random.key(3))
  assert bool(good["controller/params_finite"]) and not bool(bad["controller/params_finite"])
