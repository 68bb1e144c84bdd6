"""params.yaml, validated: one typed model per section, unknown keys and bad values refused up front.

Config flows one way: stages call `load_params()` once and pass the typed sections down to library code.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trafficsigns.errors import PipelineError

COLOUR_MODES = ("RGB", "RGB-HE", "L", "L-HE", "L-LHE", "L-CLAHE")


class _Section(BaseModel):
    # extra="forbid" turns a typo such as `prepare.sise` into an error instead of a silent default.
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class SyntheticParams(_Section):
    train_tracks_per_class: float = Field(6, gt=0, description="mean training tracks per class")
    test_tracks_per_class: float = Field(2, gt=0, description="mean test tracks per class")
    frames_per_track: int = Field(30, ge=1, le=200)


class DataParams(_Section):
    source: Literal["synthetic", "gtsrb", "mnist"] = "synthetic"
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


class ModelParams(_Section):
    name: Literal["v1", "mnist_cnn", "dnn"] = "v1"
    filters: Optional[int] = Field(None, ge=1, le=1024, description="first conv width; null = the model's own")
    dense: Optional[int] = Field(None, ge=1, le=8192, description="dense width; null = the model's own")
    dropout: float = Field(0.5, ge=0, lt=1, description="dropout before the classifier")
    conv_dropout: float = Field(0.2, ge=0, lt=1, description="dropout after each conv block")


class TrainParams(_Section):
    epochs: int = Field(5, ge=1, le=1000)
    batch_size: int = Field(64, ge=1, le=65536)
    learning_rate: float = Field(1e-3, gt=0, le=10)
    seed: int = 0
    tensorboard: bool = False
    resume: bool = False


class EvaluateParams(_Section):
    batch_size: int = Field(512, ge=1, le=65536)
    errors_shown: int = Field(24, ge=0, le=400, description="images in the worst-errors gallery")


class ExportParams(_Section):
    enabled: bool = False
    representative_count: int = Field(500, ge=1, le=100_000, description="training images that calibrate int8")


class Params(_Section):
    data: DataParams = DataParams()
    prepare: PrepareParams = PrepareParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    export: ExportParams = ExportParams()


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


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: no such params file") from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML: {exc}") from None
    if raw is not None and not isinstance(raw, dict):
        raise PipelineError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    return parse_params(raw)
