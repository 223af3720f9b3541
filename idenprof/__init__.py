"""IdenProf: data, training, inference and export for ResNet image classifiers."""
