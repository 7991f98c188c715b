"""A pretrained salient-object model in ONNX format, run with onnxruntime (``saliency.source=onnx``).

The defaults are U²-NetP's recipe (rembg's): RGB resized to 320×320 with Lanczos, divided by its maximum,
normalised with the ImageNet mean/std, NCHW float32 into the model's single input; output 0, channel 0, is
a saliency map that is min-max normalised and resized back to the image with Lanczos (as a float map: rembg
quantises it to uint8 first, which moves its mask by a few grey levels, 0.5 on average). onnxruntime is an
optional dependency (``pip install 'salmask[onnx]'``); its CUDA provider is used when the device is a GPU
and the installed build has it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from salmask.errors import ConfigError, InputError
from salmask.utils.log import logger

INSTALL_HINT = ("saliency.source=onnx needs onnxruntime: pip install 'salmask[onnx]' (or pip install "
                "onnxruntime; onnxruntime-gpu for CUDA)")


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return onnxruntime


class OnnxSaliency:
    """An ONNX salient-object model: RGB uint8 images [H,W,3] → saliency maps float32 [H,W] in [0,1].

    ``batch_size`` images go through the model at once when its input's batch dimension is dynamic; a
    model declaring a fixed batch dimension (U²-NetP's is 1) gets exactly that many, the last call padded.
    """

    def __init__(self, model: str | os.PathLike, *, input_size: int = 320,
                 mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225),
                 divide_by_max: bool = True, output_index: int = 0, batch_size: int = 8,
                 device: torch.device | str = "cpu", threads: int | None = None):
        ort = import_onnxruntime()
        self.path = Path(os.path.expanduser(str(model)))
        if not self.path.is_file():
            raise InputError(self.path, "ONNX model not found (saliency.model)")
        if input_size < 1 or batch_size < 1:
            raise ConfigError(f"saliency.input_size and saliency.batch_size must be positive, got "
                              f"{input_size} and {batch_size}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ConfigError(f"saliency.mean/std need three values each, std positive; got {list(mean)}, "
                              f"{list(std)}")
        self.input_size = int(input_size)
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.divide_by_max = bool(divide_by_max)

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # onnxruntime's own warnings (e.g. unused initialisers) are noise here
        device = torch.device(device)
        providers: list = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
            else:
                logger.warning("saliency: this onnxruntime has no CUDA provider (pip install onnxruntime-gpu); "
                               "running the ONNX model on the CPU")
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=providers)
        except Exception as e:
            raise InputError(self.path, f"cannot load as an ONNX model ({str(e).splitlines()[0][:200]})") from None

        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise InputError(self.path, f"the model takes {len(inputs)} inputs "
                                        f"({', '.join(i.name for i in inputs)}); a saliency model takes one image")
        inp = inputs[0]
        shape = list(inp.shape)
        channels_ok = len(shape) == 4 and (shape[1] == 3 or not isinstance(shape[1], int))
        if inp.type != "tensor(float)" or not channels_ok:
            raise InputError(self.path, f"input {inp.name!r} is {inp.type} {shape}; expected float32 [N,3,H,W]")
        fixed_hw = [d for d in shape[2:] if isinstance(d, int)]
        if any(d != self.input_size for d in fixed_hw):
            raise ConfigError(f"{self.path} takes {shape[2]}x{shape[3]} inputs but saliency.input_size is "
                              f"{self.input_size}")
        self.input_name = inp.name
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        self.batch_size = self.fixed_batch or int(batch_size)
        outputs = self.session.get_outputs()
        if not 0 <= output_index < len(outputs):
            raise ConfigError(f"saliency.output_index={output_index} but {self.path} has {len(outputs)} outputs")
        self.output_name = outputs[output_index].name
        logger.info("saliency: %s on %s, batches of %d%s", self.path.name, self.session.get_providers()[0],
                    self.batch_size, " (fixed by the model)" if self.fixed_batch else "")

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """RGB uint8 [H,W,3] → float32 [3,S,S]: Lanczos resize, ÷ max (or 255), (x − mean) / std."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image [H,W,3], got {image.dtype} {list(image.shape)}")
        s = self.input_size
        resized = np.asarray(Image.fromarray(image).resize((s, s), Image.Resampling.LANCZOS), np.float32)
        scale = float(resized.max()) if self.divide_by_max else 255.0
        x = (resized / max(scale, 1.0) - self.mean) / self.std  # a black image stays black, not NaN
        return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)

    def postprocess(self, pred: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """One output map [h,w] → float32 [H,W] = ``size``, min-max normalised to [0,1] then Lanczos-resized.

        A constant output has no salient object: all zeros.
        """
        if not np.isfinite(pred).all():
            raise InputError(self.path, "the model's output has NaN or infinite values")
        pred = pred.astype(np.float32)
        lo, hi = float(pred.min()), float(pred.max())
        norm = (pred - lo) / (hi - lo) if hi - lo > 1e-8 else np.zeros_like(pred)
        h, w = size
        if norm.shape == (h, w):
            return norm
        resized = np.asarray(Image.fromarray(norm).resize((w, h), Image.Resampling.LANCZOS), np.float32)
        return np.clip(resized, 0.0, 1.0)  # Lanczos overshoots a little at sharp edges

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 [B,3,S,S] → the selected output's first channel [B,h,w] (B padded to a fixed batch)."""
        n = len(batch)
        if self.fixed_batch and n != self.fixed_batch:
            pad = np.repeat(batch[-1:], self.fixed_batch - n, axis=0)
            batch = np.concatenate([batch, pad])
        try:
            out = self.session.run([self.output_name], {self.input_name: batch})[0]
        except Exception as e:
            raise InputError(self.path, f"inference failed ({str(e).splitlines()[0][:200]})") from None
        out = np.asarray(out)
        if out.ndim == 4:
            out = out[:, 0]
        if out.ndim != 3 or out.shape[0] != len(batch):
            raise InputError(self.path, f"output {self.output_name!r} has shape {list(out.shape)}; expected "
                                        f"[B,1,h,w] or [B,h,w]")
        return out[:n]

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """RGB uint8 images [H_i,W_i,3] → saliency maps float32 [H_i,W_i] in [0,1], ``batch_size`` at a time."""
        maps: list[np.ndarray] = []
        for j in range(0, len(images), self.batch_size):
            chunk = images[j:j + self.batch_size]
            preds = self.run(np.stack([self.preprocess(im) for im in chunk]))
            maps.extend(self.postprocess(p, im.shape[:2]) for p, im in zip(preds, chunk))
        return maps


def onnx_from_config(scfg, device: torch.device | str = "cpu") -> OnnxSaliency:
    """The ``saliency`` config section's ONNX model (``saliency.model`` and the recipe keys)."""
    if not scfg.model:
        raise ConfigError("saliency.source=onnx needs saliency.model, the path of an ONNX salient-object model "
                          "(e.g. U²-NetP's u2netp.onnx)")
    return OnnxSaliency(scfg.model, input_size=scfg.input_size, mean=list(scfg.mean), std=list(scfg.std),
                        divide_by_max=scfg.divide_by_max, output_index=scfg.output_index,
                        batch_size=scfg.batch_size, device=device)
