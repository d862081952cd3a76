"""`piro train`: train PAN with the pose-invariant losses and write a run folder.

Two ways to train, with the same model class and checkpoint format:

- full fine-tuning: every step runs the backbone on the pair's views (augmented);
- `--freeze-backbone`: backbone features are computed once, over K passes
  (pass 1 un-augmented, passes 2..K augmented), into a cache file beside the
  run folders (`runs/feature-cache/<backbone>-<key>.pt`, shared by runs with the
  same backbone, data, passes and seed), and only the heads and attention
  layers train, from that cache. This is what makes training practical on a CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Protocol

import numpy as np
import torch

from piro_cli.convergence import Spread, object_spread, should_stop
from piro_cli.data.augment import AUGMENTATIONS, build_augmentation
from piro_cli.data.samplers import carve_validation, checked_views, object_batches, plan_pairs, sample_pairs, sample_views
from piro_cli.data.store import SplitData, ViewSetStore, normalize_views, resolve_data
from piro_cli.errors import DataError, PiroError
from piro_cli.evaluation.picr import TASKS, evaluate_picr
from piro_cli.hardware import autocast, pick_device, training_threads
from piro_cli.inference.embedding import EmbeddingSet, backbone_features, embed_features
from piro_cli.losses import LOSS_TERMS, POSE_INVARIANT_LOSSES, LossConfig, parse_object_loss
from piro_cli.methods import (
    PRE_OPTION_VALUES,
    build_criterion,
    embedding_head,
    get_method,
    loss_config_of,
    resolve_method,
    resolve_method_options,
)
from piro_cli.models.backbones import NATIVE_SIZES, cut_points
from piro_cli.models.pan import PAN, PANConfig
from piro_cli.outputs import OutputLock, atomic_torch_save, check_output_path, remove_stale_temps, write_json
from piro_cli.recipes import BUILTIN_DEFAULTS, Resolution, describe, get_recipe
from piro_cli.recipes import resolve as resolve_recipe
from piro_cli.reporting import Reporter, SilentReporter
from piro_cli.runs import MetricsLog, checkpoint_header, disk_full_advice, load_checkpoint, new_run_dir


@dataclass
class TrainConfig:
    """Every `piro train` option.

    The options a recipe may set (piro_cli.recipes.BUILTIN_DEFAULTS) default to None here: "not given",
    resolved by `train` from `recipe` (or the data source's recipe), else the built-in default, while a
    value given explicitly is kept. A resolved config (config.json, checkpoints) has them all set; `views`
    None then means all the views.
    """

    data: str | None = None  # HDF5 file; None: the most recently written ./data/*.h5
    project: str = "runs"
    name: str | None = None  # run folder name; default exp, exp2, ...
    recipe: str | None = None  # piro_cli/recipes.py; None: the data source's recipe, if it has one
    # model
    method: str | None = None  # piro_cli/methods.py; None: piro-dual, or piro-single with dual=False
    backbone: str | None = None  # None: the recipe's, else efficientnet_lite0
    pretrained: bool = True
    dual: bool = True  # set from the method
    cat_dim: int | None = None
    obj_dim: int | None = None
    # losses
    losses: tuple[str, ...] | None = None  # None: the method's released terms (piro-single: cat, piobj; else all three)
    alpha: float | None = None
    beta: float | None = None
    theta: float | None = None
    gamma: float | None = None
    lam: float | None = None
    separation: str = "squared"  # L_piobj's confuser term: [beta - d^2]+ as released, or "plain" [beta - d]+ (Eq. 7)
    train_lsoftmax_weights: bool = False  # the released optimiser leaves the L-Softmax class weights at their init
    obj_loss: str = "piro"  # the object term of piro-* methods: L_piobj or a metric-learning loss
    dvml: bool = False
    dvml_kl: float = 0.1
    dvml_rec: float = 0.1
    dvml_syn: float = 0.5
    pi_alpha: float | None = None  # PI- baselines: weight a of d2(view, view set); None: the released value
    pi_beta: float | None = None  # PI- baselines: weight b of d2(view set, category centre); None: the released value
    # optimisation
    lr: float | None = None
    lr_step: int | None = None  # halve the learning rate every lr_step epochs
    epochs: int | None = None
    batch_pairs: int | None = None
    batch_objects: int | None = None  # PIEs baselines: objects per batch; None: the method's released default
    pairs_per_object: int | None = None
    views: int | None = None  # views per object in a training pair; None: the recipe's, else all
    augment: bool | None = None
    augmentation: str | None = None  # "piro" or "pies" (piro_cli/data/augment.py); None: the method's own
    seed: int = 0
    device: str | None = None  # None: cuda when available, else cpu
    freeze_backbone: bool | None = None
    train_from: str | None = None  # backbone stage where training starts (models.backbones.cut_points); None: all/none
    feature_passes: int | None = None
    tta: bool | None = None  # the run's default for evaluate/embed: each view averaged with its mirror (test-time flips)
    val_fraction: float | None = None
    val_seed: int = 0  # seed of the carved validation split: fixed, so runs with other --seed see the same objects
    early_stop_rho: float | None = None  # 0 disables; piro_cli/convergence.py has the rule

    def __post_init__(self) -> None:
        if self.recipe is not None:
            self.recipe = get_recipe(self.recipe).name
        try:
            self.obj_loss = parse_object_loss(self.obj_loss)
        except ValueError as exc:
            raise PiroError(f"--obj-loss: {exc}") from None
        spec = resolve_method(self.method, self.dual, self.obj_loss, self.dvml)
        self.method, self.dual = spec.name, spec.dual
        if self.losses is None:
            self.losses = spec.default_losses
        resolve_method_options(spec, self)
        if self.train_from is not None:
            if self.freeze_backbone:
                raise PiroError("--train-from trains part of the backbone and --freeze-backbone none of it: pass one of them")
            if self.backbone is not None and self.train_from not in cut_points(self.backbone):  # None: checked resolved
                where = ", ".join(cut_points(self.backbone)) or "nowhere (use --freeze-backbone or full fine-tuning)"
                raise PiroError(f"--train-from {self.train_from}: backbone {self.backbone} can start training at {where}")
        if self.feature_passes is not None and self.feature_passes < 1:
            raise PiroError(f"--feature-passes {self.feature_passes}: must be at least 1")
        if self.augmentation not in AUGMENTATIONS:
            raise PiroError(f"--augmentation {self.augmentation!r}: choose one of {', '.join(AUGMENTATIONS)}")
        # the float options outside the losses (integer options are checked by the CLI's min=): nan passes any comparison
        # above 1 an Adam step overflows float32 (a traceback, not a NaN) long before it could train anything
        if self.lr is not None and not (math.isfinite(self.lr) and 0 < self.lr <= 1):
            raise PiroError(f"--lr {self.lr}: the learning rate must be a number > 0 and <= 1 (released: 1e-5)")
        if self.early_stop_rho is not None and not (math.isfinite(self.early_stop_rho) and self.early_stop_rho >= 0):
            raise PiroError(f"--early-stop-rho {self.early_stop_rho}: must be a finite number >= 0 (0 disables the early stop)")
        try:
            # margins, loss terms and DVML options, checked before any work starts (options not given: their built-in value)
            loss_config_of(SimpleNamespace(**{**asdict(self), **self._unset()}))
        except ValueError as exc:
            raise PiroError(str(exc)) from None

    def _unset(self) -> dict:
        """The recipe-settable options not given, with their built-in defaults."""
        return {k: v for k, v in BUILTIN_DEFAULTS.items() if getattr(self, k) is None}

    def given(self) -> dict:
        """The recipe-settable options given explicitly (not None)."""
        return {k: getattr(self, k) for k in BUILTIN_DEFAULTS if getattr(self, k) is not None}

    def resolved(self, source_dataset: str | None, num_views: int) -> tuple[TrainConfig, Resolution]:
        """This config with every recipe-settable option set (piro_cli.recipes.resolve), and how they were set."""
        resolution = resolve_recipe(self.recipe, self.given(), source_dataset, num_views, get_method(self.method).family)
        name = resolution.recipe.name if resolution.recipe is not None else None
        try:
            return dataclasses.replace(self, recipe=name, **resolution.values), resolution
        except PiroError as exc:
            if resolution.recipe is None or not set(resolution.recipe.values) - set(self.given()):
                raise
            raise PiroError(f"{exc} (with options of --recipe {name}: {describe(resolution.recipe.values)})") from None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["losses"] = list(self.losses)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """A saved (resolved) config; runs written before an option existed get its value of that time."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        losses = values.get("losses", LOSS_TERMS)  # runs from before --losses trained all three terms
        values["losses"] = None if losses is None else tuple(losses)
        for key, value in PRE_OPTION_VALUES.items():  # what runs from before these options trained with
            values.setdefault(key, value)
        if "val_seed" not in values:  # runs from before --val-seed carved their split with the training seed
            values["val_seed"] = values.get("seed", 0)
        if values.get("method") not in POSE_INVARIANT_LOSSES:  # runs from before the PIEs losses saved 1.0 for every method
            values.pop("pi_alpha", None)
            values.pop("pi_beta", None)
        for key, value in BUILTIN_DEFAULTS.items():
            values.setdefault(key, value)
        return cls(**values)


FEATURE_CACHE_SEED = 2  # seed of the augmented feature passes (what `seed + 2` gave seed-0 runs before)


class TrainReporter(Reporter, Protocol):
    """How training talks to its caller: a Reporter that also receives each epoch's metrics row."""

    def epoch(self, row: dict) -> None: ...


class TrainingDiverged(PiroError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    run_dir: Path
    epochs_done: int
    best_path: Path
    last_path: Path
    history: list[dict] = field(default_factory=list)
    stop_reason: str = "finished"
    seconds: float = 0.0


def _resume_data(given: str | None, recorded: str) -> Path:
    """The data file of a resumed run: the file it trained on; `--data` only when that is the same file, or when the
    file was moved (then `open_run_data` checks that `--data` holds the same data)."""
    if not Path(recorded).exists():
        if given is None:
            raise DataError(
                f"{recorded}: the data file this run was trained on no longer exists; pass it, moved or copied, with --data"
            )
        return resolve_data(given)
    if given is not None and not os.path.samefile(resolve_data(given), recorded):
        raise DataError(
            f"--data {given}: this run trains on {recorded}, and --resume continues on that file; leave --data out "
            "(--data is for a run whose data file has moved)"
        )
    return Path(recorded)


# ----------------------------------------------------------------------------- the data a run sees


@dataclass
class RunData:
    store: ViewSetStore
    train: SplitData  # the split the training objects come from
    train_indices: np.ndarray  # rows of `train` used for training (validation objects carved out)
    val: SplitData | None
    val_indices: np.ndarray | None

    def describe(self) -> dict:
        val = None
        if self.val is not None and self.val_indices is not None:
            val = {
                "split": self.val.name,
                "indices": self.val_indices.tolist(),
                "names": [self.val.object_names[i] for i in self.val_indices],
            }
        return {
            "path": str(self.store.path),
            "fingerprint": self.store.fingerprint,
            "source_dataset": self.store.source_dataset,
            "num_views": self.store.num_views,
            "image_size": self.store.image_size,
            "train_indices": self.train_indices.tolist(),
            "val": val,
        }


def open_run_data(path: Path, val_fraction: float | None, val_seed: int, saved: dict | None = None) -> RunData:
    store = ViewSetStore(path)
    train = store.split("train")
    if saved is not None:  # resuming: the exact objects of the interrupted run
        if saved["fingerprint"] != store.fingerprint:
            raise DataError(
                f"{path}: is not the dataset this run was trained on (the fingerprints differ: replaced or re-prepared "
                "since?); resume with the original data (--data FILE), or train a new run"
            )
        val_info = saved.get("val")
        val = store.split(val_info["split"]) if val_info else None
        return RunData(
            store, train, np.asarray(saved["train_indices"]), val, np.asarray(val_info["indices"]) if val_info else None
        )
    if "val" in store.splits:
        val = store.split("val")
        return RunData(store, train, np.arange(len(train)), val, np.arange(len(val)))
    if val_fraction:
        train_idx, val_idx = carve_validation(train.category, val_fraction, val_seed)
        return RunData(store, train, train_idx, train, val_idx)
    return RunData(store, train, np.arange(len(train)), None, None)


# ----------------------------------------------------------------------------- training


def train(
    config: TrainConfig,
    reporter: TrainReporter | None = None,
    resume: str | Path | None = None,
    resume_epochs: int | None = None,
) -> TrainResult:
    """Train a model and write its run folder.

    `resume` (a run folder or its last.pt) continues an interrupted run with its
    saved configuration (`config` is then ignored, but for `config.data`: accepted when
    it is the run's own data file, or when that file has moved and it holds the same
    data); `resume_epochs` extends it. The run folder is locked while it trains: a second
    process refuses it. A new run that stops, for any reason, before its first epoch is
    saved leaves no run folder behind.
    """
    created: list[Path] = []
    try:
        with contextlib.ExitStack() as locks:  # released (its lock file removed) before the clean-up below
            return _train(config, reporter, resume, resume_epochs, locks, created)
    except BaseException:
        for run_dir in created:
            _remove_unfinished_run(run_dir)
        raise


def _remove_unfinished_run(run_dir: Path) -> None:
    """Remove a run folder that no epoch was saved in: it has no last.pt, so nothing in it can be resumed (its first
    epoch's metrics.csv row and best.pt may be written, a full disk or a kill stopping it before last.pt); it holds
    only those files, config.json and this process's temporary files. A folder holding anything else is kept."""
    if not run_dir.is_dir():
        return
    files = list(run_dir.iterdir())
    ours = {"config.json", "metrics.csv", "best.pt"}
    temporary = f".tmp-{os.getpid()}"
    if any(f.name not in ours and not f.name.endswith(temporary) for f in files):
        return
    with contextlib.suppress(OSError):  # never hide the error that stopped the run behind one of the clean-up
        for f in files:
            f.unlink()
        run_dir.rmdir()


def _train(
    config: TrainConfig,
    reporter: TrainReporter | None,
    resume: str | Path | None,
    resume_epochs: int | None,
    locks: contextlib.ExitStack,
    created: list[Path],
) -> TrainResult:
    """`train`; the run folder it creates is appended to `created` at once (removed if no epoch is saved)."""
    reporter = reporter or SilentReporter()
    started = time.perf_counter()
    checkpoint = None
    if resume is not None:
        resume_path = Path(resume)
        checkpoint = load_checkpoint(resume_path / "last.pt" if resume_path.is_dir() else resume_path)
        run_dir = Path(checkpoint["path"]).parent
        locks.enter_context(OutputLock(run_dir, folder=True))
        if "optimizer_state" not in checkpoint and "loss_state" in checkpoint:
            raise PiroError(
                f"{checkpoint['path']}: holds no optimiser state (best.pt keeps only what evaluation needs); "
                f"resume from the run's last.pt: `piro train --resume {run_dir}`"
            )
        given_data = config.data
        config = TrainConfig.from_dict(checkpoint["train_config"])
        if resume_epochs is not None:
            config.epochs = resume_epochs
        data_path = _resume_data(given_data, checkpoint["data"]["path"])
    else:
        check_output_path(config.project, "--project", folder=True)
        data_path = resolve_data(config.data)
    reporter.info(f"data: {data_path}")
    data = open_run_data(data_path, config.val_fraction, config.val_seed, checkpoint["data"] if checkpoint else None)
    if checkpoint is None:  # a resumed run's saved config is resolved already
        config, resolution = config.resolved(data.store.source_dataset, data.store.num_views)
        for line in resolution.messages():
            reporter.info(line)
    checked_views(data.store.num_views, config.views)

    device = pick_device(config.device)
    native = NATIVE_SIZES.get(config.backbone)
    if config.pretrained and native is not None and native != data.store.image_size:
        reporter.info(
            f"warning: {config.backbone}'s ImageNet weights were trained at {native} px and {data_path} holds "
            f"{data.store.image_size} px views; prepare the data with `piro prepare ... --size {native}` for its best features"
        )
    if device.type == "cpu" and not config.freeze_backbone and config.train_from is None and config.backbone != "tiny":
        reporter.info(
            "warning: full fine-tuning on a CPU is slow (docs/BENCHMARKS.md has step times); "
            "--freeze-backbone trains the heads from cached features in minutes, --train-from STAGE the top of the backbone too"
        )
    _seed_everything(config.seed)
    spec = get_method(config.method)
    plan = None
    if spec.family == "piro":  # the PIEs baselines train on batches of whole objects, not on pairs
        plan = plan_pairs(data.train.category[data.train_indices])
        for category in plan.skipped_categories:
            reporter.info(
                f"warning: category '{data.store.categories[category]}' has one training object; it is skipped (no pair)"
            )

    model_config = PANConfig(
        backbone=config.backbone,
        pretrained=config.pretrained,
        dual=config.dual,
        cat_dim=config.cat_dim,
        obj_dim=config.obj_dim,
        aggregation=spec.aggregation,
        head=embedding_head(spec, config.backbone),
    )
    model = PAN(model_config).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    loss_config = loss_config_of(config)
    criterion = build_criterion(config, len(data.store.categories), len(data.train), model.feat_dim).to(device)
    if _uses_feature_cache(config):
        for parameter in model.backbone_parameters():
            parameter.requires_grad_(False)
        trainable = list(model.head_parameters())
        if config.train_from is not None:  # the backbone's stages from the cut on train with the heads
            above = list(model.cut(config.train_from).above.parameters())
            for parameter in above:
                parameter.requires_grad_(True)
            trainable = above + trainable
    else:
        trainable = [p for p in model.parameters() if p.requires_grad]
    # fused Adam: one kernel over all parameters instead of a dozen per tensor, the optimiser's cost at large heads
    # (docs/BENCHMARKS.md, bench/bench_head_step.py); the same update up to float rounding
    optimizer = torch.optim.Adam(trainable + list(criterion.parameters()), lr=config.lr, fused=device.type in ("cpu", "cuda"))
    # lr_step 0: a constant learning rate (the PIEs recipe)
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=max(config.lr_step, 1), gamma=0.5 if config.lr_step > 0 else 1.0
    )
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and not torch.cuda.is_bf16_supported())

    rng = np.random.default_rng(config.seed)
    aug_generator = torch.Generator().manual_seed(config.seed + 1)
    start_epoch, best_score = 0, -math.inf
    if checkpoint is None:
        run_dir = new_run_dir(Path(config.project), config.name)
        created.append(run_dir)
        locks.enter_context(OutputLock(run_dir, folder=True))
    reporter.info(f"run folder: {run_dir}")
    metrics_log = MetricsLog(run_dir / "metrics.csv")
    if checkpoint is not None:  # before anything is written: refused if it lacks an epoch the checkpoint has
        metrics_log.truncate_after(int(checkpoint["epoch"]))
    config_record = {
        "train": config.to_dict(),
        "model": model_config.to_dict(),
        "loss": _loss_dict(loss_config),
        "data": data.describe(),
    }
    write_json(config_record, run_dir / "config.json", disk_full_advice(run_dir))

    if checkpoint is not None:
        model.load_state_dict(checkpoint["model_state"])
        if "loss_state" not in checkpoint:
            raise PiroError(f"{resume}: holds no training state (e.g. weights from `piro import-weights`); it cannot be resumed")
        try:
            criterion.load_state_dict(checkpoint["loss_state"])
        except RuntimeError as exc:  # e.g. a PIEs run from before the released PIEs losses
            raise PiroError(
                f"{run_dir}: its {config.method} loss state does not fit this piro version's loss ({exc}); "
                "it cannot be resumed: retrain it (its checkpoints still evaluate)"
            ) from None
        optimizer.load_state_dict(checkpoint["optimizer_state"])
        scheduler.load_state_dict(checkpoint["scheduler_state"])
        rng.bit_generator.state = checkpoint["rng"]["numpy"]
        torch.set_rng_state(checkpoint["rng"]["torch"])
        aug_generator.set_state(checkpoint["rng"]["augment"])
        start_epoch, best_score = int(checkpoint["epoch"]), float(checkpoint["best_score"])
        reporter.info(f"resuming {run_dir} after epoch {start_epoch}")

    augment = build_augmentation(config.augmentation) if config.augment else None
    cache = _feature_cache(model, data, config, device, augment, run_dir, reporter) if _uses_feature_cache(config) else None

    result = TrainResult(run_dir, start_epoch, run_dir / "best.pt", run_dir / "last.pt", history=metrics_log.read())
    with _training_threads(config, device):
        # The stop rule (piro_cli/convergence.py) checks the statistic of the model before each epoch: each epoch's
        # evaluation gives the next one's; the first is the initial model's or, resuming, the checkpoint's.
        spread_before: Spread | None = None
        for epoch in range(start_epoch + 1, config.epochs + 1):
            epoch_start = time.perf_counter()
            if spread_before is None:
                spread_before = _training_spread(model, data, cache, device, reporter)
            lr = optimizer.param_groups[0]["lr"]
            if plan is None:
                mean_losses = _train_one_epoch_of_objects(
                    epoch, config, model, criterion, optimizer, scaler, data, cache, device, augment, aug_generator, rng, reporter,
                    run_dir / "last.pt",
                )  # fmt: skip
            else:
                mean_losses = _train_one_epoch(
                    epoch, config, model, criterion, optimizer, scaler, data, plan, cache, device, augment, aug_generator, rng,
                    reporter, run_dir / "last.pt",
                )  # fmt: skip
            scheduler.step()

            row: dict = {"epoch": epoch, "lr": lr}
            row.update({f"loss_{k}" if k != "total" else "loss": v for k, v in mean_losses.items()})
            row.update(spread_before.as_row())  # metrics.csv's d_intra_max, d_inter_min, rho: before this epoch
            evaluation, spread_after = _epoch_evaluation(model, data, cache, device, reporter)
            row.update(evaluation)
            row["seconds"] = time.perf_counter() - epoch_start
            score = row.get("val_mean", -math.inf)
            improved = data.val is None or score > best_score
            best_score = max(best_score, score) if data.val is not None else best_score

            state = {
                **checkpoint_header(),
                "model_config": model_config.to_dict(),
                "model_state": model.state_dict(),
                "loss_config": _loss_dict(loss_config),
                "loss_state": criterion.state_dict(),
                "train_config": config.to_dict(),
                "categories": list(data.store.categories),
                "data": data.describe(),
                "epoch": epoch,
                "best_score": best_score,
                "metrics": {k: v for k, v in row.items() if isinstance(v, (int, float))},
                "optimizer_state": optimizer.state_dict(),
                "scheduler_state": scheduler.state_dict(),
                "rng": {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state(), "augment": aug_generator.get_state()},
            }
            # last.pt last: a run killed before it resumes from the previous epoch, which truncates metrics.csv to it
            # and redoes this epoch; killed after it, the epoch's row and best.pt are already written.
            metrics_log.append(row)
            # a full disk stops the run with the previous epoch's last.pt intact, from which it resumes (if there is one)
            resume_advice = disk_full_advice(run_dir)
            if improved:  # best.pt is for evaluation: without the training state (the optimiser's doubles the file)
                best = {k: v for k, v in state.items() if k not in ("optimizer_state", "scheduler_state", "rng")}
                atomic_torch_save(best, run_dir / "best.pt", resume_advice)
            atomic_torch_save(state, run_dir / "last.pt", resume_advice)
            result.history.append(row)
            result.epochs_done = epoch
            reporter.epoch(row)
            if should_stop(spread_before, config.early_stop_rho):
                result.stop_reason = (
                    f"early stop: rho {spread_before.rho:.3f} > {config.early_stop_rho} before epoch {epoch}, stopped after it"
                )
                break
            spread_before = spread_after
    result.seconds = time.perf_counter() - started
    return result


