"""A labelled detection set that ships offline, and a small detector genuinely trained on it.

No labelled detection data set ships with edgeship's dependencies, so "digits on a conveyor" builds one:
scikit-learn's 8x8 digits, upscaled to varied sizes and aspect ratios, pasted with varied ink and
contrast on textured backgrounds (belt stripes, blotches, grain), lit unevenly, some partly hidden by
occluding bars, next to unlabelled clutter. Every box is exact: the tight box of the digit's visible
ink. Scenes are seeded and deterministic, and the split is by digit sample (a fixed partition of the
1,797 digits), so validation scenes show only digits that training never saw.

``train_detector`` trains a small torchvision FCOS (a five-conv body down to stride 8, one feature level,
two-conv head towers) from scratch on these scenes in minutes on a CPU, and caches its weights as .npz
(no pickle). It goes through ``edgeship.compress`` like any torchvision single-stage detector.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._arrays import load_npz_cache
from .._lazy import require
from .._progress import progress
from ..errors import ConfigError
from ..spec import InputSpec, Preprocess

Split = Literal["train", "val"]
_GLYPH = 8  # load_digits images are 8 x 8, values 0..16
_INK_MIN = 0.12  # bilinear tails below this alpha are cut, so the box holds every pixel the paste changed
_MAX_HIDDEN = 0.35  # occluders may hide at most this fraction of any digit's ink
SCENES_VERSION = 1  # bump when the generator's output changes: it keys the weight cache
_MEAN, _STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)  # the detector's input normalisation, in [0, 1] units


@dataclass(frozen=True)
class SceneConfig:
    """What a synthetic scene holds; frozen, so that it can key a cache of weights trained on it."""

    size: tuple[int, int] = (128, 128)  # (H, W) of each image
    digits: tuple[int, ...] = (0, 1, 2, 3, 4)  # digit classes that are labelled; label = index + 1
    objects: tuple[int, int] = (1, 4)  # labelled digits per scene, min..max inclusive
    scale: tuple[int, int] = (14, 40)  # digit height in pixels, min..max
    occlusion: float = 0.3  # chance that a digit gets an occluding bar over one side
    clutter: int = 2  # unlabelled shapes (rings, blobs, bolts) per scene, 0..clutter
    val_fraction: float = 0.3  # share of each class's digit samples kept for validation scenes
    split_seed: int = 0  # the train/val partition of digit samples; fixed apart from scene seeds

    def __post_init__(self) -> None:
        h, w = self.size
        lo, hi = self.scale
        if not self.digits or len(set(self.digits)) != len(self.digits) or not set(self.digits) <= set(range(10)):
            raise ConfigError(f"digits must be distinct values from 0 to 9, not {self.digits}")
        if not 0 < self.objects[0] <= self.objects[1]:
            raise ConfigError(f"objects must be (min, max) with 0 < min <= max, not {self.objects}")
        if not 8 <= lo <= hi <= min(h, w) // 2:
            raise ConfigError(f"scale must be (min, max) pixels with 8 <= min <= max <= {min(h, w) // 2}, "
                              f"not {self.scale}")
        if not 0.0 <= self.occlusion <= 1.0 or not 0.0 < self.val_fraction < 1.0 or self.clutter < 0:
            raise ConfigError("occlusion must lie in [0, 1], val_fraction in (0, 1) and clutter be >= 0")

    @property
    def num_classes(self) -> int:
        """Classes the detector predicts, background (label 0) included."""
        return len(self.digits) + 1

    @property
    def label_names(self) -> list[str]:
        """Name of each label: 'background' for 0, then the digits."""
        return ["background"] + [str(d) for d in self.digits]


# -- the digits and their split --------------------------------------------------------------------
def digit_glyphs(split: Split, config: SceneConfig = SceneConfig()) -> tuple[np.ndarray, np.ndarray]:
    """(glyphs (M, 8, 8) float in [0, 1], labels 1..K) of one split; the partition is fixed by ``split_seed``."""
    if split not in ("train", "val"):
        raise ConfigError(f"split must be 'train' or 'val', not {split!r}")
    datasets = require("sklearn.datasets", "synthetic detection scenes")
    digits = datasets.load_digits()
    rng = np.random.default_rng(config.split_seed)
    chosen = []
    for label, digit in enumerate(config.digits, start=1):
        idx = rng.permutation(np.flatnonzero(digits.target == digit))
        n_val = int(round(len(idx) * config.val_fraction))
        chosen.append((idx[:n_val] if split == "val" else idx[n_val:], label))
    index = np.concatenate([i for i, _ in chosen])
    labels = np.concatenate([np.full(len(i), label, dtype=np.int64) for i, label in chosen])
    return (digits.images[index] / 16.0).astype(np.float32), labels


def _clutter_glyphs(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unlabelled 8x8 shapes (rings, blobs, bolts): things on the belt that are not digits."""
    yy, xx = np.mgrid[0:_GLYPH, 0:_GLYPH] + 0.5
    out = np.zeros((n, _GLYPH, _GLYPH), dtype=np.float32)
    kind = rng.integers(0, 3, n)
    r = np.hypot(yy - 4, xx - 4)
    for i in range(n):
        if kind[i] == 0:  # ring
            out[i] = np.clip(1.2 - np.abs(r - rng.uniform(2.2, 3.3)) * 1.5, 0, 1)
        elif kind[i] == 1:  # filled blob
            out[i] = np.clip(rng.uniform(2.5, 3.8) - r, 0, 1)
        else:  # bolt: a thick bar at a random angle
            a = rng.uniform(0, np.pi)
            out[i] = np.clip(1.6 - np.abs((xx - 4) * np.sin(a) - (yy - 4) * np.cos(a)), 0, 1) * (r < 3.8)
    return out


