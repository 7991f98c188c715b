"""``salmask.compat.propagate_to_edge`` against IRNet's dense ``propagate_to_edge``, ported here line by line.

The port below is IRNet's ``misc/indexing.py`` (github.com/jiwoon-ahn/irn) with its ``.cuda()`` calls
replaced by the input's device and a dtype argument; it shares no code with salmask (its own path search,
padding, sparse-to-dense assembly and matrix squaring), so it checks the drop-in independently.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from salmask.compat import propagate_to_edge
from salmask.errors import ArgumentError


class PathIndex:
    def __init__(self, radius, default_size):
        self.radius = radius
        self.radius_floor = int(np.ceil(radius) - 1)
        self.search_paths, self.search_dst = self.get_search_paths_dst(self.radius)
        self.path_indices, self.src_indices, self.dst_indices = self.get_path_indices(default_size)

    def get_search_paths_dst(self, max_radius=5):
        coord_indices_by_length = [[] for _ in range(max_radius * 4)]
        search_dirs = []
        for x in range(1, max_radius):
            search_dirs.append((0, x))
        for y in range(1, max_radius):
            for x in range(-max_radius + 1, max_radius):
                if x * x + y * y < max_radius ** 2:
                    search_dirs.append((y, x))
        for dir in search_dirs:
            length_sq = dir[0] ** 2 + dir[1] ** 2
            path_coords = []
            min_y, max_y = sorted((0, dir[0]))
            min_x, max_x = sorted((0, dir[1]))
            for y in range(min_y, max_y + 1):
                for x in range(min_x, max_x + 1):
                    dist_sq = (dir[0] * x - dir[1] * y) ** 2 / length_sq
                    if dist_sq < 1:
                        path_coords.append([y, x])
            path_coords.sort(key=lambda x: -abs(x[0]) - abs(x[1]))
            coord_indices_by_length[len(path_coords)].append(path_coords)
        path_list_by_length = [np.asarray(v) for v in coord_indices_by_length if v]
        path_destinations = np.concatenate([p[:, 0] for p in path_list_by_length], axis=0)
        return path_list_by_length, path_destinations

    def get_path_indices(self, size):
        full_indices = np.reshape(np.arange(0, size[0] * size[1], dtype=np.int64), (size[0], size[1]))
        cropped_height = size[0] - self.radius_floor
        cropped_width = size[1] - 2 * self.radius_floor
        path_indices = []
        for paths in self.search_paths:
            path_indices_list = []
            for p in paths:
                coord_indices_list = []
                for dy, dx in p:
                    coord_indices = full_indices[dy:dy + cropped_height,
                                                 self.radius_floor + dx:self.radius_floor + dx + cropped_width]
                    coord_indices_list.append(np.reshape(coord_indices, [-1]))
                path_indices_list.append(coord_indices_list)
            path_indices.append(np.array(path_indices_list))
        src_indices = np.reshape(full_indices[:cropped_height, self.radius_floor:self.radius_floor + cropped_width],
                                 -1)
        dst_indices = np.concatenate([p[:, 0] for p in path_indices], axis=0)
        return path_indices, src_indices, dst_indices


def edge_to_affinity(edge, paths_indices):
    aff_list = []
    edge = edge.view(edge.size(0), -1)
    for ind in paths_indices:
        ind = torch.from_numpy(ind).to(edge.device)
        dist = torch.index_select(edge, dim=-1, index=ind.view(-1))
        dist = dist.view(dist.size(0), ind.size(0), ind.size(1), ind.size(2))
        aff_list.append(torch.squeeze(1 - F.max_pool2d(dist, (dist.size(2), 1)), dim=2))
    return torch.cat(aff_list, dim=1)


def affinity_sparse2dense(affinity_sparse, ind_from, ind_to, n_vertices):
    ind_from = torch.from_numpy(ind_from)
    ind_to = torch.from_numpy(ind_to)
    device, dtype = affinity_sparse.device, affinity_sparse.dtype
    affinity_sparse = affinity_sparse.view(-1).cpu()
    ind_from = ind_from.repeat(ind_to.size(0)).view(-1)
    ind_to = ind_to.view(-1)
    indices = torch.stack([ind_from, ind_to])
    indices_tp = torch.stack([ind_to, ind_from])
    indices_id = torch.stack([torch.arange(0, n_vertices).long(), torch.arange(0, n_vertices).long()])
    return torch.sparse_coo_tensor(torch.cat([indices, indices_id, indices_tp], dim=1),
                                   torch.cat([affinity_sparse, torch.ones([n_vertices], dtype=dtype),
                                              affinity_sparse]),
                                   (n_vertices, n_vertices), check_invariants=False).to_dense().to(device)


def to_transition_matrix(affinity_dense, beta, times):
    scaled_affinity = torch.pow(affinity_dense, beta)
    trans_mat = scaled_affinity / torch.sum(scaled_affinity, dim=0, keepdim=True)
    for _ in range(times):
        trans_mat = torch.matmul(trans_mat, trans_mat)
    return trans_mat


def irnet_propagate_to_edge(x, edge, radius=5, beta=10, exp_times=8):
    height, width = x.shape[-2:]
    hor_padded = width + radius * 2
    ver_padded = height + radius
    path_index = PathIndex(radius=radius, default_size=(ver_padded, hor_padded))
    edge_padded = F.pad(edge, (radius, radius, 0, radius), mode='constant', value=1.0)
    sparse_aff = edge_to_affinity(torch.unsqueeze(edge_padded, 0), path_index.path_indices)
    dense_aff = affinity_sparse2dense(sparse_aff, path_index.src_indices, path_index.dst_indices,
                                      ver_padded * hor_padded)
    dense_aff = dense_aff.view(ver_padded, hor_padded, ver_padded, hor_padded)
    dense_aff = dense_aff[:-radius, radius:-radius, :-radius, radius:-radius]
    dense_aff = dense_aff.reshape(height * width, height * width)
    trans_mat = to_transition_matrix(dense_aff, beta=beta, times=exp_times)
    x = x.view(-1, height, width) * (1 - edge)
    rw = torch.matmul(x.view(-1, height * width), trans_mat)
    return rw.view(rw.size(0), 1, height, width)


def _inputs(c: int, h: int, w: int, seed: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(c, h, w, generator=g)
    edge = torch.sigmoid(6 * torch.randn(1, h, w, generator=g) - 4)  # mostly open, some strong walls
    return x.to(device), edge.to(device)


@pytest.mark.parametrize("c, h, w, radius, beta, exp_times", [
    (1, 3, 4, 5, 10, 8),
    (3, 9, 13, 5, 10, 8),
    (2, 17, 11, 5, 10, 8),
    (4, 24, 20, 5, 10, 8),
    (2, 14, 15, 3, 5, 4),
    (2, 12, 16, 4, 7.5, 0),
])
def test_matches_irnets_dense_walk(c, h, w, radius, beta, exp_times):
    x, edge = _inputs(c, h, w, seed=h * w)
    out = propagate_to_edge(x, edge, radius=radius, beta=beta, exp_times=exp_times)
    assert out.shape == (c, 1, h, w) and out.dtype == torch.float32
    exact = irnet_propagate_to_edge(x.double(), edge.double(), radius=radius, beta=beta, exp_times=exp_times)
    scale = float(exact.abs().max())
    torch.testing.assert_close(out.double(), exact, rtol=0, atol=2e-7 * scale)  # float32 rounding of the result
    irnet = irnet_propagate_to_edge(x, edge, radius=radius, beta=beta, exp_times=exp_times)  # IRNet's own float32
    torch.testing.assert_close(out, irnet, rtol=0, atol=1e-4 * scale)


def test_drop_in_shapes_as_make_sem_seg_labels_uses_them():
    x, edge = _inputs(3, 10, 12, seed=1)
    rw = propagate_to_edge(x, edge, beta=10, exp_times=8, radius=5)
    rw_up = F.interpolate(rw, scale_factor=4, mode="bilinear", align_corners=False)[..., 0, :37, :45]
    assert rw_up.shape == (3, 37, 45)
    same = propagate_to_edge(x[:, None], edge[0])  # IRNet's x.view(-1, h, w) and a broadcast [h,w] edge
    torch.testing.assert_close(same, rw, rtol=0, atol=0)
    batched = propagate_to_edge(x[None], edge[None])  # forks that pass [1,C,h,w] CAMs and a [1,1,h,w] edge
    torch.testing.assert_close(batched, rw, rtol=0, atol=0)
    walled = propagate_to_edge(x, torch.ones_like(edge))
    assert float(walled.abs().max()) == 0.0  # x ⊙ (1 − edge) = 0 and no pixel reaches another


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    x, edge = _inputs(3, 31, 40, seed=2)
    cpu = propagate_to_edge(x, edge)
    gpu = propagate_to_edge(x.cuda(), edge.cuda())
    assert gpu.device.type == "cuda" and gpu.shape == cpu.shape
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-6 * float(cpu.abs().max()))


@pytest.mark.parametrize("x, edge, kwargs, message", [
    (np.zeros((2, 4, 5), np.float32), torch.zeros(1, 4, 5), {}, "x must be"),
    (torch.zeros(2, 4, 5), torch.zeros(1, 5, 5), {}, r"edge must be a \[1,4,5\]"),
    (torch.zeros(2, 4, 5), torch.zeros(2, 4, 5), {}, r"edge must be a \[1,4,5\]"),
    (torch.zeros(2, 4, 5, dtype=torch.int64), torch.zeros(1, 4, 5), {}, "floating point"),
    (torch.full((2, 4, 5), float("nan")), torch.zeros(1, 4, 5), {}, "NaN"),
    (torch.zeros(2, 4, 5), torch.full((1, 4, 5), 1.2), {}, r"\[0, 1\]"),
    (torch.zeros(2, 4, 5), torch.zeros(1, 4, 5), {"beta": 0}, "beta"),
    (torch.zeros(2, 4, 5), torch.zeros(1, 4, 5), {"exp_times": -1}, "exp_times"),
    (torch.zeros(2, 4, 5), torch.zeros(1, 4, 5), {"radius": 2.5}, "radius"),
])
def test_bad_input(x, edge, kwargs, message):
    with pytest.raises(ArgumentError, match=message):
        propagate_to_edge(x, edge, **kwargs)
