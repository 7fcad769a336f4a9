"""The networks, their training module, calibration, decision rule, and the model folders they live in."""