# -- rendering -------------------------------------------------------------------------------------
def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) bilinear resampling weights, half-pixel centres (like cv2 / torch align_corners=False)."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = pos - lo
    m = np.zeros((n_out, n_in), dtype=np.float32)
    m[np.arange(n_out), lo] += 1 - frac
    m[np.arange(n_out), hi] += frac
    return m


def _resize(glyph: np.ndarray, h: int, w: int) -> np.ndarray:
    """An 8x8 glyph as an (h, w) alpha mask: bilinear, faint tails cut to exactly zero."""
    alpha = _interp_matrix(h, glyph.shape[0]) @ glyph @ _interp_matrix(w, glyph.shape[1]).T
    return np.where(alpha >= _INK_MIN, alpha, 0.0).astype(np.float32)


def _background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """(h, w, 3) float textured belt: base colour + stripes + low-frequency blotches + grain."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle, period, phase = rng.uniform(0, np.pi), rng.uniform(5, 32), rng.uniform(0, 2 * np.pi)
    stripes = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period + phase)
    stripes = stripes[..., None] * (rng.uniform(0, 30) * rng.uniform(0.6, 1.0, 3)).astype(np.float32)
    coarse = rng.normal(0, rng.uniform(0, 25), (3, 6, 6)).astype(np.float32)
    blotches = (_interp_matrix(h, 6) @ coarse @ _interp_matrix(w, 6).T).transpose(1, 2, 0)
    grain = rng.normal(0, rng.uniform(0, 12), (h, w, 3)).astype(np.float32)
    return rng.uniform(50, 205, 3).astype(np.float32) + stripes + blotches + grain


def _lighting(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Uneven light over the whole scene, digits included: gain, a linear falloff in a random direction, offset."""
    h, w, _ = image.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = ((xx - w / 2) * np.cos(angle) + (yy - h / 2) * np.sin(angle)) / max(h, w)  # about -0.7..0.7
    gain = rng.uniform(0.65, 1.25) * (1 + rng.uniform(0, 0.6) * ramp)
    return image * gain[..., None] + rng.uniform(-20, 20)


def _place(boxes: list[tuple[int, int, int, int]], h: int, w: int, H: int, W: int, rng: np.random.Generator,
           gap: int = 2) -> tuple[int, int] | None:
    """A top-left (y, x) for an h x w patch that keeps ``gap`` pixels from every placed box, or None."""
    for _ in range(30):
        y, x = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
        if all(x + w + gap <= bx0 or bx1 + gap <= x or y + h + gap <= by0 or by1 + gap <= y
               for by0, bx0, by1, bx1 in boxes):
            return y, x
    return None


