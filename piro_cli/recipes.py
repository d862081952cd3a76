"""Training recipes: the released per-dataset values of `piro train`'s options (`--recipe NAME`).

A recipe sets some of the options in BUILTIN_DEFAULTS; an option given explicitly (on the command line, or
not None in a TrainConfig) overrides it, and an option neither sets takes its built-in default. Without
`--recipe`, a data file whose source (`piro prepare SOURCE`) has a recipe uses it. A recipe is one entry
of RECIPES.

The PiRO recipes are the released code's ConfigLearn.py (HyperParams and ConfigOOWL / ConfigMNet40 /
ConfigFG3D; METHOD.md section 4): pairs per batch (BS), views per object (N_G), partners per object
(Ncomp), lr, lambda, 25 epochs, 2048-d embeddings, the learning rate halved every Nepochs / 5 = 5 epochs,
margins alpha 0.25, beta 1, theta 0.25, L-Softmax margin 4, early-convergence ratio 1.5, and the train-time
augmentation. The released backbone is VGG-16 (`--backbone vgg16`); a recipe leaves the backbone to
`--backbone`, whose default trains on a CPU.

The `pies` recipe is the PIEs baselines' released training (each method's net.py and run.sh, METHOD.md
section 8): Adam at a constant lr 1e-5 (no step schedule), 40 epochs, no rho early stop (that rule is
PiRO's). It is the default of the PIEs methods, whatever the data source; their batches of whole objects
(`--batch-objects`, 4 or 8 by method) and their augmentation (`--augmentation pies`) come with the methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from piro_cli.errors import OptionError

BUILTIN_DEFAULTS: dict[str, Any] = {
    "batch_pairs": 4,
    "views": None,  # all the views of the data
    "pairs_per_object": 10,
    "lr": 1e-5,
    "lr_step": 5,
    "epochs": 25,
    "cat_dim": 2048,
    "obj_dim": 2048,
    "alpha": 0.25,
    "beta": 1.0,
    "theta": 0.25,
    "gamma": 4.0,
    "lam": 1.0,
    "early_stop_rho": 1.5,
    "augment": True,
    "backbone": "efficientnet_lite0",
    "freeze_backbone": False,
    "train_from": None,  # None: the whole backbone trains (none of it with freeze_backbone)
    "feature_passes": 2,
    "tta": False,  # evaluate and embed the run with test-time flips by default
    "tta_scales": (1.0,),  # ... and over these resizings of each view (1.0: as stored)
    "precision": "auto",  # mixed precision on a GPU, fp32 on a CPU (piro_cli.hardware.PRECISIONS)
}
"""The options a recipe may set (TrainConfig fields), and their values when neither an option nor a recipe sets them."""


@dataclass(frozen=True)
class Recipe:
    name: str
    title: str  # what it is, for messages: "the released ObjectPI values"
    values: dict[str, Any]  # TrainConfig field -> value; every key is a key of BUILTIN_DEFAULTS
    sources: tuple[str, ...] = ()  # data sources (ViewSetStore.source_dataset) that use this recipe when --recipe is not given
    layered: bool = False  # set over the data source's recipe (cpu, full) rather than over the built-in defaults


CPU_VALUES = {
    # partial fine-tuning: efficientnet_lite0's last stage and conv_head train with 256/512-d heads from cached
    # activations, at 10x the released learning rate for 3 epochs; evaluated with test-time flips, +0.8 on the
    # validation mean (docs/BENCHMARKS.md, issue #12): the measured-best path on a 2-core CPU
    "backbone": "efficientnet_lite0",
    "train_from": "blocks.6",
    "feature_passes": 2,
    "cat_dim": 256,
    "obj_dim": 512,
    "lr": 1e-4,
    "lr_step": 2,
    "epochs": 3,
    "tta": True,
}

_RELEASED_PIRO = {
    "epochs": 25,
    "lr_step": 5,
    "cat_dim": 2048,
    "obj_dim": 2048,
    "alpha": 0.25,
    "beta": 1.0,
    "theta": 0.25,
    "gamma": 4.0,
    "early_stop_rho": 1.5,
    "augment": True,
    "precision": "fp32",  # the released code trains and evaluates in float32
}

RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe(
            "objectpi",
            "the released ObjectPI values",
            {"batch_pairs": 4, "views": 8, "pairs_per_object": 10, "lr": 1e-5, "lam": 1.0, **_RELEASED_PIRO},
            sources=("objectpi",),
        ),
        Recipe(
            "modelnet40",
            "the released ModelNet-40 values",
            {"batch_pairs": 3, "views": 12, "pairs_per_object": 10, "lr": 1e-5, "lam": 1.0, **_RELEASED_PIRO},
            sources=("modelnet40",),
        ),
        Recipe(
            "fg3d",
            "the released FG3D values",
            {"batch_pairs": 9, "views": 12, "pairs_per_object": 3, "lr": 5e-5, "lam": 2.0, **_RELEASED_PIRO},
            sources=("fg3d",),
        ),
        Recipe(
            "objectpi-cpu",
            "piro's measured recipe for ObjectPI on a 2-core CPU",
            {"batch_pairs": 4, "views": 8, "pairs_per_object": 10, "lam": 1.0, **_RELEASED_PIRO, **CPU_VALUES,
             # each view also embedded 15% larger: +2.8 SV object mAP, +0.8 on the mean of the 8 tasks, on 4 folds that
             # chose nothing (docs/BENCHMARKS.md, issue #24); measured on ObjectPI only, so not in CPU_VALUES
             "tta_scales": (1.0, 1.15),
             # efficientnet_lite1 at its 240 px (`piro prepare --size 240`), cut at the same stage: chosen on fold 1
             # of the 5-fold split, +1.6 on the mean and +2.8 SV object mAP on folds 2-3, which chose nothing, for
             # about twice the training time (docs/BENCHMARKS.md, "The remaining levers of issue #24")
             "backbone": "efficientnet_lite1"},
        ),
        Recipe("cpu", "piro's measured CPU path, over the data's recipe", CPU_VALUES, layered=True),
        Recipe("full", "full fine-tuning, over the data's recipe", {"freeze_backbone": False, "train_from": None}, layered=True),
        Recipe(
            "pies",
            "the released PIEs baselines' values",
            {"lr": 1e-5, "lr_step": 0, "epochs": 40, "early_stop_rho": 0.0, "augment": True, "precision": "fp32"},
        ),
    )
}
METHOD_FAMILY_RECIPES = {"pies": "pies"}
NO_GPU = "no GPU"  # Resolution.chosen_by when the cpu recipe was chosen for a machine without a GPU
"""A method family whose own recipe is its default, before the data source's (piro_cli.methods.MethodSpec.family)."""


