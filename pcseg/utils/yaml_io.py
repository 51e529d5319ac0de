"""Strict YAML reading: duplicate keys are an error, a UTF-8 byte-order mark is ignored.

PyYAML's ``safe_load`` keeps the last of two equal keys without a word, so a config or a
``semantic-kitti.yaml`` with a key written twice silently loses the first value. Every YAML file
pcseg reads goes through :func:`load_yaml_file` / :func:`load_yaml_text`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pcseg.utils.errors import InputError


class YAMLFormatError(InputError):
    """A YAML file that does not parse or repeats a key; the message names the file and line."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses a mapping which repeats a key."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {line}; first at line {seen[key]})",
                key_node.start_mark)
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def load_yaml_text(text: str, source: str = "<string>") -> Any:
    """Parse YAML ``text`` (BOM stripped, duplicate keys refused); errors name ``source``."""
    try:
        return yaml.load(text.lstrip("\ufeff"), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        raise YAMLFormatError(f"{source}: {exc}") from None


def load_yaml_file(path: str | Path) -> Any:
    """Read and parse the YAML file ``path``; errors name the file."""
    path = Path(path)
    return load_yaml_text(path.read_text(encoding="utf-8"), str(path))