def _train_one_epoch(
    epoch: int,
    config: TrainConfig,
    model: PAN,
    criterion: torch.nn.Module,
    optimizer,
    scaler,
    data: RunData,
    plan,
    cache: dict | None,
    device: torch.device,
    augment,
    aug_generator: torch.Generator,
    rng: np.random.Generator,
    reporter,
    last_path: Path,
) -> dict[str, float]:
    """One pass over freshly sampled pairs; returns the mean of each loss term."""  # fmt: skip
    _train_mode(model, config)
    labels_all = torch.as_tensor(data.train.category)
    pairs = data.train_indices[sample_pairs(plan, config.pairs_per_object, rng)]
    sums: dict[str, float] = {}
    steps = math.ceil(len(pairs) / config.batch_pairs)
    for step in range(steps):
        batch = pairs[step * config.batch_pairs : (step + 1) * config.batch_pairs]
        objects = np.concatenate([batch[:, 0], batch[:, 1]])
        pair_views = sample_views(data.store.num_views, config.views, len(batch), rng)
        view_idx = np.concatenate([pair_views, pair_views])  # a pair's two objects: the same views, in the same order
        with autocast(device):
            feats = _batch_features(model, data, objects, view_idx, cache, device, augment, aug_generator, rng)
            out_a, out_b = _split_pairs(model.forward_features(feats), len(batch))
            ids = torch.as_tensor(batch, device=device)
            losses = criterion(
                out_a, out_b, labels_all[batch[:, 0]].to(device), object_ids=(ids[:, 0], ids[:, 1]),
                feats=(feats[: len(batch)], feats[len(batch) :]),
            )  # fmt: skip
        _optimise(losses["total"], optimizer, scaler, f"epoch {epoch}, step {step + 1}/{steps}", last_path)
        for key, value in losses.items():
            sums[key] = sums.get(key, 0.0) + float(value.detach())
        reporter.progress(f"epoch {epoch}/{config.epochs}", step + 1, steps)
    return {key: value / steps for key, value in sums.items()}


