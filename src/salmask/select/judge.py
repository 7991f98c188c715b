"""Judges between two masks of one object, for the Selector's label-free mode (``mode="auto"``).

Algorithm 1 replaces a single-class pseudo mask by the saliency mask when the two overlap by more than a
threshold t0, and the right t0 depends on how good the saliency is: the seed tuned 0.4 for its own network on
VOC's ground truth, a strong pretrained detector wants nearly any overlap (on voc-real's training split with
U²-NetP, t0 = 0 gives 54.69 mIoU against 50.77 at 0.4), a weak one a high threshold (with the classic MB+
saliency every t0 up to 0.7 loses to keeping the walk's masks). A user cannot set it without ground truth. Instead a judge scores both
candidates of each image, the walk's foreground and the binarised saliency, from evidence the pipeline
already holds and that never saw a mask, and the higher score wins. Two judges:

* :class:`BoundaryJudge` (the default): how strongly the boundary network's map fires along each
  candidate's outline, the mean of the map over the candidate's contour pixels (the mask minus its
  3×3-cross erosion). A mask that followed context (the walk's typical failure: the water under a boat, the
  table under the plates) has its outline where the network sees no object boundary; one on the object
  traces the boundary. The map is the one the walk used already (``make_boundary``): the decision costs an
  erosion and a mean per candidate, milliseconds an image.
* :class:`ClassifierJudge`: the CAM classifier's logit of the class with only the candidate kept (the rest
  set to the normalisation mean) minus its logit with the candidate removed; 4 forwards an image. Weaker on
  voc-real (README), kept for runs without a boundary network (``walk.boundary: saliency``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from salmask.data.transforms import to_tensor
from salmask.errors import InputError
from salmask.io import load_npz, read_image
from salmask.models.cam_net import CAMNet
from salmask.utils.train import autocast


@torch.no_grad()
def region_scores(model: CAMNet, image: np.ndarray, cls: int, regions: Sequence[np.ndarray], *,
                  device: torch.device = torch.device("cpu"), amp: bool = False) -> np.ndarray:
    """keep − remove logits of class ``cls`` (1-based id) for each region, float64 [N].

    ``image`` uint8 [H,W,3]; ``regions`` N bool masks [H,W]. One batch of 2N masked copies of the image.
    """
    x = to_tensor(image).to(device)
    masks = torch.from_numpy(np.stack([np.asarray(r, bool) for r in regions])).to(device)[:, None]
    batch = torch.cat([x * masks, x * ~masks])
    with autocast(device, amp):
        logits = model(batch)[:, cls - 1].float().cpu().numpy().astype(np.float64)
    n = len(regions)
    return logits[:n] - logits[n:]


class ClassifierJudge:
    """``judge(id, cls, walk_fg, sal_bin) -> (walk score, saliency score)`` for :func:`select_folder`.

    ``model`` a trained :class:`CAMNet` (in eval mode); ``image(id)`` the image of each id: its file, or the
    image itself (RGB uint8 [H,W,3]). Masks are bool [H,W] at the image's size.
    """

    def __init__(self, model: CAMNet, image: Callable[[str], Path | np.ndarray], *,
                 device: torch.device = torch.device("cpu"), amp: bool = False):
        self.model = model.eval()
        self.image = image
        self.device = device
        self.amp = amp

    def __call__(self, i: str, cls: int, walk_fg: np.ndarray, sal_bin: np.ndarray) -> tuple[float, float]:
        found = self.image(i)
        image = found if isinstance(found, np.ndarray) else read_image(found)
        if image.shape[:2] != walk_fg.shape:
            where = f"images[{i!r}]" if isinstance(found, np.ndarray) else found
            raise InputError(where, f"image of {list(image.shape[:2])} for masks of {list(walk_fg.shape)}")
        walk, sal = region_scores(self.model, image, cls, [walk_fg, sal_bin], device=self.device, amp=self.amp)
        return float(walk), float(sal)


def contour(mask: np.ndarray) -> np.ndarray:
    """bool [H,W]: the pixels of ``mask`` with a 4-neighbour outside it (the mask minus its 3×3-cross erosion;
    the image border counts as outside)."""
    mask = np.asarray(mask, bool)
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def upsample_boundary(boundary: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """The boundary map float [h,w] (the walk's stride-4 grid, or any size) resized bilinearly to ``hw``,
    float32 [H,W]."""
    b = torch.from_numpy(np.asarray(boundary, np.float32))[None, None]
    return F.interpolate(b, size=tuple(hw), mode="bilinear", align_corners=False)[0, 0].numpy()


def contour_score(boundary_full: np.ndarray, mask: np.ndarray) -> float:
    """Mean of ``boundary_full`` [H,W] over the contour of ``mask`` [H,W] (0 for an empty mask)."""
    c = contour(mask)
    return float(boundary_full[c].mean(dtype=np.float64)) if c.any() else 0.0


class BoundaryJudge:
    """``judge(id, cls, walk_fg, sal_bin) -> (walk score, saliency score)`` for :func:`select_folder`: the
    boundary map's mean along each candidate's outline (see the module docstring).

    ``boundary(id)`` returns the image's boundary map float [h,w] in [0,1] (a ``make_boundary/{id}.npz``'s
    ``boundary``, see :func:`boundary_file`); it is resized to the masks' size.
    """

    def __init__(self, boundary: Callable[[str], np.ndarray]):
        self.boundary = boundary

    def __call__(self, i: str, cls: int, walk_fg: np.ndarray, sal_bin: np.ndarray) -> tuple[float, float]:
        full = upsample_boundary(self.boundary(i), walk_fg.shape)
        return contour_score(full, walk_fg), contour_score(full, sal_bin)


def boundary_file(folder: Path) -> Callable[[str], np.ndarray]:
    """id -> the ``boundary`` array of ``folder/{id}.npz`` (as ``make_boundary`` writes), checked: float [h,w],
    finite, in [0,1]; anything else an InputError naming the file."""
    folder = Path(folder)

    def read(i: str) -> np.ndarray:
        path = folder / f"{i}.npz"
        if not path.is_file():
            raise InputError(path, f"boundary map of {i!r} not found")
        z = load_npz(path)
        if "boundary" not in z:
            raise InputError(path, f"needs an array 'boundary', has {sorted(z)}")
        b = np.asarray(z["boundary"], np.float32)
        if b.ndim != 2 or 0 in b.shape or not np.isfinite(b).all() or b.min() < 0 or b.max() > 1:
            raise InputError(path, f"boundary must be a finite [h, w] map in [0, 1], got {list(b.shape)}")
        return b

    return read
