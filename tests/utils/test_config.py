"""The config base (`tsm_keras.utils.config`): checks, sections, one error type naming the field path."""

import dataclasses
from typing import Optional

import pytest
import yaml

from tsm_keras.utils.config import (
    ConfigError,
    ConfigSection,
    Invalid,
    boolean,
    integer,
    ints,
    mapping,
    non_negative_int,
    number,
    numbers,
    one_of,
    option,
    optional,
    positive_int,
    section,
    text,
)


@pytest.mark.parametrize(
    "check, value, expected",
    [
        (boolean(), False, False),
        (integer(), -7, -7),
        (integer(minimum=2), 2, 2),
        (positive_int(), 1, 1),
        (non_negative_int(), 0, 0),
        (number(low=0, high=1, high_open=True), 0, 0.0),
        (number(), 3, 3.0),
        (one_of(("a", "b")), "b", "b"),
        (one_of(lambda: ["x"]), "x", "x"),
        (text(), "s", "s"),
        (text(allow_empty=True), "", ""),
        (mapping(), {"k": 1}, {"k": 1}),
        (mapping(null_is_empty=True), None, {}),
        (numbers(length=2), [1, 2.5], (1.0, 2.5)),
        (ints(minimum=1, increasing=True), [1, 3], (1, 3)),
        (ints(length=3), [4, 5, 6], (4, 5, 6)),
        (optional(positive_int()), None, None),
        (optional(positive_int()), 5, 5),
    ],
)
def test_checks_accept_and_normalise(check, value, expected):
    result = check(value)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(
    "check, value, description",
    [
        (boolean(), 1, "true or false"),
        (boolean(), "yes", "true or false"),
        (integer(minimum=2), 1, "an int >= 2"),
        (integer(), True, "an int"),  # bools are not ints in a config
        (integer(), 2.0, "an int"),
        (positive_int(), 0, "a positive int"),
        (non_negative_int(), -1, "a non-negative int"),
        (number(low=0, low_open=True), 0, "a number > 0"),
        (number(low=0, high=1, high_open=True), 1.0, "a number in [0, 1)"),
        (number(low=0.0, high=1.0, low_open=True), 0.0, "a number in (0.0, 1.0]"),
        (number(high=3), 4, "a number <= 3"),
        (number(), float("nan"), "a number"),
        (number(), "1", "a number"),
        (one_of(("a", "b")), "c", "one of ['a', 'b']"),
        (one_of(lambda: ["x", "y"]), "z", "one of ['x', 'y']"),
        (text(), "", "a non-empty string"),
        (text(allow_empty=True), 3, "a string"),
        (mapping(), {1: 2}, "a mapping with string keys"),
        (mapping(), None, "a mapping with string keys"),
        (numbers(length=3), [1, 2], "a list of numbers of length 3"),
        (numbers(low=0.0, low_open=True), [1, 0], "a list of numbers > 0.0"),
        (numbers(), [], "a list of numbers"),
        (ints(minimum=1, increasing=True), [2, 2], "a list of ints >= 1 in increasing order"),
        (ints(length=3), [1, 2], "a list of 3 ints"),
        (optional(positive_int()), 0, "a positive int or null"),
        (optional(one_of(("a",))), "b", "one of ['a'] or null"),
    ],
)
def test_checks_refuse_with_a_description(check, value, description):
    with pytest.raises(Invalid) as caught:
        check(value)
    assert caught.value.expected == description


@dataclasses.dataclass(frozen=True)
class Inner(ConfigSection):
    SECTION = "outer.inner"

    size: int = option(4, positive_int())


@dataclasses.dataclass
class Outer(ConfigSection):
    SECTION = "outer"
    OPTION_NOUN = "option"

    rate: float = option(0.5, number(low=0, high=1))
    sizes: tuple = option((1, 2), ints(minimum=1))
    name: Optional[str] = option(None, optional(text()))
    inner: Inner = option(check=section(Inner), default_factory=Inner)

    def validate(self):
        if self.inner.size < len(self.sizes):
            self.fail("sizes", f"at most inner.size ({self.inner.size}) sizes", list(self.sizes))