def _train_one_epoch_of_objects(
    epoch: int,
    config: TrainConfig,
    model: PAN,
    criterion: torch.nn.Module,
    optimizer,
    scaler,
    data: RunData,
    cache: dict | None,
    device: torch.device,
    augment,
    aug_generator: torch.Generator,
    rng: np.random.Generator,
    reporter,
    last_path: Path,
) -> dict[str, float]:
    """One epoch of a PIEs baseline: every training object once, in shuffled batches of `batch_objects` whole
    objects (METHOD.md section 8); returns the mean loss."""
    _train_mode(model, config)
    labels_all = torch.as_tensor(data.train.category)
    batches = object_batches(len(data.train_indices), config.batch_objects, rng)
    total_sum = 0.0
    for step, rows in enumerate(batches):
        objects = data.train_indices[rows]
        view_idx = sample_views(data.store.num_views, config.views, len(objects), rng)
        with autocast(device):
            feats = _batch_features(model, data, objects, view_idx, cache, device, augment, aug_generator, rng)
            out = model.forward_features(feats)
            total = criterion(out.sv_obj, out.mv_obj, labels_all[objects].to(device), pooled=out.pooled_obj)
        _optimise(total, optimizer, scaler, f"epoch {epoch}, step {step + 1}/{len(batches)}", last_path)
        total_sum += float(total.detach())
        reporter.progress(f"epoch {epoch}/{config.epochs}", step + 1, len(batches))
    return {"total": total_sum / len(batches)}


