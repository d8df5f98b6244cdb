"""Progress bars for long loops: tqdm on stderr with rate and ETA; off when $NAS_FORGETTING_NO_PROGRESS is set.

Set `NAS_FORGETTING_NO_PROGRESS=1` (the test suite does) to silence every bar; "0", "false", "no" or an empty
value keep them on.
"""

import os
import sys
from typing import Iterable

import tqdm

ENV_VAR = "NAS_FORGETTING_NO_PROGRESS"


def progress_disabled() -> bool:
  """Whether $NAS_FORGETTING_NO_PROGRESS turns progress bars off."""
  return os.environ.get(ENV_VAR, "").strip().lower() not in ("", "0", "false", "no", "off")


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             leave: bool = True) -> tqdm.tqdm:
  """Wraps `iterable` (or counts manual `.update(n)` calls up to `total`) in a tqdm bar with elapsed time and ETA.

  Args:
    iterable: what to iterate over; None for a manually updated bar.
    total: the number of items, when `iterable` has no `len()` (or when it is None).
    desc: a prefix naming the loop.
    unit: the name of one item ("step", "epoch", ...).
    leave: keep the finished bar on screen.

  Returns:
    A tqdm object: iterate over it, or call `.update(n)`, `.set_postfix(...)`, `.close()`.
  """
  # tqdm's default format shows `n/total [elapsed<remaining, rate]` whenever the total is known.
  return tqdm.tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr,
                   disable=progress_disabled(), dynamic_ncols=True, mininterval=0.5)
