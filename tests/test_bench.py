"""The benchmark harness runs end to end on a tiny setting and its report has every field.

No speed is asserted here: speed goals live in the report, not in tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from spinelesion.config_path import CONFIG_DIR


@pytest.mark.slow
def test_quick_bench_writes_a_complete_report(tmp_path: Path, tiny_dataset: Path):
    from spinelesion.bench import run_bench

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("bench", ["quick=true", f"model_dir={tmp_path / 'no-model'}"])
    with open_dict(cfg):
        cfg.output_dir = str(tmp_path / "report")
        cfg.work_dir = str(tmp_path / "work")
        cfg.paths.output_dir = str(tmp_path / "report")
        cfg.data.train.manifest = str(tiny_dataset)  # reuse the session's generated studies
        cfg.data.test.manifest = str(tiny_dataset)
        cfg.repeats = 1
        cfg.accuracy.budget_s = 8
        cfg.accuracy.n_boot = 20
        cfg.scaling.rois = [1, 2]
        cfg.scaling.volume = [1.0]
        cfg.scan.studies = []  # the generated test set's first NIfTI study, not ../shared's lumbar ones
        cfg.scan.reference = False  # minutes per study; tests/test_windows.py checks the reference
        cfg.scan.repeats = 1
        # the data path and both augmentations are timed in tests/test_monai_pipeline.py (75 s more here)
        cfg.monai_path.enabled = False
    results = run_bench(cfg)
    out = tmp_path / "report"
    report = json.loads((out / "report.json").read_text())
    assert report["machine"]["cpu"] and report["machine"]["versions"]["torch"]
    sp = report["speed"]
    assert sp["training"]["default"]["rois_per_s"] > 0 and sp["training"]["densenet121"]["rois_per_s"] > 0
    assert sp["training"]["ratio_default_over_densenet"] > 0
    assert (
        sp["data"]["dicom"]["spinelesion"]["median_s"] > 0 and "speedup_vs_simpleitk" in sp["data"]["dicom"]
    )
    assert sp["data"]["loader"]["rois_per_s_cached"] > 0 and sp["data"]["loader_over_train_step"] > 0
    assert sp["data"]["loader"]["rois_per_s_augment"] > 0 and 0 < sp["data"]["augment_share_of_cpu_step"] < 1
    inf = sp["inference"]
    assert set(inf["split_s"]) == {"read", "preprocess", "network", "saliency", "write", "dicom"}
    for key in ("total_over_read", "gradcam_over_forward_per_task", "occlusion_over_forward_per_roi_task"):
        assert inf[key] > 0
    nifti = sp["inference_nifti"]  # the same study read from the generator's NIfTI copy
    for cost, fmt in ((inf["per_study"], "dicom"), (nifti, "nifti")):
        assert cost["input"] == fmt and cost["rois"] == 8 and cost["goal_s"] == 0.8
        assert min(cost["wall_s"], cost["cpu_s"], cost["cpu_s_one_thread"]) > 0
    assert {"eager", "torchscript", "onnxruntime", "fastest_on_cpu"} <= set(sp["export"])
    assert [r["rois"] for r in sp["scaling"]["rois"]] == [1, 2]
    scan = sp["scan"]["studies"][0]  # quick: the generated test set's first NIfTI study, no reference
    assert scan["lattice_s"] > 0 and "reference_s" not in scan
    assert 0 < scan["windows"]["classified"] <= scan["windows"]["relevant"] <= scan["windows"]["total"]
    assert "## Scan mode per study" in (out / "report.md").read_text()
    runs = {r["model"]: r for r in report["accuracy"]["runs"]}
    assert set(runs) == {"spinecnn", "densenet121"}
    for r in runs.values():
        assert r["curve"] and r["compartment_auc_macro"] is not None
    assert report["accuracy"]["default_beats_densenet_everywhere"] in (True, False)
    md = (out / "report.md").read_text()
    for heading in ("## Accuracy under an equal wall-clock budget", "## Speed", "## GPU", "## Scaling"):
        assert heading in md
    assert "not measured" in md or report["machine"]["gpu"]
    for png in ("learning_curve.png", "scaling_rois.png", "scaling_volume.png"):
        assert (out / png).stat().st_size > 5000
    assert results["seconds"] > 0
