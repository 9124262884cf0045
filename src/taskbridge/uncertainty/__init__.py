"""Pseudo-label machinery of VaT: NUQ uncertainty (`nuq`), union NMS across views (`pseudo_labels`),
certainty split and weighted targets (`certainty`), mixup shares/weights (`mixup`), Y_L augmentation
(`augment`). Plain modules, no registry: imported by `taskbridge.methods.vat`."""