def _batch_features(model: PAN, data: RunData, objects, view_idx, cache, device, augment, aug_generator, rng) -> torch.Tensor:
    """Backbone features (B, V, F) of the chosen views: from the cache (a random pass per object; through the
    trainable top of the backbone when the cache holds activations at a cut), or computed."""
    if cache is not None:
        cached = _cached_batch(cache, objects, view_idx, rng).to(device)
        stage = cache["key"].get("train_from")
        return cached if stage is None else model.features_from(cached.float(), stage)
    return model.features(_image_batch(data.train, objects, view_idx, device, augment, aug_generator))


def _uses_feature_cache(config: TrainConfig) -> bool:
    """Training reads cached backbone outputs (--freeze-backbone) or activations at a cut (--train-from)."""
    return config.freeze_backbone or config.train_from is not None


def _train_mode(model: PAN, config: TrainConfig) -> None:
    """model.train(), except that with --train-from the backbone's BatchNorm layers keep their ImageNet statistics:
    the cached activations below the cut were computed with them, and a few objects' batch statistics are noise."""
    model.train()
    if config.train_from is not None:
        for module in model.backbone.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


@torch.no_grad()
def _features_of_cached(model: PAN, cache: dict, cached: torch.Tensor, device, batch: int = 64) -> torch.Tensor:
    """Backbone features (N, V, F) of cached entries (N, V, ...): themselves, or activations run through the top of
    the backbone (model in eval mode)."""
    stage = cache["key"].get("train_from")
    if stage is None:
        return cached
    model.eval()
    parts = [
        model.features_from(cached[i : i + batch].to(device).float(), stage).float().cpu() for i in range(0, len(cached), batch)
    ]
    return torch.cat(parts)


