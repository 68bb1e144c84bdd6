"""params.yaml, validated: one typed model per section, unknown keys and bad values refused up front.

Config flows one way: stages call `load_params()` once and pass the typed sections down to library code.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trafficsigns.core.errors import PipelineError
from trafficsigns.data.colour_modes import COLOUR_MODES
from trafficsigns.data.sources import SOURCE_NAMES


class _Section(BaseModel):
    # extra="forbid" turns a typo such as `prepare.sise` into an error instead of a silent default.
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class SyntheticParams(_Section):
    train_tracks_per_class: float = Field(6, gt=0, description="mean training tracks per class")
    test_tracks_per_class: float = Field(2, gt=0, description="mean test tracks per class")
    frames_per_track: int = Field(15, ge=1, le=200)


class DataParams(_Section):
    source: Literal[SOURCE_NAMES] = "synthetic"  # type: ignore[valid-type]
    mirror: str = Field("", description="base URL (http, https, file) or folder holding the official files")
    verify: bool = True
    seed: int = 0
    synthetic: SyntheticParams = SyntheticParams()


class PrepareParams(_Section):
    size: int = Field(24, ge=8, le=256)
    mode: Literal[COLOUR_MODES] = "L"  # type: ignore[valid-type]
    roi_crop: bool = True
    val_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 0
    on_bad_image: Literal["error", "skip"] = "error"


class AugmentParams(_Section):
    """Offline augmentation of the training split (stage `augment`); copies 0 and balance 0 pass it through.

    Angles are in degrees (shear too, as in Keras' ImageDataGenerator: FIDLE's `shear_range=0.1` there is
    a 0.1° shear). Preset `fidle` sets the four geometric values to FIDLE GTSRB4's; it refuses explicit
    ones rather than silently ignore them. The photometric keys and `flip` apply with either preset.
    """

    preset: Literal["custom", "fidle"] = "custom"
    copies: int = Field(0, ge=0, le=50, description="augmented versions of each training image; 0 = none")
    rotation: float = Field(0.0, ge=0, le=180, description="max rotation, degrees either way")
    shift: float = Field(0.0, ge=0, le=0.5, description="max shift per axis, fraction of the image size")
    zoom: float = Field(0.0, ge=0, lt=1, description="scale per axis drawn from [1 - zoom, 1 + zoom]")
    shear: float = Field(0.0, ge=0, le=45, description="max shear angle, degrees either way")
    brightness: float = Field(0.0, ge=0, le=1, description="max value added to every pixel, either way")
    contrast: float = Field(0.0, ge=0, lt=1, description="contrast factor drawn from [1 - contrast, 1 + contrast]")
    blur: float = Field(0.0, ge=0, le=5, description="max Gaussian blur sigma, pixels")
    noise: float = Field(0.0, ge=0, le=0.5, description="max standard deviation of added Gaussian noise")
    flip: bool = Field(False, description="class-aware flips and relabels (tables in trafficsigns/data/classes.py)")
    balance: int = Field(0, ge=0, le=100_000, description="augment every rarer class up to this count; 0 = off")
    seed: int = Field(0, ge=0)

    GEOMETRY: ClassVar[tuple[str, ...]] = ("rotation", "shift", "zoom", "shear")
    PHOTOMETRY: ClassVar[tuple[str, ...]] = ("brightness", "contrast", "blur", "noise")

    @model_validator(mode="after")
    def _consistent(self) -> AugmentParams:
        explicit = [key for key in self.GEOMETRY if getattr(self, key)]
        if self.preset == "fidle" and explicit:
            raise ValueError(
                f"preset fidle sets {', '.join(self.GEOMETRY)}; leave {', '.join(explicit)} at 0 or use preset: custom"
            )
        if (self.copies or self.balance) and not self.any_transform():
            raise ValueError(
                "copies and balance need at least one transform (a geometric or photometric "
                "key, a preset or flip), or they would add plain duplicates"
            )
        return self

    def geometry(self) -> dict[str, float]:
        """The geometric ranges in effect: the preset's, or the keys' with preset custom."""
        if self.preset == "fidle":
            return {"rotation": 10.0, "shift": 0.1, "zoom": 0.2, "shear": 0.1}
        return {key: getattr(self, key) for key in self.GEOMETRY}

    def any_transform(self) -> bool:
        return self.flip or any(self.geometry().values()) or any(getattr(self, k) for k in self.PHOTOMETRY)


class ModelParams(_Section):
    name: Literal["v1", "v2", "v3", "resnet", "mnist_cnn", "dnn"] = "v1"
    filters: int | None = Field(None, ge=1, le=1024, description="first conv width; null = the model's own")
    dense: int | None = Field(None, ge=1, le=8192, description="dense width; null = the model's own")
    dropout: float | None = Field(None, ge=0, lt=1, description="dropout before the classifier; null = the model's own")
    conv_dropout: float = Field(0.2, ge=0, lt=1, description="dropout after each conv block")


class TrainParams(_Section):
    epochs: int = Field(5, ge=1, le=1000)
    batch_size: int = Field(64, ge=1, le=65536)
    learning_rate: float = Field(1e-3, gt=0, le=10)
    seed: int = 0
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only (Nesterov)")
    lr_schedule: Literal["constant", "cosine", "plateau"] = "constant"
    early_stopping: int = Field(
        0, ge=0, description="stop after this many epochs without a better val accuracy; 0 = off"
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    online_augment: bool = Field(False, description="random augment.* transforms on every batch (Keras layers)")
    mixed_precision: bool = Field(False, description="float16 on GPU, bfloat16 on CPU; the head stays float32")
    jit_compile: bool = Field(False, description="XLA-compile the training step")
    distribute: Literal["auto", "off"] = Field("auto", description="auto: MirroredStrategy over all GPUs when >1")
    tensorboard: bool = False
    resume: bool = False


class EvaluateParams(_Section):
    batch_size: int = Field(256, ge=1, le=65536)
    errors_shown: int = Field(24, ge=0, le=400, description="images in the worst-errors gallery")
    ensemble: tuple[str, ...] = Field(
        (), description="model files or experiment names whose softmax outputs are averaged; empty = no committee"
    )

    @field_validator("ensemble")
    @classmethod
    def _a_committee_has_members(cls, members: tuple[str, ...]) -> tuple[str, ...]:
        if len(members) == 1:
            raise ValueError("a committee needs at least two members (or none)")
        if len(set(members)) != len(members):
            raise ValueError("a member is listed twice")
        return members


class ExportParams(_Section):
    enabled: bool = False
    representative_count: int = Field(500, ge=1, le=100_000, description="training images that calibrate int8")


class DemystifyParams(_Section):
    enabled: bool = Field(False, description="write the demystify figures (about 30 s on 2 CPU cores)")


class ReportParams(_Section):
    images: int = Field(4, ge=0, le=32, description="test images whose feature maps the report shows")


class Params(_Section):
    data: DataParams = DataParams()
    prepare: PrepareParams = PrepareParams()
    augment: AugmentParams = AugmentParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    export: ExportParams = ExportParams()
    demystify: DemystifyParams = DemystifyParams()
    report: ReportParams = ReportParams()


def _describe(error: dict) -> str:
    key = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown key '{key}' (a typo?)"
    return f"'{key}': {error['msg']} (given: {error.get('input')!r})"


def parse_params(raw: dict) -> Params:
    """Validate a params mapping; the error names every bad key, what was given and what is allowed."""
    try:
        return Params.model_validate(raw or {})
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise PipelineError(f"invalid params: {problems}") from None


def read_yaml(path: str | Path, kind: str):
    """The parsed YAML file; a missing or malformed one is a one-line PipelineError naming it."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: no such {kind} file") from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML: {exc}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    raw = read_yaml(path, "params")
    if raw is not None and not isinstance(raw, dict):
        raise PipelineError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    return parse_params(raw)
