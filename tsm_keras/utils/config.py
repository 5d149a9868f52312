"""The declarative config base: dataclass sections validated field by field.

A config section is a dataclass deriving from `ConfigSection` whose fields
are declared with `option(default, check)`. Constructing it (directly, with
`from_dict` from a parsed YAML mapping, or with `replace`) runs every field's
check and then the section's own `validate()` for rules between fields, so an
instance is always valid. Every problem raises one error type,
`ConfigError(ValueError)`, whose message starts with the dotted path of the
field (`data.crop_size: expected a positive int, got -3`).

The checks are small callables built by the functions of this module
(`positive_int()`, `number(low=0, high=1, high_open=True)`, `one_of(...)`,
`optional(...)`, `numbers(length=3)`, ...). A check returns the normalised
value (lists become tuples, ints become floats for numbers) or raises
`Invalid(expected)`; the section turns that into a `ConfigError` naming the
field and the value it got.

This module imports nothing from tsm_keras, so any layer can use it.

Example:

>>> @dataclasses.dataclass
... class Optimizer(ConfigSection):
...     SECTION = "optimizer"
...     lr: float = option(0.01, number(low=0, low_open=True))
...     nesterov: bool = option(False, boolean())
>>> Optimizer.from_dict({"lr": 1})
Optimizer(lr=1.0, nesterov=False)
>>> Optimizer.from_dict({"lr": -1})
Traceback (most recent call last):
...
tsm_keras.utils.config.ConfigError: optimizer.lr: expected a number > 0, got -1
"""

import dataclasses
import math


class ConfigError(ValueError):
    """A config value that is unknown, of the wrong type or impossible.

    Args:
        message: the whole message, or the problem when `path` is given.
        path: dotted field path (`"data.crop_size"`) or a tuple of its parts;
            the message becomes `"{path}: {message}"`.
    """

    def __init__(self, message, path=None):
        self.path = _parts(path)
        self.problem = message
        super().__init__(f"{'.'.join(self.path)}: {message}" if self.path else message)

    def moved(self, old_prefix, new_prefix):
        """The same error with the leading path `old_prefix` replaced by `new_prefix`."""
        old, new = _parts(old_prefix), _parts(new_prefix)
        if old == new or self.path[: len(old)] != old:
            return self
        return ConfigError(self.problem, new + self.path[len(old):])


class Invalid(Exception):
    """Raised by a check: the value is not `expected` (a description)."""

    def __init__(self, expected):
        super().__init__(expected)
        self.expected = expected


def _parts(path):
    if isinstance(path, str):
        return tuple(path.split(".")) if path else ()
    return tuple(path or ())


# ------------------------------------------------------------------ checks
class Check:
    """A field check: `check(value)` returns the normalised value or raises `Invalid`.

    Args:
        expected: what a valid value is, for the error message
            (`"a positive int"`).
        convert: `convert(value) -> normalised value`; returns `REFUSE` (or
            raises `Invalid`) for an invalid value.
    """

    def __init__(self, expected, convert):
        self.expected = expected
        self.convert = convert

    def __call__(self, value):
        result = self.convert(value)
        if result is REFUSE:
            raise Invalid(self.expected)
        return result


REFUSE = object()


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _in_range(value, low, high, low_open, high_open):
    if low is not None and (value < low or (low_open and value == low)):
        return False
    return high is None or not (value > high or (high_open and value == high))


def interval_text(low=None, high=None, low_open=False, high_open=False):
    """`" > 0"`, `" in [0, 1)"`, ... (bounds printed as written)."""
    if low is None and high is None:
        return ""
    if high is None:
        return f" {'>' if low_open else '>='} {low}"
    if low is None:
        return f" {'<' if high_open else '<='} {high}"
    return f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def boolean():
    """`true` or `false` (YAML booleans only, not 0/1 or strings)."""
    return Check("true or false", lambda value: value if isinstance(value, bool) else REFUSE)


def integer(minimum=None):
    """An int (never a bool), optionally `>= minimum`."""
    expected = "an int" + ("" if minimum is None else f" >= {minimum}")
    return Check(expected, lambda value: value if _is_int(value) and (minimum is None or value >= minimum)
                 else REFUSE)


