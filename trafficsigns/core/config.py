"""params.yaml, validated: one typed model per section, unknown keys and bad values refused up front.

No field has a default: params.yaml is the one place that sets them, so a missing key is an error, named.

Config flows one way: stages call `load_params()` once and pass the typed sections down to library code.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Annotated, ClassVar, Literal
from urllib.parse import urlsplit
from urllib.request import url2pathname

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trafficsigns.core.errors import PipelineError
from trafficsigns.core.paths import STAGE_OUTPUTS
from trafficsigns.data.colour_modes import COLOUR_MODES
from trafficsigns.data.sources import SOURCE_NAMES


class _Section(BaseModel):
    # extra="forbid" turns a typo such as `prepare.sise` into an error instead of a silent default;
    # allow_inf_nan=False refuses `.inf` and `.nan`, which YAML reads as floats, for every float key.
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=(), allow_inf_nan=False)


# Seeds go to NumPy's and Keras' generators, which take 0 <= seed < 2**32.
Seed = Annotated[int, Field(ge=0, le=2**32 - 1, description="random seed, 0 <= seed < 2**32")]


class SyntheticParams(_Section):
    # at most 1000 (GTSRB has ~30): the generator allocates every track, and track numbers are 5 digits
    train_tracks_per_class: float = Field(gt=0, le=1000, description="mean training tracks per class")
    test_tracks_per_class: float = Field(gt=0, le=1000, description="mean test tracks per class")
    frames_per_track: int = Field(ge=1, le=200)


def mirror_in_outputs(mirror: str, root: Path | None = None) -> Path | None:
    """The stage output folder (of STAGE_OUTPUTS, under `root`, default the working directory) that a local
    `data.mirror` lies in, or None (for a URL, "" or a folder outside them)."""
    url = urlsplit(mirror)
    if not mirror or url.scheme in ("http", "https"):
        return None
    local = Path(url2pathname(url.path)) if url.scheme == "file" else Path(mirror).expanduser()
    root = Path.cwd() if root is None else root
    where = (root / local).resolve()
    for output in STAGE_OUTPUTS:
        if where.is_relative_to((root / output).resolve()):
            return output
    return None


class DataParams(_Section):
    source: Literal[SOURCE_NAMES]  # type: ignore[valid-type]
    mirror: str = Field(description="base URL (http, https, file) or folder holding the official files")
    verify: bool
    timeout: float = Field(gt=0, le=3600, description="seconds a connection or a read may stall before a retry")
    min_rate: float = Field(ge=0, description="bytes/s a download must average over each `timeout` window; 0 = off")
    deadline: float = Field(gt=0, description="seconds one file's download may take, all attempts together")
    seed: Seed
    synthetic: SyntheticParams

    @field_validator("mirror")
    @classmethod
    def _mirror_outside_outputs(cls, mirror: str) -> str:
        """A mirror inside a stage's output would be emptied by DVC before (or after) the stage reads it."""
        inside = mirror_in_outputs(mirror)
        if inside:
            raise ValueError(
                f"{mirror!r} is inside {inside}/, a folder the pipeline writes (DVC empties a stage's "
                "outputs before the stage runs, so these files would be deleted); move them elsewhere"
            )
        return mirror


class PrepareParams(_Section):
    # `image_size` in params.yaml: DVC leaves keys named `size` out of its run-cache key (treeverse/dvc#10296),
    # so changing a `size` alone restored another size's outputs. `.size` here, as in the data's metadata.
    size: int = Field(ge=8, le=256, alias="image_size")
    mode: Literal[COLOUR_MODES]  # type: ignore[valid-type]
    roi_crop: bool
    val_fraction: float = Field(gt=0, lt=1)
    seed: Seed
    on_bad_image: Literal["error", "skip"]


