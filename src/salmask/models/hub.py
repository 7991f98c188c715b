"""Whether ``pretrained: true`` (timm's ImageNet weights for a backbone) can be honoured, known before a run.

timm downloads those weights from the Hugging Face hub (a few backbones: from a release URL) and keeps them
in a cache. They can be had when the file is in that cache (the Hugging Face cache, ``HF_HUB_CACHE`` /
``HF_HOME``; torch's ``TORCH_HOME``/hub/checkpoints for URL downloads), or when the hub answers one short
request (:data:`PROBE_TIMEOUT_S`, no retries; timm's own download retries for minutes). ``HF_HUB_OFFLINE=1``
says not to ask. A cached file is handed to timm by its path (:func:`timm_weight_kwargs`), so a run whose
weights are cached never touches the network.
"""
from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import try_to_load_from_cache
from timm.models import get_pretrained_cfg

from salmask.errors import ConfigError

PROBE_TIMEOUT_S = 4.0
"""How long the hub may take to answer the probe before it counts as unreachable."""
ANSWER_TTL_S = 300.0
"""A host's answer is reused for this long, so a run's several checks send one request per host."""
_ANSWERS: dict[str, tuple[float, int | str]] = {}
HF_WEIGHTS = "pytorch_model.bin"
TRUE_VALUES = {"1", "on", "yes", "true"}


@dataclass(frozen=True)
class HubWeights:
    """Where timm fetches a backbone's ImageNet weights: a Hugging Face repo (and file), else a URL."""

    backbone: str
    repo: str | None
    revision: str | None
    filename: str
    url: str | None

    @property
    def files(self) -> tuple[str, ...]:
        """The repo files timm tries, in its order (a ``.safetensors`` alternative first)."""
        if self.filename == HF_WEIGHTS:
            return "model.safetensors", self.filename
        if self.filename.endswith(".bin"):
            return self.filename[:-4] + ".safetensors", self.filename
        return (self.filename,)

    @property
    def where(self) -> str:
        return f"the Hugging Face hub ({self.repo})" if self.repo else str(self.url)


def hub_weights(backbone: str) -> HubWeights:
    """Where timm would fetch ``backbone``'s (a timm name) default ImageNet weights; a ConfigError when it has none."""
    cfg = get_pretrained_cfg(backbone)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise ConfigError(f"timm has no ImageNet weights for {backbone!r}")
    repo, revision = None, None
    if cfg.hf_hub_id:
        repo, _, revision = cfg.hf_hub_id.partition("@")
    return HubWeights(backbone, repo, revision or None, cfg.hf_hub_filename or HF_WEIGHTS, cfg.url or None)


def cached_weights(backbone: str) -> Path | None:
    """The local file of ``backbone``'s ImageNet weights in the Hugging Face or torch cache, if there is one."""
    weights = hub_weights(backbone)
    if weights.repo:
        for name in weights.files:
            found = try_to_load_from_cache(weights.repo, name, revision=weights.revision)
            if isinstance(found, str) and os.path.isfile(found):
                return Path(found)
    if weights.url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
        if path.is_file():
            return path
    return None


def offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or huggingface_hub's offline mode) says not to contact the hub."""
    return hf_constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in TRUE_VALUES


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the redirect's own status is the answer; following it would be a second request


def probe(url: str, timeout: float | None = None) -> int | str:
    """The HTTP status with which ``url`` answers one HEAD request within ``timeout`` seconds (default
    :data:`PROBE_TIMEOUT_S`; a redirect is an answer, not followed), or why it did not answer."""
    wait = timeout or PROBE_TIMEOUT_S
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "salmask-preflight"})
    try:
        with urllib.request.build_opener(_NoRedirect).open(request, timeout=wait) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        if isinstance(reason, TimeoutError):
            return f"no answer from {urlparse(url).netloc} within {wait:g} s"
        return f"{urlparse(url).netloc}: {reason}"


def _answer(url: str) -> int | str:
    """:func:`probe` of ``url``, remembered for :data:`ANSWER_TTL_S`; a host that did not answer is not
    asked again in that time."""
    host = urlparse(url).netloc
    now = time.monotonic()
    for key in (host, url):
        seen = _ANSWERS.get(key)
        if seen is not None and now - seen[0] < ANSWER_TTL_S:
            return seen[1]
    answer = probe(url)
    _ANSWERS[host if isinstance(answer, str) else url] = (now, answer)
    return answer


def weights_problem(backbone: str) -> str | None:
    """Why timm's ImageNet weights for ``backbone`` (a timm name) cannot be had here and now, or None when they
    can: in the local cache (no request), else the hub answers a short request for them (unless offline)."""
    if cached_weights(backbone) is not None:
        return None
    weights = hub_weights(backbone)
    missing = f"timm's ImageNet weights for {backbone} are not in the local cache"
    if offline():
        return f"{missing}, and HF_HUB_OFFLINE says not to download them"
    urls = ([f"{hf_constants.ENDPOINT}/{weights.repo}/resolve/{weights.revision or 'main'}/{name}"
             for name in weights.files] if weights.repo else [str(weights.url)])
    for url in urls:
        answer = _answer(url)
        if isinstance(answer, str):
            return f"{missing}, and {weights.where} cannot be reached: {answer}"
        if answer < 400:
            return None
        if answer != 404:
            return f"{missing}, and {weights.where} answered HTTP {answer}"
    return f"{missing}, and {weights.where} has no such file (HTTP 404 for {', '.join(urls)})"


def timm_weight_kwargs(backbone: str, pretrained: bool) -> dict[str, Any]:
    """``timm.create_model`` keywords that load ``pretrained`` ImageNet weights from the local cache when they
    are there (timm would otherwise ask the hub whether a newer file exists); nothing otherwise."""
    if pretrained is not True:
        return {}
    cached = cached_weights(backbone)
    return {"pretrained_cfg_overlay": {"file": str(cached)}} if cached is not None else {}
