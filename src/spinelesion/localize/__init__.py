"""The spine locator: where the vertebral bodies are, so scan mode asks the classifier only there.

A small 3D U-Net (MONAI ``BasicUNet``) segments vertebral bodies on a coarse LPS grid from any one
sequence (:mod:`.model`); :mod:`.region` turns its answer into the region every compartment lies in
(the bodies, the canal and posterior elements behind them, a margin around both). It is trained on
real body masks, the same bodies imaged as other sequences, random appearances and phantom spines
(:mod:`spinelesion.tasks.locator`), and travels in the classifier's model folder.
"""
