"""String-keyed registries: the extension points of lookalike.

Users name what they want with a string (``"timm:resnet50"``, ``"gem"``, ``"hnsw"``) and new
entries arrive by decoration, not by editing a dispatch ``if`` (the pattern of timm's
``@register_model``)::

    POOLINGS = Registry[nn.Module]("pooling")

    @POOLINGS.register("gem")
    class GeM(nn.Module): ...

    POOLINGS.create("gem", p=3.0)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of factories (classes or functions) producing ``T``.

    Args:
        kind: What the entries are, used in error messages ("pooling", "index", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator adding ``factory`` under ``name``; a name may be registered once."""

        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            key = name.lower()
            if key in self._entries and self._entries[key] is not factory:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[key] = factory
            return factory

        return decorator

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered as ``name``; a ``ValueError`` listing valid names otherwise."""
        key = name.lower()
        if key not in self._entries:
            valid = ", ".join(sorted(self._entries)) or "(none registered)"
            raise ValueError(f"unknown {self.kind} {name!r}; valid names: {valid}")
        return self._entries[key]

    def create(self, name: str, *args: Any, **kwargs: Any) -> T:
        """Build the entry registered as ``name`` with the given arguments.

        Raises:
            ValueError: ``name`` is unknown (the valid names are listed), or the entry does not
                take the arguments given (the ones it takes are listed).
        """
        factory = self.get(name)
        try:
            signature = inspect.signature(factory)
        except (TypeError, ValueError):  # a builtin without an introspectable signature
            return factory(*args, **kwargs)
        try:
            signature.bind(*args, **kwargs)
        except TypeError as error:
            takes = ", ".join(signature.parameters) or "nothing"
            raise ValueError(
                f"{self.kind} {name!r} with options {kwargs}: {error}; it takes {takes}"
            ) from None
        return factory(*args, **kwargs)

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
