"""The library examples run as written (docs/library.md's whole one and the README's short one): on voc-mini's
image when ../shared is there, else on a synthetic picture, with randomly initialised checkpoints in salmask's
format."""
from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch

from tests.conftest import ROOT, VOC_MINI

MARKER = "<!-- library-example -->"
README_MARKER = "<!-- readme-example -->"
SETTINGS = ("IMAGE", "KEYS", "CAM", "BOUNDARY")


def marked_example(path, marker: str) -> str:
    text = path.read_text()
    assert marker in text, f"{path.name} lost the example's marker {marker}"
    block = re.search(r"```python\n(.*?)```", text.split(marker, 1)[1], re.S)
    assert block, f"no python block after {marker} in {path.name}"
    return block.group(1)


def readme_example() -> str:
    """The whole library example, in docs/library.md."""
    return marked_example(ROOT / "docs" / "library.md", MARKER)


def with_settings(code: str, **values: object) -> str:
    """``code`` with its ``NAME = ...`` setting lines replaced by ``values`` (each must occur once)."""
    for name, value in values.items():
        code, n = re.subn(rf"^{name} = .*$", f"{name} = {value!r}", code, flags=re.M)
        assert n == 1, f"the example should set {name} once, found {n}"
    return code


def example_inputs(tmp_path) -> dict:
    """The example's settings: voc-mini's cow (or a synthetic picture) and random checkpoints."""
    from salmask.io import read_mask, write_png
    from salmask.models.boundary_net import BoundaryNet
    from salmask.models.cam_net import CAMNet
    from salmask.utils.train import save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "cam.pt", model=CAMNet(20, "resnet18").state_dict(), backbone="resnet18")
    save_checkpoint(tmp_path / "boundary.pt", model=BoundaryNet("resnet18").state_dict(), backbone="resnet18",
                    freeze_backbone=True)
    voc = VOC_MINI / "VOCdevkit" / "VOC2012"
    image_path = voc / "JPEGImages" / "2008_000009.jpg"
    if image_path.is_file():
        mask = read_mask(voc / "SegmentationClassAug" / "2008_000009.png")
        keys = [int(c) for c in np.unique(mask) if c not in (0, 255)]
    else:  # a bright disc on a dark textured ground
        yy, xx = np.mgrid[:90, :120]
        rng = np.random.default_rng(0)
        picture = rng.integers(0, 60, (90, 120, 3)).astype(np.uint8)
        picture[(yy - 45) ** 2 + (xx - 60) ** 2 < 25 ** 2] = (230, 200, 40)
        image_path, keys = tmp_path / "synthetic.png", [10]
        write_png(image_path, picture)
    return {"IMAGE": str(image_path), "KEYS": keys, "CAM": str(tmp_path / "cam.pt"),
            "BOUNDARY": str(tmp_path / "boundary.pt")}


def test_readme_short_example_runs(tmp_path):
    settings = example_inputs(tmp_path)
    code = with_settings(marked_example(ROOT / "README.md", README_MARKER), **settings)
    scope: dict = {"__name__": "readme_example"}
    exec(compile(code, "README.md:readme-example", "exec"), scope)
    h, w = scope["image"].shape[:2]
    keys = settings["KEYS"]
    assert scope["cam"].shape == (len(keys), -(-h // 4), -(-w // 4)) and scope["boundary"].shape == scope["cam"].shape[1:]
    assert scope["mask"].shape == (h, w) and set(np.unique(scope["mask"]).tolist()) <= {0, *keys}


def test_readme_library_example_runs(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = example_inputs(tmp_path)
    keys = settings["KEYS"]
    code = with_settings(readme_example(), **settings)
    scope: dict = {"__name__": "readme_example"}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*non-interactive.*")  # plt.show() under Agg
        exec(compile(code, "docs/library.md:library-example", "exec"), scope)

    image, mask, selected, report = scope["image"], scope["mask"], scope["selected"], scope["report"]
    h, w = image.shape[:2]
    assert scope["cam"].shape == (len(keys), -(-h // 4), -(-w // 4)) and scope["high_res"].shape == (len(keys), h, w)
    assert scope["boundary"].shape == (-(-h // 4), -(-w // 4)) and scope["saliency"].shape == (h, w)
    assert mask.shape == (h, w) and selected.shape == (h, w)
    assert set(np.unique(mask).tolist()) <= {0, *keys} and set(np.unique(selected).tolist()) <= {0, *keys}
    assert report["images"] == 1 and report["single_class"] == (1 if len(keys) == 1 else 0)
    if report["replaced"]:
        np.testing.assert_array_equal(selected, np.where(scope["saliency"] > 0.5, keys[0], 0))
    else:
        np.testing.assert_array_equal(selected, mask)
    assert len(scope["fig"].axes) == 6
    scope["fig"].savefig(tmp_path / "example.png")
    plt.close(scope["fig"])
    assert (tmp_path / "example.png").stat().st_size > 0


def test_settings_are_substituted_exactly_once():
    for code in (readme_example(), marked_example(ROOT / "README.md", README_MARKER)):
        for name in SETTINGS:
            assert len(re.findall(rf"^{name} = ", code, flags=re.M)) == 1, name
    with pytest.raises(AssertionError, match="once"):
        with_settings("A = 1\nA = 2\n", A=3)
