"""One source for every default: the library's keyword defaults are base.yaml's, and presets inherit."""
from __future__ import annotations

import inspect
from dataclasses import asdict

import pytest
from omegaconf import OmegaConf

import salmask
from salmask import schema
from salmask.config import FREE_FORM, NOT_HASHED, Config, ConfigError, hash_part, load_config


def defaults():
    """The typed sections' defaults (salmask.config.Config): what base.yaml must hold, and every preset starts from."""
    return OmegaConf.create(schema.defaults(Config))


def base_yaml():
    from importlib import resources

    with resources.as_file(resources.files("salmask.configs") / "base.yaml") as base:
        return load_config(str(base))


def test_base_yaml_is_the_typed_sections():
    """base.yaml holds every key of the typed sections, in their order, with their defaults (and no other)."""
    yaml_keys = [k for k, _ in _flat(OmegaConf.to_container(base_yaml()))]
    typed = [k for k, _, _ in schema.leaves(Config)]
    assert yaml_keys == typed
    assert dict(_flat(OmegaConf.to_container(base_yaml()))) == dict(_flat(schema.defaults(Config)))


def _flat(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict) and f"{prefix}{k}" not in FREE_FORM:
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def test_stage_hash_keys_come_from_the_sections():
    """What enters train_cam's / train_seg's / infer_seg's hash is declared on each key (its part), and
    every key of those sections belongs to one part or to none (how, not what)."""
    from salmask.cam.stage import TRAIN_KEYS as CAM_TRAIN
    from salmask.seg.stage import INFER_KEYS, TRAIN_KEYS as SEG_TRAIN

    assert "cam.lr" in CAM_TRAIN and "cam.scales" not in CAM_TRAIN and "cam.infer_batch" not in CAM_TRAIN
    assert "seg.iterations" in SEG_TRAIN and "seg.scales" in INFER_KEYS and "seg.scales" not in SEG_TRAIN
    assert not {"seg.infer_batch", "seg.checkpoint_every"} & {*SEG_TRAIN, *INFER_KEYS}
    assert {"seg.infer_batch", "seg.checkpoint_every", "cam.infer_batch", "boundary.infer_batch"} <= NOT_HASHED
    cfg = load_config("demo")
    before = hash_part(cfg, "boundary")
    cfg.boundary.infer_batch = 7
    assert hash_part(cfg, "boundary") == before and "infer_batch" not in before
    cfg.boundary.lr = 0.5
    assert hash_part(cfg, "boundary") != before


def test_selector_options_default_to_the_select_section():
    from salmask.select.sos import SelectorConfig

    section = OmegaConf.to_container(defaults().select)
    for name, value in asdict(SelectorConfig()).items():
        if name in section and name != "salient_classes":
            assert value == section[name], name