def _optimise(total: torch.Tensor, optimizer, scaler, where: str, last_path: Path) -> None:
    """One optimiser step on a batch's total loss; a NaN or infinite loss stops training instead."""
    if not torch.isfinite(total):
        saved = f"the last good checkpoint is {last_path}" if last_path.is_file() else "no epoch had finished, so none was saved"
        raise TrainingDiverged(f"loss became {float(total.detach())} at {where}; stopped: {saved}. Try a lower --lr.")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(total).backward()
    scaler.step(optimizer)
    scaler.update()


@contextlib.contextmanager
def _training_threads(config: TrainConfig, device: torch.device):
    """Torch threads for the run's training steps on a CPU (piro_cli.hardware.training_threads)."""
    previous = torch.get_num_threads()
    if device.type == "cpu":
        widest = max(config.obj_dim or 0, (config.cat_dim or 0) if config.dual else 0)
        torch.set_num_threads(training_threads(config.freeze_backbone, widest, previous))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _loss_dict(config: LossConfig) -> dict:
    values = asdict(config)
    values["terms"] = list(config.terms)
    return values


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def _split_pairs(out, num_pairs: int):
    """The model ran on [a objects; b objects]; give each half as its own output."""
    fields = {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}
    first = {k: v[:num_pairs] for k, v in fields.items()}
    second = {k: v[num_pairs:] for k, v in fields.items()}
    return type(out)(**first), type(out)(**second)


