"""The sparse random walk equals the references' dense formulation (``salmask.benchmarks.reference_walk``, whose
paths are built from IRNet's definition, not from salmask's) and keeps the walk's invariants; the walk's
post-processing equals IRNet's ``make_sem_seg_labels``, written here."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from salmask.benchmarks.reference_walk import dense_affinity, dense_propagate, search_paths
from salmask.refine.random_walk import affinities, neighbour_paths, propagate, transition_operator


def _inputs(h: int, w: int, channels: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    cams = torch.rand(channels, h, w, generator=generator)
    boundary = torch.rand(h, w, generator=generator) ** 4
    return cams, boundary


def _assert_close(fast: torch.Tensor, dense: torch.Tensor) -> None:
    scale = float(dense.abs().max())
    assert scale > 0
    assert float((fast.double() - dense.double()).abs().max()) <= 1e-4 * scale


def test_paths_are_irnets_and_symmetric():
    paths = dict(neighbour_paths(5))
    assert len(paths) == 69 and paths[(0, 0)] == ()
    assert set(paths[(0, 3)]) == {(0, 0), (0, 1), (0, 2), (0, 3)}
    assert set(paths[(1, 1)]) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    box = {(py, px) for py in range(3) for px in range(5)}
    assert set(paths[(2, 4)]) == box - {(0, 3), (0, 4), (2, 0), (2, 1)}
    assert (4, 3) not in paths and (4, 2) in paths
    for (dy, dx), path in paths.items():
        if (dy, dx) == (0, 0):
            continue
        assert {(0, 0), (dy, dx)} <= set(path)
        assert {(dy - py, dx - px) for py, px in path} == set(path)  # same pixels walked from j to i
        assert {(-py, -px) for py, px in path} == set(paths[(-dy, -dx)])
    assert len(neighbour_paths(1)) == 1


@pytest.mark.parametrize("radius", [2, 3, 5])
def test_paths_equal_irnets_search_paths_from_both_ends(radius):
    """salmask's offsets and paths against IRNet's search directions (the reference module's, built from
    IRNet's definition). IRNet walks only the lower half-plane d and sets a(i, i + d) = a(i + d, i) from the
    pixels i + p, p on d's path; seen from j = i + d, the offset −d covers j + (p − d)."""
    irnet = {(0, 0): set()}
    for (dy, dx), path in search_paths(radius):
        irnet[(dy, dx)] = set(path)
        irnet[(-dy, -dx)] = {(py - dy, px - dx) for py, px in path}
    ours = {offset: set(path) for offset, path in neighbour_paths(radius)}
    assert ours == irnet


def test_affinity_is_symmetric_and_matches_the_stencil():
    _, boundary = _inputs(9, 11)
    dense = dense_affinity(boundary.double())
    assert torch.equal(dense, dense.t())
    stencil = affinities(boundary.double())
    for k, ((dy, dx), _) in enumerate(neighbour_paths(5)):
        for y, x in [(0, 0), (4, 5), (8, 10), (2, 9)]:
            inside = 0 <= y + dy < 9 and 0 <= x + dx < 11
            expected = dense[y * 11 + x, (y + dy) * 11 + x + dx] if inside else 0.0
            assert float(stencil[k, y, x]) == pytest.approx(float(expected), abs=1e-12)


@pytest.mark.parametrize(
    ("h", "w", "exp_times", "beta", "radius"),
    [(12, 17, 8, 5.0, 5), (17, 12, 3, 10.0, 5), (9, 9, 0, 5.0, 5), (15, 10, 8, 5.0, 3), (1, 7, 8, 5.0, 5)],
)
def test_matches_dense(h, w, exp_times, beta, radius):
    cams, boundary = _inputs(h, w, seed=h * w)
    fast = propagate(cams, boundary, beta=beta, exp_times=exp_times, radius=radius)
    assert fast.shape == cams.shape and fast.dtype == torch.float32
    dense = dense_propagate(cams.double(), boundary.double(), beta=beta, exp_times=exp_times, radius=radius)
    _assert_close(fast, dense)


def test_matches_dense_with_strong_boundaries_and_in_float32():
    cams, boundary = _inputs(16, 21, channels=2, seed=3)
    boundary = torch.where(boundary > 0.3, torch.ones_like(boundary), boundary)
    boundary[:, 10] = 1.0
    fast = propagate(cams, boundary)
    _assert_close(fast, dense_propagate(cams.double(), boundary.double()))
    _assert_close(fast, dense_propagate(cams, boundary))  # the references' own float32 arithmetic


def test_zero_boundary_is_a_plain_disc_average():
    cams, _ = _inputs(10, 13)
    boundary = torch.zeros(10, 13)
    _assert_close(propagate(cams, boundary), dense_propagate(cams.double(), boundary.double()))
    one_step = propagate(cams, boundary, exp_times=0)
    quarter_disc = [(dy, dx) for (dy, dx), _ in neighbour_paths(5) if dy >= 0 and dx >= 0]
    corner = torch.stack([cams[:, dy, dx] for dy, dx in quarter_disc]).mean(0)
    torch.testing.assert_close(one_step[:, 0, 0], corner)
    ones = propagate(torch.ones(2, 10, 13), boundary)
    torch.testing.assert_close(ones, torch.ones(2, 10, 13))


def test_degree_weighted_mass_and_range_are_kept():
    cams, boundary = _inputs(11, 14, seed=7)
    degree = dense_affinity(boundary.double()).pow(5.0).sum(0).reshape(11, 14)
    start = cams.double() * (1 - boundary.double())
    walked = propagate(cams.double(), boundary.double())
    assert walked.dtype == torch.float64
    torch.testing.assert_close((walked * degree).sum((1, 2)), (start * degree).sum((1, 2)), rtol=1e-10, atol=0)
    assert float(walked.min()) >= float(start.min()) and float(walked.max()) <= float(start.max())
    operator = transition_operator(boundary)
    assert operator.layout == torch.sparse_csr and operator.shape == (154, 154)
    assert operator.values().numel() <= 69 * 154
    torch.testing.assert_close(operator.to_dense().sum(1), torch.ones(154, dtype=torch.float64))


def test_boundary_wall_stops_the_walk():
    boundary = torch.zeros(10, 13)
    boundary[:, 6] = 1.0
    cams = torch.zeros(1, 10, 13)
    cams[:, :, :6] = 1.0
    walked = propagate(cams, boundary)
    assert float(walked[:, :, 6:].abs().max()) == 0.0
    assert float(walked[:, :, :6].min()) > 0.5


@pytest.mark.parametrize(
    ("cams", "boundary", "kwargs", "message"),
    [
        (torch.rand(4, 5), torch.rand(4, 5), {}, "cams must be"),
        (torch.rand(2, 4, 5), torch.rand(5, 4), {}, "boundary must be"),
        (torch.ones(2, 4, 5, dtype=torch.int64), torch.rand(4, 5), {}, "floating point"),
        (torch.full((2, 4, 5), float("nan")), torch.rand(4, 5), {}, "NaN"),
        (torch.rand(2, 4, 5), torch.full((4, 5), 1.5), {}, r"\[0, 1\]"),
        (torch.rand(2, 4, 5), torch.full((4, 5), -0.1), {}, r"\[0, 1\]"),
        (torch.rand(2, 4, 5), torch.rand(4, 5), {"beta": 0.0}, "beta"),
        (torch.rand(2, 4, 5), torch.rand(4, 5), {"beta": float("inf")}, "beta"),
        (torch.rand(2, 4, 5), torch.rand(4, 5), {"exp_times": -1}, "exp_times"),
        (torch.rand(2, 4, 5), torch.rand(4, 5), {"exp_times": 2.0}, "exp_times"),
        (torch.rand(2, 4, 5), torch.rand(4, 5), {"radius": 0}, "radius"),
    ],
)
def test_bad_inputs_raise(cams, boundary, kwargs, message):
    with pytest.raises(ValueError, match=message):
        propagate(cams, boundary, **kwargs)


def irnet_sem_seg_labels(rw: torch.Tensor, cam_keys: np.ndarray, size: tuple[int, int], bg_thres: float) -> tuple:
    """IRNet's ``step/make_sem_seg_labels.py`` after ``propagate_to_edge``: ``rw`` [C,1,h,w] upsampled ×4
    (bilinear, align_corners=False), cropped to the image, divided by its global maximum, a constant
    ``bg_thres`` channel padded in front, argmax, then the keys [0, *classes] index the result. IRNet's
    ``cam_keys`` are 0-based class indices (it adds 1); the returned scores are the divided maps [C,H,W]."""
    rw_up = F.interpolate(rw, scale_factor=4, mode="bilinear", align_corners=False)[..., 0, :size[0], :size[1]]
    rw_up = rw_up / torch.max(rw_up)
    rw_up_bg = F.pad(rw_up, (0, 0, 0, 0, 1, 0), value=bg_thres)
    rw_pred = torch.argmax(rw_up_bg, dim=0).cpu().numpy()
    keys = np.pad(cam_keys + 1, (1, 0), mode="constant")
    return keys[rw_pred], rw_up


@pytest.mark.parametrize(("h", "w", "size", "bg"), [(9, 11, (34, 43), 0.25), (7, 12, (28, 45), 0.21)])
def test_pseudo_masks_are_irnets_walk_and_post_processing(h, w, size, bg):
    """salmask.pseudo_masks (the make_pseudo stage's code) against the dense reference walk followed by IRNet's
    post-processing written above: the same scores, and the same class ids wherever the two best scores are
    more than 1e-5 apart (float rounding may swap a near-tie)."""
    from salmask import pseudo_masks

    cams, boundary = _inputs(h, w, channels=2, seed=h + w)
    cams[0, :, w // 3:] *= 0.05  # class 4 on the left, class 17 on the right, neither in the middle
    cams[1, :, : 2 * w // 3] *= 0.05
    boundary[:, [w // 3, 2 * w // 3]] = 1.0  # walls that keep them apart
    keys = np.array([4, 17])
    mask, scores = pseudo_masks(cams.numpy(), boundary.numpy(), keys.tolist(), bg_score=bg, size=size, exp_times=4)
    rw = dense_propagate(cams.double(), boundary.double(), exp_times=4)[:, None]
    ref_mask, ref_scores = irnet_sem_seg_labels(rw, keys - 1, size, bg)
    assert mask.shape == size and scores.shape == (2, *size) and mask.dtype == np.uint8
    np.testing.assert_allclose(scores, ref_scores.numpy(), rtol=0, atol=1e-5)
    assert float(scores.max()) == pytest.approx(1.0)
    top2 = np.sort(np.concatenate([np.full((1, *size), bg), ref_scores.numpy()]), axis=0)[-2:]
    clear = top2[1] - top2[0] > 1e-5
    assert clear.mean() > 0.99 and set(np.unique(ref_mask)) == {0, 4, 17}
    np.testing.assert_array_equal(mask[clear], ref_mask[clear])


def test_walk_post_processing_on_one_walked_map():
    """The post-processing alone, on the same walked tensor: scores exactly IRNet's, background exactly where
    no class beats the constant (a tie goes to the background, the first channel), and the keys' order kept."""
    from salmask.refine.postprocess import scores_to_mask, upsample_scores

    walked = torch.rand(3, 6, 8, generator=torch.Generator().manual_seed(5))
    keys = np.array([9, 2, 14])
    size = (23, 30)
    ref_mask, ref_scores = irnet_sem_seg_labels(walked[:, None], keys - 1, size, 0.3)
    scores = upsample_scores(walked, size)
    np.testing.assert_array_equal(scores, ref_scores.numpy())
    np.testing.assert_array_equal(scores_to_mask(scores, keys, 0.3), ref_mask)
    tied = np.zeros((2, 2, 3), np.float32)
    tied[0, 0, 0] = tied[1, 0, 1] = 0.3  # a class equal to the background score
    tied[0, 1, :] = tied[1, 1, :] = 0.5  # two classes tied above it
    expect = np.take(np.array([0, 5, 6]), torch.argmax(F.pad(torch.from_numpy(tied), (0, 0, 0, 0, 1, 0), value=0.3),
                                                       dim=0).numpy())
    np.testing.assert_array_equal(scores_to_mask(tied, np.array([5, 6]), 0.3), expect)
    assert expect.tolist() == [[0, 0, 0], [5, 5, 5]]