class AugmentParams(_Section):
    """Offline augmentation of the training split (stage `augment`); copies 0 and balance 0 pass it through.

    Angles are in degrees (shear too, as in Keras' ImageDataGenerator: FIDLE's `shear_range=0.1` there is
    a 0.1° shear). Preset `fidle` sets the four geometric values to FIDLE GTSRB4's; it refuses explicit
    ones rather than silently ignore them. The photometric keys and `flip` apply with either preset.
    """

    preset: Literal["custom", "fidle"]
    copies: int = Field(ge=0, le=50, description="augmented versions of each training image; 0 = none")
    rotation: float = Field(ge=0, le=180, description="max rotation, degrees either way")
    shift: float = Field(ge=0, le=0.5, description="max shift per axis, fraction of the image size")
    zoom: float = Field(ge=0, lt=1, description="scale per axis drawn from [1 - zoom, 1 + zoom]")
    shear: float = Field(ge=0, le=45, description="max shear angle, degrees either way")
    brightness: float = Field(ge=0, le=1, description="max value added to every pixel, either way")
    contrast: float = Field(ge=0, lt=1, description="contrast factor drawn from [1 - contrast, 1 + contrast]")
    blur: float = Field(ge=0, le=5, description="max Gaussian blur sigma, pixels")
    noise: float = Field(ge=0, le=0.5, description="max standard deviation of added Gaussian noise")
    flip: bool = Field(description="class-aware flips and relabels (tables in trafficsigns/data/classes.py)")
    balance: int = Field(ge=0, le=100_000, description="augment every rarer class up to this count; 0 = off")
    seed: Seed

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


class ConvDenseParams(_Section):
    """Widths of a convolutional model with a hidden dense layer (v1, v2, v3, mnist_cnn)."""

    filters: int = Field(ge=1, le=1024, description="first conv width; later stages 2x and 4x")
    dense: int = Field(ge=1, le=8192, description="hidden dense width")
    dropout: float = Field(ge=0, lt=1, description="dropout before the classifier")


class ResnetParams(_Section):
    """Widths of our residual net: no dense layer (global average pooling)."""

    filters: int = Field(ge=1, le=1024, description="first stage's width; later stages 2x and 4x")
    dropout: float = Field(ge=0, lt=1, description="dropout before the classifier")


class DenseOnlyParams(_Section):
    """Widths of the dense-only network (no convolution, no dropout)."""

    dense: int = Field(ge=1, le=8192, description="width of both hidden dense layers")


class ModelParams(_Section):
    """`name` picks the model; each model has its own section of widths, so `-S model.v1.filters=48`
    changes v1 only (and DVC's `train` stage depends on the chosen model's section alone)."""

    name: Literal["v1", "v2", "v3", "resnet", "mnist_cnn", "dnn"]
    conv_dropout: float = Field(ge=0, lt=1, description="dropout after each conv block")
    v1: ConvDenseParams
    v2: ConvDenseParams
    v3: ConvDenseParams
    resnet: ResnetParams
    mnist_cnn: ConvDenseParams
    dnn: DenseOnlyParams

    def widths(self) -> dict:
        """The chosen model's own section: {filters, dense, dropout} or the subset that model uses."""
        return getattr(self, self.name).model_dump()

    def chosen(self) -> dict:
        """What the trained model depends on: its name, conv_dropout and its own section, not the others'."""
        return {"name": self.name, "conv_dropout": self.conv_dropout, **self.widths()}


class TrainParams(_Section):
    epochs: int = Field(ge=1, le=1000)
    batch_size: int = Field(ge=1, le=65536)
    learning_rate: float = Field(gt=0, le=10)
    seed: Seed
    optimizer: Literal["adam", "sgd"]
    momentum: float = Field(ge=0, lt=1, description="sgd only (Nesterov)")
    lr_schedule: Literal["constant", "cosine", "plateau"]
    early_stopping: int = Field(ge=0, description="stop after this many epochs without a better val accuracy; 0 = off")
    label_smoothing: float = Field(ge=0, lt=1)
    online_augment: bool = Field(description="random augment.* transforms on every batch (Keras layers)")
    mixed_precision: bool = Field(description="float16 on GPU, bfloat16 on CPUs with it (else float32); head float32")
    jit_compile: bool = Field(description="XLA-compile the training step")
    distribute: Literal["auto", "off"] = Field(description="auto: MirroredStrategy over all GPUs when >1")
    tensorboard: bool
    resume: bool


