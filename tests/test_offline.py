"""A machine without internet: pre-flight knows whether ``pretrained: true`` can be honoured (weights cached, hub
answering, or offline), and a run whose weights are cached never touches the network.

The hub is simulated: an unreachable one is a closed local port or a local socket that never answers, an
answering one a local HTTP server; the caches are temporary folders. No test depends on the real network.
"""
from __future__ import annotations

import http.server
import re
import socket
import threading
import time
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants as hf_constants

from salmask.config import load_config
from salmask.errors import ConfigError
from salmask.models import hub
from salmask.preflight import check_plan

from conftest import VOC_MINI, run_salmask


@pytest.fixture
def caches(tmp_path, monkeypatch) -> Path:
    """Empty Hugging Face and torch caches, no remembered hub answers, no offline setting."""
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(hub, "_ANSWERS", {})
    return tmp_path


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network touched: {args[1:] or kwargs}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]


class Hub(http.server.ThreadingHTTPServer):
    """A local stand-in for the hub: HEAD of a ``resolve`` URL answers 302 (as the hub redirects to its CDN)
    for the files in ``present``, 404 otherwise; every request path is recorded."""

    def __init__(self, present: set[str]):
        self.requests: list[str] = []
        self.present = present
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self):  # noqa: N802
                server.requests.append(self.path)
                ok = self.path.rsplit("/", 1)[-1] in server.present
                self.send_response(302 if ok else 404)
                self.send_header("Location", "http://cdn.invalid/file")
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def pretrained_problems(cfg, stages=("train_cam", "train_boundary", "train_seg"), work: Path = Path("/tmp")
                        ) -> list[str]:
    return [p for p in check_plan(cfg, list(stages), work) if ".pretrained" in p]


VOC_DEFAULTS = ["cam.backbone=resnet18", "boundary.backbone=resnet18", "seg.backbone=resnet18"]


def test_timm_weights_are_located():
    weights = hub.hub_weights("resnet50")
    assert weights.repo == "timm/resnet50.a1_in1k" and weights.files == ("model.safetensors", "pytorch_model.bin")
    with pytest.raises(ConfigError, match="no ImageNet weights"):
        hub.hub_weights("resnet18d_not_a_model")


