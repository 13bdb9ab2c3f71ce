"""The shared YAML loader: safe, and a key given twice is an error naming both lines."""

from __future__ import annotations

import pytest

from watcherd.util.yamlsafe import DuplicateKeyError, load


def test_loads_like_safe_load() -> None:
    assert load("a: 1\nb: [x, {c: d}]\n") == {"a": 1, "b": ["x", {"c": "d"}]}
    assert load("") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 1\nb: 2\na: 3\n", "line 3: duplicate key 'a' (first on line 1)"),
        ("outer:\n  x: 1\n  x: 2\n", "line 3: duplicate key 'x' (first on line 2)"),
        ("- {k: 1, k: 2}\n", "line 1: duplicate key 'k' (first on line 1)"),
        # 1 and 0x1 are the same key once built; keeping one would drop the other silently.
        ("1: a\n0x1: b\n", "line 2: duplicate key 1 (first on line 1)"),
    ],
)
def test_duplicate_keys_name_the_key_and_both_lines(text: str, expected: str) -> None:
    with pytest.raises(DuplicateKeyError) as caught:
        load(text)
    assert str(caught.value) == expected


def test_merged_keys_may_be_overridden_but_not_repeated() -> None:
    assert load("base: &b {x: 1, y: 2}\nmine:\n  <<: *b\n  x: 3\n")["mine"] == {"x": 3, "y": 2}
    with pytest.raises(DuplicateKeyError, match=r"line 5: duplicate key 'x' \(first on line 4\)"):
        load("base: &b {y: 2}\nmine:\n  <<: *b\n  x: 3\n  x: 4\n")


def test_unhashable_keys_are_still_plain_yaml_errors() -> None:
    with pytest.raises(Exception, match="unhashable") as caught:
        load("? [a]\n: 1\n")
    assert not isinstance(caught.value, DuplicateKeyError)
