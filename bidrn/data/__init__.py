"""Data: the sample format, real-data loaders, augmentation and the synthetic whole-body engine."""
