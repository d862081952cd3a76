"""`piro train --config FILE`: training options from a YAML, TOML or JSON file.

Keys are `piro train`'s options, with `-` or `_` (`batch-pairs` or `batch_pairs`); `embed-dim` sets both
dimensions, as on the command line. They may also be written in sections, one per help panel (`data`, `loss`,
`model`, `optim`, `run`): `lr: 1e-3` under `optim:` (a TOML table `[optim]`), or the dotted key `optim.lr`; a key
in the wrong section is refused with the right one. A run's own `config.json` is accepted as it is (its `train` section is used),
so `piro train --config runs/x/config.json --name x-again` trains the run again with every resolved value.
Options given on the command line override the file.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from piro_cli.errors import OptionError, PiroError, extended
from piro_cli.losses import parse_loss_terms
from piro_cli.options import SECTION_OF_PANEL, SECTIONS, option_spec
from piro_cli.training.config import RESOLVED_BEFORE_OPTIONS, TrainConfig

SUFFIXES = (".yaml", ".yml", ".toml", ".json")
# keys a file may hold besides TrainConfig's fields: the command line's own spellings
ALIASES = {"embed_dim": ("cat_dim", "obj_dim")}
# the section of the keys whose field has no OptionSpec panel (command-only options of `piro train`)
SECTION_OF_KEY = {"embed_dim": "model", "loggers": "run"}


def read_config_file(path: str | Path) -> dict:
    """The options of a config file as TrainConfig fields; any unknown key or bad file is one PiroError."""
    path = Path(path)
    if not path.is_file():
        raise PiroError(f"--config {path}: no such file; write the options as YAML, TOML or JSON (see `piro train --help`)")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise PiroError(f"--config {path}: use a .yaml, .yml, .toml or .json file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise PiroError(f"--config {path}: cannot be read ({exc})") from None
    values = _parse(path, suffix, text)
    if not isinstance(values, dict):
        raise PiroError(f"--config {path}: expected a mapping of option names to values, found {type(values).__name__}")
    if isinstance(values.get("train"), dict) and {"model", "data"} & set(values):  # a run's config.json
        values = {**RESOLVED_BEFORE_OPTIONS, **values["train"]}
    return _fields(path, _without_sections(path, values))


def section_of(key: str) -> str | None:
    """The config-file section of option `key` (a TrainConfig field or alias, `_` spelling), None if unknown."""
    if key in SECTION_OF_KEY:
        return SECTION_OF_KEY[key]
    spec = next((option_spec(f) for f in dataclasses.fields(TrainConfig) if f.name == key), None)
    return SECTION_OF_PANEL[spec.panel] if spec is not None else None


def _without_sections(path: Path, values: dict) -> dict:
    """`values` with every sectioned key (`optim: {lr: ..}` or `optim.lr`) made flat (`lr`), each checked to be in
    its own section; a key given both ways is refused. `data: FILE` stays the data option: only a mapping under a
    section name is a section."""
    flat: dict = {}
    for raw_key, value in values.items():
        key = str(raw_key)
        section, dot, name = key.partition(".")
        if dot:
            items = [(name, value)]
        elif section in SECTIONS and isinstance(value, dict):
            items = list(value.items())
        else:
            section, items = None, [(key, value)]
        for name, item in items:
            name = str(name)
            if section is not None:
                if section not in SECTIONS:
                    raise PiroError(f"--config {path}: {key!r} is in no section; sections are {', '.join(SECTIONS)}")
                home = section_of(name.replace("-", "_"))
                if home is not None and home != section:
                    raise PiroError(f"--config {path}: {name!r} belongs in section `{home}`, not `{section}`")
            if any(str(k).replace("-", "_") == name.replace("-", "_") for k in flat):
                raise PiroError(f"--config {path}: option {name!r} is given twice; give each option once")
            flat[name] = item
    return flat


def _parse(path: Path, suffix: str, text: str):
    try:
        if suffix == ".json":
            return json.loads(text, object_pairs_hook=_refuse_repeated_keys)
        if suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib
            return tomllib.loads(text)
        return _load_yaml(text) or {}
    except RepeatedKey as exc:
        raise PiroError(f"--config {path}: {exc}; give each option once") from None
    except Exception as exc:  # each parser has its own error type; all mean the same to the user
        where = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PiroError(f"--config {path}: not valid {suffix.lstrip('.').upper()} ({where})") from None


class RepeatedKey(ValueError):
    pass


def _refuse_repeated_keys(pairs: list[tuple]) -> dict:
    keys = [key for key, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:
            raise RepeatedKey(f"option {key!r} is given twice")
    return dict(pairs)


def _load_yaml(text: str):
    """yaml.safe_load, but a key given twice in one mapping is refused instead of the last one silently winning."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
        # keys written in this mapping may not repeat; keys merged in from an anchor (`<<: *base`) may be overridden
        written = [loader.construct_object(k, deep=deep) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"]
        _refuse_repeated_keys([(key, None) for key in written])
        loader.flatten_mapping(node)
        return dict((loader.construct_object(k, deep=deep), loader.construct_object(v, deep=deep)) for k, v in node.value)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 (a SafeLoader)


def _kind_problem(value, annotation: str) -> str | None:
    """Why `value` cannot be a TrainConfig field annotated `annotation` (a string: `int | None`, ...), or None."""
    annotation = annotation.replace("tuple[str, ...]", "tuple").replace("tuple[float, ...]", "numbers")
    kinds = {part.strip() for part in annotation.split("|")}
    if value is None:
        return None if "None" in kinds else "must not be empty"
    checks = {
        "bool": lambda v: isinstance(v, bool),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "tuple": lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v),
        "numbers": lambda v: isinstance(v, str) or (isinstance(v, (list, tuple)) and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)),
    }
    if any(checks[k](value) for k in kinds if k in checks):
        return None
    spelled = {"tuple": "a list of names", "numbers": "a list of numbers"}
    wanted = " or ".join(sorted(spelled.get(k, k) for k in kinds if k in checks))
    return f"must be {wanted}, not {value!r}"


