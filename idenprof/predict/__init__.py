"""Prediction: finding and loading a model, predicting photos, how sure it is (calibration,
prediction sets, none of these), evaluating, heat maps."""
