"""Faces: detectors with 5 landmarks (the face-detector family), alignment to the FFHQ template, paste-back.

PLUGINS lists the detector modules imported lazily by the registry; `align` is plain code every face
pipeline uses (not registered).
"""

PLUGINS: tuple[str, ...] = ("retinaface", "mtcnn")
