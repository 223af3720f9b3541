"""Training: the story (training), the recipe, callbacks, devices and precision, resuming."""
