"""Every model by name: the one registry the app derives its `--model` choices from."""

from __future__ import annotations

from models.resnet import ResNet18, ResNet34, ResNet50, ResNet101, ResNet152

MODEL_BUILDERS = {
    "resnet18": ResNet18,
    "resnet34": ResNet34,
    "resnet50": ResNet50,
    "resnet101": ResNet101,
    "resnet152": ResNet152,
}


def build_model(name, **kwargs):
    """Build the model registered as `name` (a key of MODEL_BUILDERS) with the builder's kwargs.

    Raises:
        ValueError: `name` is not registered (the message lists the choices), or the builder
            rejects an option.
    """
    if name not in MODEL_BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_BUILDERS)}")
    return MODEL_BUILDERS[name](**kwargs)
