"""RGB-SOD network, losses, DUTS reader, training loop and inference (docs/method.md#saliency ``rgbsod``)."""
from __future__ import annotations

import time

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from salmask.data.duts import DUTSFolder
from salmask.errors import ConfigError, InputError
from salmask.io import write_png
from salmask.models.rgbsod import RGBSOD, mask_edges, sod_loss, structure_loss
from salmask.saliency.rgbsod import predict_batch, predict_saliency, train_rgbsod

TINY_SWIN = "swin_tiny_patch4_window7_224"
TINY = dict(embed_dim=24, depths=(1, 1, 1, 1), num_heads=(1, 2, 3, 6), window_size=4)
S = 64


def tiny_model(seed: int = 0, **kw) -> RGBSOD:
    torch.manual_seed(seed)
    return RGBSOD(TINY_SWIN, img_size=S, encoder_kwargs=TINY, decoder_channels=16, **kw)


def square_mask(size: int, lo: int, hi: int) -> torch.Tensor:
    m = torch.zeros(1, 1, size, size)
    m[..., lo:hi, lo:hi] = 1
    return m


def make_duts(root, n: int = 4, seed: int = 0) -> list[str]:
    """n synthetic pictures (noisy background, bright box) with their box masks; returns the stems."""
    rng = np.random.default_rng(seed)
    (root / "Images").mkdir(parents=True)
    (root / "Masks").mkdir()
    stems = []
    for i in range(n):
        h, w = 40 + 7 * i, 56 - 3 * i
        img = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
        mask = np.zeros((h, w), np.uint8)
        y, x = rng.integers(2, h // 2), rng.integers(2, w // 2)
        img[y:y + h // 3, x:x + w // 3] = (230, 200, 40)
        mask[y:y + h // 3, x:x + w // 3] = 255
        stem = f"img_{i}"
        suffix = ".jpg" if i % 2 else ".png"
        Image.fromarray(img).save(root / "Images" / f"{stem}{suffix}")
        write_png(root / "Masks" / f"{stem}.png", mask)
        stems.append(stem)
    return stems


def test_forward_shapes_and_nchw_features():
    model = tiny_model().eval()
    x = torch.randn(2, 3, S, S)
    feats = model.encode(x)
    assert [f.shape[1] for f in feats] == model.encoder.feature_info.channels()
    assert [f.shape[-1] for f in feats] == [S // 4, S // 8, S // 16, S // 32]
    out = model(x)
    assert len(out["side"]) == 4
    assert all(s.shape == (2, 1, S, S) for s in out["side"])
    assert out["edge"].shape == (2, 1, S, S)
    p = model.predict(x)
    assert p.shape == (2, 1, S, S) and 0 <= p.min() and p.max() <= 1
    torch.testing.assert_close(p, torch.sigmoid(out["side"][0]))
    with pytest.raises(ValueError, match="expects"):
        model(torch.randn(1, 3, 32, 32))


def test_bad_configuration():
    with pytest.raises(ConfigError, match="unknown encoder"):
        RGBSOD("no_such_swin", img_size=S)
    with pytest.raises(ConfigError, match="img_size"):
        RGBSOD(TINY_SWIN, img_size=S, encoder_kwargs={**TINY, "img_size": 96})
    with pytest.raises(InputError, match="not found"):
        RGBSOD(TINY_SWIN, img_size=S, encoder_kwargs=TINY, pretrained="/nonexistent/swin.pth")


def test_mask_edges_square():
    mask = square_mask(16, 4, 12)
    edges = mask_edges(mask)
    expected = torch.zeros(16, 16)
    expected[3:13, 3:13] = 1  # dilated square
    expected[5:11, 5:11] = 0  # minus eroded square
    torch.testing.assert_close(edges[0, 0], expected)
    assert mask_edges(torch.ones(1, 1, 8, 8)).sum() == 0  # the image border is no edge
    assert mask_edges(torch.zeros(1, 1, 8, 8)).sum() == 0


def test_structure_loss_prefers_the_right_answer():
    mask = square_mask(S, 16, 40)
    right = structure_loss((mask * 2 - 1) * 20, mask)
    wrong = structure_loss((1 - mask * 2) * 20, mask)
    unsure = structure_loss(torch.zeros_like(mask), mask)
    assert right < 0.01 < unsure < wrong
    empty = torch.zeros_like(mask)
    assert torch.isfinite(structure_loss(torch.zeros_like(mask), empty))


def test_sod_loss_parts_and_shape_check():
    model = tiny_model()
    out = model(torch.randn(2, 3, S, S))
    mask = square_mask(S, 10, 30).repeat(2, 1, 1, 1)
    total, parts = sod_loss(out, mask)
    assert set(parts) == {"s1", "s2", "s3", "s4", "edge", "total"}
    assert np.isfinite(list(parts.values())).all()
    assert parts["total"] == pytest.approx(sum(parts[k] for k in ("s1", "s2", "s3", "s4", "edge")), rel=1e-5)
    assert total.item() == pytest.approx(parts["total"])
    with pytest.raises(ValueError, match="does not match"):
        sod_loss(out, mask[:, :, :32, :32])


def test_overfits_two_images():
    torch.set_num_threads(1)
    model = tiny_model()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, S, S, generator=g)
    mask = torch.cat([square_mask(S, 8, 40), square_mask(S, 24, 56)])
    x[mask.expand_as(x) > 0] += 2.0  # the object is visible in the pixels
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss, parts = sod_loss(model(x), mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(parts)
    totals = [p["total"] for p in losses]
    assert np.isfinite(totals).all()
    assert np.mean(totals[-3:]) < 0.9 * np.mean(totals[:3])
    assert losses[-1]["s1"] < losses[0]["s1"] and losses[-1]["edge"] < losses[0]["edge"]


def test_duts_folder(tmp_path):
    stems = make_duts(tmp_path, n=3)
    # a grey value below one half is background after binarisation
    grey = np.zeros((40, 56), np.uint8)
    grey[:, :28] = 100
    grey[:, 28:] = 200
    write_png(tmp_path / "Masks" / f"{stems[0]}.png", grey)
    ds = DUTSFolder(tmp_path, 32)
    assert len(ds) == 3 and [p[0].stem for p in ds.pairs] == stems
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert y.shape == (1, 32, 32) and set(y.unique().tolist()) == {0.0, 1.0}
    assert y[0, :, :15].sum() == 0 and y[0, :, 17:].min() == 1
    assert -2.2 < x.min() and x.max() < 2.7  # ImageNet-normalised
    train = DUTSFolder(tmp_path, 32, train=True)
    torch.manual_seed(0)
    draws = [train[1][1] for _ in range(12)]
    plain = ds[1][1]
    flipped = [torch.equal(d, plain.flip(-1)) for d in draws]
    assert any(flipped) and not all(flipped)
    assert all(f or torch.equal(d, plain) for d, f in zip(draws, flipped))


def test_duts_folder_errors(tmp_path):
    with pytest.raises(InputError, match="Images"):
        DUTSFolder(tmp_path, 32)
    stems = make_duts(tmp_path, n=2)
    (tmp_path / "Masks" / f"{stems[1]}.png").unlink()
    with pytest.raises(InputError, match=f"{stems[1]}.jpg: no mask"):
        DUTSFolder(tmp_path, 32)
    write_png(tmp_path / "Masks" / f"{stems[1]}.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(InputError, match="differs from its image"):
        DUTSFolder(tmp_path, 32)[1]


def test_train_rgbsod_history_schedule_and_determinism(tmp_path):
    torch.set_num_threads(1)
    make_duts(tmp_path, n=4)
    kw = dict(epochs=2, batch_size=2, lr=1e-3, lr_step=1, lr_gamma=0.5, img_size=S, device="cpu", seed=3)
    model = tiny_model(seed=1)
    history = train_rgbsod(model, tmp_path, out_dir=tmp_path / "a", **kw)
    assert [h["epoch"] for h in history] == [0, 0, 1, 1] and [h["step"] for h in history] == [1, 2, 3, 4]
    assert [h["lr"] for h in history] == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4])
    assert all(np.isfinite([h["loss"], h["s1"], h["edge"]]).all() for h in history)
    assert (tmp_path / "a" / "history.json").is_file() and (tmp_path / "a" / "last.pt").is_file()
    again = train_rgbsod(tiny_model(seed=1), tmp_path, out_dir=tmp_path / "b", **kw)
    assert [h["loss"] for h in again] == [h["loss"] for h in history]
    with pytest.raises(ConfigError, match="img_size"):
        train_rgbsod(model, tmp_path, out_dir=tmp_path / "c", **{**kw, "img_size": 32})


def test_train_rgbsod_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path):
    """A training stopped after its first epoch (its last.pt on disk) resumes there and ends where an
    uninterrupted one ends, weight for weight."""
    torch.set_num_threads(1)
    make_duts(tmp_path, n=5)
    kw = dict(batch_size=2, lr=1e-3, lr_step=1, lr_gamma=0.5, img_size=S, device="cpu", seed=3)
    whole = tiny_model(seed=1)
    train_rgbsod(whole, tmp_path, epochs=3, out_dir=tmp_path / "whole", **kw)
    train_rgbsod(tiny_model(seed=1), tmp_path, epochs=1, out_dir=tmp_path / "cut", **kw)
    resumed = tiny_model(seed=2)  # other initial weights: everything must come from the checkpoint
    history = train_rgbsod(resumed, tmp_path, epochs=3, out_dir=tmp_path / "cut", **kw)
    assert [h["step"] for h in history] == list(range(1, 10))
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_predict_sizes_and_state_dict_round_trip(tmp_path):
    model = tiny_model()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((37, 53), (80, 31), (64, 64))]
    maps = predict_batch(model, images, img_size=S, device="cpu", batch_size=2)
    for im, m in zip(images, maps):
        assert m.shape == im.shape[:2] and m.dtype == np.float32
        assert 0 <= m.min() and m.max() <= 1 and np.isfinite(m).all()
    single = predict_saliency(model, images[0], img_size=S, device="cpu")
    np.testing.assert_allclose(single, maps[0], atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        predict_saliency(model, images[0].astype(np.float32), img_size=S, device="cpu")

    torch.save(model.state_dict(), tmp_path / "rgbsod.pth")
    restored = tiny_model(seed=7)
    restored.load_state_dict(torch.load(tmp_path / "rgbsod.pth", weights_only=True))
    again = predict_saliency(restored, images[0], img_size=S, device="cpu")
    np.testing.assert_allclose(again, single, atol=1e-6)


def test_encoder_loads_a_local_checkpoint(tmp_path):
    torch.manual_seed(5)
    swin = timm.create_model(TINY_SWIN, img_size=S, **TINY)
    torch.save(swin.state_dict(), tmp_path / "swin.pth")
    model = tiny_model(pretrained=str(tmp_path / "swin.pth"))
    loaded = model.encoder.state_dict()["layers_3.blocks.0.attn.qkv.weight"]
    torch.testing.assert_close(loaded, swin.state_dict()["layers.3.blocks.0.attn.qkv.weight"])


def test_efficientnet_lite_encoder(tmp_path):
    torch.manual_seed(0)
    model = RGBSOD("tf_efficientnet_lite0", img_size=S, decoder_channels=16).eval()
    x = torch.randn(2, 3, S, S)
    feats = model.encode(x)
    assert [f.shape[1] for f in feats] == [24, 40, 112, 320]
    assert [f.shape[-1] for f in feats] == [S // 4, S // 8, S // 16, S // 32]
    with torch.no_grad():
        out = model(x)
    assert all(s.shape == (2, 1, S, S) for s in out["side"]) and out["edge"].shape == (2, 1, S, S)
    # A checkpoint path goes through the shared resolver onto timm's layout.
    torch.manual_seed(3)
    lite = timm.create_model("tf_efficientnet_lite0")
    torch.save(lite.state_dict(), tmp_path / "lite0.pth")
    loaded = RGBSOD("tf_efficientnet_lite0", img_size=S, decoder_channels=16, pretrained=str(tmp_path / "lite0.pth"))
    torch.testing.assert_close(loaded.encoder.state_dict()["blocks.5.0.conv_pw.weight"],
                               lite.state_dict()["blocks.5.0.conv_pw.weight"])


def test_swin_base_224_forward():
    start = time.perf_counter()
    model = RGBSOD(pretrained=False).eval()
    if time.perf_counter() - start > 20:
        pytest.skip("building Swin-B took over 20 s on this machine")
    assert model.encoder.feature_info.channels() == [128, 256, 512, 1024]
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224))
    assert out["side"][0].shape == (1, 1, 224, 224) and out["edge"].shape == (1, 1, 224, 224)
