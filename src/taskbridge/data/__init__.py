"""data: image IO, folder datasets, label readers (VOC/YOLO/COCO), letterbox, unpaired A/B sampling, splits.

Import from the submodules (`taskbridge.data.labels`, `.transforms`, `.folders`, `.unpaired`,
`.splits`, `.io`); this package imports nothing so that `import taskbridge.data.io` stays light.
"""
