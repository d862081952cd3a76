"""`piro train`: train PAN with the pose-invariant losses and write a run folder.

Two ways to train, with the same model class and checkpoint format:

- full fine-tuning: every step runs the backbone on the pair's views (augmented);
- `--freeze-backbone` (or `--train-from STAGE`): backbone outputs are read from a feature cache
  (piro_cli.training.cache) and only the heads (and the backbone above STAGE) train.

`train()` resolves the options, the data and the run folder; a `Trainer` holds everything a run's training
state is (model, loss, optimiser, scheduler, scaler, data, cache, random generators) with `fit`, `epoch`, `save`
and `resume`. On several processes (torchrun) the Trainer shards each batch (piro_cli.training.distributed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from piro_cli.convergence import Spread, object_spread, should_stop
from piro_cli.data.augment import build_augmentation
from piro_cli.data.samplers import checked_views, object_batches, plan_pairs, sample_pairs, sample_views
from piro_cli.data.store import SplitData, normalize_views, resolve_data
from piro_cli.errors import OptionError, PiroError
from piro_cli.hardware import autocast, pick_device, resolve_precision, training_threads
from piro_cli.losses import LossConfig
from piro_cli.losses.language import pseudo_labels
from piro_cli.methods import build_criterion, embedding_head, get_method, loss_config_of
from piro_cli.models.backbones import NATIVE_SIZES
from piro_cli.models.embedding import EmbeddingSet, backbone_features, embed_features
from piro_cli.models.pan import PAN, PANConfig, PANOutput
from piro_cli.outputs import OutputLock, atomic_torch_save, check_output_path, write_json
from piro_cli.reporting import Reporter, SilentReporter
from piro_cli.retrieval.picr import TASKS, evaluate_picr
from piro_cli.runs import MetricsLog, checkpoint_header, disk_full_advice, load_checkpoint, new_run_dir, resume_advice
from piro_cli.training.averaging import WeightAverage
from piro_cli.training.cache import cached_batch, feature_cache, features_of_cached
from piro_cli.training.config import TrainConfig
from piro_cli.training.data import RunData, open_run_data, resume_data_path
from piro_cli.training.distributed import Processes, broadcast, device_for, from_environment, gather_rows, tell_launcher
from piro_cli.training.loggers import Logger, check_loggers, open_loggers
from piro_cli.training.pseudo_labels import imagenet_logits_per_category


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


class _Step(torch.nn.Module):
    """The model's training forward, as one module DistributedDataParallel can wrap: views or cached entries in,
    the backbone features and every embedding out (a dict, whose tensors DDP can find)."""

    def __init__(self, model: PAN) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor, stage: str | None, from_cache: bool) -> dict[str, torch.Tensor]:
        if from_cache:
            feats = inputs if stage is None else self.model.features_from(inputs.float(), stage)
        else:
            feats = self.model.features(inputs)
        out = self.model.forward_features(feats)
        return {"feats": feats, **{f.name: getattr(out, f.name) for f in dataclasses.fields(out)}}


ESTIMATE_AFTER_STEPS = 5  # the first steps of a run's first epoch, timed for its estimate


def estimate_line(seconds: float, done: int, steps: int, epochs_left: int) -> str:
    """'estimate: 3.2 min an epoch, about 9.6 min for the 3 epochs left (training steps; evaluation adds to it)'."""
    per_epoch = seconds / max(1, done) * steps

    def readable(s: float) -> str:
        return f"{s:.0f} s" if s < 120 else (f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} hours")

    left = f"the {epochs_left} epochs left" if epochs_left != 1 else "the epoch left"
    return f"estimate: {readable(per_epoch)} an epoch, about {readable(per_epoch * epochs_left)} for {left} (training steps; evaluation adds to it)"


class Trainer:
    """A run's training state and the loop over it."""

    def __init__(
        self, config: TrainConfig, data: RunData, device: torch.device, reporter: TrainReporter, processes: Processes,
        run_dir: Path,
    ) -> None:  # fmt: skip
        self.config, self.data, self.device, self.reporter, self.processes = config, data, device, reporter, processes
        self.run_dir = run_dir
        self.spec = get_method(config.method)
        self._estimated = False  # the time estimate is given once, after the first steps
        _seed_everything(config.seed)
        self.plan = None
        if self.spec.family == "piro":  # the PIEs baselines train on batches of whole objects, not on pairs
            self.plan = plan_pairs(data.train.category[data.train_indices])
            for category in self.plan.skipped_categories:
                reporter.info(
                    f"warning: category '{data.store.categories[category]}' has one training object; it is skipped (no pair)"
                )
        self.model_config = PANConfig(
            backbone=config.backbone, pretrained=config.pretrained, dual=config.dual, cat_dim=config.cat_dim,
            obj_dim=config.obj_dim, dropout=config.dropout, aggregation=self.spec.aggregation,
            head=embedding_head(self.spec, config.backbone),
            object_trunk=config.train_from if config.object_features == "frozen" else None,  # resolved() ensures a cut
        )  # fmt: skip
        self.model = PAN(self.model_config).to(device)
        if config.tta_scales not in (None, (1.0,)) and self.model.fixed_input_size:
            raise OptionError("{tta_scales}: {backbone} {name} takes one input size only, which test-time scales would "
                              "change; leave {tta_scales} out (or give 1)", name=config.backbone)  # fmt: skip
        self.model.precision = config.precision  # the feature cache and validation embed in the training arithmetic
        if device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.loss_config = loss_config_of(config)
        self.criterion = build_criterion(
            config, len(data.store.categories), len(data.train), self.model.feat_dim, self._language_labels()
        ).to(device)
        self.uses_cache = config.freeze_backbone or config.train_from is not None
        if self.uses_cache:
            for parameter in self.model.backbone_parameters():
                parameter.requires_grad_(False)
            trainable = list(self.model.head_parameters())
            if config.train_from is not None:  # the backbone's stages from the cut on train with the heads
                above = list(self.model.cut(config.train_from).above.parameters())
                for parameter in above:
                    parameter.requires_grad_(True)
                trainable = above + trainable
        else:
            trainable = [p for p in self.model.parameters() if p.requires_grad]
        # fused Adam: one kernel over all parameters instead of a dozen per tensor, the optimiser's cost at large heads
        # (docs/BENCHMARKS.md, bench/bench_head_step.py); the same update up to float rounding
        parameters = trainable + list(self.criterion.parameters()) if self.spec.family != "untrained" else []
        # None: nothing to optimise (the untrained `backbone` baseline: one evaluation, no step)
        self.optimizer = torch.optim.Adam(parameters, lr=config.lr, fused=device.type in ("cpu", "cuda")) if parameters else None
        # lr_step 0: a constant learning rate (the PIEs recipe)
        self.scheduler = (
            torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=max(config.lr_step, 1), gamma=0.5 if config.lr_step > 0 else 1.0)
            if self.optimizer is not None
            else None
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and resolve_precision(device, config.precision) == "fp16")
        self.rng = np.random.default_rng(config.seed)
        self.aug_generator = torch.Generator().manual_seed(config.seed + 1 + 1000 * processes.rank)
        self.augment = build_augmentation(config.augmentation) if config.augment else None
        self.step_module: torch.nn.Module = _Step(self.model)
        if processes.active and self.optimizer is not None:
            self.step_module = DistributedDataParallel(
                self.step_module, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=_leaves_parameters_unused(config, self.spec.family),
            )  # fmt: skip
        # --ema-decay: validation, checkpoints and all later use read the weights' moving average
        self.average = WeightAverage(self.model, config.ema_decay) if config.ema_decay and self.optimizer is not None else None
        self.cache: dict | None = None
        self.loggers: list[Logger] = []  # process 0's mirrors of metrics.csv (train() opens them)
        self.start_epoch, self.best_score = 0, -math.inf

    # ------------------------------------------------------------------ state

    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "best.pt"

    def resume(self, checkpoint: dict) -> None:
        """Continue from a last.pt: weights, loss, optimiser, scheduler, random generators, epoch and best score."""
        self.model.load_state_dict(checkpoint["model_state"])
        if self.average is not None:
            self.average.resume(checkpoint.get("raw_state"))
        if "loss_state" not in checkpoint:
            raise PiroError(
                f"{checkpoint['path']}: holds no training state (e.g. weights from `piro import-weights`); it cannot be resumed"
            )
        try:
            self.criterion.load_state_dict(checkpoint["loss_state"])
        except RuntimeError as exc:  # e.g. a PIEs run from before the released PIEs losses
            raise PiroError(
                f"{self.run_dir}: its {self.config.method} loss state does not fit this piro version's loss ({exc}); "
                "it cannot be resumed: retrain it (its checkpoints still evaluate)"
            ) from None
        if self.optimizer is not None:
            self.optimizer.load_state_dict(checkpoint["optimizer_state"])
            self.scheduler.load_state_dict(checkpoint["scheduler_state"])
        self.rng.bit_generator.state = checkpoint["rng"]["numpy"]
        torch.set_rng_state(checkpoint["rng"]["torch"])
        self.start_epoch, self.best_score = int(checkpoint["epoch"]), float(checkpoint["best_score"])
        self.aug_generator.set_state(self._augment_state(checkpoint["rng"]))

    def _augment_state(self, rng: dict) -> torch.Tensor:
        """This process's augmentation stream from a last.pt: its own where the run had as many processes (every one
        is saved), else a stream of its own seeded by the run's seed, its rank and the epoch; process 0 always
        continues the saved process 0's."""
        rank = self.processes.rank
        saved = rng.get("augment_by_rank")  # last.pt from before it was saved hold process 0's only
        if rank == 0:
            return rng["augment"]
        if saved is not None and len(saved) == self.processes.world:
            return saved[rank].clone().contiguous()
        seed = self.config.seed + 1 + 1000 * rank + 1_000_003 * self.start_epoch
        return torch.Generator().manual_seed(seed).get_state()

    def _language_labels(self) -> list[list[str]] | None:
        """Each category's labels for language guidance: its name, or with --language-labels imagenet the names of
        the top ImageNet classes of its training views (computed here, once per run)."""
        config, categories = self.config, list(self.data.store.categories)
        if not config.language_guidance:
            return None
        if config.language_labels == "names":
            return [[name] for name in categories]
        rows = self.data.train_indices
        progress = lambda done, total: self.reporter.progress("ImageNet pseudo-labels", done, total)  # noqa: E731
        logits = imagenet_logits_per_category(self.data.train, rows, len(categories), self.device, progress)
        labels = pseudo_labels(logits, config.language_topk)
        present = sorted({int(c) for c in self.data.train.category[rows]})
        shown = "; ".join(f"{categories[c]}: {', '.join(labels[c])}" for c in present[:3])
        self.reporter.info(f"ImageNet pseudo-labels ({len(present)} categories): {shown}{'; ...' if len(present) > 3 else ''}")
        return labels

    def state(self, epoch: int, row: dict, augment_states: torch.Tensor | None = None) -> dict:
        """What last.pt holds after `epoch` (best.pt: the same without the optimiser, scheduler and generators).
        `augment_states`: every process's augmentation generator state, (processes, S), in rank order. With
        --ema-decay the model's weights are the average, and `raw_state` the weights the optimiser trains."""
        if self.average is not None:
            raw = self.average.raw_state()
            with self.average.averaged():
                state = self._state(epoch, row, augment_states)
                # a state_dict shares the parameters' storage, to which the raw weights return after the block
                state["model_state"] = {k: v.detach().clone() for k, v in state["model_state"].items()}
            return {**state, "raw_state": raw}
        return self._state(epoch, row, augment_states)

    def _state(self, epoch: int, row: dict, augment_states: torch.Tensor | None) -> dict:
        return {
            **checkpoint_header(),
            "model_config": self.model_config.to_dict(),
            "model_state": self.model.state_dict(),
            "loss_config": _loss_dict(self.loss_config),
            "loss_state": self.criterion.state_dict(),
            "train_config": self.config.to_dict(),
            # what --precision auto became on this device (mixed on CUDA, fp32 on a CPU): `piro compare` tells runs apart by it
            "arithmetic": resolve_precision(self.device, self.config.precision),
            "categories": list(self.data.store.categories),
            "data": self.data.describe(),
            "epoch": epoch,
            "best_score": self.best_score,
            "metrics": {k: v for k, v in row.items() if isinstance(v, (int, float))},
            "optimizer_state": self.optimizer.state_dict() if self.optimizer is not None else {},
            "scheduler_state": self.scheduler.state_dict() if self.scheduler is not None else {},
            "rng": {
                "numpy": self.rng.bit_generator.state,
                "torch": torch.get_rng_state(),
                "augment": self.aug_generator.get_state(),
                # own copies: a generator's set_state crashes on a view into a larger storage
                "augment_by_rank": (
                    [row.clone() for row in augment_states] if augment_states is not None else [self.aug_generator.get_state()]
                ),
            },
        }

    def save(self, epoch: int, row: dict, improved: bool) -> None:
        """best.pt (when the validation mean improved) then last.pt, atomically; process 0 only."""
        # every process's augmentation stream, so that a resume on as many processes continues each (a collective)
        augment_states = gather_rows(self.aug_generator.get_state().unsqueeze(0), self.processes)
        if not self.processes.main:
            return
        state = self.state(epoch, row, augment_states)
        # a full disk stops the run with the previous epoch's last.pt intact, from which it resumes (if there is one)
        resume_advice = disk_full_advice(self.run_dir)
        if improved:  # best.pt is for evaluation: without the training state (the optimiser's doubles the file)
            best = {k: v for k, v in state.items() if k not in ("optimizer_state", "scheduler_state", "rng", "raw_state")}
            atomic_torch_save(best, self.best_path, resume_advice)
        atomic_torch_save(state, self.last_path, resume_advice)

    # ------------------------------------------------------------------ the loop

    def prepare_cache(self) -> None:
        if self.uses_cache:
            self.cache = feature_cache(
                self.model, self.data, self.config, self.device, self.augment, self.run_dir.parent, self.reporter, self.processes
            )

    def fit(self, metrics_log: MetricsLog, result: TrainResult) -> TrainResult:
        """Epochs from the one after `start_epoch` to `config.epochs`, or to the early stop (piro_cli/convergence.py)."""
        config = self.config
        with _training_threads(config, self.device, self.processes):
            # The stop rule checks the statistic of the model before each epoch: each epoch's evaluation gives the next
            # one's; the first is the initial model's or, resuming, the checkpoint's.
            spread_before: Spread | None = None
            for epoch in range(self.start_epoch + 1, config.epochs + 1):
                epoch_start = time.perf_counter()
                if spread_before is None:
                    spread_before = object_spread(*self._spread_inputs())
                lr = self.optimizer.param_groups[0]["lr"] if self.optimizer is not None else 0.0
                mean_losses = self.epoch(epoch)
                if self.scheduler is not None:
                    self.scheduler.step()
                row: dict = {"epoch": epoch, "lr": lr}
                row.update({f"loss_{k}" if k != "total" else "loss": v for k, v in mean_losses.items()})
                row.update(spread_before.as_row())  # metrics.csv's d_intra_max, d_inter_min, rho: before this epoch
                evaluation, spread_after = self.evaluate()
                row.update(evaluation)
                row["seconds"] = time.perf_counter() - epoch_start
                score = row.get("val_mean", -math.inf)
                improved = self.data.val is None or score > self.best_score
                self.best_score = max(self.best_score, score) if self.data.val is not None else self.best_score
                # last.pt last: a run killed before it resumes from the previous epoch, which truncates metrics.csv to
                # it and redoes this epoch; killed after it, the epoch's row and best.pt are already written.
                if self.processes.main:
                    metrics_log.append(row)
                self.save(epoch, row, improved)
                result.history.append(row)
                result.epochs_done = epoch
                self.reporter.epoch(row)
                for logger in self.loggers:
                    logger.epoch(row)
                if broadcast(should_stop(spread_before, config.early_stop_rho), self.processes):  # process 0 decides for all
                    result.stop_reason = f"early stop: rho {spread_before.rho:.3f} > {config.early_stop_rho} before epoch {epoch}, stopped after it"
                    break
                spread_before = spread_after
        for logger in self.loggers:
            logger.finish(result.history)
        return result

    def epoch(self, epoch: int) -> dict[str, float]:
        """One epoch; returns the mean of each loss term over its steps (of the global batches)."""
        if self.optimizer is None:  # the untrained baseline: its one epoch is the evaluation after it
            return {}
        _train_mode(self.model, self.config)
        if self.plan is None:
            return self._epoch_of_objects(epoch)
        config, data = self.config, self.data
        labels_all = torch.as_tensor(data.train.category)
        pairs = data.train_indices[sample_pairs(self.plan, config.pairs_per_object, self.rng)]
        sums: dict[str, float] = {}
        steps = math.ceil(len(pairs) / config.batch_pairs)
        started = time.perf_counter()
        for step in range(steps):
            batch = pairs[step * config.batch_pairs : (step + 1) * config.batch_pairs]
            count = len(batch)
            objects = np.concatenate([batch[:, 0], batch[:, 1]])
            pair_views = sample_views(data.store.num_views, config.views, count, self.rng)
            view_idx = np.concatenate([pair_views, pair_views])  # a pair's two objects: the same views, in the same order
            mine = self.processes.share(count)
            local = np.concatenate([np.arange(count)[mine], count + np.arange(count)[mine]])  # this process's pairs
            with autocast(self.device, config.precision):
                out = self._forward(objects, view_idx, local)
                out_a, out_b = _split_pairs(out, mine.stop - mine.start)
                out_a, out_b = self._gather(out_a), self._gather(out_b)
                ids = torch.as_tensor(batch, device=self.device)
                losses = self.criterion(
                    out_a, out_b, labels_all[batch[:, 0]].to(self.device), object_ids=(ids[:, 0], ids[:, 1]),
                    feats=(out_a.feats, out_b.feats),
                )  # fmt: skip
            self._optimise(losses["total"], f"epoch {epoch}, step {step + 1}/{steps}")
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach())
            self.reporter.progress(f"epoch {epoch}/{config.epochs}", step + 1, steps)
            if step + 1 == min(steps, ESTIMATE_AFTER_STEPS) and not self._estimated:
                self._estimated = True
                self.reporter.info(estimate_line(time.perf_counter() - started, step + 1, steps, config.epochs - epoch + 1))
        return {key: value / steps for key, value in sums.items()}

    def _epoch_of_objects(self, epoch: int) -> dict[str, float]:
        """One epoch of a PIEs baseline: every training object once, in shuffled batches of `batch_objects` whole
        objects (METHOD.md section 8); returns the mean loss."""
        config, data = self.config, self.data
        labels_all = torch.as_tensor(data.train.category)
        batches = object_batches(len(data.train_indices), config.batch_objects, self.rng)
        total_sum = 0.0
        for step, rows in enumerate(batches):
            objects = data.train_indices[rows]
            view_idx = sample_views(data.store.num_views, config.views, len(objects), self.rng)
            local = np.arange(len(objects))[self.processes.share(len(objects))]
            with autocast(self.device, config.precision):
                out = self._gather(self._forward(objects, view_idx, local))
                total = self.criterion(out.sv_obj, out.mv_obj, labels_all[objects].to(self.device), pooled=out.pooled_obj)
            self._optimise(total, f"epoch {epoch}, step {step + 1}/{len(batches)}")
            total_sum += float(total.detach())
            self.reporter.progress(f"epoch {epoch}/{config.epochs}", step + 1, len(batches))
        return {"total": total_sum / len(batches)}

    def _forward(self, objects: np.ndarray, view_idx: np.ndarray, local: np.ndarray) -> _Output:
        """Embeddings of this process's rows `local` of the global batch (objects, view_idx); the cached passes are
        drawn for the whole batch, so every process consumes the generator alike."""
        if self.cache is not None:
            inputs = cached_batch(self.cache, objects, view_idx, self.rng)[torch.as_tensor(local)].to(self.device)
            values = self.step_module(inputs, self.cache["key"].get("train_from"), True)
        else:
            images = _image_batch(self.data.train, objects[local], view_idx[local], self.device, self.augment, self.aug_generator)
            values = self.step_module(images, None, False)
        return _Output(**values)

    def _gather(self, out: _Output) -> _Output:
        """Every process's rows of the batch, in order; this process's keep their gradient."""
        if not self.processes.active:
            return out
        return _Output(**{name: gather_rows(value, self.processes, keep_grad=True) for name, value in vars(out).items()})

    def _optimise(self, total: torch.Tensor, where: str) -> None:
        """One optimiser step on a batch's total loss; a NaN or infinite loss stops training instead."""
        if not torch.isfinite(total):
            saved = (
                f"the last good checkpoint is {self.last_path}"
                if self.last_path.is_file()
                else "no epoch had finished, so none was saved"
            )
            raise TrainingDiverged(f"loss became {float(total.detach())} at {where}; stopped: {saved}. Try a lower --lr.")
        self.optimizer.zero_grad(set_to_none=True)
        world = self.processes.world
        # N processes: N x the global loss through this process's rows; DDP's mean over processes is then the
        # one-process gradient (piro_cli.training.distributed)
        self.scaler.scale(total * world if world > 1 else total).backward()
        if world > 1:
            for parameter in self.criterion.parameters():  # computed whole on every process: N x, and not averaged
                if parameter.grad is not None:
                    parameter.grad.div_(world)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.average is not None:
            self.average.update()

    # ------------------------------------------------------------------ evaluation between epochs

    def _training_gallery(self) -> EmbeddingSet:
        """Embeddings of the training objects' un-augmented views, the model in eval mode."""
        data, cache = self.data, self.cache
        if cache is not None:
            feats = features_of_cached(self.model, cache, cache["train"][0, data.train_indices], self.device)  # clean pass
        else:
            progress = lambda done, total: self.reporter.progress("embedding training objects", done, total)  # noqa: E731
            feats = backbone_features(self.model, data.train, data.train_indices, self.device, progress=progress)
        return embed_features(self.model, feats, torch.as_tensor(data.train.category[data.train_indices]), self.device)

    def _spread_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        gallery = self._training_gallery()
        return gallery.sv_obj, gallery.labels

    def evaluate(self) -> tuple[dict, Spread]:
        """After an epoch: the PICR tasks on the validation objects (when there are any), and the progress statistic,
        of the weights' average with --ema-decay. Every process computes them (the same numbers), so that all take
        the same early-stop decision."""
        with self.average.averaged() if self.average is not None else contextlib.nullcontext():
            return self._evaluate()

    def _evaluate(self) -> tuple[dict, Spread]:
        data, cache = self.data, self.cache
        gallery = self._training_gallery()
        spread = object_spread(gallery.sv_obj, gallery.labels)
        if data.val is None:
            return {}, spread
        if cache is not None:
            source = cache["val"] if data.val is not data.train else cache["train"][0]
            val_feats = features_of_cached(self.model, cache, source[data.val_indices], self.device)
        else:
            progress = lambda done, total: self.reporter.progress("embedding validation objects", done, total)  # noqa: E731
            val_feats = backbone_features(self.model, data.val, data.val_indices, self.device, progress=progress)
        probes = embed_features(self.model, val_feats, torch.as_tensor(data.val.category[data.val_indices]), self.device)
        results = evaluate_picr(gallery, probes)
        row = {f"val_{task}": value for task, value in results.items()}
        row["val_mean"] = float(np.mean([results[t] for t in TASKS]))
        return row, spread


