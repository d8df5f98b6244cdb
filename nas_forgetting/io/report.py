"""The result block every run prints when it ends: what ran, on which data, and its headline numbers."""

from typing import Any, Mapping


def result_block(title: str, rows: Mapping[str, Any]) -> str:
  """`title` underlined, then one aligned `name: value` line per row (floats to 4 significant digits).

  Example: result_block("ENAS search (rnn) on PTB", {"data": "ptb, valid.txt -> test.txt",
  "derived cell test perplexity": 365.2}).
  """
  def shown(value: Any) -> str:
    if isinstance(value, float):
      return f"{value:.4g}"
    return str(value)

  width = max((len(name) for name in rows), default=0)
  lines = [title, "=" * len(title)]
  lines += [f"{name:<{width}} : {shown(value)}" for name, value in rows.items()]
  return "\n".join(lines)


def print_result_block(title: str, rows: Mapping[str, Any]) -> str:
  """Prints `result_block(title, rows)` to stdout (flushed) and returns it."""
  text = result_block(title, rows)
  print(text, flush=True)
  return text
