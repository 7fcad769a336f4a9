"""The orchestration layer: what each command does, as functions of a composed Hydra config.

``train``, ``evaluate``, ``predict`` and ``bench`` wire the library packages below
(``io`` < ``data`` < ``phantom``/``insert`` < ``scoring`` < ``models`` < ``evaluation`` <
``inference`` < ``export``/``benchmark``) into runs. The command-line modules (``spinelesion.train`` and
the others) are thin ``@hydra.main`` wrappers over these functions; nothing imports them.
``tests/test_layering.py`` checks that imports run one way.
"""