def positive_int():
    """An int >= 1."""
    return Check("a positive int", integer(1).convert)


def non_negative_int():
    """An int >= 0."""
    return Check("a non-negative int", integer(0).convert)


def number(low=None, high=None, low_open=False, high_open=False):
    """A finite int or float in the given range, returned as a float."""
    expected = "a number" + interval_text(low, high, low_open, high_open)
    return Check(expected, lambda value: float(value)
                 if _is_number(value) and _in_range(value, low, high, low_open, high_open) else REFUSE)


def one_of(choices):
    """One of `choices` (a sequence, or a function returning it, for registries)."""

    def convert(value):
        allowed = choices() if callable(choices) else choices
        if isinstance(value, str) and value in allowed:
            return value
        raise Invalid(f"one of {list(allowed)}")

    return Check(f"one of {list(choices) if not callable(choices) else '...'}", convert)


def text(allow_empty=False):
    """A string (non-empty unless `allow_empty`)."""
    if allow_empty:
        return Check("a string", lambda value: value if isinstance(value, str) else REFUSE)
    return Check("a non-empty string", lambda value: value if isinstance(value, str) and value else REFUSE)


def mapping(null_is_empty=False):
    """A mapping with string keys, returned as a new dict (`null_is_empty`: None gives `{}`)."""

    def convert(value):
        if value is None and null_is_empty:
            return {}
        if isinstance(value, dict) and all(isinstance(key, str) for key in value):
            return dict(value)
        return REFUSE

    return Check("a mapping with string keys", convert)


def numbers(length=None, low=None, high=None, low_open=False):
    """A non-empty list of numbers (optionally of `length`, in a range), as a tuple of floats."""
    expected = "a list of numbers" + (f" of length {length}" if length else "")
    expected += interval_text(low, high, low_open)

    def convert(value):
        if not isinstance(value, (list, tuple)) or not value or (length and len(value) != length):
            return REFUSE
        if not all(_is_number(item) and _in_range(item, low, high, low_open, False) for item in value):
            return REFUSE
        return tuple(float(item) for item in value)

    return Check(expected, convert)


def ints(minimum=None, increasing=False, length=None):
    """A list of ints (optionally `>= minimum`, strictly increasing, of `length`), as a tuple."""
    expected = f"a list of {length} ints" if length else "a list of ints"
    expected += ("" if minimum is None else f" >= {minimum}") + (" in increasing order" if increasing else "")

    def convert(value):
        if not isinstance(value, (list, tuple)) or (length is not None and len(value) != length):
            return REFUSE
        if not all(_is_int(item) and (minimum is None or item >= minimum) for item in value):
            return REFUSE
        if increasing and any(later <= earlier for earlier, later in zip(value, value[1:])):
            return REFUSE
        return tuple(value)

    return Check(expected, convert)


def optional(check):
    """`check`, or null (`None`)."""

    def convert(value):
        if value is None:
            return None
        try:
            return check(value)
        except Invalid as error:
            raise Invalid(f"{error.expected} or null") from None

    return Check(f"{check.expected} or null", convert)


def section(section_class):
    """A nested section: an instance of `section_class`, the mapping of its options, or null (defaults)."""

    def convert(value):
        if isinstance(value, section_class):
            return value
        if value is None or isinstance(value, dict):
            return section_class.from_dict(value)
        return REFUSE

    return Check("a mapping of options", convert)


# ----------------------------------------------------------------- sections
def option(default=dataclasses.MISSING, check=None, default_factory=dataclasses.MISSING):
    """A dataclass field with a check (`dataclasses.field` plus `metadata["check"]`).

    Mutable defaults (dicts, lists, sections) need `default_factory`.
    """
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"check": check})


