"""A sweep's search space: dotted config keys mapped to Optuna distributions, read from YAML.

::

    optim.lr: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
    loss.name: {type: categorical, choices: [multi_similarity, triplet]}
    loss.margin: {type: float, low: 0.05, high: 0.4, when: {loss.name: triplet}}
    finetune.last_n: {type: int, low: 1, high: 8}

Every key must name a setting of :class:`~lookalike.train.config.TrainConfig` (a field of its
dataclasses, or any key under a mapping field such as ``loss`` or ``data.protocol_args``); an
unknown key is refused with the nearest names. ``when`` makes a parameter conditional: it is
sampled only when the parameters it names took one of the values listed (a margin only for the
losses that have one), as in Optuna's define-by-run spaces.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from lookalike.train.config import TrainConfig

PARAM_TYPES = ("float", "int", "categorical")


class SuggestingTrial(Protocol):
    """What a parameter needs of ``optuna.Trial``."""

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int: ...

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


@dataclass(frozen=True)
class SweepParam:
    """One swept setting.

    Attributes:
        key: Dotted config key (``"optim.lr"``).
        type: "float", "int" or "categorical".
        low: Lower bound (float, int).
        high: Upper bound, inclusive (float, int).
        log: Sample on a log scale (float, int).
        step: Grid step (float, int), ``None`` for continuous floats.
        choices: Values of a categorical parameter.
        when: Sampled only when each named parameter took one of the listed values.
    """

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    when: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def suggest(self, trial: SuggestingTrial) -> Any:
        """The value ``trial`` samples for this parameter."""
        if self.type == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.type == "int":
            step = 1 if self.step is None else int(self.step)
            return trial.suggest_int(
                self.key, int(self.low or 0), int(self.high or 0), step=step, log=self.log
            )
        return trial.suggest_float(
            self.key, float(self.low or 0), float(self.high or 0), step=self.step, log=self.log
        )

    def applies(self, chosen: Mapping[str, Any]) -> bool:
        """Whether the parameters sampled so far (``chosen``) meet :attr:`when`."""
        return all(chosen.get(key) in values for key, values in self.when.items())


def config_keys(schema: type = TrainConfig, prefix: str = "") -> Iterator[tuple[str, bool]]:
    """Every dotted key of ``schema`` with whether it is an open mapping (``loss``)."""
    for item in fields(schema):
        key = f"{prefix}{item.name}"
        default = item.default_factory() if callable(item.default_factory) else item.default
        if is_dataclass(default):
            yield from config_keys(type(default), f"{key}.")
        else:
            yield key, isinstance(default, dict) or item.type in ("dict[str, Any]", "Any")


def check_key(key: str, source: str) -> None:
    """One-line ``ValueError`` unless ``key`` names a :class:`TrainConfig` setting."""
    known = dict(config_keys())
    if key in known:
        return
    if any(key.startswith(f"{name}.") for name, is_mapping in known.items() if is_mapping):
        return
    nearest = difflib.get_close_matches(key, list(known), n=4, cutoff=0.5)
    hint = f"; nearest: {', '.join(nearest)}" if nearest else ""
    raise ValueError(f"{source}: {key!r} is not a training setting{hint}")


def parse_param(key: str, raw: Any, source: str) -> SweepParam:
    """A :class:`SweepParam` from its YAML mapping, with one-line errors naming ``source``."""
    check_key(key, source)
    kind = raw.get("type") if isinstance(raw, Mapping) else None
    if kind not in PARAM_TYPES:
        raise ValueError(f"{source}: {key} must map to {{type: {' | '.join(PARAM_TYPES)}, ...}}, "
                         f"got {raw!r}")
    allowed = {"type", "when"} | ({"choices"} if kind == "categorical" else {"low", "high", "log",
                                                                              "step"})
    extra = sorted(set(raw) - allowed)
    if extra:
        raise ValueError(f"{source}: {key} ({kind}) does not take {', '.join(extra)}; "
                         f"it takes {', '.join(sorted(allowed))}")
    try:
        when = dict(raw.get("when") or {})
    except (TypeError, ValueError):
        raise ValueError(f"{source}: {key} when must map parameters to values, "
                         f"got {raw.get('when')!r}") from None
    conditions = {
        str(name): tuple(value) if isinstance(value, list) else (value,)
        for name, value in when.items()
    }
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ValueError(f"{source}: {key} needs a non-empty list of choices")
        return SweepParam(key, kind, choices=tuple(choices), when=conditions)
    low, high = raw.get("low"), raw.get("high")
    if not isinstance(low, int | float) or not isinstance(high, int | float) or not low <= high:
        raise ValueError(f"{source}: {key} needs numbers low <= high, got {low!r} and {high!r}")
    log = bool(raw.get("log", False))
    if log and low <= 0:
        raise ValueError(f"{source}: {key} on a log scale needs low > 0, got {low}")
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise ValueError(f"{source}: {key} is an int parameter; low and high must be integers")
    step = raw.get("step")
    return SweepParam(key, kind, float(low), float(high), log,
                      None if step is None else float(step), when=conditions)


def load_space(space: str | Path | Mapping[str, Any]) -> list[SweepParam]:
    """The parameters of a space file (or mapping), in file order.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: One line naming the file and the key at fault.
    """
    source = "search space"
    if not isinstance(space, Mapping):
        path = Path(space)
        source = f"space file {path}"
        if not path.is_file():
            raise FileNotFoundError(f"{source} does not exist")
        try:
            space = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise ValueError(f"{source} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(space, Mapping) or not space:
        raise ValueError(f"{source} must map dotted config keys to distributions")
    params = [parse_param(str(key), raw, source) for key, raw in space.items()]
    names = [param.key for param in params]
    for param in params:
        for name in param.when:
            if name not in names or names.index(name) >= names.index(param.key):
                raise ValueError(f"{source}: {param.key} is conditional on {name!r}, which must "
                                 "be a parameter listed before it")
    return params


def sample(params: list[SweepParam], trial: SuggestingTrial) -> dict[str, Any]:
    """The settings ``trial`` chooses: every parameter whose conditions hold, in order."""
    chosen: dict[str, Any] = {}
    for param in params:
        if param.applies(chosen):
            chosen[param.key] = param.suggest(trial)
    return chosen


def as_overrides(chosen: Mapping[str, Any]) -> list[str]:
    """Dotted ``key=value`` overrides of ``chosen`` (values written as JSON, which YAML reads)."""
    return [f"{key}={json.dumps(value)}" for key, value in chosen.items()]
