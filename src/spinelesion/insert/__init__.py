"""Lesion insertion into real normal spine MRI (Hu et al., CVPR 2023: synthetic tumours in
real healthy scans teach a network nearly what real tumours do).

The flow, one module each:

* :mod:`.background` reads a real normal study and its masks (vertebral bodies, optionally
  cord and canal) onto the study's own grid;
* :mod:`.anatomy` derives what the masks lack (a frame per body, endplates, posterior wall,
  disc spaces, canal/CSF and cord from T2 signal) and measures the study's own tissues;
* :mod:`.deform` changes shapes with smooth displacement fields (height loss, convex
  posterior wall, mass effect, cord expansion);
* :mod:`.paint` sets signal relative to the study's tissues per sequence, keeps the
  study's own noise and texture, and blurs to its resolution;
* :mod:`.findings` renders each finding of ``docs/radiology.md`` with these pieces;
* :mod:`.dataset` turns backgrounds into a contract manifest of inserted and untouched
  studies, split by subject.
"""
