"""Configuration: typed defaults, then a YAML file, then dotted command-line overrides.

Following dinov2's use of OmegaConf: a job's settings are a dataclass (the typed defaults), a user's
YAML file is merged over it, then ``key.sub=value`` overrides from the command line; the resolved
result is saved beside the job's outputs so every run can be reproduced from its folder alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lookalike.utils.atomic import atomic_write_text

C = TypeVar("C")


def resolve_config(
    schema: type[C],
    yaml_path: str | Path | None = None,
    overrides: Sequence[str] = (),
    base: C | None = None,
) -> C:
    """Merge ``schema``'s defaults, a YAML file and ``key=value`` overrides into a ``schema``.

    Args:
        schema: A dataclass type whose field defaults are the typed defaults.
        yaml_path: Optional YAML file with a subset of the fields.
        overrides: Dotted ``key=value`` strings (``optim.lr=1e-4``).
        base: An instance of ``schema`` to start from instead of its defaults.

    Returns:
        An instance of ``schema`` (type-checked by OmegaConf).

    Raises:
        ValueError: One line naming the file or override that does not fit the schema.
    """
    if not is_dataclass(schema):
        raise TypeError(f"{schema!r} is not a dataclass")
    merged = OmegaConf.structured(schema if base is None else base)
    if yaml_path is not None:
        path = Path(yaml_path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise ValueError(f"config file {path} is not valid YAML: {_first_line(error)}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ValueError(
                f"config file {path} must hold a mapping of settings, not a {type(loaded).__name__}"
            )
        try:
            merged = OmegaConf.merge(merged, OmegaConf.create(loaded))
        except OmegaConfBaseException as error:
            raise ValueError(f"config file {path} does not fit {schema.__name__}: {_first_line(error)}") from None
    bad = [item for item in overrides if "=" not in item]
    if bad:
        raise ValueError(f"override {bad[0]!r} is not of the form key=value")
    try:
        merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as error:
        raise ValueError(f"overrides {' '.join(overrides)!r} do not fit {schema.__name__}: {_first_line(error)}") from None
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def config_to_yaml(config: Any) -> str:
    """The YAML text of a config dataclass (or dict)."""
    return OmegaConf.to_yaml(OmegaConf.structured(config) if is_dataclass(config) else OmegaConf.create(config))


def save_config(config: Any, path: str | Path) -> Path:
    """Write ``config`` as YAML to ``path`` atomically."""
    atomic_write_text(path, config_to_yaml(config))
    return Path(path)


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
