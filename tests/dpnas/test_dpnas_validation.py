"""DP-NAS inputs refused before any work: every config field (validate_config), continued Q-tables and replay
buffers that no search of this space could have written, data that disagree with the config; the reference's
feasibility rule as an option."""

import math
import pathlib
import sys

import pytest

from nas_forgetting.dpnas import evaluator as ev
from nas_forgetting.dpnas import experiment
from nas_forgetting.dpnas import logs
from nas_forgetting.models import net_string as ns
from nas_forgetting.dpnas import q_learning as ql
from nas_forgetting.dpnas import search as sr
from nas_forgetting.dpnas.state_space import SearchSpace
from nas_forgetting.errors import ConfigError, DataError

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
from configs import dpnas_cifar10, dpnas_fashion_mnist, dpnas_mnist  # noqa: E402

SPACE = SearchSpace(image_size=8, num_classes=4, conv_sizes=(1, 3, 5), conv_features=(4, 8), pool_sizes=(2, 3),
                    pool_strides=(2, 3), min_conv=1, max_conv=3, max_image_size=4, max_fc_input=64)
Q = sr.QConfig(schedule=((1.0, 4), (0.5, 2)), replay_number=3)
NET = "[C(8,3,1,0,1), P(3,3,0,0), SM(4)]"


def test_every_shipped_variant_validates():
  for module in (dpnas_mnist, dpnas_fashion_mnist, dpnas_cifar10):
    for arg in (None, "quick", "quick,fixed,full_training", "readme,reference_bn,reference_duplicates",
                "reference_feasibility", "fixed,store_embedding"):
      experiment.validate_config(module.get_config(arg))
  assert experiment.RESUME_SAFE_FIELDS == ("search.max_architectures",)


BAD = {  # field -> (value, text of the message)
    "seed": (-1, "seed=-1; expected an integer >= 0"),
    "val_fraction": (1.0, "val_fraction=1.0"),
    "fixed.num_seeds": (0, "fixed.num_seeds=0; expected an integer >= 1"),
    "evaluator.learning_rate": (math.nan, "evaluator.learning_rate=nan; expected a finite number > 0"),
    "evaluator.weight_decay": (math.inf, "evaluator.weight_decay=inf"),
    "evaluator.eval_batch_size": (0, "evaluator.eval_batch_size=0"),
    "evaluator.epochs": (-3, "evaluator.epochs=-3"),
    "evaluator.early_stopping_thresh": (math.nan, "evaluator.early_stopping_thresh=nan"),
    "evaluator.dropout_rate": (1.0, "evaluator.dropout_rate=1.0"),
    "evaluator.bn_mode": ("train", "evaluator.bn_mode='train'"),
    "search.replay_number": (0, "search.replay_number=0"),
    "search.q_learning_rate": (math.nan, "search.q_learning_rate=nan"),
    "search.q_discount_factor": (1.5, "search.q_discount_factor=1.5"),
    "search.init_utility": (math.nan, "search.init_utility=nan"),
    "search.schedule": (((1.0, 0),), "search.schedule="),
    "search.seeds_per_architecture": (0, "search.seeds_per_architecture=0"),
    "search.plot_every": (0, "search.plot_every=0"),
    "search.max_architectures": (-1, "search.max_architectures=-1"),
    "search_space.max_conv": (0, "search_space.max_conv=0; expected an integer >= 1"),
    "search_space.image_size": (-1, "search_space.image_size=-1; expected an integer >= 0"),
    "search_space.conv_sizes": ((), "search_space.conv_sizes=()"),
    "search_space.pool_strides": ((2, 0), "search_space.pool_strides"),
    "search_space.max_image_size": (0, "search_space.max_image_size=0"),
    "search_space.min_conv": (20, "search_space.min_conv=20 exceeds search_space.max_conv=4"),
    "fixed.net": ("[C(8,3,1,1,1), P(2,2,5,0), SM(10)]", "fixed.net: .*padding <= kernel/2"),
    "fixed.index": (-2, "fixed.index=-2"),
    "fixed.embedding_layout": ("zip", "fixed.embedding_layout='zip'"),
    "data.train_size": (-5, "data.train_size=-5"),
}