def _render(background: np.ndarray, glyphs: np.ndarray, glyph_labels: np.ndarray, config: SceneConfig,
            rng: np.random.Generator, with_masks: bool) -> dict[str, np.ndarray]:
    """Paste digits, clutter and occluders on one background; the ground truth from what stays visible."""
    H, W = config.size
    image = background
    owner = np.full((H, W), -1, dtype=np.int32)  # who painted each pixel last: digit i, or -2 (other)
    ink = []  # (y, x, alpha) of each labelled digit
    placed: list[tuple[int, int, int, int]] = []
    labels = []
    items: list[tuple[np.ndarray, int]] = []  # (glyph, label or 0 for clutter)
    for k in rng.choice(len(glyphs), int(rng.integers(config.objects[0], config.objects[1] + 1)), replace=False):
        items.append((glyphs[k], int(glyph_labels[k])))
    items += [(g, 0) for g in _clutter_glyphs(int(rng.integers(0, config.clutter + 1)), rng)]
    for glyph, label in items:
        size = int(rng.integers(config.scale[0], config.scale[1] + 1))
        if label == 0:
            size = max(8, int(size * rng.uniform(0.5, 0.9)))
        h, w = size, max(6, int(round(size * rng.uniform(0.7, 1.15))))
        alpha = _resize(glyph, h, w) * rng.uniform(0.75, 1.0)
        at = _place(placed, h, w, H, W, rng)
        if at is None:
            continue
        y, x = at
        placed.append((y, x, y + h, x + w))
        patch = image[y : y + h, x : x + w]
        light = patch.mean() < 128 if rng.random() < 0.85 else patch.mean() >= 128  # mostly contrasting ink
        colour = rng.uniform(175, 255, 3) if light else rng.uniform(0, 80, 3)
        image[y : y + h, x : x + w] = patch * (1 - alpha[..., None]) + colour * alpha[..., None]
        if label:
            owner[y : y + h, x : x + w][alpha > 0] = len(ink)
            ink.append((y, x, alpha))
            labels.append(label)
        else:
            owner[y : y + h, x : x + w][alpha > 0] = -2
    for y, x, alpha in list(ink):
        if rng.random() >= config.occlusion:
            continue
        h, w = alpha.shape
        side = int(rng.integers(0, 4))  # top, bottom, left, right: a bar across that side
        frac = rng.uniform(0.15, 0.4)
        thick = rng.uniform(4, 10)
        if side < 2:
            bh = int(round(h * frac + thick))
            y0 = y - int(thick) if side == 0 else y + h - bh + int(thick)
            y0, y1 = max(0, y0), min(H, y0 + bh)
            x0, x1 = max(0, x - int(rng.integers(2, 12))), min(W, x + w + int(rng.integers(2, 12)))
        else:
            bw = int(round(w * frac + thick))
            x0 = x - int(thick) if side == 2 else x + w - bw + int(thick)
            x0, x1 = max(0, x0), min(W, x0 + bw)
            y0, y1 = max(0, y - int(rng.integers(2, 12))), min(H, y + h + int(rng.integers(2, 12)))
        trial = owner.copy()
        trial[y0:y1, x0:x1] = -2
        if any((trial[yy : yy + a.shape[0], xx : xx + a.shape[1]][a > 0] == i).mean() < 1 - _MAX_HIDDEN
               for i, (yy, xx, a) in enumerate(ink)):
            continue  # it would hide too much of some digit: no bar
        owner = trial
        shade = rng.uniform(30, 225, 3)
        image[y0:y1, x0:x1] = shade + rng.normal(0, 4, (y1 - y0, x1 - x0, 3))
    boxes = np.zeros((len(ink), 4), dtype=np.float32)
    masks = np.zeros((len(ink), H, W), dtype=bool)
    for i in range(len(ink)):
        masks[i] = owner == i
        ys, xs = np.nonzero(masks[i])
        boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)  # pixel edges: x2, y2 exclusive
    truth = {"boxes": boxes, "labels": np.asarray(labels, dtype=np.int64)}
    if with_masks:
        truth["masks"] = masks
    return truth


