"""Name → callable registries for the things a YAML config picks by name.

A registry key is the callable's own ``__name__`` (``name: ScanNet`` in a config →
``grep -rn ScanNet`` finds the definition). Callables register themselves in their defining
file with ``@REGISTRY.register``. :func:`build_from_config` is shared with plain name → class
tables (such as the transforms table) so every config-built object fails the same way on a
misspelt name or key.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Iterator, Mapping, TypeVar

__all__ = ["Registry", "UnknownNameError", "UnknownKeyError", "build_from_config"]

T = TypeVar("T", bound=Callable[..., Any])


class UnknownNameError(KeyError):
    """A name that is not in a registry or table; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


class UnknownKeyError(TypeError):
    """Keyword arguments a callable does not accept, or required ones missing; the message lists them.

    ``keys``: the offending keys (unknown ones, else missing ones), so a caller can name the config field.
    """

    def __init__(self, message: str, keys: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.keys = keys


def _check_kwargs(kind: str, name: str, fn: Callable[..., Any], kwargs: Mapping[str, Any]) -> None:
    """Raise :class:`UnknownKeyError` naming the unknown or missing keys of ``fn(**kwargs)``."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature: let the call itself check
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    accepted = [k for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise UnknownKeyError(f"{kind} {name!r}: unknown key(s) {', '.join(unknown)}; "
                              f"accepted: {', '.join(accepted) or '(none)'}", tuple(unknown))
    missing = [k for k in accepted if params[k].default is inspect.Parameter.empty and k not in kwargs]
    if missing:
        raise UnknownKeyError(f"{kind} {name!r}: missing required key(s) {', '.join(missing)}", tuple(missing))


def build_from_config(kind: str, table: Mapping[str, Callable[..., Any]], cfg: Mapping[str, Any]) -> Any:
    """Call ``table[cfg["name"]](**rest_of_cfg)``.

    kind: what the table holds, used in messages (``"dataset"``, ``"transform"``).
    Raises UnknownNameError for an unknown name (listing the known ones), UnknownKeyError (a
    TypeError) for unknown or missing keys, ValueError when ``cfg`` is not a mapping with a ``name``.
    """
    if not isinstance(cfg, Mapping) or "name" not in cfg:
        raise ValueError(f"{kind} config must be a mapping with a 'name' key, got {cfg!r}")
    kwargs = dict(cfg)
    name = kwargs.pop("name")
    if name not in table:
        raise UnknownNameError(f"{kind} {name!r} unknown; known: {', '.join(sorted(table)) or '(none)'}")
    fn = table[name]
    _check_kwargs(kind, name, fn, kwargs)
    return fn(**kwargs)


class Registry(Mapping[str, Callable[..., Any]]):
    """A read-mostly mapping from a callable's ``__name__`` to the callable.

    >>> DATASETS = Registry("dataset")
    >>> @DATASETS.register
    ... def ScanNet(root: str, split: str): ...
    >>> DATASETS.build({"name": "ScanNet", "root": "data/scannet", "split": "train"})
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, obj: T) -> T:
        """Decorator: add ``obj`` under ``obj.__name__``; a second object with that name raises."""
        name = getattr(obj, "__name__", None)
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} registry: can only register named callables, got {obj!r}")
        old = self._entries.get(name)
        if old is not None and old is not obj:
            raise ValueError(f"{self.kind} {name!r} registered twice: {old.__module__}.{old.__qualname__} "
                             f"and {obj.__module__}.{obj.__qualname__}")
        self._entries[name] = obj
        return obj

    def __getitem__(self, name: str) -> Callable[..., Any]:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(f"{self.kind} {name!r} unknown; "
                                   f"known: {', '.join(sorted(self._entries)) or '(none)'}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def build(self, cfg: Mapping[str, Any]) -> Any:
        """``self[cfg["name"]](**rest_of_cfg)`` with the checks of :func:`build_from_config`."""
        return build_from_config(self.kind, self, cfg)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, [{', '.join(self)}])"