@pytest.mark.parametrize("field", sorted(BAD))
def test_a_bad_value_is_refused_naming_the_field_before_the_workdir_exists(field, tmp_path):
  value, message = BAD[field]
  config = dpnas_mnist.get_config("quick")
  group, _, name = field.rpartition(".")
  (config[group] if group else config)[name] = value
  with pytest.raises(ConfigError, match=message if ".*" in message else message.replace("(", r"\(").replace(
      ")", r"\)").replace("[", r"\[")):
    experiment.validate_config(config)
  with pytest.raises(ConfigError):
    experiment.run(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_settings_objects_built_directly_are_checked_with_their_config_names():
  """EvalConfig, SearchSpace and QConfig check their own fields (validate_config relies on them)."""
  cases = [(lambda: ev.EvalConfig(epochs=0), "evaluator.epochs=0; expected an integer >= 1"),
           (lambda: ev.EvalConfig(memory_fraction=1.5), "evaluator.memory_fraction=1.5; expected a finite number > 0 "
                                                        "and <= 1"),
           (lambda: SearchSpace(image_size=0), "search_space.image_size=0; expected an integer >= 1"),
           (lambda: SearchSpace(conv_sizes=(3, 2.5)), r"search_space.conv_sizes=\(3, 2.5\): \[2.5\] not integers >= 1"),
           (lambda: sr.QConfig(q_learning_rate=0.0), "search.q_learning_rate=0.0; expected a finite number > 0 and "
                                                     "<= 1"),
           (lambda: sr.QConfig(schedule=((0.5, True),)), "search.schedule=.*expected \\(epsilon in \\[0, 1\\], "
                                                           "count >= 0\\) pairs with at least one count >= 1")]
  for build, message in cases:
    with pytest.raises(ConfigError, match=message):
      build()
  # image_size 0 in a config means "the data's size": accepted there, resolved before a SearchSpace is built
  config = dpnas_mnist.get_config("quick")
  config.search_space.image_size = 0
  experiment.validate_config(config)


def test_task_and_continue_settings_are_checked_together(tmp_path):
  config = dpnas_mnist.get_config("quick")
  config.task = "fixed"
  with pytest.raises(ConfigError, match="task='fixed' needs a net string"):
    experiment.validate_config(config)
  config = dpnas_mnist.get_config("quick,hypothesis2,store_embedding")
  config.fixed.replay_buffer_csv_path = "x.csv"
  with pytest.raises(ConfigError, match="store_embedding stores the embedding of one net"):
    experiment.validate_config(config)
  config = dpnas_mnist.get_config("quick")
  config.search.continue_search = True
  config.search.q_values_csv_path = str(tmp_path / "missing.csv")
  config.search.replay_buffer_csv_path = str(tmp_path / "missing.csv")
  with pytest.raises(ConfigError, match="search.q_values_csv_path=.*no such file"):
    experiment.validate_config(config)
  (tmp_path / "q.csv").write_text("x")
  config.search.q_values_csv_path = config.search.replay_buffer_csv_path = str(tmp_path / "q.csv")
  config.search.continue_epsilon = 0.7
  with pytest.raises(ConfigError, match="search.continue_epsilon 0.7 is not in the schedule"):
    experiment.validate_config(config)
  config.search.continue_epsilon, config.search.continue_ite = 0.5, 7
  with pytest.raises(ConfigError, match="search.continue_ite 7 must be in 1..6"):
    experiment.validate_config(config)


def test_data_that_disagree_with_the_config_are_refused(shared_data, tmp_path):
  config = dpnas_mnist.get_config("quick")
  config.data.path = str(shared_data / "mnist")
  config.data.train_size, config.data.test_size, config.data.image_size = 60, 20, 8
  config.search_space.num_classes = 7
  with pytest.raises(ConfigError, match="search_space.num_classes=7 disagrees with the data's number of classes 10"):
    experiment.run(config, str(tmp_path / "a"))
  config.search_space.num_classes, config.search_space.image_size = 0, 14
  with pytest.raises(ConfigError, match="search_space.image_size=14 disagrees with the data's image size 8"):
    experiment.run(config, str(tmp_path / "b"))
  fixed = dpnas_mnist.get_config("quick,fixed")
  fixed.data = config.data
  fixed.fixed.net = "[C(8,3,1,1,1), P(2,2,0,0), SM(7)]"
  with pytest.raises(ConfigError, match=r"fixed.net: net .*SM\(7\) but the data have 10 classes"):
    experiment.run(fixed, str(tmp_path / "c"))
  assert not list((tmp_path / "c").rglob("*.csv"))  # refused before anything was evaluated


# -- continued Q-tables and replay buffers -----------------------------------------------------------------------


def reference_files(tmp_path):
  """A consistent pair of reference CSVs of SPACE (table filled as a search fills it)."""
  table = ql.QTable(SPACE)
  rows = [ql.ReplayRow(1.0, NET, True, 0.52, 55.0, (40.0, 55.0), (38.5, 50.25), 53.1)]
  table.update_sequence(SPACE.net_to_states(NET), 0.52, 0.1, 1.0)
  (tmp_path / "q.csv").write_text(logs.q_values_text(table.to_rows()))
  (tmp_path / "replay.csv").write_text(logs.replay_buffer_text(rows))
  return (tmp_path / "q.csv").read_text().splitlines(), (tmp_path / "replay.csv").read_text().splitlines()


def start(tmp_path, q="q.csv", replay="replay.csv"):
  return sr.Search(lambda net, seed: None, SPACE, 1, tmp_path / "run", Q, continue_from=sr.ContinueFrom(
      str(tmp_path / q), str(tmp_path / replay), epsilon=0.5, ite=1))


def test_a_consistent_continued_search_loads(tmp_path):
  reference_files(tmp_path)
  assert len(start(tmp_path).buffer) == 1


@pytest.mark.parametrize("case", ["missing_row", "extra_row", "unknown_layer", "nan_utility", "fractional_size",
                                  "other_space"])
def test_q_tables_no_search_of_this_space_could_write_are_refused(tmp_path, case):
  q_lines, _ = reference_files(tmp_path)
  header, rows = q_lines[0], q_lines[1:]
  start_rows = [i for i, r in enumerate(rows) if r.startswith("start,")]
  assert start_rows[0] == 18  # the table lists states in the order the update created them (start last)
  if case == "missing_row":
    rows = rows[:start_rows[2]] + rows[start_rows[2] + 1:]
    expected = r"q-values row 18 \(state \('start'.*1 action\(s\) of the search space are missing"
  elif case == "extra_row":
    rows = rows + [rows[start_rows[0]]]
    expected = "q-values row 18 .*13 actions listed where the search space has 12 .repeated rows or another order"
  elif case == "unknown_layer":
    rows[3] = rows[3].replace("conv", "dense", 1)
    expected = "q-values row 3: .*layer_type 'dense' is not a layer type"
  elif case == "nan_utility":
    rows[1] = rows[1].rsplit(",", 1)[0] + ",nan"
    expected = "q-values row 1: utility 'nan'; expected a finite number"
  elif case == "fractional_size":
    rows[18] = rows[18].replace("start,0,0,0,0,0,8,", "start,0,0,0,0,0,7.5,", 1)
    expected = "q-values row 18: start_image_size '7.5'; expected a non-negative integer"
  else:  # a table of a space with other kernel sizes
    other = SearchSpace(image_size=8, num_classes=4, conv_sizes=(1, 3), conv_features=(4, 8), pool_sizes=(2, 3),
                        pool_strides=(2, 3), min_conv=1, max_conv=3, max_image_size=4, max_fc_input=64)
    table = ql.QTable(other)
    table.update_sequence(other.net_to_states(NET), 0.52, 0.1, 1.0)
    rows = logs.q_values_text(table.to_rows()).splitlines()[1:]
    expected = "does not belong to this search space"
  (tmp_path / "bad.csv").write_text("\n".join([header] + rows) + "\n")
  with pytest.raises(DataError, match=expected) as info:
    start(tmp_path, q="bad.csv")
  assert str(info.value).startswith(str(tmp_path / "bad.csv"))
  assert not (tmp_path / "run" / sr.STATE_FILE).exists()


@pytest.mark.parametrize("case", ["extra_field", "nan_reward", "huge_reward", "negative_accuracy", "inf_list"])
def test_replay_buffers_with_values_no_search_writes_are_refused(tmp_path, case):
  _, replay = reference_files(tmp_path)
  header, row = replay
  if case == "extra_field":
    header, row = header + ",note", row + ",hand-edited"
    expected = r"unexpected or repeated columns \['note'\]"
  elif case == "nan_reward":
    row = row.replace(",0.52,", ",nan,")
    expected = "row 0: reward 'nan'; expected a finite number in \\[0, 1\\]"
  elif case == "huge_reward":
    row = row.replace(",0.52,", ",1e300,")
    expected = "row 0: reward '1e300'"
  elif case == "negative_accuracy":
    row = row.replace(",53.1", ",-3.0")
    expected = "row 0: acc_test_last '-3.0'"
  else:
    row = row.replace('"[40.0, 55.0]"', '"[40.0, 1e400]"')
    expected = "row 0: expected accuracies in \\[0, 100\\]"
  (tmp_path / "bad.csv").write_text(header + "\n" + row + "\n")
  with pytest.raises(DataError, match=expected):
    start(tmp_path, replay="bad.csv")
  with pytest.raises(DataError, match="bad.csv"):
    logs.read_replay_buffer(tmp_path / "bad.csv")  # also as task 2 reads it


def test_rounding_above_100_percent_is_accepted():
  assert logs._finite("100.00000762939453", "acc", 0.0, 100.0) > 100.0  # float32 accuracies read back


# -- the reference's feasibility rule ------------------------------------------------------------------------------


def test_reference_feasibility_rule_never_checks_fc_nets_or_a_bare_classifier():
  big_fc = "[C(64,3,1,1,1), FC(32), SM(10)]"  # encoder output 64x28x28 = 50176 features, spatial size 28
  ours = ns.check_feasible(big_fc, image_size=28, in_channels=1)
  assert not ours.ok and "exceeds max_fc_input 20000" in ours.reason
  assert ns.check_feasible(big_fc, image_size=28, in_channels=1, reference_rule=True).ok
  bare = ns.check_feasible("[SM(10)]", image_size=28, in_channels=1)
  assert not bare.ok and "spatial size 28 exceeds max_image_size 8" in bare.reason
  assert ns.check_feasible("[SM(10)]", image_size=28, in_channels=1, reference_rule=True).ok
  conv_only = "[C(64,3,1,1,1), SM(10)]"  # no FC: the reference checks it too
  assert not ns.check_feasible(conv_only, image_size=28, in_channels=1, reference_rule=True).ok
  space = SearchSpace(max_fc=1)
  reference = SearchSpace(max_fc=1, reference_feasibility=True)
  assert not space.check_feasible(big_fc, 1).ok and reference.check_feasible(big_fc, 1).ok
  config = dpnas_mnist.get_config("reference_feasibility")
  assert config.search_space.reference_feasibility and not dpnas_mnist.get_config().search_space.reference_feasibility
