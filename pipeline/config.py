"""One TOML file per run, loaded into frozen dataclasses, one section per component.

Each component declares its own section dataclass in ``components/<name>/spec.py`` and names it in its
contract (``ComponentSpec.config_classes``); this module composes them, in registry order, into
:class:`PipelineConfig`, applies type-checked ``--set section.key=value`` overrides, validates
ranges and choices declared in field metadata, and fingerprints sections so reruns can be cached.

Field metadata understood by the validator:
  ``range=(lo, hi)``   inclusive numeric bounds (None for an open end);
  ``exclusive="lo"``   the named end(s) of ``range`` ("lo", "hi" or "both") are excluded (a learning rate > 0);
  ``choices=(...)``    the allowed values;
  ``help="..."``       a sentence shown in errors and ``vugan config --explain``.
A section class may also hold ``REFUSED_KEYS`` ({key: why}): keys refused with their own reason.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
import types
import typing
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration problem, always naming the key at fault and what is allowed."""


def _section_classes() -> dict[str, type]:
    # The sections come from the components' contracts (ComponentSpec.config_classes), in registry order; [run] is
    # the pipeline's own. Imported lazily so that `import pipeline.config` stays cheap and free of TensorFlow.
    from vugan.pipeline.registry import components

    return {"run": RunConfig, **components().config_classes}


@dataclasses.dataclass(frozen=True)
class RunConfig:
    name: str = dataclasses.field(default="run", metadata={"help": "short description used in the run folder name"})
    seed: int = dataclasses.field(default=0, metadata={"range": (0, 2**31 - 1), "help": "global seed"})
    manifest: str = dataclasses.field(
        default="", metadata={"help": "the scans.csv manifest a run reads (local or gs://); empty means: pass --manifest"})


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    sections: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["sections"][name]
        except KeyError:
            raise AttributeError(name) from None

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: section_to_dict(sec) for name, sec in self.sections.items()}

    def replace(self, section: str, **changes: Any) -> "PipelineConfig":
        new = dict(self.sections)
        new[section] = build_section(section, type(self.sections[section]),
                                     {**section_to_dict(self.sections[section]), **changes})
        return PipelineConfig(new)


