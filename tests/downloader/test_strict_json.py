"""iter_object_strict: the member-at-a-time parser agrees with loads_strict on every input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightlift.downloader.strict_json import StrictJSONError, iter_object_strict, loads_strict

_ERRORS = (json.JSONDecodeError, StrictJSONError, ValueError, RecursionError)


def _agree(text: str) -> None:
    """Both parsers refuse ``text``, or both accept it with the same members in order."""
    try:
        theirs: Any = loads_strict(text)
    except _ERRORS:
        theirs = None
    else:
        if not isinstance(theirs, dict):
            return  # loads_strict takes any JSON value; members exist only for an object
    try:
        ours = list(iter_object_strict(text))
    except _ERRORS:
        assert theirs is None, f"refused, but loads_strict accepts {text!r}"
        return
    assert theirs is not None, f"accepted, but loads_strict refuses {text!r}"
    assert ours == list(theirs.items())


@pytest.mark.parametrize("text", [
    '{}', ' {} ', '{"a": 1}', '{"a": {"b": [1, 2, {"c": null}]}, "d": "e"}',
    '\n{\t"a"\r:\n1 ,"b":2}\n', '{"\\u00e9": "\\ud83d\\ude00"}',
])
def test_valid_objects_give_the_same_members_in_order(text: str) -> None:
    assert list(iter_object_strict(text)) == list(loads_strict(text).items())


@pytest.mark.parametrize(("text", "kind"), [
    ('{"a": 1, "a": 2}', StrictJSONError),
    ('{"a": {"b": 1, "b": 2}}', StrictJSONError),
    ('{"a": NaN}', StrictJSONError),
    ('{"a": -Infinity}', StrictJSONError),
    ('{"a": 1,}', json.JSONDecodeError),
    ('{"a" 1}', json.JSONDecodeError),
    ('{"a": 1 "b": 2}', json.JSONDecodeError),
    ('{"a": 1', json.JSONDecodeError),
    ('{"a": }', json.JSONDecodeError),
    ("{'a': 1}", json.JSONDecodeError),
    ('{"a": "\x01"}', json.JSONDecodeError),  # a raw control character in a string
    ('{} {}', json.JSONDecodeError),
    ('{}x', json.JSONDecodeError),
    ('[]', json.JSONDecodeError),
    ('', json.JSONDecodeError),
    ('{"a": [' + '[' * 100_000 + ']' * 100_000 + ']}', RecursionError),
])
def test_what_json_refuses_is_refused(text: str, kind: type[Exception]) -> None:
    with pytest.raises(kind):
        list(iter_object_strict(text))


def test_a_duplicate_is_named_when_its_member_is_reached() -> None:
    members = iter_object_strict('{"x": 1, "y": 2, "x": 3}')
    assert next(members) == ("x", 1)
    assert next(members) == ("y", 2)
    with pytest.raises(StrictJSONError) as info:
        next(members)
    assert info.value.key == "x"


def test_error_positions_are_those_of_the_whole_text() -> None:
    with pytest.raises(json.JSONDecodeError) as info:
        list(iter_object_strict('{"a": 1,\n "b": tru}'))
    assert (info.value.lineno, info.value.colno) == (2, 7)


_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                max_size=3),
    max_leaves=8)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(max_size=4), _values, max_size=5),
       st.sampled_from(["", " ", "\n", "\t \r\n"]), st.integers(0, 2**32))
def test_agrees_with_loads_strict_on_documents_and_their_mutations(
        doc: dict[str, Any], ws: str, cut: int) -> None:
    text = json.dumps(doc, indent=1 if ws else None).replace("\n", "\n" + ws)
    assert list(iter_object_strict(ws + text + ws)) == list(doc.items())
    # Any damage is refused by both, or accepted by both with the same members.
    for damaged in (text[:cut % (len(text) + 1)], text[: cut % len(text)] + "," +
                    text[cut % len(text):], text.replace(":", "", 1), text + text):
        _agree(damaged)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='{}[]":,01aeflnrstu \n\\', max_size=30))
def test_agrees_with_loads_strict_on_arbitrary_text(text: str) -> None:
    _agree(text)
