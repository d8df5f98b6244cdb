"""nas_forgetting.stacked.over_leading_axis: every entry of the stacked arguments, whatever the grouping."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_forgetting.stacked import over_leading_axis


@pytest.mark.parametrize("at_once", [0, 1, 2, 3, 4])
def test_every_entry_in_order_with_shared_arguments(at_once):
  x = jnp.arange(8.0).reshape(4, 2)  # 4 entries (3 at a time leaves a remainder of 1)
  y = {"b": jnp.asarray([10.0, 20.0, 30.0, 40.0])}
  w = jnp.asarray([1.0, -1.0])  # shared
  fn = lambda xi, wi, yi: (xi @ wi + yi["b"], xi * 2)
  got = jax.jit(over_leading_axis(fn, (0, None, 0), at_once))(x, w, y)
  expected = [fn(x[i], w, {"b": y["b"][i]}) for i in range(4)]
  np.testing.assert_array_equal(got[0], np.asarray([e[0] for e in expected]))
  np.testing.assert_array_equal(got[1], np.stack([e[1] for e in expected]))
