"""What makes a TrainConfig field a `piro train` option (`option`, OptionSpec: help, panel, bounds), kept free of
typer and torch: the command line builds its options from it, and TrainConfig checks every value against the same
bounds however it arrives (a `--config` file, a run's config.json, the library), so a file cannot pass what the
command line refuses. Also the checks shared by several commands' options (seeds, test-time scales)."""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields
from typing import Any

from piro_cli.errors import OptionError

SEED_MAX = 2**32 - 1
"""The largest seed (numpy's seed range); seeds are options of several commands, all from 0 to SEED_MAX."""

PANELS = ("Data", "Method and losses", "Model", "Optimisation", "Run")
"""The help panels of `piro train`, in the order --help shows them."""

SECTIONS = dict(zip(("data", "loss", "model", "optim", "run"), PANELS, strict=True))
"""A `--config` file's sections, one per help panel: `optim.lr: 1e-3`, or `lr: 1e-3` under `optim:`."""
SECTION_OF_PANEL = {panel: section for section, panel in SECTIONS.items()}


@dataclass(frozen=True)
class OptionSpec:
    """How a TrainConfig field appears as a `piro train` option (read by piro_cli/cli/train.py, which builds the
    typer option from it): its help, its panel, and what the command line needs beyond the field's own type and
    default."""

    help: str
    panel: str
    flags: tuple[str, ...] = ()  # the option's spelling; () : --field-name (a bool: --field-name alone)
    bounds: tuple[int, int | None] | None = None  # an integer option's smallest and largest (None: no largest) value
    metavar: str | None = None
    show_default: bool = True
    cli_default: Any = None  # the command line's default, with `own_cli_default` (else the field's default)
    own_cli_default: bool = False
    cli_type: type | None = None  # the command line's type where it is not the field's (Path for files, str for lists)
    label: str = ""  # how `piro compare` names a run whose value is not the default: "dr={:g}" (a bool: the text alone)

    def __post_init__(self) -> None:
        if self.panel not in PANELS:
            raise ValueError(f"panel {self.panel!r} is not one of {PANELS}")


def option(default: Any, help: str, panel: str, **spec: Any) -> Any:
    """A TrainConfig field that is a `piro train` option: its default, help text and panel (OptionSpec); a
    `cli_default=` given makes the command line's default differ from the field's."""
    if "cli_default" in spec:
        spec["own_cli_default"] = True
    return field(default=default, metadata={"option": OptionSpec(help, panel, **spec)})


def option_spec(f: Field) -> OptionSpec | None:
    """The OptionSpec of a dataclass field, or None when the field is not a command-line option."""
    return f.metadata.get("option")


def flag_of(name: str) -> str:
    """How the command line spells the option of field `name`: `--batch-pairs`."""
    return "--" + name.replace("_", "-")


TEST_SCALE_RANGE = (0.5, 2.0)  # of the stored view's side: beyond it a view is mostly blur or lost detail
MAX_TEST_SCALES = 4


def check_test_scales(scales) -> tuple[float, ...]:
    """`--tta-scales` as a tuple of distinct factors within TEST_SCALE_RANGE (1 to MAX_TEST_SCALES of them); a text
    "1,1.15" is split at commas. ValueError says what is wrong."""
    if isinstance(scales, str):
        scales = [part for part in scales.split(",") if part.strip()]
    try:
        values = tuple(float(s) for s in scales)
    except (TypeError, ValueError):
        raise ValueError(f"{scales!r} is not a list of numbers (e.g. 1,1.15)") from None
    low, high = TEST_SCALE_RANGE
    if not 1 <= len(values) <= MAX_TEST_SCALES:
        raise ValueError(f"give 1 to {MAX_TEST_SCALES} factors, got {len(values)}")
    if any(not low <= v <= high for v in values):  # also refuses nan
        raise ValueError(f"each factor must lie in [{low:g}, {high:g}], got {', '.join(f'{v:g}' for v in values)}")
    if len(set(values)) != len(values):
        raise ValueError(f"a factor is repeated: {', '.join(f'{v:g}' for v in values)}")
    return values


def check_option_bounds(config: Any) -> None:
    """An OptionError naming the field for the first integer field of dataclass `config` (with OptionSpec.bounds) whose
    value (not None) lies outside its bounds or is not a whole number."""
    for f in fields(config):
        spec = option_spec(f)
        value = getattr(config, f.name)
        if spec is None or spec.bounds is None or value is None:
            continue
        low, high = spec.bounds
        if isinstance(value, bool) or not isinstance(value, int):
            raise OptionError.of(f.name, " {given!r}: must be a whole number", given=value)
        if value < low or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"from {low} to {high}"
            raise OptionError.of(f.name, " {given}: must be {bounds}", given=value, bounds=bounds)