def make_scenes(n: int, split: Split = "train", seed: int = 0, config: SceneConfig = SceneConfig(), *,
                with_masks: bool = False) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
    """``n`` seeded scenes: (images (n, H, W, 3) uint8, per image {"boxes" (K, 4) x1y1x2y2 pixels, "labels" (K,)}).

    The same (split, seed, config) gives the same scenes, and scene i does not depend on ``n``. Boxes
    are the tight box of each labelled digit's visible ink, in pixel edges (ink in columns 3..9 gives
    x1 = 3, x2 = 10); labels are 1..K for ``config.digits`` (0 is background). ``with_masks`` adds
    each digit's visible ink as "masks" (K, H, W) bool — what its box is drawn around.
    """
    if n < 1:
        raise ConfigError(f"make_scenes needs n >= 1, not {n}")
    glyphs, glyph_labels = digit_glyphs(split, config)
    H, W = config.size
    images = np.empty((n, H, W, 3), dtype=np.uint8)
    truth = []
    for i in range(n):  # scene i has its own stream: the first k of n scenes are the k scenes of make_scenes(k)
        rng = np.random.default_rng([seed, 0 if split == "train" else 1, i])
        image = _background(H, W, rng)
        truth.append(_render(image, glyphs, glyph_labels, config, rng, with_masks))
        images[i] = np.clip(np.round(_lighting(image, rng)), 0, 255)
    return images, truth


# -- the detector ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainConfig:
    """How the small FCOS is built and trained; frozen, so that it keys the weight cache."""

    width: int = 32  # body channels at stride 4; stride 8 has twice as many (a multiple of 16: GroupNorm(32))
    head_convs: int = 2  # conv-GroupNorm-ReLU layers in each head tower (torchvision's FCOS uses 4)
    scenes: int = 3000  # training scenes, generated once
    epochs: int = 12
    batch_size: int = 16
    lr: float = 3e-3  # AdamW peak of a one-cycle schedule

    def __post_init__(self) -> None:
        if self.width < 16 or self.width % 16:
            raise ConfigError(f"width must be a positive multiple of 16, not {self.width}")
        if min(self.head_convs, self.scenes, self.epochs, self.batch_size) < 1 or self.lr <= 0:
            raise ConfigError("head_convs, scenes, epochs and batch_size must be >= 1 and lr > 0")


def detector_spec(config: SceneConfig = SceneConfig()) -> InputSpec:
    """The InputSpec the detector is compressed with: raw RGB uint8 in, resized to the scene size, normalised
    exactly as the detector's torchvision transform does in training."""
    h, w = config.size
    pre = Preprocess(scale=1 / 255, mean=_MEAN, std=_STD, resize="stretch")
    return InputSpec(shape=(None, 3, h, w), preprocess=pre)