def _image_batch(split: SplitData, objects: np.ndarray, view_idx: np.ndarray, device, augment, generator) -> torch.Tensor:
    block = np.stack([split.views_uint8(int(o), v) for o, v in zip(objects, view_idx, strict=True)])
    views = normalize_views(block, device)
    return augment(views, generator) if augment is not None else views


def _cached_batch(cache: dict, objects: np.ndarray, view_idx: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """Features of the chosen views, each object from a randomly chosen pass (augmented copies)."""
    train_feats = cache["train"]  # (K, N, V, F)
    passes = rng.integers(0, train_feats.shape[0], size=len(objects))
    obj = torch.as_tensor(objects)[:, None]
    return train_feats[torch.as_tensor(passes)[:, None], obj, torch.as_tensor(view_idx)]


def _feature_cache(model: PAN, data: RunData, config: TrainConfig, device, augment, run_dir: Path, reporter) -> dict:
    # The augmented passes use a fixed seed, not the run's: features are a function of the backbone and the data,
    # so runs with different --seed (and any method or loss) share one cache; the seed still varies the heads'
    # initialisation, the pairs, the views and which pass each object is read from.
    key = {
        "backbone": config.backbone,
        "pretrained": config.pretrained,
        "data_fingerprint": data.store.fingerprint,
        "passes": config.feature_passes,
        # PiRO's augmentation keeps the key it had before --augmentation, so caches built then stay valid
        "augment": config.augment if config.augmentation == "piro" else config.augment and config.augmentation,
    }
    if config.train_from is not None:  # activations at the cut, stored in float16 (half the memory, ample precision)
        key.update(train_from=config.train_from, dtype="float16")
    # Shared beside the run folders: runs that differ only in heads or losses (dual vs single, ablations) reuse it.
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    path = run_dir.parent / "feature-cache" / f"{config.backbone.replace(':', '_')}-{digest}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent)  # caches half-written by killed runs
    cached = load_feature_cache(path, key)
    if cached is not None:
        reporter.info(f"using cached backbone features {path}")
        return cached
    generator = torch.Generator().manual_seed(FEATURE_CACHE_SEED)
    all_train = np.arange(len(data.train))
    passes = []
    for k in range(config.feature_passes):
        pass_augment = augment if k > 0 else None  # pass 1 is the clean views, later passes augmented
        stage = f"backbone features, pass {k + 1}/{config.feature_passes}" + (" (augmented)" if pass_augment else "")
        passes.append(
            backbone_features(
                model,
                data.train,
                all_train,
                device,
                pass_augment,
                generator,
                progress=lambda done, total, stage=stage: reporter.progress(stage, done, total),
                stage=config.train_from,
            )
        )
    payload = {"key": key, "train": torch.stack(passes)}
    if data.val is not None and data.val is not data.train:
        payload["val"] = backbone_features(
            model,
            data.val,
            np.arange(len(data.val)),
            device,
            progress=lambda done, total: reporter.progress("backbone features, validation split", done, total),
            stage=config.train_from,
        )
    atomic_torch_save(payload, path, "free space or pass --project elsewhere")
    return payload


def load_feature_cache(path: Path, key: dict) -> dict | None:
    """The cache at `path` if it was built with the same `key` (backbone, data, passes), else None."""
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged cache is rebuilt, never trusted
        return None
    # anything but the dict piro wrote (a file replaced by other data) is rebuilt too
    if not isinstance(payload, dict) or payload.get("key") != key or not isinstance(payload.get("train"), torch.Tensor):
        return None
    return payload


def _training_gallery(model: PAN, data: RunData, cache: dict | None, device, reporter) -> EmbeddingSet:
    """Embeddings of the training objects' un-augmented views, the model in eval mode."""
    if cache is not None:
        feats = _features_of_cached(model, cache, cache["train"][0, data.train_indices], device)  # pass 1: the clean views
    else:
        progress = lambda done, total: reporter.progress("embedding training objects", done, total)  # noqa: E731
        feats = backbone_features(model, data.train, data.train_indices, device, progress=progress)
    return embed_features(model, feats, torch.as_tensor(data.train.category[data.train_indices]), device)


def _training_spread(model: PAN, data: RunData, cache: dict | None, device, reporter) -> Spread:
    gallery = _training_gallery(model, data, cache, device, reporter)
    return object_spread(gallery.sv_obj, gallery.labels)


def _epoch_evaluation(model: PAN, data: RunData, cache: dict | None, device, reporter) -> tuple[dict, Spread]:
    """After an epoch: the PICR tasks on the validation objects (when there are any), and the progress statistic."""
    gallery = _training_gallery(model, data, cache, device, reporter)
    spread = object_spread(gallery.sv_obj, gallery.labels)
    if data.val is None:
        return {}, spread
    if cache is not None:
        source = cache["val"] if data.val is not data.train else cache["train"][0]
        val_feats = _features_of_cached(model, cache, source[data.val_indices], device)
    else:
        progress = lambda done, total: reporter.progress("embedding validation objects", done, total)  # noqa: E731
        val_feats = backbone_features(model, data.val, data.val_indices, device, progress=progress)
    probes = embed_features(model, val_feats, torch.as_tensor(data.val.category[data.val_indices]), device)
    results = evaluate_picr(gallery, probes)
    row = {f"val_{task}": value for task, value in results.items()}
    row["val_mean"] = float(np.mean([results[t] for t in TASKS]))
    return row, spread
