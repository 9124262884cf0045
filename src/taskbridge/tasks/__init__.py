"""tasks family. PLUGINS lists the modules imported lazily by the registry."""

PLUGINS: tuple[str, ...] = ("cifar_resnet", "classifier_adapter", "clip_zero_shot", "torchvision_detector", "ultralytics_detector", "yolov5")
