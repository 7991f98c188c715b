"""``num_workers: auto`` (the default) asks for no more data-loading processes than the machine has."""
from __future__ import annotations

import pytest

from salmask.config import load_config
from salmask.errors import ConfigError
from salmask.utils.dist import loader_workers


def test_num_workers_auto_fits_the_machine(monkeypatch, tmp_path):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    for cpus, want in ((1, 1), (2, 2), (3, 3), (16, 4)):
        monkeypatch.setattr("os.sched_getaffinity", lambda pid, n=cpus: set(range(n)), raising=False)
        assert loader_workers("auto") == want
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert loader_workers("auto") == 4 and loader_workers(0) == 0 and loader_workers(6) == 6
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert loader_workers("auto") == 1
    assert load_config("voc").num_workers == "auto" and load_config("voc", ["num_workers=0"]).num_workers == 0
    saved = tmp_path / "config.yaml"  # a work dir's saved config, as the report reads it
    for value in ("0", "3", "auto"):
        saved.write_text(f"num_workers: {value}\n")
        assert str(load_config(str(saved)).num_workers) == value
    for bad in ("-1", "many", "true"):
        with pytest.raises(ConfigError, match="num_workers"):
            load_config("voc", [f"num_workers={bad}"])