@pytest.mark.parametrize("override, message", [
    ("select.mode=best", "select.mode.*one of sep, alpha, auto"),
    ("cam.infer_batch=0", "cam.infer_batch.*>= 1"),
    ("num_workers=-1", "num_workers.*int >= 0 or .auto."),
    ("dataset.max_images=many", "dataset.max_images.*int >= 1 or null"),
    ("walk.bg_score=high", "walk.bg_score.*float or 'auto'"),
    ("seg.pretrained=3", "seg.pretrained.*bool or str"),
    ("cam.scales=[0.5,big]", "cam.scales.*list of float"),
    ("boundary.loss=ce", "boundary.loss.*one of sbe, bes"),
])
def test_values_are_checked_against_the_typed_sections(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("demo", [override])
    assert load_config("demo", ["cam.infer_batch=2", "num_workers=0", "dataset.max_images=5",
                                "seg.pretrained=/some/checkpoint.pt", "sod.encoder_kwargs={depth: 2}"]).num_workers == 0

# (function, keyword) -> the config key whose default it must equal
SAME_AS_CONFIG = {
    ("boundary_labels", "fg_thres"): "boundary_labels.fg_thres",
    ("boundary_labels", "bg_thres"): "boundary_labels.bg_thres",
    ("boundary_labels", "window"): "boundary_labels.window",
    ("boundary_labels", "theta_scale"): "boundary_labels.theta_scale",
    ("boundary_labels", "theta_diff"): "boundary_labels.theta_diff",
    ("boundary_labels", "sal_edge_thres"): "boundary_labels.sal_edge_thres",
    ("random_walk", "beta"): "walk.beta",
    ("random_walk", "exp_times"): "walk.exp_times",
    ("random_walk", "radius"): "walk.radius",
    ("pseudo_masks", "beta"): "walk.beta",
    ("pseudo_masks", "exp_times"): "walk.exp_times",
    ("pseudo_masks", "radius"): "walk.radius",
    ("pseudo_masks", "bg_score"): "walk.bg_score",
    ("select_masks", "mode"): "select.mode",
    ("select_masks", "t0"): "select.t0",
    ("select_masks", "t1"): "select.t1",
    ("select_masks", "tau"): "select.tau",
    ("select_masks", "eta"): "select.eta",
    ("select_masks", "sal_thres"): "select.sal_thres",
    ("select_masks", "salient_classes"): "select.salient_classes",
    ("select_masks", "allow_missing"): "saliency.allow_missing",
    ("select_masks", "judge"): "select.judge",
    ("segment", "flip"): "seg.flip",
    ("segment", "crf"): "seg.crf",
}
DIFFERENT_ON_PURPOSE = {
    ("boundary_labels", "crf"): "the CRF needs the image: on when an image is given",
    ("load", "boundary"): "the boundary network's checkpoint, not walk.boundary",
    ("select_masks", "boundary"): "the folder of boundary maps the auto judge reads, not walk.boundary",
    ("select_masks", "images"): "the images the classifier judge reads, not dataset.images",
    ("class_activation_maps", "scales"): "one scale for a single quick call; salmask.load(work_dir) uses the run's",
    ("segment", "scales"): "one scale for a single quick call; salmask.load(work_dir) uses the run's",
}


@pytest.mark.parametrize("function, keyword", sorted(SAME_AS_CONFIG))
def test_library_defaults_are_the_configs(function, keyword):
    default = inspect.signature(getattr(salmask, function)).parameters[keyword].default
    assert default == OmegaConf.select(defaults(), SAME_AS_CONFIG[function, keyword]), (function, keyword)


def test_every_config_like_keyword_is_listed():
    """A new keyword that shadows a config key is either checked above or explained as a deliberate difference."""
    cfg = OmegaConf.to_container(defaults())
    leaves = {k for section in cfg.values() if isinstance(section, dict) for k in section}
    for name in salmask.__all__:
        fn = getattr(salmask, name)
        if not inspect.isfunction(fn):
            continue
        for keyword, p in inspect.signature(fn).parameters.items():
            if p.default is not inspect.Parameter.empty and keyword in leaves:
                assert (name, keyword) in SAME_AS_CONFIG or (name, keyword) in DIFFERENT_ON_PURPOSE \
                    or keyword in ("device", "size", "saliency", "labels", "num_classes"), (name, keyword)


def test_presets_inherit(tmp_path):
    """voc_v3plus, coco and voc_cpu build on voc and hold only what they change; a user's file may too."""
    from importlib import resources

    for preset in ("voc_v3plus", "coco", "voc_cpu"):
        text = resources.files("salmask.configs").joinpath(f"{preset}.yaml").read_text()
        assert "\nbase: voc\n" in text, preset
        assert "bg_score: 0.21" not in text and "kind: voc\n" not in text, preset
    assert load_config("voc_v3plus").walk.bg_score == 0.21 and load_config("voc_v3plus").amp is False
    mine = tmp_path / "mine.yaml"
    mine.write_text("base: voc_cpu\nwalk:\n  beta: 7.0\n")
    cfg = load_config(str(mine))
    assert cfg.walk.beta == 7.0 and cfg.walk.bg_score == "auto" and cfg.cam.backbone == "efficientnet-lite0"
    (tmp_path / "child.yaml").write_text("base: mine.yaml\nseed: 5\n")
    assert load_config(str(tmp_path / "child.yaml")).walk.beta == 7.0
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="inherits from itself"):
        load_config(str(tmp_path / "loop.yaml"))
    (tmp_path / "typo.yaml").write_text("base: voc\nwalk:\n  betaa: 7.0\n")
    with pytest.raises(ConfigError, match="betaa"):
        load_config(str(tmp_path / "typo.yaml"))
