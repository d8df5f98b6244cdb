"""config_schema.override: declared fields only (the unknown one named with its group), sub-groups field by field,
derived fields (FieldReferences) following their source unless set themselves."""

import ml_collections
import pytest

from nas_forgetting.config_schema import override
from nas_forgetting.errors import ConfigError


def _config():
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = ml_collections.ConfigDict()
  c.data.name = "mnist"
  c.data.image = ml_collections.ConfigDict()
  c.data.image.size = 28
  c.data.image.grey = True
  c.wpl = ml_collections.ConfigDict()
  c.wpl.burst = 7
  c.shared = ml_collections.ConfigDict()
  c.shared.steps = c.wpl.get_ref("burst") * 60  # derived: 60 bursts per epoch
  return c


def test_sets_declared_fields_and_sub_groups_field_by_field():
  c = override(_config(), {"seed": 3, "data": {"image": {"size": 14}}})
  assert (c.seed, c.data.name, c.data.image.size, c.data.image.grey) == (3, "mnist", 14, True)


@pytest.mark.parametrize("values, message", [
    ({"sed": 1}, r"unknown config field 'sed'; valid fields: data, seed, shared, wpl"),
    ({"data": {"nmae": "x"}}, r"unknown data config field 'nmae'; valid fields: image, name"),
    ({"data": {"image": {"colour": 1}}}, r"unknown data\.image config field 'colour'; valid fields: grey, size"),
])
def test_an_unknown_field_is_named_with_its_group(values, message):
  c = _config()
  with pytest.raises(ConfigError, match=message):
    override(c, values)


def test_group_names_the_whole_path_of_a_group_built_alone():
  with pytest.raises(ConfigError, match="unknown controller config field 'tanh'"):
    override(ml_collections.ConfigDict({"lr": 1.0}), {"tanh": 1.0}, group="controller")


def test_derived_field_follows_its_source_and_an_explicit_value_wins():
  c = override(_config(), {"wpl": {"burst": 5}})
  assert c.shared.steps == 300 and c.to_dict()["shared"]["steps"] == 300
  c = override(c, {"shared": {"steps": 40}})
  c = override(c, {"wpl": {"burst": 3}})
  assert (c.wpl.burst, c.shared.steps) == (3, 40)