def test_unreachable_hub_stops_preflight_naming_every_key(caches, monkeypatch):
    monkeypatch.setattr(hf_constants, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    cfg = load_config("voc", VOC_DEFAULTS)
    t0 = time.perf_counter()
    problems = pretrained_problems(cfg)
    assert time.perf_counter() - t0 < 10
    by_key = {p.split(":")[0].removesuffix(".pretrained=true"): p for p in problems}
    assert sorted(by_key) == ["boundary", "cam", "seg"] and len(problems) == 3
    for p in problems:
        assert "not in the local cache" in p and "cannot be reached" in p and "127.0.0.1" in p
        assert re.search(r"\.pretrained=PATH .*efficientnet-lite0.*\.pretrained=false", p), p
    assert "boundary.init=cam" in by_key["boundary"] and "seg.init=cam" in by_key["seg"]
    assert ".init=cam" not in by_key["cam"]
    # what does not ask for the hub is not checked against it
    assert not pretrained_problems(load_config("voc", [*VOC_DEFAULTS, "cam.pretrained=false", "boundary.init=cam",
                                                       "seg.init=cam"]))


def test_a_silent_hub_costs_one_timeout(caches, monkeypatch):
    """A hub that accepts the connection but never answers: one request, cut at the probe's timeout, answers for
    every backbone on that host."""
    silent = socket.create_server(("127.0.0.1", 0))
    monkeypatch.setattr(hf_constants, "ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
    monkeypatch.setattr(hub, "PROBE_TIMEOUT_S", 0.5)
    try:
        t0 = time.perf_counter()
        problems = pretrained_problems(load_config("voc", VOC_DEFAULTS))
        elapsed = time.perf_counter() - t0
    finally:
        silent.close()
    assert len(problems) == 3 and all("no answer from 127.0.0.1" in p and "within 0.5 s" in p for p in problems)
    assert elapsed < 3.0


def test_offline_setting_sends_no_request(caches, no_network, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    problems = pretrained_problems(load_config("voc", VOC_DEFAULTS))
    assert len(problems) == 3 and all("HF_HUB_OFFLINE says not to download" in p for p in problems)


def test_answering_hub_passes_with_one_request_per_file(caches, monkeypatch):
    server = Hub({"model.safetensors"})
    monkeypatch.setattr(hf_constants, "ENDPOINT", server.endpoint)
    try:
        assert not pretrained_problems(load_config("voc", VOC_DEFAULTS))
        assert server.requests == ["/timm/resnet18.a1_in1k/resolve/main/model.safetensors"]
        server.present = set()  # a repo without the file: asked for both names, then reported
        monkeypatch.setattr(hub, "_ANSWERS", {})
        problems = pretrained_problems(load_config("voc", VOC_DEFAULTS), stages=("train_cam",))
        assert server.requests[1:] == ["/timm/resnet18.a1_in1k/resolve/main/model.safetensors",
                                       "/timm/resnet18.a1_in1k/resolve/main/pytorch_model.bin"]
        assert len(problems) == 1 and "HTTP 404" in problems[0]
    finally:
        server.shutdown()
        server.server_close()


def _fake_hf_cache(root: Path, repo: str, state: dict[str, torch.Tensor]) -> Path:
    """``state`` as ``model.safetensors`` in huggingface_hub's cache layout under ``root``."""
    from safetensors.torch import save_file

    folder = root / f"models--{repo.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    path = folder / "snapshots" / commit / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def test_cached_weights_load_without_the_network(caches, no_network):
    import timm

    from salmask.models.backbones import create_backbone

    torch.manual_seed(1)
    state = timm.create_model("resnet18", pretrained=False).state_dict()
    path = _fake_hf_cache(caches / "hf", "timm/resnet18.a1_in1k", state)
    assert hub.cached_weights("resnet18") == path
    assert not pretrained_problems(load_config("voc", VOC_DEFAULTS))  # no request: no_network would fail it
    model = create_backbone("resnet18", pretrained=True)
    torch.testing.assert_close(model.state_dict()["conv1.weight"], state["conv1.weight"])
    torch.testing.assert_close(model.state_dict()["layer4.1.bn2.running_var"], state["layer4.1.bn2.running_var"])


def test_torch_cache_of_a_url_download_counts(caches, no_network):
    weights = hub.hub_weights("resnet18")
    path = caches / "torch" / "hub" / "checkpoints" / Path(weights.url).name
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    assert hub.cached_weights("resnet18") == path
    assert hub.timm_weight_kwargs("resnet18", True) == {"pretrained_cfg_overlay": {"file": str(path)}}
    assert hub.timm_weight_kwargs("resnet18", False) == {}


@pytest.mark.skipif(not (VOC_MINI / "VOCdevkit").is_dir(), reason="voc-mini is absent")
def test_voc_run_without_internet_stops_at_preflight(tmp_path):
    """``salmask run voc dataset.root=...`` (every ``pretrained: true``) with the hub unreachable and empty caches:
    the command stops in seconds, before the first stage, one line per key with the fixes."""
    env = dict(HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}", HF_HUB_CACHE=str(tmp_path / "hf"),
               TORCH_HOME=str(tmp_path / "torch"), HF_HUB_OFFLINE="0")
    t0 = time.perf_counter()
    res = run_salmask(["run", "voc", f"dataset.root={VOC_MINI}", f"work_dir={tmp_path / 'w'}"], check=False,
                      timeout=120, **env)
    elapsed = time.perf_counter() - t0
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.splitlines() if ".pretrained=true:" in ln]
    assert sorted(ln.strip(" -").split(":")[0] for ln in lines) == [
        "boundary.pretrained=true", "cam.pretrained=true", "seg.pretrained=true"], res.stderr
    assert all("cannot be reached" in ln and "pretrained=false" in ln for ln in lines)
    assert "nothing was started" in res.stderr and not (tmp_path / "w" / "train_cam").exists()
    assert elapsed < 60, elapsed