@dataclass
class _Output(PANOutput):
    """PANOutput plus the backbone features it came from (DVML reconstructs them)."""

    feats: torch.Tensor | None = None


# ----------------------------------------------------------------------------- train()


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
    saved leaves no run folder behind. Under torchrun every process calls this; process 0
    alone writes (piro_cli.training.distributed).
    """
    created: list[Path] = []
    try:
        with contextlib.ExitStack() as locks:  # released (its lock file removed) before the clean-up below
            return _train(config, reporter, resume, resume_epochs, locks, created)
    except BaseException as exc:
        for run_dir in created:
            _remove_unfinished_run(run_dir)
        folders = [*created, *([Path(resume) if Path(resume).is_dir() else Path(resume).parent] if resume else [])]
        how_on = resume_advice(next((f for f in folders if (f / "last.pt").is_file()), None))
        if isinstance(exc, KeyboardInterrupt):  # Ctrl-C or SIGTERM: say how to go on (the command line prints notes)
            exc.add_note(how_on)
        elif _lost_another_process(exc):
            raise PiroError(f"lost contact with another training process (it stopped or was killed); {how_on}") from None
        raise


def _lost_another_process(exc: BaseException) -> bool:
    """A collective failed because a peer process went away (gloo or NCCL: its socket closed or reset)."""
    import torch.distributed as dist

    if not isinstance(exc, RuntimeError) or not (dist.is_available() and dist.is_initialized()):
        return False
    text = str(exc)
    return any(sign in text for sign in ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "NCCL communicator was aborted"))


def _remove_unfinished_run(run_dir: Path) -> None:
    """Remove a run folder that no epoch was saved in: it has no last.pt, so nothing in it can be resumed (its first
    epoch's metrics.csv row and best.pt may be written, a full disk or a kill stopping it before last.pt); it holds
    only those files, config.json and this process's temporary files. A folder holding anything else is kept."""
    if not run_dir.is_dir():
        return
    files = list(run_dir.iterdir())
    ours = {"config.json", "metrics.csv", "best.pt", "tensorboard"}  # tensorboard/: the logger's events
    temporary = f".tmp-{os.getpid()}"
    if any(f.name not in ours and not f.name.endswith(temporary) for f in files):
        return
    with contextlib.suppress(OSError):  # never hide the error that stopped the run behind one of the clean-up
        for f in files:
            shutil.rmtree(f) if f.is_dir() else f.unlink()
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
    processes = from_environment(config.device)
    reporter = reporter if (reporter is not None and processes.main) else SilentReporter()
    started = time.perf_counter()
    checkpoint = None
    if resume is not None:
        resume_path = Path(resume)
        checkpoint = load_checkpoint(resume_path / "last.pt" if resume_path.is_dir() else resume_path)
        run_dir = Path(checkpoint["path"]).parent
        if processes.main:
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
        data_path = resume_data_path(given_data, checkpoint["data"]["path"])
    else:
        check_output_path(config.project, "--project", folder=True)
        data_path = resolve_data(config.data)
    reporter.info(f"data: {data_path}")
    folds = (config.fold, config.folds) if config.folds else None
    data = open_run_data(data_path, config.val_fraction, config.val_seed, checkpoint["data"] if checkpoint else None, folds)
    if checkpoint is None:  # a resumed run's saved config is resolved already
        cpu_only = pick_device(config.device).type != "cuda"
        config, resolution = config.resolved(data.store.source_dataset, data.store.num_views, cpu_only)
        for line in resolution.messages():
            reporter.info(line)
    checked_views(data.store.num_views, config.views)
    check_loggers(config.loggers)
    if get_method(config.method).family == "untrained" and checkpoint is None:
        # nothing trains: one pass of (clean) features, one "epoch" without steps, evaluated and saved as a run
        config = dataclasses.replace(
            config, epochs=1, freeze_backbone=True, train_from=None, feature_passes=1, augment=False, early_stop_rho=0.0
        )
        reporter.info(f"method backbone: no training; the {config.backbone} features, evaluated and saved as a run")

    device = device_for(processes, pick_device(config.device))
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
    if processes.active:
        reporter.info(f"{processes.world} processes ({'NCCL' if device.type == 'cuda' else 'gloo'}); each batch is sharded")
    if checkpoint is None:
        # process 0 names and creates the run folder; the others learn its name (they write nothing in it)
        run_dir = None
        if processes.main:
            run_dir = new_run_dir(Path(config.project), config.name)
            created.append(run_dir)
            locks.enter_context(OutputLock(run_dir, folder=True))
        run_dir = Path(broadcast(None if run_dir is None else str(run_dir), processes))
    if processes.main:
        tell_launcher(run_dir)
    trainer = Trainer(config, data, device, reporter, processes, run_dir)
    reporter.info(f"run folder: {run_dir}")
    metrics_log = MetricsLog(run_dir / "metrics.csv")
    if processes.main:
        if checkpoint is not None:  # before anything is written: refused if it lacks an epoch the checkpoint has
            metrics_log.truncate_after(int(checkpoint["epoch"]))
        config_record = {
            "train": config.to_dict(),
            "model": trainer.model_config.to_dict(),
            "loss": _loss_dict(trainer.loss_config),
            "data": data.describe(),
        }
        write_json(config_record, run_dir / "config.json", disk_full_advice(run_dir))
    if checkpoint is not None:
        trainer.resume(checkpoint)
        reporter.info(f"resuming {run_dir} after epoch {trainer.start_epoch}")
        if trainer.start_epoch >= config.epochs:
            reporter.info(
                f"{run_dir} has trained all its {config.epochs} epochs; to train more, resume with a larger total: "
                f"`piro train --resume {run_dir} --epochs {config.epochs + 5}`"
            )
    trainer.prepare_cache()
    history = metrics_log.read() if processes.main else []
    result = TrainResult(run_dir, trainer.start_epoch, trainer.best_path, trainer.last_path, history=history)
    if processes.main:
        trainer.loggers = open_loggers(config.loggers, run_dir, trainer.start_epoch)
    try:
        trainer.fit(metrics_log, result)
    finally:
        for logger in trainer.loggers:
            logger.close()
    processes.barrier()  # process 0's last checkpoint is written before any process returns
    result.seconds = time.perf_counter() - started
    return result


# ----------------------------------------------------------------------------- helpers


def _leaves_parameters_unused(config: TrainConfig, family: str) -> bool:
    """Whether some head or attention layer gets no gradient (DDP must then look for such parameters every step): a
    PiRO loss-term ablation that drops every term reading a space's view-set embedding, or a metric object loss."""
    if family != "piro":
        return False
    terms = set(config.losses)
    if config.obj_loss != "piro":
        return True
    if config.dual:
        return not {"piobj", "picat"} <= terms
    return not terms & {"piobj", "picat"}


def _train_mode(model: PAN, config: TrainConfig) -> None:
    """model.train(), except that with --train-from the backbone's BatchNorm layers keep their ImageNet statistics:
    the cached activations below the cut were computed with them, and a few objects' batch statistics are noise."""
    model.train()
    if config.train_from is not None:
        for module in model.backbone.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


@contextlib.contextmanager
def _training_threads(config: TrainConfig, device: torch.device, processes: Processes):
    """Torch threads for the run's training steps on a CPU (piro_cli.hardware.training_threads); processes on one
    machine share its cores."""
    previous = torch.get_num_threads()
    if device.type == "cpu":
        widest = max(config.obj_dim or 0, (config.cat_dim or 0) if config.dual else 0)
        available = max(1, previous // processes.world) if processes.active and "OMP_NUM_THREADS" not in os.environ else previous
        torch.set_num_threads(training_threads(config.freeze_backbone, widest, available))
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
