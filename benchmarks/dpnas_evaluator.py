"""DP-NAS evaluator speed: architecture evaluations per hour and embedding throughput, one seed and many at once.

  python benchmarks/dpnas_evaluator.py [--train 8000 --val 2000 --test 0 --image-size 28 --epochs 3 --seeds 8]

Data: the real MNIST test split from ../shared/data/mnist (the only MNIST split available offline), carved into
train/val (and optionally test; with --test 0 the evaluator's test split is one val image) by a seeded split, so
train + val + test may be at most 10,000; --image-size resizes. Net: the README's example string (or --net).
Measures, all wall-clock with results fetched to the host:
  first_eval_s            first evaluation in the process (embedding and classifier training compiled)
  same_arch_new_seed_s    the same architecture with a new seed (nothing compiled)
  new_arch_same_bucket_s  another architecture whose embedding falls in the same width bucket (only its
                          embedding function compiled; the classifier training is reused)
  seeds_at_once_s         --seeds new seeds of the same architecture in one call (nothing compiled)
  embed_images_per_s      embedding throughput (train+val+test, one seed, nothing compiled)
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax

README_NET = "[C(32,5,1,2,1), P(4,4,0,0), C(32,3,1,1,0), C(1024,1,1,0,1), C(512,3,1,0,1), SM(10)]"
# same embedding width as README_NET (512x5x5 = 12800, bucket 16384) with a different encoder
OTHER_NET = "[C(64,5,1,2,1), P(4,4,0,0), C(1024,1,1,0,1), C(512,3,1,0,1), SM(10)]"


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--train", type=int, default=8000)
  parser.add_argument("--val", type=int, default=2000)
  parser.add_argument("--test", type=int, default=0)
  parser.add_argument("--image-size", type=int, default=28)
  parser.add_argument("--epochs", type=int, default=3)
  parser.add_argument("--seeds", type=int, default=8)
  parser.add_argument("--net", default=README_NET)
  parser.add_argument("--other-net", default=OTHER_NET)
  parser.add_argument("--data", default="")
  args = parser.parse_args()

  from nas_forgetting.data.datasets import load_dataset, offline_data_config
  from nas_forgetting.dpnas import evaluator as ev

  # the carved-out split holds val then test, so --train 8000 --val 2000 uses all 10,000 images
  data_config = offline_data_config("mnist", name="mnist", train_size=args.train, test_size=args.val + args.test,
                                    image_size=0 if args.image_size == 28 else args.image_size)  # 0 = native 28x28
  if args.data:
    data_config.path = args.data
  splits = load_dataset(data_config)
  held = splits.test
  test = slice(args.val, args.val + args.test) if args.test else slice(0, 1)  # --test 0: one val image stands in
  data = ev.SplitData(splits.train.images, splits.train.labels, held.images[:args.val], held.labels[:args.val],
                      held.images[test], held.labels[test], 10)
  config = ev.EvalConfig(epochs=args.epochs, early_stopping_epoch=0)
  evaluator = ev.Evaluator(data, config)

  def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out

  first, r0 = timed(lambda: evaluator.evaluate(args.net, [0]))
  same, _ = timed(lambda: evaluator.evaluate(args.net, [1]))
  traces = dict(ev.TRACES)
  other, _ = timed(lambda: evaluator.evaluate(args.other_net, [2]))
  reused = ev.TRACES["train"] == traces["train"]
  many, rs = timed(lambda: evaluator.evaluate(args.net, list(range(100, 100 + args.seeds))))
  many_again, _ = timed(lambda: evaluator.evaluate(args.net, list(range(200, 200 + args.seeds))))
  embed, _ = timed(lambda: evaluator.embed(args.net, [7]))
  images = args.train + args.val + max(args.test, 1)
  print(json.dumps({
      "device": str(jax.devices()[0].device_kind), "platform": jax.default_backend(), "num_devices": jax.device_count(),
      "jax": jax.__version__, "python": platform.python_version(),
      "data": f"MNIST test split, {args.train} train / {args.val} val, {args.image_size}x{args.image_size}",
      "net": args.net, "epochs": args.epochs,
      "first_eval_s": round(first, 3), "same_arch_new_seed_s": round(same, 3),
      "new_arch_same_bucket_s": round(other, 3), "classifier_training_reused": reused,
      "seeds": args.seeds, "seeds_at_once_first_s": round(many, 3), "seeds_at_once_s": round(many_again, 3),
      "seeds_at_once_over_one_seed": round(many_again / same, 2),
      "evals_per_hour_new_arch": round(3600 / other, 1), "evals_per_hour_same_arch": round(3600 / same, 1),
      "seed_evals_per_hour_at_once": round(3600 * args.seeds / many_again, 1),
      "embed_images_per_s": round(images / embed, 1),
      "reward_seed0": round(r0[0].reward, 4), "rewards_many": [round(r.reward, 4) for r in rs]}))


if __name__ == "__main__":
  main()
