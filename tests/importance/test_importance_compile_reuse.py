"""The importance drivers compile once for all the methods of a process that share a model: the continual runner
hands every method the same `apply_fn` (a static argument of the jitted sums), so EWC and online EWC reuse one
compiled Fisher."""

from nas_forgetting.continual import config as continual_config
from nas_forgetting.continual import experiment
from nas_forgetting.continual.runner import MethodRun
from nas_forgetting.importance import _driver


def _config():
  c = continual_config.default_config()
  c.data.source = "embedded"
  c.data.train_size = 200
  c.data.test_size = 40
  c.stream.kind = "split"
  c.stream.num_tasks = 2
  c.stream.classes_per_task = 2
  c.stream.scenario = "task"
  c.model.hidden = (8,)
  c.train.epochs = 1
  c.train.batch_size = 16
  c.train.eval_batch_size = 64
  c.importance.num_examples = 24
  c.importance.chunk_size = 8  # a chunk size no other test uses: the first method compiles, the second must not
  return c


def test_two_methods_with_the_same_model_share_one_compiled_importance(tmp_path):
  tasks = experiment.load_tasks(_config())
  before = _driver._per_example_sums._cache_size()
  MethodRun(_config(), tasks, "ewc", tmp_path / "ewc").run()
  after_first = _driver._per_example_sums._cache_size()
  MethodRun(_config(), tasks, "online_ewc", tmp_path / "online_ewc").run()
  assert after_first == before + 1
  assert _driver._per_example_sums._cache_size() == after_first
