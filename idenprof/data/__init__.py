"""The data's path, one module per step: download (fetch, verify, extract) -> dataset (scan the
class folders, duplicates, splits) -> imaging (decode and resize one photo) -> decoded (every
photo once, cached) -> augment and batches (tf.data for `model.fit`); generator is the original
recipe's ImageDataGenerator path."""
