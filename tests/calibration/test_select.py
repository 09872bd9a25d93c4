"""Subset selection on real data (the digits): seeded random, stratified by label, diverse (k-center)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from edgeship import ConfigError, demo
from edgeship.calibration import from_arrays, from_dataset
from edgeship.calibration._select import cheap_embedding, covering_radius, k_center, stratified_quotas
from torch.utils.data import DataLoader, Dataset, TensorDataset

SPEC = demo.DIGITS_SPEC  # (None, 1, 32, 32), raw uint8 NHWC in


def rows(calib) -> list[int]:
    return [int(o.split()[1]) for o in calib.origins]


@pytest.fixture(scope="module")
def digits():
    x, y, _, _ = demo.digits_data()
    return x, y


@pytest.fixture(scope="module")
def pixel_embeddings(digits):
    return cheap_embedding(SPEC.apply_preprocess(digits[0]), SPEC)


# -- stratified -----------------------------------------------------------------------------------
def test_stratified_quotas_are_proportional_with_largest_remainder():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    assert stratified_quotas(labels, 10) == {0: 5, 1: 3, 2: 2}
    assert stratified_quotas(labels, 7) == {0: 4, 1: 2, 2: 1}  # 3.5, 2.1, 1.4: the extra one goes to class 0
    assert stratified_quotas(labels, 1000) == {0: 50, 1: 30, 2: 20}  # never more than there are
    assert stratified_quotas(np.array(["cat", "dog", "dog"]), 2) == {"cat": 1, "dog": 1}


def test_labels_make_the_draw_stratified(digits):
    x, y = digits
    calib = from_arrays(x, SPEC, labels=y, size=100, seed=0, preprocess=True)
    assert calib.selection == "stratified" and len(calib) == 100
    counts = Counter(calib.labels.tolist())
    frequencies = Counter(y.tolist())
    for cls, n in frequencies.items():
        assert abs(counts[cls] - 100 * n / len(y)) < 1, cls  # proportional, rounded
    assert calib.labels.tolist() == y[rows(calib)].tolist()  # each label belongs to its sample
    np.testing.assert_array_equal(calib.as_batch(), SPEC.apply_preprocess(x[rows(calib)]))
    again = from_arrays(x, SPEC, labels=y, size=100, seed=0, preprocess=True)
    other = from_arrays(x, SPEC, labels=y, size=100, seed=1, preprocess=True)
    assert again.sha256 == calib.sha256 and other.sha256 != calib.sha256


def test_stratified_keeps_a_rare_class_that_random_misses(digits):
    """A class with 1 % of the data: a stratified draw of 100 holds exactly its share."""
    x, y = digits
    keep = np.flatnonzero(y != 3)
    threes = np.flatnonzero(y == 3)[:10]
    index = np.sort(np.concatenate([keep[:990], threes]))
    calib = from_arrays(x[index], SPEC, labels=y[index], size=100, preprocess=True)
    assert Counter(calib.labels.tolist())[3] == 1
    random = from_arrays(x[index], SPEC, labels=y[index], size=100, select="random", preprocess=True)
    assert random.selection == "random" and random.labels is not None


def test_selection_errors(digits):
    x, y = digits
    with pytest.raises(ConfigError, match="select='stratified' needs labels"):
        from_arrays(x, SPEC, select="stratified", preprocess=True)
    with pytest.raises(ConfigError, match=r"select must be one of \('random', 'stratified', 'diverse'\)"):
        from_arrays(x, SPEC, select="kmeans", preprocess=True)
    with pytest.raises(ConfigError, match="labels has 3 entries but the array has"):
        from_arrays(x, SPEC, labels=[1, 2, 3], preprocess=True)
    with pytest.raises(ConfigError, match="size must be an integer >= 1"):
        from_arrays(x, SPEC, size=0, preprocess=True)


# -- diverse --------------------------------------------------------------------------------------
def test_k_center_picks_the_extremes_of_a_line():
    points = np.array([[0.0], [1.0], [2.0], [2.1], [5.0], [10.0]])
    for seed in range(5):
        picks = k_center(points, 3, seed).tolist()
        assert picks[0] == np.random.default_rng(seed).integers(6)  # a seeded start
        assert picks[1] == np.argmax(np.abs(points[:, 0] - points[picks[0], 0]))  # then the farthest point
        assert 0 in picks or 5 in picks
    assert k_center(points, 3, 1).tolist() == k_center(points, 3, 1).tolist()
    assert k_center(points, 10, 0).size == 6


def test_diverse_covers_the_digits_better_than_random(digits, pixel_embeddings):
    x, _ = digits
    for seed in range(3):
        diverse = from_arrays(x, SPEC, size=30, select="diverse", seed=seed, preprocess=True)
        random = from_arrays(x, SPEC, size=30, select="random", seed=seed, preprocess=True)
        assert diverse.selection == "diverse"
        # k-center minimises the largest distance from any image to its nearest chosen one
        assert covering_radius(pixel_embeddings, rows(diverse)) < covering_radius(pixel_embeddings, rows(random))
    assert rows(diverse) == rows(from_arrays(x, SPEC, size=30, select="diverse", seed=seed, preprocess=True))


def test_diverse_never_picks_a_duplicate_while_new_images_remain(digits):
    """20 distinct digits, each 5 times: a diverse 20 holds each once; a random 20 repeats some."""
    x, _ = digits
    repeated = np.repeat(x[:20], 5, axis=0)
    diverse = from_arrays(repeated, SPEC, size=20, select="diverse", preprocess=True)
    assert sorted(r // 5 for r in rows(diverse)) == list(range(20))
    random = from_arrays(repeated, SPEC, size=20, select="random", preprocess=True)
    assert len({r // 5 for r in rows(random)}) < 20


def test_diverse_on_a_model_s_penultimate_features(digits, digits_model):
    """embed= takes the model's own view of similarity: the CNN without its classifier."""
    x, _ = digits
    backbone = torch.nn.Sequential(*list(digits_model.children())[:-1]).eval()
    calls = []

    def features(batch: np.ndarray):
        calls.append(batch.shape)
        with torch.inference_mode():
            return backbone(torch.from_numpy(batch))  # a torch tensor is accepted

    calib = from_arrays(x, SPEC, size=25, select="diverse", preprocess=True, embed=features)
    assert len(calib) == 25 and calls and all(s[1:] == (1, 32, 32) for s in calls)
    with torch.inference_mode():
        embedded = backbone(torch.from_numpy(SPEC.apply_preprocess(x))).numpy()
    random = from_arrays(x, SPEC, size=25, select="random", preprocess=True)
    assert covering_radius(embedded, rows(calib)) < covering_radius(embedded, rows(random))
    assert rows(calib) != rows(from_arrays(x, SPEC, size=25, select="diverse", preprocess=True))  # not the pixels'


