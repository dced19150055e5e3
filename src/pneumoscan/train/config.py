"""The settings of ``pneumoscan train``: one frozen dataclass, with what each default means."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from pneumoscan.anatomy.front import LUNG_OPTIONS
from pneumoscan.cache import ENGINES
from pneumoscan.data.preprocess import INTENSITY_MODES, Augmentation
from pneumoscan.data.tasks import TaskSettings
from pneumoscan.evaluate.metrics import THRESHOLD_RULES
from pneumoscan.input_checks.checks import InputCheckSettings
from pneumoscan.models.networks import MODELS, PRETRAINED
from pneumoscan.storage import default_cache_dir

STAGES = ("head", "tail", "full")


@dataclass(frozen=True)
class HeadStage:
    """Stage head: the backbone frozen, the head trained on cached pooled features (``--set head.lr=...``)."""

    epochs: int = 30
    lr: float = 1e-3                   # cosine decay from lr to lr_min
    lr_min: float = 1e-4


@dataclass(frozen=True)
class TailStage:
    """Stage tail: the last block and the head fine-tuned on cached trunk activations."""

    epochs: int = 10
    lr: float = 1e-4
    lr_min: float = 1e-5
    fraction: float = 1.0              # share of the last block's layers trained, counted from the end


@dataclass(frozen=True)
class FullStage:
    """Stage full: every layer trained on images (a GPU advised)."""

    epochs: int = 20
    lr: float = 1e-3
    lr_min: float = 1e-5


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; written to ``config.json`` in its run folder."""

    recipe: str = ""                   # the named recipe these settings started from (train.recipes), if any
    data: str = ""                     # dataset root (ROOT/<split>/<class>/ images) or a path,label CSV
    classes: str = ""                  # folder (or label) -> class, e.g. "notumor=0,glioma=1,meningioma=1,
                                       # pituitary=1"; "" = one class per folder or label, sorted by name
    out: str = "runs/train"            # run folder: config, split, checkpoints, metrics, plots, log
    model: str = "densenet121"         # one of models.MODELS
    weights: str = "auto"              # "auto" (imagenet for pretrained models, none for baseline_cnn),
                                       # "imagenet" (torchvision download), "none", or a state-dict path
    allow_partial_weights: bool = False  # accept a weights file that lacks some tensors (reported)
    head_hidden: int = 128             # head: GAP -> Dropout(dropout_in) -> Dense(head_hidden) -> ReLU
    dropout_in: float = 0.5            #       -> Dropout(dropout_hidden) -> Dense(1)
    dropout_hidden: float = 0.3
    seed: int = 0                      # one seed for the split, augmentation, init and batch order
    val_fraction: float = 0.15         # share of train patients (or duplicate groups) held out for validation
    group_by: str = "patient"          # what stays on one side of the split: "patient" (read from file names
                                       # such as person12_bacteria_3.jpeg; other names are their own patient)
                                       # or "duplicates" (exact and near duplicate images, by perceptual hash)
    split: str = ""                    # reuse a split.csv from an earlier run instead of drawing one
    image_size: int = 224              # square input side
    intensity: str = "none"            # per-image intensity normalization: "none" or "percentile"
    segmenter: str = ""                # a lung segmenter (run folder or segmenter.pt, pneumoscan segment train):
                                       # screening then draws the lungs (as pneumoscan segment attach does)
    lungs: str = "none"                # what the network sees: "none" (the whole film), "crop" (the lung field's
                                       # box) or "mask" (the lung field, the rest grey); crop and mask need segmenter
    augmentation: Augmentation = field(default_factory=Augmentation)
    train_views: int = 4               # augmented views of each train image cached for stages head/tail
    stages: tuple[str, ...] = ()       # () = auto: ("head", "tail") for pretrained, ("full",) otherwise
    batch_size: int = 32
    head: HeadStage = field(default_factory=lambda: HeadStage())  # the stages' epochs and learning rates
    tail: TailStage = field(default_factory=lambda: TailStage())
    full: FullStage = field(default_factory=lambda: FullStage())
    weight_decay: float = 1e-4         # AdamW decoupled weight decay (the L2 of the recipe)
    patience: int = 5                  # early stopping: epochs without a better validation score
    select_on: str = "auto"            # that score, which also picks the kept epoch: "auc", "accuracy", or
                                       # "auto" (ROC-AUC for two classes; accuracy for more, whose one-vs-rest
                                       # AUC saturates near 0.996 while accuracy still climbs)
    pos_weight: float = 0.0            # two classes: BCE positive-class weight; 0 = pos_weight_scale * n_negative /
    pos_weight_scale: float = 1.0      #   n_positive of the training split (more classes: cross-entropy weighted
                                       #   n / (K n_class)); the class weight follows the data
    label_smoothing: float = 0.1       # more than two classes: cross-entropy label smoothing (0 = none); two
                                       # classes keep plain BCE and their validation-chosen threshold
    threshold_rule: str = "youden"     # on validation: "youden", "sensitivity" or "fixed"
    target_sensitivity: float = 0.95   # for threshold_rule="sensitivity"
    threshold_on: str = "val+shifts"   # "val": clean validation images; "val+shifts": validation images
                                       # plus the same images under data.shifts.SHIFTS (acquisition shifts),
                                       # a threshold that holds up when images are taken differently
    shift_report: bool = True          # report validation metrics under each acquisition shift
    shift_images: int = 400            # validation images used under the shifts (evenly spaced; 0 = all)
    precision: str = "bf16"            # "bf16": bfloat16 autocast + channels_last; "fp32"
    cache_dir: str = ""                # where frozen-trunk activations are cached; "" = $PNEUMOSCAN_CACHE, else
                                       # ~/.cache/pneumoscan
    cache_engine: str = "auto"         # what computes them: "auto" (ONNX Runtime for large fp32 caches on a
                                       # CPU, PyTorch otherwise), "torch" or "onnxruntime"
    workers: int = 2                   # image-decoding worker processes
    threads: int = 0                   # torch CPU threads; 0 = torch's default
    device: str = "auto"               # "auto" (CUDA when present), "cpu" or "cuda"
    train_split: str = "train"         # the split folder trained on (validation is carved out of it)
    test_split: str = "test"           # split evaluated once at the end ("" to skip)
    n_boot: int = 1000                 # bootstrap resamples for confidence intervals
    input_checks: InputCheckSettings = field(default_factory=InputCheckSettings)  # refuse / flag (input_checks)
    task: TaskSettings = field(default_factory=TaskSettings)  # the task's words for its description (data.tasks):
                                       # modality, population, intended use...; "" = task.json or the data's defaults

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"model={self.model!r}: choose one of {sorted(MODELS)}")
        if self.intensity not in INTENSITY_MODES:
            raise ValueError(f"intensity={self.intensity!r}: choose one of {INTENSITY_MODES}")
        if self.threshold_rule not in THRESHOLD_RULES:
            raise ValueError(f"threshold_rule={self.threshold_rule!r}: choose one of {THRESHOLD_RULES}")
        if self.threshold_on not in ("val", "val+shifts"):
            raise ValueError(f"threshold_on={self.threshold_on!r}: choose val or val+shifts")
        if self.precision not in ("bf16", "fp32"):
            raise ValueError(f"precision={self.precision!r}: choose bf16 or fp32")
        if self.cache_engine not in ENGINES:
            raise ValueError(f"cache_engine={self.cache_engine!r}: choose one of {ENGINES}")
        unknown = set(self.stages) - set(STAGES)
        if unknown:
            raise ValueError(f"stages {sorted(unknown)} unknown: choose from {STAGES}")
        if self.model not in PRETRAINED and set(self.stages) & {"head", "tail"}:
            raise ValueError(f"stages {list(self.stages)}: stages head and tail train on a frozen pretrained trunk, "
                             f"which {self.model} has not; use stages=full (the quick recipe needs one of "
                             f"{sorted(PRETRAINED)})")
        if self.lungs not in LUNG_OPTIONS:
            raise ValueError(f"lungs={self.lungs!r}: choose one of {LUNG_OPTIONS}")
        if self.lungs != "none" and not self.segmenter:
            raise ValueError(f"lungs={self.lungs}: name the lung segmenter with segmenter=RUN (from pneumoscan "
                             f"segment train)")
        if self.group_by not in ("patient", "duplicates"):
            raise ValueError(f"group_by={self.group_by!r}: choose patient or duplicates")
        if self.select_on not in ("auto", "auc", "accuracy"):
            raise ValueError(f"select_on={self.select_on!r}: choose auto, auc or accuracy")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing={self.label_smoothing}: choose a value in [0, 1)")
        if self.train_views < 1 or self.batch_size < 1:
            raise ValueError("train_views and batch_size must be at least 1")

    def resolved(self) -> TrainConfig:
        """The same settings with every "auto" replaced by what it means for this model."""
        stages = self.stages or (("head", "tail") if self.model in PRETRAINED else ("full",))
        weights = self.weights
        if weights == "auto":
            weights = "imagenet" if self.model in PRETRAINED else "none"
        cache_dir = self.cache_dir or str(default_cache_dir())
        return replace(self, stages=tuple(stages), weights=weights, cache_dir=cache_dir)

    def stage(self, name: str) -> HeadStage | TailStage | FullStage:
        """The epochs and learning rates of stage ``name``."""
        return {"head": self.head, "tail": self.tail, "full": self.full}[name]

    def selection_score(self, classes: int) -> str:
        """The validation score early stopping follows for a task of ``classes`` classes."""
        if self.select_on != "auto":
            return self.select_on
        return "auc" if classes == 2 else "accuracy"

    def trains_on_clean_views(self) -> bool:
        """Whether the cached stages train on the clean views themselves (one view, no augmentation: the quick
        recipe), so that no augmented views are cached."""
        return self.train_views == 1 and self.augmentation.changes_nothing()

    def cached_views_per_image(self) -> int:
        """Trunk views the cached stages store per image: the augmented ones and the clean one, or the clean alone."""
        return 1 if self.trains_on_clean_views() else self.train_views + 1

    def weights_argument(self) -> str | None:
        """The ``weights=`` value for the model builder."""
        return None if self.weights in ("none", "", "auto") else self.weights
