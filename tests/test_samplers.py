"""Pair sampling, view sampling and the validation split."""

from __future__ import annotations

import numpy as np
import pytest

from piro_cli.data.samplers import carve_validation, checked_views, plan_pairs, sample_pairs, sample_views
from piro_cli.errors import DataError


def test_pairs_are_different_objects_of_the_same_category():
    categories = np.array([0, 0, 0, 1, 1, 2])  # category 2 has a single object
    plan = plan_pairs(categories)
    assert plan.skipped_categories == [2]
    pairs = sample_pairs(plan, pairs_per_object=3, rng=np.random.default_rng(0))
    assert len(pairs) == 5 * 3
    assert (pairs[:, 0] != pairs[:, 1]).all()
    assert (categories[pairs[:, 0]] == categories[pairs[:, 1]]).all()
    assert 5 not in pairs
    # every pairable object anchors exactly pairs_per_object pairs
    assert np.bincount(pairs[:, 0], minlength=6).tolist() == [3, 3, 3, 3, 3, 0]


def test_a_category_of_two_always_pairs_the_same_two():
    # with replacement, as released: partners repeat; the only other object of the category is every partner
    pairs = sample_pairs(plan_pairs(np.array([0, 0, 1, 1, 1])), pairs_per_object=10, rng=np.random.default_rng(0))
    assert len(pairs) == 5 * 10
    assert sorted(pairs[pairs[:, 0] == 0, 1].tolist()) == [1] * 10
    assert sorted(pairs[pairs[:, 0] == 1, 1].tolist()) == [0] * 10


def test_partners_are_independent_uniform_draws_from_the_category():
    # 5 objects of one category, 3 partners each: drawn without replacement a partner never repeats within an
    # anchor's 3; drawn independently (the released `random.choice`) some repeats with probability 1 - (4*3*2)/4**3
    categories = np.zeros(5, dtype=int)
    plan = plan_pairs(categories)
    rng = np.random.default_rng(3)
    counts = np.zeros((5, 5))
    anchors_with_repeats, draws = 0, 2000
    for _ in range(draws):
        pairs = sample_pairs(plan, pairs_per_object=3, rng=rng)
        np.add.at(counts, (pairs[:, 0], pairs[:, 1]), 1)
        for anchor in range(5):
            partners = pairs[pairs[:, 0] == anchor, 1]
            anchors_with_repeats += len(set(partners.tolist())) < 3
    assert np.all(np.diag(counts) == 0)
    expected = draws * 3 / 4  # each of the 4 other objects equally likely
    off_diagonal = counts[~np.eye(5, dtype=bool)]
    assert np.all(np.abs(off_diagonal - expected) < 5 * np.sqrt(expected * 3 / 4))  # 5 sigma of a binomial count
    p_repeat = 1 - (4 * 3 * 2) / 4**3
    assert abs(anchors_with_repeats / (5 * draws) - p_repeat) < 0.02


def test_sampling_is_seeded():
    plan = plan_pairs(np.array([0, 0, 1, 1, 1]))
    a = sample_pairs(plan, 2, np.random.default_rng(7))
    b = sample_pairs(plan, 2, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)


def test_no_pairs_is_a_clear_error():
    with pytest.raises(DataError, match="no training pairs"):
        plan_pairs(np.array([0, 1, 2]))


def test_sample_views():
    rng = np.random.default_rng(0)
    views = sample_views(8, 3, 5, rng)
    assert views.shape == (5, 3)
    assert all(len(set(row)) == 3 for row in views.tolist())
    assert sorted(sample_views(8, None, 1, rng)[0].tolist()) == list(range(8))
    assert sample_views(8, 3, 0, rng).shape == (0, 3)
    assert checked_views(8, None) == 8 and checked_views(8, 5) == 5
    with pytest.raises(DataError, match="--views 9"):
        sample_views(8, 9, 1, rng)


def test_carve_validation_is_stratified_seeded_and_keeps_pairs():
    categories = np.repeat([0, 1, 2, 3], [10, 5, 3, 2])
    train, val = carve_validation(categories, 0.2, seed=3)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(categories)
    counts = {c: int((categories[val] == c).sum()) for c in range(4)}
    assert counts == {0: 2, 1: 1, 2: 1, 3: 0}  # 20% rounded, >= 1 from 3+, never below 2 left for training
    again_train, again_val = carve_validation(categories, 0.2, seed=3)
    np.testing.assert_array_equal(val, again_val)
    _, other = carve_validation(categories, 0.2, seed=4)
    assert not np.array_equal(val, other)
    with pytest.raises(DataError, match="--val-fraction"):
        carve_validation(categories, 1.5, seed=0)