def get_recipe(name: str) -> Recipe:
    key = name.strip().lower()
    if key not in RECIPES:
        raise OptionError("{recipe} {given}: unknown recipe; choose one of {known}", given=name, known=", ".join(RECIPES))
    return RECIPES[key]


def recipe_for_source(source_dataset: str | None) -> Recipe | None:
    """The recipe a data file of this source uses when --recipe is not given."""
    return next((r for r in RECIPES.values() if source_dataset in r.sources), None)


@dataclass(frozen=True)
class Resolution:
    """Every recipe-settable option of a run, resolved, and how."""

    values: dict[str, Any]  # every key of BUILTIN_DEFAULTS
    recipe: Recipe | None
    chosen_by: str  # "--recipe" or "the data's source"; "" without a recipe
    overridden: dict[str, Any]  # options given explicitly that replace a value of the recipe

    def messages(self) -> list[str]:
        """What to tell the user first: which recipe, why, and which options override it."""
        if self.recipe is None:
            return []
        lines = [f"recipe: {self.recipe.name} ({self.recipe.title}, from {self.chosen_by}): {describe(self.recipe.values)}"]
        if self.chosen_by == NO_GPU:
            lines.insert(
                0, "no GPU: training the measured CPU path (the top of the backbone and small heads, minutes); "
                "`--recipe full` fine-tunes the whole backbone instead (hours an epoch on a CPU)",
            )  # fmt: skip
        if self.overridden:
            lines.append(f"recipe: overridden by the options given: {describe(self.overridden)}")
        return lines


