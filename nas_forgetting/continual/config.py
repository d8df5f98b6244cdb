"""The continual experiment's config: every field declared, with its meaning, once.

`default_config()` is the whole config of `nas_forgetting.continual.experiment`; the files in `configs/` change only
what their setup changes. The `data`, `stream` and `model` groups are declared by the library modules that read them
(`data.datasets.default_data_config`, `data.tasks.default_stream_config`, `models.default_model_config`).
`experiment.validate_config` checks every value before any work.
"""

from __future__ import annotations

import ml_collections

from nas_forgetting.data.datasets import default_data_config
from nas_forgetting.data.tasks import default_stream_config
from nas_forgetting.models import default_model_config


def default_config() -> ml_collections.ConfigDict:
  """Every field of the continual experiment, with its meaning."""
  c = ml_collections.ConfigDict()
  c.experiment = "continual"  # dispatch key of launch.py
  c.seed = 0  # seeds the stream, the initialisation, the batch order and importance sampling
  c.methods = ("finetune", "ewc", "mas")  # run in order, each in <workdir>/<method>/; see methods.METHODS
  c.data = default_data_config()  # the data set (permuted/split streams) or the first data set (sequence)
  # stream.kind='sequence': the data sets after `data`, in key order (e.g. {'d1_fashion': <data config>})
  c.data_sequence = ml_collections.ConfigDict()
  c.stream = default_stream_config()  # task stream: kind, num_tasks, classes_per_task, class_order, scenario
  c.model = default_model_config()  # network; one head per task when stream.scenario == 'task'
  c.train = ml_collections.ConfigDict()
  c.train.optimizer = "sgd"  # 'sgd' | 'momentum' | 'adam'
  c.train.learning_rate = 0.01  # constant learning rate
  c.train.momentum = 0.9  # optimizer='momentum' only
  c.train.epochs = 1  # epochs per task
  c.train.first_task_epochs = 0  # epochs of the first task (0 = train.epochs; the MAS demo uses 10 then 20)
  c.train.batch_size = 64  # training batch size (incomplete last batch dropped; a task smaller than it fails)
  c.train.eval_batch_size = 500  # evaluation chunk size (memory only; results do not depend on it)
  c.train.reset_optimizer = True  # fresh optimiser state at each task start (the references build a new one)
  c.train.stop_after_epochs = 0  # > 0: stop each method after this many epochs of this call (resume tests)
  c.strength = ml_collections.ConfigDict()  # penalty strength lambda per method (finetune/joint have none)
  c.strength.l2 = 1.0  # lambda/2 sum (theta - anchor)^2
  c.strength.ewc = 1000.0  # lambda/2 sum_t F_t (theta - anchor_t)^2 (one pair per earlier task)
  c.strength.online_ewc = 1000.0  # lambda/2 sum F* (theta - anchor)^2, F* <- gamma F* + F_t
  c.strength.mas = 1.0  # lambda sum Omega (theta - anchor)^2 (the MAS reference's reg_lambda)
  c.strength.mas_local = 1.0  # as mas, with the local (Hebbian) Omega
  c.strength.si = 1.0  # c sum Omega (theta - anchor)^2 (Zenke et al.)
  c.importance = ml_collections.ConfigDict()
  c.importance.fisher_estimator = "exact"  # 'exact' | 'sampled' | 'empirical' | 'batch' (see importance.fisher)
  c.importance.mas_norm = "l2"  # MAS output norm: 'l2' (squared L2, the paper) | 'l1'
  c.importance.mas_estimator = "per_example"  # 'per_example' | 'batch' (|grad of batch-summed norm|, reference)
  # mas_estimator='batch' only: examples per batch of the reference's per-batch estimate (its demo: 200), taken in
  # order; Omega = sum over batches |grad of the batch-summed norm| / N. 0 = one batch of all the examples
  c.importance.mas_batch_size = 0
  c.importance.mas_accumulation = "sum"  # 'sum' | 'replace' | 'recompute_all' (MAS_sequence)
  c.importance.online_ewc_gamma = 1.0  # online EWC decay of the running Fisher
  c.importance.si_xi = 0.1  # SI damping xi in Omega += w / (Delta^2 + xi)
  c.importance.path = "per_layer"  # 'per_layer' (fast, Dense/Conv) | 'vmap' (any model); same numbers
  c.importance.chunk_size = 256  # examples per importance chunk (memory only)
  c.importance.num_examples = 0  # training examples of the task used for importance (0 = all; seeded subset)
  # Sweep (see continual.sweep): with seeds, every method runs for every (seed, strength) of its grid in one
  # compiled program (parameters, optimiser states, importance and anchors stacked on a grid axis, the epoch
  # run over it); the task stream stays the one of `seed`, each member draws its initialisation, batch order
  # and importance subset from its own seed. Empty seeds: no sweep (a single run per method, as without this group)
  c.sweep = ml_collections.ConfigDict()
  c.sweep.seeds = ()  # seeds of the grid, e.g. (0, 1, 2, 3, 4); () = no sweep
  c.sweep.strengths = ml_collections.ConfigDict()  # per penalised method, the strengths swept (() = its one strength)
  c.sweep.strengths.l2 = ()  # e.g. (0.1, 1.0, 10.0)
  c.sweep.strengths.ewc = ()  # e.g. (1e2, 1e3, 1e4, 1e5): EWC's lambda spans orders of magnitude across setups
  c.sweep.strengths.online_ewc = ()
  c.sweep.strengths.mas = ()
  c.sweep.strengths.mas_local = ()
  c.sweep.strengths.si = ()
  # share of each task's training data held out (seeded by `seed`) as the validation split on which the best
  # strength per method is chosen (never the test split); the members train on the rest. 0 = no choice made
  c.sweep.validation_fraction = 0.1
  # most members trained together (memory bound; the grid is cut into equal chunks trained one after the other,
  # same results); 0 = as many as fit in memory_fraction of the free device memory (cpu_memory_budget on the CPU)
  c.sweep.chunk = 0
  c.sweep.shard = True  # shard the grid axis over the local devices (the most that divide a chunk evenly)
  # members one device's compiled epoch and evaluation compute together (vmapped; groups one after another); 0 =
  # automatic: 1 on the CPU (each member's state stays in the cache), the whole chunk on a GPU/TPU; same results.
  # A grid sharded over several devices computes each device's members together (a value > 0 is refused there)
  c.sweep.members_at_once = 0
  c.sweep.memory_fraction = 0.5  # share of the free device memory the grid may use (chunk=0)
  c.sweep.cpu_memory_budget = 1 << 31  # bytes the grid may use on devices that report no memory statistics (CPU)
  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.max_to_keep = 2  # checkpoints kept per method
  # when a single run (not a sweep) saves its checkpoint: 'epoch' (after every epoch) | 'task' (after each task's last
  # epoch, and at a train.stop_after_epochs stop; a run killed mid-task resumes from that task's start, with the
  # numbers and logs of an uninterrupted run, and redoes its epochs). 'task' saves time when epochs are short
  c.checkpoint.every = "epoch"
  return c
