"""Safe YAML that refuses duplicate keys, for job files and the config file.

PyYAML keeps the last of two equal keys without a word, so ``repo_url`` given twice
would silently run whichever came last. Both loaders build on this one instead.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import yaml

_MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKeyError(yaml.YAMLError):
    """A mapping names one key twice. ``str()`` is ``line N: duplicate key 'k' (first on
    line M)``."""


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that raises DuplicateKeyError for a key given twice in one mapping,
    at any depth. Keys pulled in by a merge (``<<: *base``) may still be overridden: that is
    what merges are for."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # Despite the type, '!!map' on a scalar gets here too; the base class reports that.
        if isinstance(node, yaml.MappingNode):
            # Note the mapping's own keys before merges are flattened into it; flattening
            # also turns '=' keys into plain strings, so every own key can be constructed.
            own_keys = [key for key, _ in node.value if key.tag != _MERGE_TAG]
            self.flatten_mapping(node)
            self._refuse_duplicates(own_keys)
        return super().construct_mapping(node, deep=deep)

    def _refuse_duplicates(self, key_nodes: list[yaml.Node]) -> None:
        first_line: dict[Hashable, int] = {}
        for key_node in key_nodes:
            if not isinstance(key_node, yaml.ScalarNode):
                continue  # a list or mapping as a key is unhashable; the base class says so
            key = self.construct_object(key_node)
            if not isinstance(key, Hashable):
                continue
            line = key_node.start_mark.line + 1
            if key in first_line:
                raise DuplicateKeyError(
                    f"line {line}: duplicate key {key!r} (first on line {first_line[key]})"
                )
            first_line[key] = line


def load(text: str) -> Any:
    """The one YAML document in ``text``, built with UniqueKeyLoader."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader subclass