def resolve(
    requested: str | None, explicit: dict[str, Any], source_dataset: str | None, num_views: int, family: str | None = None,
    cpu_only: bool = False,
) -> Resolution:  # fmt: skip
    """Explicit options, else the recipe (`requested`, else the method family's, else on a machine without a GPU
    (`cpu_only`) the `cpu` recipe for PiRO methods when neither --freeze-backbone nor --train-from is given, else
    the data source's), else BUILTIN_DEFAULTS. The layered recipes `cpu` and `full` set their values over the data
    source's recipe.

    `explicit` holds the options that were given (recipe-settable options whose value is not None). A
    recipe's views are capped at the views the data has, as released (N_G = min(len(gal_vp), N_G_B)).
    """
    unknown = sorted(set(explicit) - set(BUILTIN_DEFAULTS))
    if unknown:
        raise ValueError(f"not options a recipe sets: {', '.join(unknown)}")
    partial = explicit.get("freeze_backbone") is not None or explicit.get("train_from") is not None
    if requested is not None:
        recipe, chosen_by = get_recipe(requested), "--recipe"
    elif family in METHOD_FAMILY_RECIPES:
        recipe, chosen_by = get_recipe(METHOD_FAMILY_RECIPES[family]), "the method"
    elif cpu_only and family == "piro" and not partial and explicit.get("backbone") != "tiny":  # full: hours an epoch
        recipe, chosen_by = get_recipe("cpu"), NO_GPU
    else:
        recipe, chosen_by = recipe_for_source(source_dataset), "the data's source"
    if recipe is not None and recipe.layered:
        base = recipe_for_source(source_dataset)
        if base is not None and base.name == "objectpi" and recipe.name == "cpu":
            recipe = get_recipe("objectpi-cpu")  # the same values, under the name its measurements carry
        else:
            title = f"{recipe.title}: {base.name if base else 'built-in defaults'}"
            recipe = Recipe(recipe.name, title, {**(base.values if base else {}), **recipe.values}, layered=True)
    preset = dict(recipe.values) if recipe is not None else {}
    # the two partial-training options exclude each other: the one given replaces the recipe's other
    if explicit.get("freeze_backbone"):
        preset.pop("train_from", None)
    if explicit.get("train_from") is not None:
        preset.pop("freeze_backbone", None)
    if preset.get("views") is not None:
        preset["views"] = min(preset["views"], num_views)
    if recipe is not None and recipe.name in ("cpu", "objectpi-cpu") and "backbone" in explicit:
        # the cpu path on another backbone: its own last stage, or the heads alone where it cannot be cut
        from piro_cli.models.registry import cpu_cut

        cut = cpu_cut(explicit["backbone"])
        preset["train_from"] = cut
        preset["freeze_backbone"] = cut is None
    values = {**BUILTIN_DEFAULTS, **preset, **explicit}
    overridden = {k: v for k, v in explicit.items() if k in preset and preset[k] != v}
    return Resolution(values, recipe, chosen_by if recipe is not None else "", overridden)


def option_flag(field: str, value: Any) -> str:
    """How `piro train` spells an option and its value: `--batch-pairs 4`, `--no-augment`."""
    flag = "--" + field.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else flag.replace("--", "--no-", 1)
    if value is None:
        return f"{flag} (all)"
    if isinstance(value, (tuple, list)):
        return f"{flag} {','.join(f'{v:g}' if isinstance(v, float) else str(v) for v in value)}"
    return f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}"


def recipe_default(field: str) -> str:
    """Help text of an option a recipe may set: `(default: the recipe's, else 1e-05)`."""
    return f"(default: the recipe's, else {option_flag(field, BUILTIN_DEFAULTS[field]).split(' ', 1)[-1]})"


def describe(values: dict[str, Any]) -> str:
    return ", ".join(option_flag(k, v) for k, v in values.items())


def recipe_help() -> str:
    """`piro train --recipe` help: each dataset recipe's own values and the values they share, then the others."""
    datasets = [r for r in RECIPES.values() if r.sources]
    shared = {k: v for k, v in datasets[0].values.items() if all(r.values.get(k, object()) == v for r in datasets)}
    parts = [f"{r.name} ({r.title}): {describe({k: v for k, v in r.values.items() if k not in shared})}" for r in datasets]
    text = "; ".join(parts) + "."
    if shared and len(datasets) > 1:
        text += f" All of these also set {describe(shared)}."
    others = [f"{r.name} ({r.title}): {describe(r.values)}." for r in RECIPES.values() if not r.sources]
    others.append("Without a GPU, PiRO methods train with cpu unless --recipe, --freeze-backbone or --train-from is given.")
    return " ".join([text, *others])