def build_detector(scene: SceneConfig = SceneConfig(), train: TrainConfig = TrainConfig()) -> Any:
    """A random-init torchvision FCOS sized for the scenes: a five-conv body to stride 8, one feature level.

    One level: FCOS assigns objects to levels by regression distance (4x to 8x each level's stride),
    so digits of 14..40 pixels would all land on the stride-8 level anyway; a second level would only
    ever learn background.
    """
    nn = require("torch.nn", "the synthetic detector")
    detection = require("torchvision.models.detection", "the synthetic detector")
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.fcos import FCOSHead

    def block(cin: int, cout: int, stride: int = 1) -> list:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    c = train.width
    body = nn.Sequential(*block(3, c // 2, 2), *block(c // 2, c, 2), *block(c, c), *block(c, 2 * c, 2),
                         *block(2 * c, 2 * c))
    body.out_channels = 2 * c
    h, w = scene.size
    return detection.FCOS(
        body, scene.num_classes, min_size=min(h, w), max_size=max(h, w), image_mean=list(_MEAN), image_std=list(_STD),
        anchor_generator=AnchorGenerator(((8,),), ((1.0,),)),
        head=FCOSHead(2 * c, 1, scene.num_classes, num_convs=train.head_convs),
        score_thresh=0.05, nms_thresh=0.6, detections_per_img=50, topk_candidates=200)


def _cache_key(scene: SceneConfig, train: TrainConfig, seed: int, torch_version: str) -> str:
    text = (f"synthetic-fcos-v1|scenes-v{SCENES_VERSION}|{sorted(asdict(scene).items())}|"
            f"{sorted(asdict(train).items())}|{seed}|{torch_version}")
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def weights_path(scene: SceneConfig = SceneConfig(), train: TrainConfig = TrainConfig(), seed: int = 0,
                 cache_dir: str | os.PathLike | None = None) -> Path:
    """Where ``train_detector`` caches the weights of this (scene, train, seed) under this torch version."""
    from .._defaults import cache_dir as default_cache_dir

    torch = require("torch", "the synthetic detector")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return cache / f"synthetic_fcos_{_cache_key(scene, train, seed, torch.__version__)}.npz"


def train_detector(scene: SceneConfig = SceneConfig(), train: TrainConfig = TrainConfig(), seed: int = 0,
                   cache_dir: str | os.PathLike | None = None, show_progress: bool = True) -> Any:
    """Train the FCOS on seeded training scenes, or reload its cached .npz weights (no pickle); in eval mode.

    The cache key is the scene and training configs, the seed and the torch version. The returned model
    has ``train_seconds``: how long training took when the weights were made (also when reloaded).
    """
    torch = require("torch", "the synthetic detector")
    path = weights_path(scene, train, seed, cache_dir)
    torch.manual_seed(seed)
    model = build_detector(scene, train)
    stored = load_npz_cache(path, "synthetic FCOS weights")
    if stored is not None:
        model.load_state_dict({k: torch.from_numpy(v) for k, v in stored.items() if k != "_train_seconds"})
        model.train_seconds = float(stored["_train_seconds"])
        return model.eval()
    start = time.perf_counter()
    images, truth = make_scenes(train.scenes, "train", seed, scene)
    targets = [{"boxes": torch.from_numpy(t["boxes"]), "labels": torch.from_numpy(t["labels"])} for t in truth]
    steps_per_epoch = len(images) // train.batch_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=train.lr, pct_start=0.15,
                                                   total_steps=train.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    with progress(show_progress) as bar:
        task = bar.add_task("train synthetic FCOS", total=train.epochs * steps_per_epoch)
        for epoch in range(train.epochs):
            order = torch.randperm(len(images), generator=generator)[: steps_per_epoch * train.batch_size]
            total = 0.0
            for step, batch in enumerate(order.view(steps_per_epoch, train.batch_size).tolist(), start=1):
                x = torch.from_numpy(images[batch]).permute(0, 3, 1, 2).float().div_(255)
                losses = model(list(x), [targets[i] for i in batch])
                loss = sum(losses.values())
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                total += float(loss.detach())
                bar.update(task, advance=1, description=f"train synthetic FCOS: epoch {epoch + 1}/{train.epochs}, "
                                                        f"loss {total / step:.3f}")
    _recalibrate_batchnorm(model, images, train.batch_size)
    model.eval()
    model.train_seconds = time.perf_counter() - start
    from .._files import atomic_write

    with atomic_write(path) as fh:
        np.savez(fh, _train_seconds=np.float64(model.train_seconds),
                 **{k: v.detach().numpy() for k, v in model.state_dict().items()})
    return model


def _recalibrate_batchnorm(model: Any, images: np.ndarray, batch_size: int, limit: int = 1024) -> None:
    """Re-estimate the body's batch-norm statistics on the final weights: exact averages, not a running mean."""
    torch = require("torch", "the synthetic detector")
    pixels = (torch.from_numpy(images[start : start + batch_size]).permute(0, 3, 1, 2).float().div_(255)
              for start in range(0, min(len(images), limit), batch_size))
    torch.optim.swa_utils.update_bn((model.transform(list(x))[0].tensors for x in pixels), model.backbone)
