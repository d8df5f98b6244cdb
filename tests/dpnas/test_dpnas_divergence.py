"""Nothing silently wrong in DP-NAS evaluations: non-finite embeddings, losses or parameters stop a fixed-net
evaluation with a DivergenceError naming the quantity, the net and the seed, and mark the net diverged in a search;
NaN settings and pool paddings PyTorch refuses are rejected up front; a net too large for the memory is refused
before anything is allocated."""

import dataclasses
import math

import numpy as np
import pytest

from nas_forgetting.dpnas import evaluator as ev
from nas_forgetting.dpnas.eval_result import EvaluationDiverged
from nas_forgetting.dpnas import memory
from nas_forgetting.dpnas import fixed
from nas_forgetting.models import net_string as ns
from nas_forgetting.dpnas import search as sr
from nas_forgetting.dpnas.state_space import SearchSpace
from nas_forgetting.errors import ArchitectureError, ConfigError, DivergenceError

NET = "[C(8,3,1,1,1), P(2,2,0,0), SM(4)]"
CONFIG = ev.EvalConfig(epochs=3, batch_size=32, learning_rate=1e-2, early_stopping_epoch=0, reward_window=2,
                       bn_calibration_size=50)
HUGE_LR = dataclasses.replace(CONFIG, learning_rate=1e38)  # the first Adam step moves weights by ~1e38: overflow


def test_a_huge_learning_rate_stops_the_evaluation_naming_loss_net_and_seed(data):
  with pytest.raises(EvaluationDiverged) as info:
    ev.Evaluator(data, HUGE_LR).evaluate(NET, [5, 6])
  error = info.value
  assert isinstance(error, DivergenceError) and error.seed == 5 and error.net == NET
  assert error.quantity in ("training loss", "parameters")
  message = str(error)
  assert NET in message and "seed 5" in message and "epoch 0" in message and error.quantity in message
  # the same settings at a sane learning rate train finite rewards (the check does not fire on finite runs)
  assert all(0 < r.reward <= 1 + 1e-6 for r in ev.Evaluator(data, CONFIG).evaluate(NET, [5, 6]))


def test_an_encoder_that_overflows_is_caught_at_the_embeddings(data):
  # finite float32 images (max 1.5 * 2e38 < 3.4e38) whose convolutions overflow to inf without BatchNorm
  big = data._replace(train_x=data.train_x * 2e38, val_x=data.val_x * 2e38, test_x=data.test_x * 2e38)
  assert np.isfinite(big.train_x).all()
  net = "[C(64,5,1,2,1), C(64,5,1,2,1), P(2,2,0,0), SM(4)]"
  evaluator = ev.Evaluator(big, dataclasses.replace(CONFIG, bn_epsilon=0.0))
  with pytest.raises(EvaluationDiverged, match="embeddings is not finite") as info:
    evaluator.evaluate(net, [0])
  assert info.value.quantity == "embeddings" and info.value.seed == 0
  with pytest.raises(EvaluationDiverged, match="embeddings"):
    evaluator.embed(net, [0])  # stored embeddings are checked too


def test_fixed_net_run_stops_with_the_divergence(tmp_path, data):
  with pytest.raises(DivergenceError, match=r"seed 0.*lower the learning rate"):
    fixed.run_fixed(ev.Evaluator(data, HUGE_LR), [(-1, NET)], [0, 1], tmp_path, in_channels=1, image_size=8)
  assert not list((tmp_path / "checkpoints").rglob("*.json")) if (tmp_path / "checkpoints").exists() else True


def test_search_marks_a_diverged_net_and_goes_on(tmp_path, data):
  space = SearchSpace(image_size=8, num_classes=4, conv_sizes=(3,), conv_features=(4,), pool_sizes=(2,),
                      pool_strides=(2,), min_conv=1, max_conv=1, max_image_size=8, max_fc_input=1000)
  search = sr.Search(sr.evaluator_fn(ev.Evaluator(data, HUGE_LR)), space, 1, tmp_path, sr.QConfig(
      schedule=((1.0, 2),), replay_number=2), seed=0, plot_window=100)
  search.run(max_new=2)  # every net diverges: the schedule never advances, the search does not stop
  assert len(search.buffer) == 2 and all(r.reward == 0 and not r.train_flag for r in search.buffer.rows)
  lines = (tmp_path / sr.DIVERGED_FILE).read_text().splitlines()
  assert lines[0] == "row,net,seed,quantity,reason"
  first = search.buffer.rows[0]
  assert lines[1].startswith(f'0,"{first.net}",{sr.init_seed(0, 0)},') and "not finite" in lines[1]


def test_nan_settings_and_pool_padding_refused_up_front():
  for name, value in (("learning_rate", math.nan), ("learning_rate", math.inf), ("weight_decay", math.nan),
                      ("bn_epsilon", -1.0), ("early_stopping_thresh", math.nan), ("dropout_rate", 1.0),
                      ("memory_fraction", 0.0)):
    with pytest.raises(ConfigError, match=name):
      dataclasses.replace(CONFIG, **{name: value})
  # the net: padding 5 on a 2x2 pool gives windows of padding only (-inf features); PyTorch refuses it
  with pytest.raises(ArchitectureError, match=r"position 21 in token 'P\(2,2,5,0\)'.*padding <= kernel/2 = 1"):
    ns.parse_net("[C(8,3,1,1,1), P(2,2,5,0), SM(10)]")
  assert ns.parse_net("[C(8,3,1,1,1), P(3,2,1,0), SM(10)]")[1] == ns.Pool(3, 2, 1)  # = k/2 rounded down: allowed


def test_a_net_too_large_for_memory_is_refused_before_allocation(tmp_path, data):
  before = dict(ev.TRACES)
  net = "[C(1000000,1,1,0,1), SM(4)]"  # 64 million features x 120 examples: about 60 GB of embeddings per seed
  with pytest.raises(memory.TooLargeForMemory, match=r"too large to evaluate here: about .* GB per device.*embeddings"):
    ev.Evaluator(data, CONFIG).evaluate(net, [0])
  # a fixed-net run refuses it before evaluating (or writing) anything, even for the nets listed before it
  with pytest.raises(memory.TooLargeForMemory, match=r"fixed.net: net \[C\(1000000"):
    fixed.run_fixed(ev.Evaluator(data, CONFIG), [(-1, NET), (-1, net)], [0], tmp_path / "fixed", in_channels=1,
                    image_size=8)
  assert not (tmp_path / "fixed").exists()
  with pytest.raises(ArchitectureError, match="too large"):
    ev.Evaluator(data, dataclasses.replace(CONFIG, full_training=True)).evaluate(
        "[C(100000,3,1,1,1), C(100000,3,1,1,1), SM(4)]", [0])  # 9e10 weights
  assert dict(ev.TRACES) == before  # nothing was compiled


def test_memory_estimate_against_a_small_device(monkeypatch, data):
  monkeypatch.setattr(memory, "available_host_memory", lambda: 8 * 2 ** 20)  # 8 MB shared by the 8 CPU devices
  with pytest.raises(memory.TooLargeForMemory, match=r"available host RAM / 8 devices"):
    ev.Evaluator(data, CONFIG).evaluate("[C(512,3,1,1,1), SM(4)]", [0])  # 32768 features x 120 x 8 bytes = 30 MB
  monkeypatch.setattr(memory, "available_host_memory", lambda: None)  # unknown: no refusal, the net is evaluated
  assert ev.Evaluator(data, CONFIG).evaluate(NET, [0])[0].reward > 0
