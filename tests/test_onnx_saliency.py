"""The ONNX saliency source: U²-NetP's pre/post-processing on tiny hand-built models, errors, the stage, U²-NetP."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from salmask.cli import main
from salmask.config import load_config
from salmask.errors import ConfigError, InputError
from salmask.io import read_gray, read_image, read_json

from conftest import ROOT, tiny_overrides

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

from salmask.saliency.onnx_sod import OnnxSaliency, onnx_from_config  # noqa: E402

U2NETP = ROOT.parent / "shared" / "weights" / "u2netp.onnx"
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
S = 16
W = np.array([1.0, 2.0, 4.0])


def write_model(path: Path, *, batch: int | str = "N", size: int | str = S, inputs: int = 1) -> Path:
    """An ONNX model of input x [batch,3,size,size] with outputs 0: Σ_c w_c x_c² and 1: −Σ_c w_c x_c, both
    [B,1,H,W], w = W (unequal, so that channel order shows)."""
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 3, 1, 1], W.tolist())
    nodes = [helper.make_node("Mul", ["x", "x"], ["sq"]),
             helper.make_node("Mul", ["sq", "w"], ["wsq"]),
             helper.make_node("ReduceSum", ["wsq", "axes"], ["sumsq"], keepdims=1),
             helper.make_node("Mul", ["x", "w"], ["wx"]),
             helper.make_node("ReduceSum", ["wx", "axes"], ["sum"], keepdims=1),
             helper.make_node("Neg", ["sum"], ["negsum"])]
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, size, size])]
    ins += [helper.make_tensor_value_info(f"extra{k}", TensorProto.FLOAT, [1]) for k in range(inputs - 1)]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [batch, 1, size, size]) for n in ("sumsq", "negsum")]
    graph = helper.make_graph(nodes, "toy_sod", ins, outs, initializer=[axes, w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def expected(image: np.ndarray, output: int, divide_by_max: bool = True) -> np.ndarray:
    """The recipe by hand for an S×S image (no resizing): ÷ max, ImageNet mean/std, the output, min-max."""
    x = image.astype(np.float64) / (image.max() if divide_by_max else 255.0)
    x = (x - MEAN) / STD
    y = (W * x ** 2).sum(-1) if output == 0 else -(W * x).sum(-1)
    return (y - y.min()) / (y.max() - y.min())


def test_preprocessing_and_postprocessing_are_the_recipe(tmp_path):
    m = write_model(tmp_path / "toy.onnx")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 180, (S, S, 3), dtype=np.uint8)  # max < 255, so ÷ max and ÷ 255 differ
    for output in (0, 1):
        for by_max in (True, False):
            sal = OnnxSaliency(m, input_size=S, output_index=output, divide_by_max=by_max).predict([image])[0]
            assert sal.shape == (S, S) and sal.dtype == np.float32
            np.testing.assert_allclose(sal, expected(image, output, by_max), atol=1e-5)
    # BGR instead of RGB would give another map.
    assert np.abs(expected(image[..., ::-1], 0) - expected(image, 0)).max() > 0.05


def rembg_u2netp(session, image: np.ndarray, size: int, *, by_max_first: bool = False,
                 as_uint8: bool = False) -> np.ndarray:
    """rembg's U²-NetP session (``sessions/u2netp.py`` and ``BaseSession.normalize``), written with PIL and
    numpy only: RGB Lanczos-resized to size², ÷ the resized image's maximum, (x − mean) / std per channel,
    NCHW float32; output 0, channel 0, min-max normalised; Lanczos back to the image's size. rembg resizes
    back the mask quantised to uint8 (``as_uint8``); salmask resizes the float map. ``by_max_first``
    divides by the original image's maximum instead, the wrong order, to show that the order is tested."""
    pil = Image.fromarray(image).convert("RGB")
    im = np.array(pil.resize((size, size), Image.Resampling.LANCZOS)).astype(np.float64)
    im = im / (image.max() if by_max_first else np.max(im))
    x = np.zeros((size, size, 3))
    for c in range(3):
        x[:, :, c] = (im[:, :, c] - MEAN[c]) / STD[c]
    x = np.expand_dims(x.transpose((2, 0, 1)), 0).astype(np.float32)
    pred = session.run(None, {session.get_inputs()[0].name: x})[0][:, 0, :, :]
    pred = np.squeeze((pred - np.min(pred)) / (np.max(pred) - np.min(pred)))
    if as_uint8:
        mask = Image.fromarray((pred * 255).astype("uint8"), mode="L").resize(pil.size, Image.Resampling.LANCZOS)
        return np.asarray(mask) / 255.0
    back = Image.fromarray(pred.astype(np.float32), mode="F").resize(pil.size, Image.Resampling.LANCZOS)
    return np.clip(np.asarray(back), 0.0, 1.0)