def _fields(path: Path, values: dict) -> dict:
    annotations = {f.name: f.type if isinstance(f.type, str) else f.type.__name__ for f in dataclasses.fields(TrainConfig)}
    known = set(annotations)
    out: dict = {}
    for raw_key, value in values.items():
        key = str(raw_key).replace("-", "_")
        if key in ALIASES:
            for target in ALIASES[key]:
                out.setdefault(target, value)
        elif key in known:
            out[key] = value
        else:
            close = sorted(k.replace("_", "-") for k in known if k.startswith(key[:3]))
            hint = f" (did you mean {', '.join(close[:3])}?)" if close else ""
            raise PiroError(f"--config {path}: unknown option {raw_key!r}{hint}; keys are `piro train` options")
    if isinstance(out.get("losses"), str):
        try:
            out["losses"] = parse_loss_terms(out["losses"])
        except ValueError as exc:
            raise PiroError(f"--config {path}: losses: {exc}") from None
    elif isinstance(out.get("losses"), list):
        out["losses"] = tuple(out["losses"])
    if isinstance(out.get("loggers"), str):
        out["loggers"] = (out["loggers"],)
    for key, value in out.items():
        problem = _kind_problem(value, annotations[key])
        if problem is not None:
            raise PiroError(f"--config {path}: {key.replace('_', '-')} {problem}")
    for key in ("losses", "loggers"):
        if isinstance(out.get(key), list):
            out[key] = tuple(out[key])
    return out


def merged_config(file: str | Path | None, command_line: dict, given: set[str]) -> TrainConfig:
    """The TrainConfig of the command line's values (`command_line`, TrainConfig fields) over a config file's:
    a field in `given` (typed on the command line) keeps its value, any other takes the file's when it has one."""
    values = dict(command_line)
    from_file: set[str] = set()
    if file is not None:
        for key, value in read_config_file(file).items():
            if key not in given:
                values[key] = value
                from_file.add(key)
    try:
        return TrainConfig(**values)
    except TypeError as exc:  # a value of the wrong kind in the file (a list where a number goes, ...)
        raise PiroError(f"--config {file}: {exc}") from None
    except OptionError as exc:  # a value the checks refuse: say which file it came from, when it came from one
        if file is None or not set(exc.fields) & from_file:
            raise
        raise extended(exc, before=f"--config {file}: ") from None
    except PiroError as exc:  # the same, for the checks that name the option themselves
        flag = str(exc).split(" ", 1)[0].rstrip(":")
        if file is None or (flag.startswith("--") and flag[2:].replace("-", "_") not in from_file):
            raise
        raise PiroError(f"--config {file}: {exc}") from None
