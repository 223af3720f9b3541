"""Knowledge distillation: a trained teacher's probabilities mixed into the training labels.

The teacher (any model infer.py loads: a .keras/.tflite/.onnx file, a run folder, the shipped
model) predicts each whole training photo once, before training, at its own input size; training
then fits `(1 - teacher_weight) * one-hot + teacher_weight * teacher probabilities` (Hinton et al.
2015, with the teacher's calibrated probabilities as the soft targets, at temperature 1). Each
random crop of a photo gets its whole photo's targets: one teacher pass over the training split
instead of one per batch, which on two CPU cores would cost about a third of every step.
"""

from __future__ import annotations

import numpy as np

from idenprof.errors import ConfigError


def teacher_targets(config, layout, train_data, log) -> np.ndarray:
    """float32 [N, C]: the training targets of `train_data`'s photos, in its order, mixed with the
    teacher `config.teacher`'s probabilities by `config.teacher_weight`."""
    from idenprof.predict.loaders import load_predictor
    from idenprof.predict.model_finding import resolve_model_path

    predictor = load_predictor(resolve_model_path(config.teacher))
    if predictor.class_names != layout.class_names:
        raise ConfigError(f"--teacher {config.teacher} knows the classes {predictor.class_names}, "
                          f"the data {layout.class_names}; give a teacher trained on the same classes")
    samples = list(zip(train_data.paths, train_data.labels.tolist(), strict=True))
    photos = layout.decode(samples, predictor.image_size, progress=config.progress)
    if photos.paths != train_data.paths:
        raise ConfigError(f"--teacher: {len(photos.skipped)} training photos could not be decoded again")
    probabilities = predictor.predict(photos.images, config.batch_size)
    agree = float((probabilities.argmax(axis=1) == train_data.labels).mean())
    log(f"teacher {predictor.model_path}: agrees with {agree:.1%} of the training labels; "
        f"targets = {1 - config.teacher_weight:g} x label + {config.teacher_weight:g} x teacher")
    one_hot = np.eye(len(layout.class_names), dtype=np.float32)[train_data.labels]
    return (1 - config.teacher_weight) * one_hot + config.teacher_weight * probabilities.astype(np.float32)
