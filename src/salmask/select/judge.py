"""The CAM classifier as a judge between two masks of one object (the Selector's ``mode="auto"``).

Algorithm 1 replaces a single-class pseudo mask by the saliency mask when the two overlap by more than a
threshold t0, and the right t0 depends on how good the saliency is: the seed tuned 0.4 for its own network on
VOC's ground truth, a strong pretrained detector wants nearly any overlap, a weak one a high threshold.
A user cannot set it without ground truth. The pipeline already holds a model that knows what the class
looks like and never saw a mask: the image-level classifier the CAMs come from. It judges each candidate
region R of class c by two forwards of the image:

* *keep*: the image with everything outside R set to the normalisation mean (0 after normalising), the
  classifier's logit of c. High when R holds the object's evidence.
* *remove*: the image with R itself set to the mean, the logit of c. Low when no evidence is left outside R.

Its score is keep − remove. A mask that followed context (the walk's typical failure: the water under a boat,
the table under the plates) keeps less of the object and leaves more of it behind than one on the object,
so its score is lower; a saliency mask on the wrong object keeps nothing of c. The candidate with the higher
score wins, per image, with no threshold to tune. Neither forward reads ground truth, and the classifier was
trained on image labels only.

Cost: 4 forwards of the classifier per single-class image at the image's own size (about 0.1 s for a
VOC image with EfficientNet-Lite0 on 2 CPU cores), one batch of 4.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from salmask.data.transforms import to_tensor
from salmask.errors import InputError
from salmask.io import read_image
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

    ``model`` a trained :class:`CAMNet` (in eval mode), ``image_path(id)`` the image of each id; masks are
    bool [H,W] at the image's size.
    """

    def __init__(self, model: CAMNet, image_path: Callable[[str], Path], *,
                 device: torch.device = torch.device("cpu"), amp: bool = False):
        self.model = model.eval()
        self.image_path = image_path
        self.device = device
        self.amp = amp

    def __call__(self, i: str, cls: int, walk_fg: np.ndarray, sal_bin: np.ndarray) -> tuple[float, float]:
        path = self.image_path(i)
        image = read_image(path)
        if image.shape[:2] != walk_fg.shape:
            raise InputError(path, f"image of {list(image.shape[:2])} for masks of {list(walk_fg.shape)}")
        walk, sal = region_scores(self.model, image, cls, [walk_fg, sal_bin], device=self.device, amp=self.amp)
        return float(walk), float(sal)