def test_embed_must_return_one_row_per_sample(digits):
    x, _ = digits
    with pytest.raises(ConfigError, match=r"embed\(batch\) must return an array \(N, D\) with N = 256 rows"):
        from_arrays(x, SPEC, size=5, select="diverse", preprocess=True, embed=lambda b: b[:3].reshape(3, -1))
    with pytest.raises(ConfigError, match="NaN or Inf"):
        from_arrays(x, SPEC, size=5, select="diverse", preprocess=True, embed=lambda b: np.full((len(b), 2), np.nan))


# -- torch datasets -------------------------------------------------------------------------------
class Pairs(Dataset):
    """(raw image, label) items, with no ``targets`` attribute: labels are known only by reading."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def test_dataset_with_known_labels_is_stratified(digits):
    x, y = digits
    dataset = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    calib = from_dataset(dataset, SPEC, size=50, preprocess=True)
    assert calib.selection == "stratified" and calib.source == f"TensorDataset of {len(x)} items"
    assert calib.summary()["class_counts"] == {str(k): v for k, v in stratified_quotas(y, 50).items()}
    same = from_arrays(x, SPEC, labels=y, size=50, preprocess=True)
    assert calib.sha256 == same.sha256  # a dataset and its arrays give the same draw


def test_dataset_labels_read_from_items(digits):
    x, y = digits
    dataset = Pairs(x, y)
    calib = from_dataset(DataLoader(dataset, batch_size=32, shuffle=True), SPEC, size=40, preprocess=True)
    assert calib.selection == "random"  # labels are not known up front
    assert calib.labels.tolist() == y[rows(calib)].tolist()  # but the chosen items' labels are recorded
    stratified = from_dataset(dataset, SPEC, size=40, select="stratified", preprocess=True)
    assert stratified.selection == "stratified"
    assert stratified.sha256 == from_arrays(x, SPEC, labels=y, size=40, preprocess=True).sha256


def test_dataset_stream_is_sampled_at_random_only(digits):
    x, _ = digits

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(torch.from_numpy(x[:64]))

    calib = from_dataset(Stream(), SPEC, size=10, preprocess=True)
    assert len(calib) == 10 and "64 samples read" in calib.source
    with pytest.raises(ConfigError, match="select='diverse' needs random access"):
        from_dataset(Stream(), SPEC, select="diverse", preprocess=True)
    with pytest.raises(ConfigError, match="from_dataset needs a torch Dataset"):
        from_dataset(42, SPEC)
