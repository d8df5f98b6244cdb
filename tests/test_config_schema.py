"""config_schema.override: declared fields only (the unknown one named with its group), sub-groups field by field,
derived fields (FieldReferences) following their source unless set themselves; the value checks: each error names the
field, its value and the bound."""

import dataclasses

import ml_collections
import pytest

from nas_forgetting import config_schema as cc
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


def _values():
  return ml_collections.ConfigDict({"seed": -1, "lr": 0.0, "rate": 1.0, "mode": "x", "flag": 1, "name": " ",
                                    "path": 3, "blocks": (1, 0), "group": {"size": 2.5}})


@pytest.mark.parametrize("check, message", [
    (lambda c: cc.integer(c, "seed", minimum=0), r"^seed=-1; expected an integer >= 0$"),
    (lambda c: cc.integer(c, "seed", minimum=0, maximum=9), r"^seed=-1; expected an integer >= 0 and <= 9$"),
    (lambda c: cc.integer(c, "group.size", minimum=0), r"^group\.size=2\.5; expected an integer >= 0$"),
    (lambda c: cc.number(c, "lr", above=0.0), r"^lr=0\.0; expected a finite number > 0$"),
    (lambda c: cc.number(c, "rate", above=0.0, maximum=0.5), r"^rate=1\.0; expected a finite number > 0 and <= 0\.5$"),
    (lambda c: cc.number(c, "rate", minimum=0.0, below=1.0), r"^rate=1\.0; expected a finite number >= 0 and < 1$"),
    (lambda c: cc.number(c, "mode"), r"^mode='x'; expected a finite number$"),
    (lambda c: cc.integers(c, "blocks", minimum=1), r"^blocks=\(1, 0\): \[0\] not integers >= 1$"),
    (lambda c: cc.choice(c, "mode", ("a", "b")), r"^mode='x'; expected one of a, b$"),
    (lambda c: cc.boolean(c, "flag"), r"^flag=1; expected True or False$"),
    (lambda c: cc.text(c, "path"), r"^path=3; expected a string$"),
    (lambda c: cc.text(c, "name", non_empty="the data set's name"), r"^name is empty; expected the data set's name$"),
    (lambda c: cc.integer(c, "group.width", minimum=1), r"^group\.width is missing from the config$"),
])
def test_checks_name_the_field_its_value_and_the_bound(check, message):
  with pytest.raises(ConfigError, match=message):
    check(_values())


def test_checks_return_the_value_within_bounds():
  c = _values()
  assert cc.integer(c, "seed", minimum=-1, maximum=-1) == -1
  assert cc.number(c, "rate", above=0.0, maximum=1.0) == 1.0
  assert cc.text(c, "name") == " " and cc.choice(c, "mode", ("x",)) == "x"


def test_a_group_checked_alone_and_a_settings_object_are_named_with_their_group():
  @dataclasses.dataclass(frozen=True)
  class Settings:
    epochs: int = 0

  with pytest.raises(ConfigError, match=r"^evaluator\.epochs=0; expected an integer >= 1$"):
    cc.integer(Settings(), "epochs", minimum=1, group="evaluator")
  with pytest.raises(ConfigError, match=r"^data_sequence\.d1\.seed=-1; expected an integer >= 0$"):
    cc.integer(ml_collections.ConfigDict({"seed": -1}), "seed", minimum=0, group="data_sequence.d1")
  with pytest.raises(ConfigError, match=r"^wpl\.rate is missing from the config$"):
    cc.number(Settings(), "rate", group="wpl")
  assert cc.integer(Settings(), "epochs", minimum=0, group="evaluator") == 0
