"""Every option of every config group composes and instantiates; settings have one source.

Instantiating builds networks, data modules (no data is read), loggers and callbacks; nothing
trains. Trainers that need hardware this machine lacks are composed and their class resolved.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from spinelesion.config_path import CONFIG_DIR
from spinelesion.config_schema import ConfigError, validated

CONFIGS = Path(CONFIG_DIR)
ABSTRACT = {("model", "base")}  # shared settings of the networks, not a network by itself


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml") if (group, p.stem) not in ABSTRACT)


def compose_train(tmp_path: Path, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train", [f"paths.output_dir={tmp_path}", f"paths.data_dir={tmp_path}/data", *overrides]
        )
    return cfg


def test_every_group_has_options():
    for group in ("model", "data", "trainer", "debug", "experiment", "logger", "callbacks", "paths", "hydra"):
        assert options(group), group


@pytest.mark.parametrize("model", options("model"))
def test_every_model_instantiates_and_describes_its_input(tmp_path: Path, model: str):
    cfg = compose_train(tmp_path, [f"model={model}"])
    module = instantiate(cfg.model)
    assert sum(p.numel() for p in module.parameters()) > 0
    hp = module.hparams
    assert hp["roi"] == OmegaConf.to_container(cfg.data.roi, resolve=True)  # checkpoints describe their input
    assert hp["reference"] == cfg.data.reference


@pytest.mark.parametrize("data", options("data"))
def test_every_data_option_instantiates(tmp_path: Path, data: str):
    cfg = compose_train(tmp_path, [f"data={data}"])
    dm = instantiate(cfg.data)
    assert tuple(dm.spec.shape) == tuple(cfg.data.roi.shape)


@pytest.mark.parametrize("trainer", options("trainer"))
def test_every_trainer_composes(tmp_path: Path, trainer: str):
    import torch

    cfg = compose_train(tmp_path, [f"trainer={trainer}"])
    assert get_class(cfg.trainer._target_)
    if cfg.trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        pytest.skip("needs CUDA to instantiate")
    with open_dict(cfg):
        cfg.trainer.devices = 1 if cfg.trainer.get("strategy") == "ddp" else cfg.trainer.devices
        cfg.trainer.strategy = (
            "auto" if cfg.trainer.get("strategy") == "ddp" else cfg.trainer.get("strategy", "auto")
        )
    trainer_obj = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert trainer_obj.max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize("group", ["debug", "experiment", "logger", "callbacks"])
def test_every_option_of_the_run_groups_instantiates(tmp_path: Path, group: str):
    for option in options(group):
        cfg = compose_train(tmp_path, [f"{group}={option}"])
        instantiate(cfg.model)
        instantiate(cfg.data)
        for section in ("callbacks", "logger"):
            for c in (cfg.get(section) or {}).values():
                if c:
                    instantiate(c)


def test_the_checkpoint_monitors_the_optimized_metric(tmp_path: Path):
    cfg = compose_train(tmp_path, ["optimized_metric=val/auc_compartment"])
    assert cfg.callbacks.model_checkpoint.monitor == "val/auc_compartment"
    assert compose_train(tmp_path, []).callbacks.model_checkpoint.monitor == "val/score"


@pytest.mark.parametrize("name", ["predict", "eval", "bench", "make_data", "insert", "export_bundle"])
def test_every_command_config_composes(name: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(name, ["input=x"] if name == "predict" else [])
    assert OmegaConf.to_yaml(cfg)


def test_predict_sections_are_checked_where_read():
    from spinelesion.tasks.predict import predictor_config

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("predict", ["input=x"])
        bad = compose("predict", ["input=x", "+scan.edge_margn_mm=3"])
    pc = predictor_config(cfg)
    assert pc.scan.edge_margin_mm == cfg.scan.edge_margin_mm and pc.write_maps is True
    with pytest.raises(ConfigError, match=r"scan: unknown key\(s\) edge_margn_mm; allowed: .*edge_margin_mm"):
        predictor_config(bad)


@pytest.mark.parametrize(
    "section, key", [("optimizer", "learning_rate"), ("scheduler", "warmup"), ("loss", "label_smoothin")]
)
def test_a_misspelt_model_key_is_an_error_naming_it(tmp_path: Path, section: str, key: str):
    cfg = compose_train(tmp_path, [f"+model.{section}.{key}=0.1"])
    with pytest.raises(Exception, match=rf"model\.{section}: unknown key\(s\) {key}; allowed: "):
        instantiate(cfg.model)


def test_a_misspelt_roi_key_is_an_error_naming_it(tmp_path: Path):
    cfg = compose_train(tmp_path, ["+data.roi.margn=1.5"])
    with pytest.raises(
        Exception, match=r"data\.roi: unknown key\(s\) margn; allowed: shape, spacing, margin"
    ):
        instantiate(cfg.data)


def test_validated_names_missing_keys():
    from spinelesion.config_schema import OptimizerConfig

    with pytest.raises(ConfigError, match="model.optimizer: missing key.*lr"):
        validated(OptimizerConfig, {"weight_decay": 0.0}, "model.optimizer")


def test_python_defaults_are_the_yaml_values():
    """RoiSpec() and ScanConfig() exist for library callers; their values are the YAML's."""
    from spinelesion.data.roi import RoiSpec
    from spinelesion.inference.scan import ScanConfig

    roi = yaml.safe_load((CONFIGS / "data" / "default.yaml").read_text())["roi"]
    assert RoiSpec() == RoiSpec(**roi)
    scan = yaml.safe_load((CONFIGS / "predict.yaml").read_text())["scan"]
    default = ScanConfig()
    for key, value in scan.items():
        if key != "write_maps":
            assert getattr(default, key) == value, key


def test_auto_on_off_settings_are_read_in_one_place(tmp_path: Path) -> None:
    """amp, tta and output.dicom take auto, true/on or false/off in any case (issue 35: the
    spellings were compared in several places, "off" in one and not another); the predictor
    reads them once, into a copy of its config."""
    from spinelesion.config_schema import auto_flag
    from spinelesion.inference.predictor import Predictor, PredictorConfig, tta_mirrors
    from spinelesion.models.folder import load_model_folder, save_model_folder
    from spinelesion.models.networks import build_network

    assert [auto_flag(v, "amp") for v in (True, False, "auto", "ON", "off", "True", " false ")] == [
        True,
        False,
        "auto",
        True,
        False,
        True,
        False,
    ]
    for bad in ("maybe", 1, None, ""):
        with pytest.raises(ConfigError, match="amp: expected auto, true or false"):
            auto_flag(bad, "amp")
    assert tta_mirrors("off", {"tta": ["lr"]}) == () and tta_mirrors("on", {}) == ("lr",)
    assert tta_mirrors("auto", {"tta": ["lr"]}) == ("lr",)

    small = {"backbone": "spinecnn", "widths": [4, 8, 8, 8], "hidden": 8}
    roi = {"shape": [32, 48, 48], "spacing": [1.5] * 3}
    save_model_folder(
        build_network(small).eval(),
        tmp_path / "m",
        {"name": "t", "version": "0", "network": small, "roi": roi},
    )
    net, meta = load_model_folder(tmp_path / "m")
    cfg = PredictorConfig(device="cpu", dicom="OFF", amp="on", tta="false")
    predictor = Predictor(net, meta, cfg)
    assert (predictor.cfg.dicom, predictor.cfg.amp, predictor.cfg.tta) == (False, True, False)
    assert "dicom" not in [name for name, _ in predictor.sinks] and predictor.tta == ()
    assert cfg.dicom == "OFF"  # the caller's config is left as given
