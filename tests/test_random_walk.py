"""The sparse random walk equals the references' dense formulation and keeps the walk's invariants."""
from __future__ import annotations

import pytest
import torch

from salmask.benchmarks.reference_walk import dense_affinity, dense_propagate
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