class ConfigSection:
    """Base of the config dataclasses: checked fields, `from_dict`, `to_dict`, `replace`.

    Subclasses are `@dataclasses.dataclass` (frozen or not) with fields from
    `option(default, check)` and set:

    - `SECTION`: the dotted path errors start with (`"data"`,
      `"data.synthetic"`); `from_dict(values, path=...)` moves it elsewhere;
    - optionally `OPTION_NOUN`, the word for a field in the unknown-field
      message (`"key"` or `"option"`);
    - optionally `validate(self)`, the rules between fields, which calls
      `self.fail(name, expected, value)`.

    Example:

    >>> @dataclasses.dataclass(frozen=True)
    ... class Crop(ConfigSection):
    ...     SECTION = "data.crop"
    ...     size: int = option(224, positive_int())
    ...     scale: tuple = option((0.5, 1.0), numbers(length=2, low=0, high=1))
    ...     def validate(self):
    ...         if self.scale[0] > self.scale[1]:
    ...             self.fail("scale", "[low, high] with low <= high", list(self.scale))
    >>> Crop.from_dict({"size": 112}).to_dict()
    {'size': 112, 'scale': [0.5, 1.0]}
    >>> Crop(scale=[1, 0.5])
    Traceback (most recent call last):
    ...
    tsm_keras.utils.config.ConfigError: data.crop.scale: expected [low, high] with low <= high, got [1.0, 0.5]
    """

    SECTION = ""
    OPTION_NOUN = "key"

    def __post_init__(self):
        for field in dataclasses.fields(self):
            normalised = self._checked(field, getattr(self, field.name))
            object.__setattr__(self, field.name, normalised)  # works on frozen dataclasses too
        self.validate()

    @classmethod
    def _checked(cls, field, value):
        check = field.metadata.get("check")
        if check is None:
            return value
        try:
            return check(value)
        except Invalid as error:
            raise ConfigError(f"expected {error.expected}, got {value!r}",
                              path=_parts(cls.SECTION) + (field.name,)) from None

    @classmethod
    def check_field(cls, name, value):
        """`value` as field `name` holds it, checked on its own (not against other fields).

        For a value that arrives alone (a command-line flag) before a whole
        section is built. Raises `ConfigError` naming the field, for an
        unknown field or a value its check refuses.
        """
        field = {field.name: field for field in dataclasses.fields(cls)}.get(name)
        if field is None:
            cls.refuse_unknown({name: value})
        return cls._checked(field, value)

    def validate(self):
        """Checks between fields (each field was checked on its own already)."""

    def fail(self, name, expected, value):
        """Raises `ConfigError` for field `name`: `expected {expected}, got {value!r}`."""
        raise ConfigError(f"expected {expected}, got {value!r}", path=_parts(self.SECTION) + (name,))

    @classmethod
    def field_names(cls):
        return [field.name for field in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values, path=None):
        """A validated section from a plain mapping (`None` = all defaults).

        Args:
            values: mapping of field name to value (a parsed YAML section).
            path: dotted path for the error messages (default `SECTION`).

        Raises:
            ConfigError: naming the field, for unknown fields, wrong types and
                impossible values.
        """
        path = cls.SECTION if path is None else path
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(f"expected a mapping of options, got {values!r}", path=path)
        cls.refuse_unknown(values, path)
        try:
            return cls(**values)
        except ConfigError as error:
            raise error.moved(cls.SECTION, path) from None

    @classmethod
    def refuse_unknown(cls, values, path=None, known=None):
        """Raises `ConfigError` naming the first key of `values` that is not a field."""
        known = cls.field_names() if known is None else list(known)
        for key in values:
            if key not in known:
                noun = cls.OPTION_NOUN
                raise ConfigError(f"unknown {noun} (known {noun}s: {', '.join(known)})",
                                  path=_parts(cls.SECTION if path is None else path) + (str(key),))

    def to_dict(self):
        """Plain-python mapping that `from_dict` accepts (YAML friendly: lists, no tuples)."""
        return {field.name: _plain(getattr(self, field.name)) for field in dataclasses.fields(self)}

    def replace(self, **changes):
        """A validated copy with some fields changed."""
        return type(self).from_dict({**self.to_dict(), **changes})


def _plain(value):
    if isinstance(value, ConfigSection):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value