def section_to_dict(section: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def fingerprint(obj: Any) -> str:
    """Stable sha256 of a JSON-able object (a section dict, a whole config)."""
    if dataclasses.is_dataclass(obj):
        obj = section_to_dict(obj)
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------- type coercion

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; ints widen to floats, lists become tuples."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: {value!r} is not a valid {_type_name(tp)}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list for {_type_name(tp)}, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)} ({value!r})")
        return tuple(_coerce(f"{key}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):  # TOML reads nan and inf; every range check passes NaN
                raise ConfigError(f"{key}: {value!r} is not a finite number; give a finite value")
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def _range_text(lo, hi, open_lo: bool, open_hi: bool) -> str:
    if not (open_lo or open_hi):
        return f"{'-inf' if lo is None else lo} to {'inf' if hi is None else hi}"
    low = "any" if lo is None else (f"greater than {lo:g}" if open_lo else f"from {lo:g}")
    high = "" if hi is None else (f", below {hi:g}" if open_hi else f", up to {hi:g}")
    return low + high


def _about(meta: dict) -> str:
    return f" ({meta['help']})" if meta.get("help") else ""


def _check_metadata(key: str, value: Any, meta: dict) -> None:
    items = value if isinstance(value, tuple) else (value,)
    if "choices" in meta:
        for item in items:
            if item not in meta["choices"]:
                allowed = ", ".join(repr(c) for c in meta["choices"])
                raise ConfigError(f"{key}: {item!r} is not allowed; allowed values: {allowed}")
    if "range" in meta:
        lo, hi = meta["range"]
        open_lo = meta.get("exclusive") in ("lo", "both")
        open_hi = meta.get("exclusive") in ("hi", "both")
        for item in items:
            if item is None:
                continue
            if (lo is not None and item < lo) or (hi is not None and item > hi):
                raise ConfigError(f"{key}: {item!r} is out of range; allowed values: "
                                  f"{_range_text(lo, hi, open_lo, open_hi)}")
            if open_lo and item == lo:
                # TOML reads a number too small for a float (1e-400) as 0.0: say so, the value given looked > 0.
                underflow = " (a number too small for a float, such as 1e-400, reads as 0.0)" if lo == 0 else ""
                raise ConfigError(f"{key}: {item!r} is not allowed{_about(meta)}; it must be greater than "
                                  f"{lo:g}{underflow}")
            if open_hi and item == hi:
                raise ConfigError(f"{key}: {item!r} is not allowed{_about(meta)}; it must be below {hi:g}")


def build_section(name: str, cls: type, values: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    # Keys a section refuses with their own reason (never echoing the value given): its REFUSED_KEYS.
    refused = getattr(cls, "REFUSED_KEYS", {})
    for key in values:
        if key in refused:
            raise ConfigError(f"{name}.{key}: {refused[key]}")
    unknown = sorted(set(values) - set(fields))
    if unknown:
        allowed = ", ".join(sorted(fields))
        raise ConfigError(f"{name}.{unknown[0]}: unknown key; allowed keys in [{name}]: {allowed}")
    kwargs = {}
    for key, value in values.items():
        full = f"{name}.{key}"
        coerced = _coerce(full, value, hints[key])
        _check_metadata(full, coerced, dict(fields[key].metadata))
        kwargs[key] = coerced
    section = cls(**kwargs)
    # Defaults must satisfy their own rules too, and sections may add cross-field checks.
    for key, f in fields.items():
        if key not in kwargs:
            _check_metadata(f"{name}.{key}", getattr(section, key), dict(f.metadata))
    validate = getattr(section, "validate", None)
    if validate is not None:
        try:
            validate()
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    return section


def parse_override(text: str) -> tuple[str, str, Any]:
    """``section.key=value`` -> (section, key, value); the value is read as TOML, else taken as a string."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. trainer.batch_size=64")
    dotted, raw = text.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return section, key, value


def read_toml_file(path: str | Path) -> dict[str, Any]:
    """A TOML file as a dict; a file that is not UTF-8 or not TOML is a ConfigError naming it."""
    path = Path(path)
    try:
        # utf-8-sig: a BOM (Windows editors write one) is valid UTF-8 and no TOML statement.
        return tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def load_config(path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> PipelineConfig:
    """Read a TOML file (or defaults only when ``path`` is None) and apply ``--set`` overrides."""
    classes = _section_classes()
    raw: dict[str, dict[str, Any]] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist; pass an existing TOML file such as configs/demo.toml")
        raw = read_toml_file(path)
    for name in raw:
        if name not in classes:
            raise ConfigError(f"[{name}]: unknown section; allowed sections: {', '.join(classes)}")
        if not isinstance(raw[name], dict):
            raise ConfigError(f"{name}: expected a [{name}] table")
    for text in overrides:
        section, key, value = parse_override(text)
        if section not in classes:
            raise ConfigError(f"--set {text!r}: unknown section {section!r}; allowed sections: {', '.join(classes)}")
        raw.setdefault(section, {})[key] = value
    sections = {name: build_section(name, cls, raw.get(name, {})) for name, cls in classes.items()}
    return PipelineConfig(sections)


# ----------------------------------------------------------------------------------------------- TOML writer

def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def dumps_toml(sections: dict[str, dict[str, Any]]) -> str:
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        for key, value in values.items():
            if value is None:  # TOML has no null: an omitted key means "use the default", or a secret left out
                lines.append(f"# {key} = (not written)")
                continue
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def write_resolved(config: PipelineConfig, out_dir: str | Path, sections: typing.Iterable[str] | None = None) -> Path:
    """Write the resolved config (all sections, or the named ones) as ``config.toml`` in ``out_dir``."""
    data = config.to_dict()
    if sections is not None:
        data = {name: data[name] for name in sections}
    # Secrets (the pseudonymisation salt) never reach an output folder: they would let anyone who can guess
    # patient identifiers recompute the pseudonyms. A rerun takes them from the environment again.
    for name in data:
        for f in dataclasses.fields(config.sections[name]):
            if f.metadata.get("secret") and data[name][f.name]:
                data[name][f.name] = None
    path = Path(out_dir) / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps_toml(data))
    return path
