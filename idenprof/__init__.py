"""IdenProf: data, training, inference and export for ResNet image classifiers.

    import idenprof
    classifier = idenprof.load()            # see idenprof.predict.classifier
    classifier.predict("photo.jpg")         # [("police", 0.97), ("firefighter", 0.01), ...]
"""


def __getattr__(name: str):
    # `load` is imported on first use, so `import idenprof` (and every idenprof.* import) stays
    # free of numpy, Pillow and TensorFlow.
    if name == "load":
        from idenprof.predict.classifier import load

        return load
    raise AttributeError(f"module 'idenprof' has no attribute {name!r}")


__all__ = ["load"]
