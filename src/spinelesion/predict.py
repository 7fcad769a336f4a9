"""``spinelesion-predict``: predictions and saliency for new studies, straight from a DICOM export.

Exit code 0 when every study succeeded, 1 when any failed (after running all the others),
2 when nothing could run at all (no model, no input).
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from spinelesion.config_path import CONFIG_DIR

log = logging.getLogger("spinelesion.predict")


def predictor_config(cfg: DictConfig) -> Any:
    from spinelesion.inference.predictor import PredictorConfig
    from spinelesion.inference.scan import ScanConfig

    scan = ScanConfig(overlap=float(cfg.scan.overlap), threshold=float(cfg.scan.threshold),
                      min_distance_mm=float(cfg.scan.min_distance_mm), max_rois=int(cfg.scan.max_rois),
                      edge_margin_mm=float(cfg.scan.get("edge_margin_mm", 12.0)))
    return PredictorConfig(device=str(cfg.device), amp=cfg.amp, compile=bool(cfg.compile),
                           threads=cfg.threads, batch_size=int(cfg.batch_size),
                           saliency_method=str(cfg.saliency.method), target_layer=cfg.saliency.target_layer,
                           png=bool(cfg.saliency.png), scan=scan, write_maps=bool(cfg.scan.write_maps))


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Run every study of ``cfg.input``; returns the run summary (also written as run.json)."""
    from spinelesion.atomic import write_json
    from spinelesion.inference.inputs import discover_inputs
    from spinelesion.inference.predictor import Predictor
    from spinelesion.inference.writers import CSV_HEADER, roi_csv_rows, write_csv

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    predictor = Predictor.from_model_dir(cfg.model_dir, predictor_config(cfg))
    rois = OmegaConf.to_container(cfg.rois) if cfg.rois is not None else None
    overrides = OmegaConf.to_container(cfg.sequences) if cfg.sequences else {}
    items, failures = discover_inputs(cfg.input, rois, overrides, str(cfg.nifti_sequence))  # type: ignore[arg-type]
    failed = [{"study_id": f.study_id, "source": f.source, "reason": f.reason} for f in failures]
    csv_rows: list[list[object]] = []
    results = []
    log.info("%d study(ies) to predict on %s with %s", len(items), predictor.device, cfg.model_dir)
    from tqdm.auto import tqdm

    for item in tqdm(items, desc="studies", unit="study"):
        start = time.perf_counter()
        try:
            res = predictor.predict_study(item, out)
        except Exception as exc:  # noqa: BLE001 - one bad study is reported, the rest go on
            reason = f"{type(exc).__name__}: {exc}"
            log.error("study %s (%s) failed: %s", item.study_id, item.source, reason)
            log.debug("%s", traceback.format_exc())
            failed.append({"study_id": item.study_id, "source": item.source, "reason": reason})
            continue
        csv_rows.extend(roi_csv_rows(item.study_id, res.rois, res.folder.name))
        results.append({"study_id": item.study_id, "folder": res.folder.name, "rois": len(res.rois),
                        "seconds": round(time.perf_counter() - start, 3),
                        "timings": {k: round(v, 4) for k, v in res.timings.items()}})
    write_csv(out / "predictions.csv", CSV_HEADER, csv_rows)
    write_csv(out / "failed_studies.csv", ["study_id", "source", "reason"],
              [[f["study_id"], f["source"], f["reason"]] for f in failed])
    summary = {"model": predictor.model_info, "device": str(predictor.device), "input": str(cfg.input),
               "studies": results, "failed": failed,
               "disclaimer": "demonstration model trained on synthetic data; not for clinical use"}
    write_json(out / "run.json", summary)
    log.info("%d study(ies) done, %d failed; outputs in %s", len(results), len(failed), out)
    for f in failed:
        log.warning("failed: %s (%s): %s", f["study_id"], f["source"], f["reason"])
    return summary


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
def main(cfg: DictConfig) -> None:
    try:
        summary = predict(cfg)
    except Exception as exc:  # noqa: BLE001 - nothing could run: say why, exit 2
        log.error("%s", exc)
        sys.exit(2)
    if summary["failed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
