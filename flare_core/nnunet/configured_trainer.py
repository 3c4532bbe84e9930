"""An nnU-Net trainer that takes its hyper-parameters from the plans.

The planners store `TrainingSettings` in `plans["configurations"][cfg]
["flare_training"]`; this trainer reads them in `__init__`, so one class serves
the faithful and the small profiles, and a results folder's plans.json records
exactly how its model was trained. The constructor keeps nnU-Net's signature
(nnU-Net re-creates trainers from their saved init arguments).

Changes to stock nnU-Net, each only when the settings ask for it:
- epochs, iterations, learning rate, weight decay, momentum, oversampling;
- a share of the foreground patches centred on one rare class (focused_sampling.py);
- the optimizer (nnU-Net's SGD, or AdamW) and class-weighted cross-entropy
  (weights from the training set's class frequencies, see class_balance.py),
  optionally annealed to plain cross-entropy by the last epoch;
- bfloat16 autocast for training on CPUs that have native bfloat16 (nnU-Net
  uses mixed precision on CUDA only);
- elastic deformation: nnU-Net v2's SpatialTransform supports it but the
  stock pipeline sets its probability to 0; here it is switched on in the
  pipeline nnU-Net builds (nothing else of the pipeline is touched);
- no mirroring, in training and as test-time augmentation;
- checkpoint_latest every `save_every` epochs (resume granularity) and the
  progress plot only every `plot_every` epochs;
- checkpoints written atomically, read with `weights_only=True`, and the
  random state saved beside the latest one and restored on resume, so that an
  interrupted and resumed training equals an uninterrupted one (see
  checkpoint_files.py);
- `epoch_callback(epoch, train_loss, val_pseudo_dice, seconds)` after each
  epoch, for progress reporting by the caller.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.robust_ce_loss import RobustCrossEntropyLoss
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from flare_core.nnunet import checkpoint_files
from flare_core.nnunet.class_balance import class_frequencies, class_weights
from flare_core.nnunet.environment import cpu_has_native_bfloat16
from flare_core.nnunet.focused_sampling import focused_dataset_class
from flare_core.nnunet.model_loading import read_checkpoint
from flare_core.nnunet.settings import TRAINING_KEY, TrainingSettings

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, float, float, float], None]
LATEST = "checkpoint_latest.pth"


class PixelsAsPatchFraction:
    """Elastic smoothing width drawn in pixels, given to SpatialTransform as a
    fraction of the patch edge (its unit). A class, not a lambda, so the
    augmentation pipeline stays picklable for worker processes."""

    def __init__(self, low: float, high: float):
        self.low, self.high = float(low), float(high)

    def __call__(self, *args, patch_size=None, dim=None, **kwargs) -> float:
        edge = min(patch_size) if dim is None else patch_size[dim]
        return float(np.random.uniform(self.low, self.high)) / float(edge)


class ConfiguredTrainer(nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.flare_settings = TrainingSettings.from_dict(self.configuration_manager.configuration.get(TRAINING_KEY))
        s = self.flare_settings
        self.num_epochs = s.num_epochs
        self.num_iterations_per_epoch = s.iterations_per_epoch
        self.num_val_iterations_per_epoch = s.val_iterations_per_epoch
        self.initial_lr = s.initial_lr
        self.weight_decay = s.weight_decay
        self.oversample_foreground_percent = s.oversample_foreground
        self.enable_deep_supervision = s.deep_supervision
        self.save_every = max(1, s.save_every)
        self.epoch_callback: Optional[EpochCallback] = None
        self._throttle_progress_plot(max(1, s.plot_every))

    def configure_optimizers(self):
        s = self.flare_settings
        if s.optimizer == "sgd":
            optimizer = torch.optim.SGD(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay,
                                        momentum=s.momentum, nesterov=s.nesterov)
        elif s.optimizer == "adamw":
            optimizer = torch.optim.AdamW(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay)
        else:
            raise ValueError(f"unknown optimizer {s.optimizer!r}; use 'sgd' or 'adamw'")
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    def initialize(self):
        super().initialize()
        wrapped = getattr(self.network.forward, "flare_bfloat16", False)  # initialize() may run twice
        if self.flare_settings.cpu_bfloat16 and self.device.type == "cpu" and not wrapped:
            if cpu_has_native_bfloat16():
                # An instance attribute: the module, its state_dict and checkpoints are untouched.
                self.network.forward = _bfloat16_forward(self.network.forward)
                log.info("training in bfloat16 autocast on this CPU")
            else:
                log.info("this CPU has no native bfloat16; training in float32")

    def _build_loss(self):
        loss = super()._build_loss()
        power = self.flare_settings.ce_class_weight_power
        if power > 0:
            compound = getattr(loss, "loss", loss)  # inside nnU-Net's DeepSupervisionWrapper
            if not isinstance(compound, DC_and_CE_loss):
                raise RuntimeError(f"class-weighted CE needs nnU-Net's DC_and_CE_loss, got {type(compound).__name__}")
            num_classes = self.label_manager.num_segmentation_heads
            self._class_frequencies = class_frequencies(self.preprocessed_dataset_folder, num_classes)
            weights = class_weights(self._class_frequencies, power)
            log.info("cross-entropy class weights (power %.2f): %s", power, np.round(weights, 2).tolist())
            compound.ce = RobustCrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32, device=self.device),
                                                 ignore_index=compound.ce.ignore_index)
            self._weighted_ce = compound.ce
        return loss

    def class_weight_power(self, epoch: int) -> float:
        """The CE class-weight power at `epoch`: constant, or falling linearly to 0 at the last epoch."""
        s = self.flare_settings
        if not s.ce_class_weight_anneal:
            return s.ce_class_weight_power
        return s.ce_class_weight_power * max(0.0, 1.0 - epoch / max(1, self.num_epochs - 1))

    def on_epoch_start(self):
        ce = getattr(self, "_weighted_ce", None)
        if ce is not None and self.flare_settings.ce_class_weight_anneal:
            # Set from the epoch number alone, so a resumed run continues the same schedule.
            weights = class_weights(self._class_frequencies, self.class_weight_power(self.current_epoch))
            ce.weight.copy_(torch.as_tensor(weights, dtype=ce.weight.dtype))
        super().on_epoch_start()

    def get_dataloaders(self):
        s = self.flare_settings
        if s.focus_class is not None and s.focus_share > 0:
            base = self.dataset_class or infer_dataset_class(self.preprocessed_dataset_folder)
            base = getattr(base, "focus_base", base)  # get_dataloaders called again
            self.dataset_class = focused_dataset_class(base, s.focus_class, s.focus_share, s.focus_per_lesion)
            log.info("%.0f %% of foreground patches centred on class %d where a case has it",
                     100 * s.focus_share, s.focus_class)
        return super().get_dataloaders()

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch, mirror_axes = \
            super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        if not self.flare_settings.mirroring:
            mirror_axes = None
            self.inference_allowed_mirroring_axes = None  # saved in checkpoints: no mirrored TTA either
        return rotation, dummy_2d, initial_patch, mirror_axes

    def get_training_transforms(self, patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes,
                                do_dummy_2d_data_aug, use_mask_for_norm=None, is_cascaded=False,
                                foreground_labels=None, regions=None, ignore_label=None):
        pipeline = super().get_training_transforms(
            patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes, do_dummy_2d_data_aug,
            use_mask_for_norm, is_cascaded, foreground_labels, regions, ignore_label)
        s = self.flare_settings
        if s.elastic_probability > 0:
            spatial = [t for t in pipeline.transforms if isinstance(t, SpatialTransform)]
            for transform in spatial:
                transform.p_elastic_deform = s.elastic_probability
                transform.elastic_deform_scale = PixelsAsPatchFraction(*s.elastic_sigma_px)
                transform.elastic_deform_magnitude = tuple(float(v) for v in s.elastic_magnitude_px)
            if not spatial:
                raise RuntimeError("nnU-Net's training pipeline has no SpatialTransform to deform elastically")
        return pipeline

    def on_epoch_end(self):
        epoch = self.current_epoch
        super().on_epoch_end()  # logs, checkpoints, increments current_epoch
        if self.epoch_callback is not None:
            logger = self.logger
            seconds = logger.get_value("epoch_end_timestamps", epoch) - \
                logger.get_value("epoch_start_timestamps", epoch)
            self.epoch_callback(epoch, float(logger.get_value("train_losses", epoch)),
                                float(logger.get_value("mean_fg_dice", epoch)), float(seconds))

    def save_checkpoint(self, filename: str) -> None:
        if self.local_rank != 0 or self.disable_checkpointing:
            return super().save_checkpoint(filename)
        target, epoch = Path(filename), self.current_epoch + 1
        if target.name == LATEST:  # the one a resume starts from: its random state goes with it
            checkpoint_files.save_random_state(target, epoch)
        partial = target.with_name(f".{target.name}.writing")
        super().save_checkpoint(str(partial))  # nnU-Net's own content, into a side file...
        os.replace(partial, target)  # ...renamed into place: a kill leaves the old one whole
        if target.name == LATEST:
            checkpoint_files.keep_random_state_of(target, epoch)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        # nnU-Net replaces the init arguments with those stored in the
        # checkpoint (the plans of the interrupted run, e.g. fewer epochs);
        # later checkpoints should describe this run.
        init_kwargs = self.my_init_kwargs
        if not isinstance(filename_or_checkpoint, dict):
            # nnU-Net unpickles with weights_only=False (and only accepts a path):
            # the file is first proven to hold nothing but weights and plain values.
            path = Path(filename_or_checkpoint)
            epoch = int(read_checkpoint(path)["current_epoch"])
            self._random_state_to_restore = checkpoint_files.read_random_state(path, epoch)
            filename_or_checkpoint = str(path)
        super().load_checkpoint(filename_or_checkpoint)
        self.my_init_kwargs = init_kwargs

    def on_train_start(self):
        super().on_train_start()  # builds the data loaders, which draw a first batch
        state = getattr(self, "_random_state_to_restore", None)
        if state is not None:
            checkpoint_files.restore_random_state(state)
            self._random_state_to_restore = None
            log.info("resumed with the random state saved at epoch %d", state["epoch"])

    def on_train_end(self):
        super().on_train_end()  # writes checkpoint_final and removes checkpoint_latest
        checkpoint_files.keep_random_state_of(Path(self.output_folder) / LATEST, None)

    def _throttle_progress_plot(self, every: int) -> None:
        plot = self.logger.plot_progress_png

        def throttled(output_folder: str) -> None:
            epoch = self.current_epoch
            if (epoch + 1) % every == 0 or epoch + 1 >= self.num_epochs:
                plot(output_folder)

        self.logger.plot_progress_png = throttled


def _bfloat16_forward(forward: Callable) -> Callable:
    """`forward` under CPU bfloat16 autocast, its outputs back in float32 for the loss."""

    def autocast_forward(*args, **kwargs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output = forward(*args, **kwargs)
        if isinstance(output, (list, tuple)):
            return type(output)(o.float() for o in output)
        return output.float()

    autocast_forward.flare_bfloat16 = True
    return autocast_forward