def test_recipe_on_odd_sized_images_against_rembgs(tmp_path):
    """Images of odd sizes, so that both Lanczos resizes and the ÷ max after the first one count: salmask's
    maps against rembg's recipe written with PIL/numpy and run on onnxruntime directly (not OnnxSaliency)."""
    import onnxruntime as ort

    path = write_model(tmp_path / "toy.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(4)
    images = []
    for h, w in ((23, 37), (41, 19), (16, 16)):
        im = rng.integers(0, 120, (h, w, 3), dtype=np.uint8)
        im[h // 3, w // 2] = (250, 40, 200)  # one bright pixel: the resized image's maximum is lower
        im[h // 2:, : w // 2] += 60  # and a structure that survives the resize
        images.append(im)
    for output in (0, 1):
        model = OnnxSaliency(path, input_size=S, output_index=output)
        for im, sal in zip(images, model.predict(images)):
            assert sal.shape == im.shape[:2]
            if output == 1:  # rembg reads output 0; output 1 runs the same recipe on the other map
                continue
            np.testing.assert_allclose(sal, rembg_u2netp(session, im, S), rtol=0, atol=2e-6)
            # rembg's uint8 step (truncated, then Lanczos) moves its mask by a few grey levels
            rembg_mask = rembg_u2netp(session, im, S, as_uint8=True)
            assert np.abs(sal - rembg_mask).max() < 5 / 255 and np.abs(sal - rembg_mask).mean() < 1 / 255
            if im.shape[:2] != (S, S):  # resized, the bright pixel fades: dividing first would differ
                assert np.abs(sal - rembg_u2netp(session, im, S, by_max_first=True)).max() > 0.01


def test_maps_are_resized_back_to_each_image(tmp_path):
    model = OnnxSaliency(write_model(tmp_path / "toy.onnx"), input_size=S, output_index=1)
    image = np.full((30, 50, 3), 230, np.uint8)  # a bright frame around a dark block: −Σx is high on the block
    image[8:22, 10:30] = 10
    sal = model.predict([image])[0]
    assert sal.shape == (30, 50) and sal.dtype == np.float32 and 0.0 <= sal.min() and sal.max() <= 1.0
    assert sal[10:20, 12:28].mean() > 0.95 and sal[:, 42:].max() < 0.1  # not 0: Lanczos rings below the frame
    flat = model.predict([np.full((20, 24, 3), 90, np.uint8)])[0]
    assert flat.shape == (20, 24) and not flat.any()  # a constant output has no salient object


def _images(n: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (12 + 5 * k, 20 + 3 * k, 3), dtype=np.uint8) for k in range(n)]


def _count_calls(model: OnnxSaliency) -> list[int]:
    """The batch size of every inference call the model's session will make."""
    calls: list[int] = []
    run = model.session.run
    model.session.run = lambda names, feed: (calls.append(len(feed[model.input_name])), run(names, feed))[1]
    return calls


def test_batches_and_fixed_batch_models(tmp_path):
    images = _images()
    one = [OnnxSaliency(write_model(tmp_path / "d.onnx"), input_size=S, batch_size=1).predict([im])[0]
           for im in images]
    dynamic = OnnxSaliency(tmp_path / "d.onnx", input_size=S, batch_size=2)
    calls = _count_calls(dynamic)
    for a, b in zip(dynamic.predict(images), one):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert calls == [2, 2, 1]
    for fixed in (1, 2):  # U²-NetP declares batch 1; a fixed 2 pads the last call
        model = OnnxSaliency(write_model(tmp_path / f"f{fixed}.onnx", batch=fixed), input_size=S, batch_size=4)
        assert model.batch_size == fixed
        calls = _count_calls(model)
        for a, b in zip(model.predict(images), one):
            np.testing.assert_allclose(a, b, atol=1e-6)
        assert calls == [fixed] * -(-len(images) // fixed)


def test_bad_model_files_and_settings(tmp_path, monkeypatch):
    missing = tmp_path / "nope.onnx"
    with pytest.raises(InputError, match="nope.onnx.*not found"):
        OnnxSaliency(missing)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(InputError, match="garbage.onnx.*cannot load"):
        OnnxSaliency(garbage)
    with pytest.raises(InputError, match="two.onnx.*2 inputs"):
        OnnxSaliency(write_model(tmp_path / "two.onnx", inputs=2), input_size=S)
    good = write_model(tmp_path / "toy.onnx")
    with pytest.raises(ConfigError, match="16x16 inputs.*input_size is 320"):
        OnnxSaliency(good, input_size=320)
    with pytest.raises(ConfigError, match="output_index=2.*2 outputs"):
        OnnxSaliency(good, input_size=S, output_index=2)
    with pytest.raises(ConfigError, match="needs saliency.model"):
        onnx_from_config(load_config("voc", ["saliency.source=onnx"]).saliency)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'salmask\[onnx\]'"):
        OnnxSaliency(good, input_size=S)


def test_saliency_and_eval_sod_stages(tmp_path, tiny_data, one_thread):
    model = write_model(tmp_path / "toy.onnx", batch=1)
    work = tmp_path / "w"
    args = lambda m: ["run", "demo", *tiny_overrides(work, tiny_data), "saliency.source=onnx",  # noqa: E731
                      "saliency.input_size=16", f"saliency.model={m}", "--stages", "saliency,eval_sod"]
    assert main(args(model)) == 0
    jpegs = sorted((tiny_data / "VOCdevkit/VOC2012/JPEGImages").glob("*.jpg"))
    maps = sorted((work / "saliency").glob("*.png"))
    assert {p.stem for p in maps} <= {p.stem for p in jpegs} and len(maps) >= 12
    toy = OnnxSaliency(model, input_size=16)
    for p in maps[:3]:
        sal = toy.predict([read_image(tiny_data / "VOCdevkit/VOC2012/JPEGImages" / f"{p.stem}.jpg")])[0]
        sal[sal < 0.1] = 0.0  # the demo preset's saliency.zero_below
        np.testing.assert_allclose(read_gray(p), sal, atol=0.5 / 255 + 1e-6)
    metrics = read_json(work / "eval_sod" / "manifest.json")["metrics"]
    assert set(metrics) == {"classic", "onnx"} and 0.0 <= metrics["onnx"]["MAE"] <= 1.0
    first = read_json(work / "saliency" / "manifest.json")["hash"]
    # The same bytes under another path: the path is part of the stage hash, so the stage reruns.
    other = shutil.copy(model, tmp_path / "copy.onnx")
    assert main(args(other)) == 0
    assert read_json(work / "saliency" / "manifest.json")["hash"] != first


def test_cli_on_a_folder(tmp_path):
    from PIL import Image

    images = tmp_path / "img"
    images.mkdir()
    for k, im in enumerate(_images(3)):
        Image.fromarray(im).save(images / f"im{k}.png")
    model = write_model(tmp_path / "toy.onnx")
    assert main(["saliency", "--source", "onnx", "--images", str(images), "--out", str(tmp_path / "out"),
                 "--model", str(model), "saliency.input_size=16"]) == 0
    toy = OnnxSaliency(model, input_size=16)
    for k, im in enumerate(_images(3)):
        np.testing.assert_allclose(read_gray(tmp_path / "out" / f"im{k}.png"), toy.predict([im])[0],
                                   atol=0.5 / 255 + 1e-6)
    assert main(["saliency", "--source", "onnx", "--images", str(images), "--out", str(tmp_path / "o2"),
                 "--model", str(tmp_path / "absent.onnx")]) == 2


@pytest.mark.skipif(not U2NETP.is_file(), reason=f"U²-NetP not found at {U2NETP}")
def test_u2netp_beats_the_centre_prior_on_voc_mini(voc_mini):
    from salmask.metrics.sod import SODMetrics, read_sod_mask
    from salmask.saliency.classic import centre_prior

    voc = voc_mini / "VOCdevkit" / "VOC2012"
    ids = sorted(p.stem for p in (voc / "SegmentationClassAug").glob("*.png"))[:8]
    model = OnnxSaliency(U2NETP)
    assert model.batch_size == 1  # u2netp.onnx fixes its batch dimension
    maps = model.predict([read_image(voc / "JPEGImages" / f"{i}.jpg") for i in ids])
    ours, prior = SODMetrics(), SODMetrics()
    for i, sal in zip(ids, maps):
        gt = read_sod_mask(voc / "SegmentationClassAug" / f"{i}.png")
        ours.update(sal, gt)
        prior.update(centre_prior(*gt.shape), gt)
    a, b = ours.results(), prior.results()
    assert a["MAE"] < 0.2 and a["MAE"] < b["MAE"] - 0.1, (a["MAE"], b["MAE"])
    assert a["maxF"] > b["maxF"] + 0.15, (a["maxF"], b["maxF"])