class EvaluateParams(_Section):
    batch_size: int = Field(ge=1, le=65536)
    errors_shown: int = Field(ge=0, le=400, description="images in the worst-errors gallery")
    ensemble: tuple[str, ...] = Field(
        description="model files or experiment names whose softmax outputs are averaged; empty = no committee"
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
    enabled: bool
    representative_count: int = Field(ge=1, le=100_000, description="training images that calibrate int8")


class DemystifyParams(_Section):
    enabled: bool = Field(description="write the demystify figures (about 30 s on 2 CPU cores)")


class ReportParams(_Section):
    images: int = Field(ge=0, le=32, description="test images whose feature maps the report shows")


class Params(_Section):
    data: DataParams
    prepare: PrepareParams
    augment: AugmentParams
    model: ModelParams
    train: TrainParams
    evaluate: EvaluateParams
    export: ExportParams
    demystify: DemystifyParams
    report: ReportParams

    def as_yaml(self) -> dict:
        """The parameters as params.yaml spells them (`prepare.image_size`, not the attribute `.size`)."""
        return self.model_dump(mode="json", by_alias=True)


MISSING_HINT = "params.yaml must set every key; see the committed params.yaml"


def _key(error: dict) -> str:
    return ".".join(str(p) for p in error["loc"])


def _describe(error: dict) -> str:
    if error["type"] == "extra_forbidden" and tuple(error["loc"]) == ("prepare", "size"):
        return "'prepare.size' is now 'prepare.image_size' (DVC's run-cache ignores keys named size, dvc#10296)"
    if error["type"] == "extra_forbidden":
        return f"unknown key '{_key(error)}' (a typo?)"
    return f"'{_key(error)}': {error['msg']} (given: {error.get('input')!r})"


def parse_params(raw: dict) -> Params:
    """Validate a params mapping; the error names every bad or missing key, what was given and what is allowed.

    There are no defaults in code: params.yaml is the one place that sets them, so every key must be there.
    """
    try:
        return Params.model_validate(raw or {})
    except ValidationError as exc:
        errors = exc.errors()
        problems = [_describe(e) for e in errors if e["type"] != "missing"]
        missing = [f"'{_key(e)}'" for e in errors if e["type"] == "missing"]
        if missing:
            verb = "is" if len(missing) == 1 else "are"
            problems.append(f"{', '.join(missing)} {verb} missing ({MISSING_HINT})")
        raise PipelineError(f"invalid params: {'; '.join(problems)}") from None


MAX_YAML_BYTES = 1 << 20  # params.yaml is 5 KB; grid.yaml less


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without anchors and aliases: nothing here needs them, and nested aliases ("billion laughs") make a
    few lines into an exponential structure as soon as it is copied or validated."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed", event.start_mark)
        return super().compose_node(parent, index)


def read_yaml(path: str | Path, kind: str):
    """The parsed YAML file; a missing, non-regular, huge, non-UTF-8 or malformed one is a one-line
    PipelineError naming it."""
    path = Path(path)
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # a folder, or a FIFO that would block the read
            raise PipelineError(f"{path}: not a regular file; expected a {kind} YAML file")
        if st.st_size > MAX_YAML_BYTES:
            raise PipelineError(f"{path}: {st.st_size} bytes, over the limit of {MAX_YAML_BYTES} for a {kind} file")
        text = path.read_bytes().decode("utf-8-sig")
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader)
    except FileNotFoundError:
        raise PipelineError(f"{path}: no such {kind} file") from None
    except UnicodeDecodeError as exc:
        raise PipelineError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#x} at offset {exc.start})") from None
    except OSError as exc:
        raise PipelineError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    raw = read_yaml(path, "params")
    if raw is not None and not isinstance(raw, dict):
        raise PipelineError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    return parse_params(raw)