def test_construction_checks_every_field_and_normalises():
    outer = Outer(rate=1, sizes=[3], inner={"size": 2})
    assert outer.rate == 1.0 and isinstance(outer.rate, float)
    assert outer.sizes == (3,) and outer.inner == Inner(size=2)
    with pytest.raises(ConfigError) as caught:
        Outer(rate=2)
    assert str(caught.value) == "outer.rate: expected a number in [0, 1], got 2"
    assert isinstance(caught.value, ValueError) and caught.value.path == ("outer", "rate")


def test_from_dict_names_the_path_of_the_field():
    with pytest.raises(ConfigError, match=r"^outer\.inner\.size: expected a positive int, got 0$"):
        Outer.from_dict({"inner": {"size": 0}})
    with pytest.raises(ConfigError, match=r"^outer\.inner: expected a mapping of options, got 3$"):
        Outer.from_dict({"inner": 3})
    with pytest.raises(ConfigError, match=r"^outer: expected a mapping of options, got \[1\]$"):
        Outer.from_dict([1])
    # Unknown keys name the key and list the known ones, in the section's own word.
    with pytest.raises(ConfigError, match=r"^outer\.rat: unknown option \(known options: rate, sizes, name, inner\)$"):
        Outer.from_dict({"rat": 1})
    with pytest.raises(ConfigError, match=r"^outer\.inner\.sise: unknown key \(known keys: size\)$"):
        Outer.from_dict({"inner": {"sise": 1}})


def test_check_field_checks_one_value_without_the_rules_between_fields():
    assert Outer.check_field("sizes", [1, 2, 3, 4, 5, 6]) == (1, 2, 3, 4, 5, 6)  # more than inner.size: fine alone
    assert Outer.check_field("rate", 1) == 1.0
    with pytest.raises(ConfigError) as caught:
        Outer.check_field("rate", 2)
    assert str(caught.value) == "outer.rate: expected a number in [0, 1], got 2"
    assert caught.value.problem == "expected a number in [0, 1], got 2"
    with pytest.raises(ConfigError, match=r"^outer\.rat: unknown option \(known options: rate, sizes, name, inner\)$"):
        Outer.check_field("rat", 1)


def test_rules_between_fields_use_the_same_error():
    with pytest.raises(ConfigError, match=r"^outer\.sizes: expected at most inner\.size \(1\) sizes, got \[1, 2\]$"):
        Outer.from_dict({"inner": {"size": 1}})


def test_a_path_given_to_from_dict_replaces_the_section_name():
    with pytest.raises(ConfigError, match=r"^run\.yaml: outer\.inner\.size: expected a positive int"):
        Outer.from_dict({"inner": {"size": -1}}, path="run.yaml: outer")
    error = ConfigError("expected x, got y", path="a.b.c")
    assert str(error.moved("a", "z.y")) == "z.y.b.c: expected x, got y"
    assert error.moved("q", "z") is error  # another prefix: unchanged


def test_dict_round_trip_replace_and_null_sections():
    outer = Outer.from_dict({"rate": 0.25, "sizes": [1, 2, 3], "name": "n", "inner": {"size": 8}})
    values = outer.to_dict()
    assert values == {"rate": 0.25, "sizes": [1, 2, 3], "name": "n", "inner": {"size": 8}}
    assert yaml.safe_load(yaml.safe_dump(values)) == values  # plain YAML types only
    assert Outer.from_dict(values) == outer
    changed = outer.replace(rate=0.75)
    assert (changed.rate, outer.rate, changed.inner) == (0.75, 0.25, outer.inner)
    with pytest.raises(ConfigError, match="outer.rate"):
        outer.replace(rate=-1)
    assert Outer.from_dict(None) == Outer() and Outer.from_dict({"inner": None}).inner == Inner()


def test_frozen_sections_stay_frozen():
    inner = Inner(size=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        inner.size = 4
