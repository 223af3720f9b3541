"""The input pipelines, on a real 8-train/4-test-per-class subset of IdenProf at tiny sizes."""

from __future__ import annotations

import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from archive_subsets import CLASS_NAMES

import idenprof.data.decoded as decoded_module
from idenprof.data.augment import AugmentConfig
from idenprof.data.batches import make_dataset
from idenprof.data.decoded import decode_images
from idenprof.data.generator import make_generator
from idenprof.errors import ConfigError

SIZE = 32
NUM_CLASSES = len(CLASS_NAMES)


def list_samples(root: Path, split: str) -> list[tuple[str, int]]:
    """(path, class index) for every JPEG of a split, grouped by class, sorted by name."""
    return [
        (str(path), index)
        for index, name in enumerate(CLASS_NAMES)
        for path in sorted((root / split / name).glob("*.jpg"))
    ]


@pytest.fixture(scope="module")
def train_samples(small_dataset):
    return list_samples(small_dataset, "train")


@pytest.fixture(scope="module")
def decoded(train_samples):
    return decode_images(train_samples, SIZE, progress=False)


def batches(dataset, count=None):
    """The first `count` (all when None) batches as numpy (images, labels) pairs."""
    out = []
    for images, labels in dataset:
        out.append((images.numpy(), labels.numpy()))
        if count is not None and len(out) == count:
            break
    return out


def image_key(image: np.ndarray) -> bytes:
    return np.asarray(image, dtype=np.uint8).tobytes()


def test_decode_gives_uint8_images_and_the_sample_labels(decoded, train_samples):
    assert decoded.images.shape == (len(train_samples), SIZE, SIZE, 3)
    assert decoded.images.dtype == np.uint8
    assert decoded.labels.dtype == np.int32
    assert decoded.labels.tolist() == [label for _, label in train_samples]
    assert decoded.paths == [path for path, _ in train_samples]
    assert decoded.skipped == []
    # Real photos, not blank arrays.
    assert decoded.images.std() > 20


def test_eval_dataset_keeps_every_image_in_sample_order(decoded):
    dataset = make_dataset(decoded, NUM_CLASSES, batch_size=12, training=False)
    got = batches(dataset)
    assert [len(images) for images, _ in got] == [12] * 6 + [8]
    images = np.concatenate([b[0] for b in got])
    labels = np.concatenate([b[1] for b in got])
    assert images.dtype == np.float32 and labels.dtype == np.float32
    np.testing.assert_array_equal(images, decoded.images.astype(np.float32))
    assert labels.shape == (80, NUM_CLASSES)
    np.testing.assert_array_equal(labels.argmax(axis=1), decoded.labels)
    np.testing.assert_array_equal(labels.sum(axis=1), 1.0)


def test_training_dataset_shuffles_full_batches_with_matching_labels(decoded):
    dataset = make_dataset(decoded, NUM_CLASSES, batch_size=12, training=True, seed=3)
    assert dataset.element_spec[0].shape.as_list() == [12, SIZE, SIZE, 3]
    assert dataset.element_spec[1].shape.as_list() == [12, NUM_CLASSES]
    label_of = {image_key(img): label for img, label in zip(decoded.images, decoded.labels, strict=True)}
    got = batches(dataset)
    assert len(got) == 80 // 12
    seen = []
    for images, labels in got:
        assert images.min() >= 0 and images.max() <= 255
        for image, label in zip(images, labels, strict=True):
            key = image_key(image)
            assert label_of[key] == label.argmax()
            seen.append(key)
    assert len(set(seen)) == len(seen)
    first_order = [image_key(image) for image in got[0][0]]
    assert first_order != [image_key(image) for image in decoded.images[:12]]


def test_same_seed_gives_same_batches_and_epochs_differ(decoded):
    augment = AugmentConfig(flip=True, crop_scale=(0.3, 1.0), shift=0.1, rotation=15, mixup_alpha=0.4)

    def first_batches(seed):
        dataset = make_dataset(decoded, NUM_CLASSES, batch_size=8, training=True, augment=augment, seed=seed)
        return batches(dataset, 2)

    one, again, other = first_batches(7), first_batches(7), first_batches(8)
    for (a_images, a_labels), (b_images, b_labels) in zip(one, again, strict=True):
        np.testing.assert_array_equal(a_images, b_images)
        np.testing.assert_array_equal(a_labels, b_labels)
    assert not np.array_equal(one[0][0], other[0][0])

    dataset = make_dataset(decoded, NUM_CLASSES, batch_size=8, training=True, augment=augment, seed=7)
    epoch_1, epoch_2 = batches(dataset, 1), batches(dataset, 1)
    np.testing.assert_array_equal(epoch_1[0][0], one[0][0])
    assert not np.array_equal(epoch_1[0][0], epoch_2[0][0])


def test_flip_mirrors_some_images_exactly_and_leaves_others_identical(decoded):
    dataset = make_dataset(
        decoded, NUM_CLASSES, batch_size=40, training=True, augment=AugmentConfig(flip=True), seed=1
    )
    originals = {image_key(image) for image in decoded.images}
    mirrored = {image_key(image[:, ::-1]) for image in decoded.images}
    flipped = kept = 0
    for images, _ in batches(dataset):
        for image in images:
            key = image_key(image)
            assert key in originals or key in mirrored
            flipped += key in mirrored and key not in originals
            kept += key in originals
    assert flipped > 10 and kept > 10


@pytest.mark.parametrize(
    "augment",
    [
        AugmentConfig(flip=False, crop_scale=(0.2, 0.6)),
        AugmentConfig(flip=False, shift=0.2),
        AugmentConfig(flip=False, rotation=30.0),
    ],
    ids=["crop", "shift", "rotation"],
)
def test_geometric_augmentation_changes_pixels_but_not_shapes(decoded, augment):
    plain = make_dataset(decoded, NUM_CLASSES, batch_size=16, training=True, seed=5)
    augmented = make_dataset(decoded, NUM_CLASSES, batch_size=16, training=True, augment=augment, seed=5)
    assert augmented.element_spec[0].shape.as_list() == [16, SIZE, SIZE, 3]
    (plain_images, plain_labels), = batches(plain, 1)
    (images, labels), = batches(augmented, 1)
    assert images.shape == (16, SIZE, SIZE, 3) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 255.001
    # Same shuffle (same seed), so labels line up and each image is a changed copy.
    np.testing.assert_array_equal(labels, plain_labels)
    changed = np.abs(images - plain_images).mean(axis=(1, 2, 3))
    assert (changed > 2.0).sum() >= 14


def test_color_jitter_changes_each_image_by_its_own_factors_within_the_range(decoded):
    from idenprof.data.augment import augment_batch

    images = tf.constant(decoded.images[:16])
    labels = tf.one_hot(decoded.labels[:16], NUM_CLASSES)
    seed = tf.constant([3, 4], tf.int64)
    plain, _ = augment_batch(images, labels, seed, AugmentConfig(flip=True))
    jittered, same_labels = augment_batch(images, labels, seed, AugmentConfig(flip=True, color_jitter=0.4))
    plain, jittered = plain.numpy(), jittered.numpy()
    np.testing.assert_array_equal(same_labels, labels)
    assert jittered.min() >= 0 and jittered.max() <= 255
    # The flips are those of the run without jitter (its draw is folded in, not split off).
    grey = lambda x: x @ np.array([0.2989, 0.587, 0.114], np.float32)  # noqa: E731
    for mine, theirs in zip(grey(jittered), grey(plain), strict=True):
        same = np.corrcoef(mine.ravel(), theirs.ravel())[0, 1]
        assert same > 0.9 and same > np.corrcoef(mine.ravel(), theirs[:, ::-1].ravel())[0, 1]
    # Brightness: each image's mean changes by its own factor, within about [0.6, 1.4] (clipping
    # and the contrast/saturation steps move the mean a little).
    ratios = grey(jittered).mean(axis=(1, 2)) / grey(plain).mean(axis=(1, 2))
    assert ratios.min() > 0.5 and ratios.max() < 1.5 and ratios.std() > 0.05
    # Saturation: the spread between channels changes, not only the brightness.
    spread = lambda x: x.std(axis=-1).mean(axis=(1, 2))  # noqa: E731
    assert not np.allclose(spread(jittered) / spread(plain), ratios, atol=0.05)
    again, _ = augment_batch(images, labels, seed, AugmentConfig(flip=True, color_jitter=0.4))
    np.testing.assert_array_equal(again.numpy(), jittered)  # seeded: the same batch again


def test_color_jitter_is_refused_outside_zero_to_one_and_with_the_generator():
    from idenprof.config import resolve_config

    with pytest.raises(ConfigError, match=r"--color-jitter .* in \[0, 1\)"):
        resolve_config(None, {"color_jitter": 1.0})
    with pytest.raises(ConfigError, match="--loader generator supports flips only"):
        resolve_config(None, {"color_jitter": 0.2, "loader": "generator"})


def test_mixup_labels_are_convex_combinations_of_two_images(decoded):
    plain = make_dataset(decoded, NUM_CLASSES, batch_size=16, training=True, seed=2)
    mixed = make_dataset(
        decoded, NUM_CLASSES, batch_size=16, training=True, seed=2,
        augment=AugmentConfig(flip=False, mixup_alpha=1.0),
    )
    (originals, own_labels), = batches(plain, 1)
    (images, labels), = batches(mixed, 1)
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-5)
    assert labels.min() >= 0 and (np.count_nonzero(labels > 1e-6, axis=1) <= 2).all()
    two_class_rows = 0
    for i in range(16):
        own = own_labels[i].argmax()
        lam = labels[i, own]
        if lam > 0.999 or lam < 0.001:
            continue
        two_class_rows += 1
        # The image is lam * own + (1 - lam) * some partner from the same batch.
        errors = [
            np.abs(images[i] - (lam * originals[i] + (1 - lam) * originals[j])).max() for j in range(16)
        ]
        assert min(errors) < 0.05
    assert two_class_rows >= 4


@pytest.mark.parametrize(
    "augment",
    [AugmentConfig(flip=False, cutmix_alpha=1.0), AugmentConfig(mixup_alpha=0.5, cutmix_alpha=0.5)],
    ids=["cutmix", "mixup-or-cutmix"],
)
def test_cutmix_labels_sum_to_one(decoded, augment):
    dataset = make_dataset(decoded, NUM_CLASSES, batch_size=16, training=True, augment=augment, seed=4)
    soft_rows = 0
    for images, labels in batches(dataset, 3):
        assert images.shape == (16, SIZE, SIZE, 3)
        np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-5)
        assert labels.min() >= 0
        soft_rows += int((labels.max(axis=1) < 0.999).sum())
    assert soft_rows >= 4


def test_cutmix_pastes_a_box_from_a_partner_weighted_by_area(decoded):
    plain = make_dataset(decoded, NUM_CLASSES, batch_size=16, training=True, seed=6)
    mixed = make_dataset(
        decoded, NUM_CLASSES, batch_size=16, training=True, seed=6,
        augment=AugmentConfig(flip=False, cutmix_alpha=1.0),
    )
    (originals, own_labels), = batches(plain, 1)
    (images, labels), = batches(mixed, 1)
    checked = 0
    for i in range(16):
        changed = (images[i] != originals[i]).any(axis=2)
        partners = [j for j in range(16) if j != i and own_labels[j].argmax() != own_labels[i].argmax()]
        for j in partners:
            if np.array_equal(images[i][changed], originals[j][changed]) and changed.any():
                own_fraction = 1.0 - changed.mean()
                # Unchanged pixels inside the box (identical in both images) make this a bound.
                assert labels[i, own_labels[i].argmax()] <= own_fraction + 1e-5
                checked += 1
                break
    assert checked >= 4


def make_corrupt_copy(small_dataset: Path, parent: Path) -> tuple[Path, Path, Path]:
    root = parent / "idenprof"
    shutil.copytree(small_dataset, root)
    truncated = root / "train" / "chef" / "truncated.jpg"
    whole = next((root / "train" / "chef").glob("chef-*.jpg")).read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])
    text = root / "train" / "pilot" / "notes.jpg"
    text.write_text("this is not a photo\n")
    return root, truncated, text


@pytest.mark.parametrize("on_disk", [False, True], ids=["in-memory", "memory-mapped"])
def test_corrupt_images_are_skipped_and_reported(small_dataset, tmp_path, on_disk):
    root, truncated, text = make_corrupt_copy(small_dataset, tmp_path)
    samples = list_samples(root, "train")
    assert len(samples) == 82
    cache = tmp_path / "cache" if on_disk else None
    result = decode_images(samples, SIZE, cache_dir=cache, progress=False,
                           memory_limit_bytes=0 if on_disk else None)
    assert isinstance(result.images, np.memmap) == on_disk
    assert sorted(path for path, _ in result.skipped) == sorted([str(truncated), str(text)])
    assert all(reason for _, reason in result.skipped)
    assert result.images.shape == (80, SIZE, SIZE, 3)
    assert str(truncated) not in result.paths and len(result.paths) == 80
    expected = [label for path, label in samples if path not in (str(truncated), str(text))]
    assert result.labels.tolist() == expected
    # The kept images are the right ones, in order.
    clean = decode_images(list_samples(small_dataset, "train"), SIZE, progress=False)
    np.testing.assert_array_equal(np.asarray(result.images), clean.images)
    got = batches(make_dataset(result, NUM_CLASSES, batch_size=16, training=False))
    np.testing.assert_array_equal(np.concatenate([b[1] for b in got]).argmax(axis=1), expected)


def test_second_decode_with_cache_dir_reuses_the_cache(train_samples, decoded, tmp_path, monkeypatch):
    first = decode_images(train_samples, SIZE, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.npy"))) == 1 and len(list(tmp_path.glob("*.json"))) == 1
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind

    def must_not_decode(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(decoded_module, "load_image_rgb", must_not_decode)
    second = decode_images(train_samples, SIZE, cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(second.images, first.images)
    np.testing.assert_array_equal(second.images, decoded.images)
    assert second.paths == first.paths and second.labels.tolist() == first.labels.tolist()


def test_cache_is_not_reused_for_changed_files_or_size(small_dataset, tmp_path, monkeypatch):
    root = tmp_path / "idenprof"
    shutil.copytree(small_dataset / "train" / "judge", root / "train" / "judge")
    samples = [(str(p), 5) for p in sorted((root / "train" / "judge").glob("*.jpg"))]
    cache = tmp_path / "cache"
    decode_images(samples, SIZE, cache_dir=cache, progress=False)

    calls = []
    real_load = decoded_module.load_image_rgb

    def counting_load(path, size=None):
        calls.append(path)
        return real_load(path, size=size)

    monkeypatch.setattr(decoded_module, "load_image_rgb", counting_load)
    decode_images(samples, SIZE, cache_dir=cache, progress=False)
    assert calls == []
    decode_images(samples, SIZE * 2, cache_dir=cache, progress=False)
    assert len(calls) == len(samples)
    calls.clear()
    Path(samples[0][0]).write_bytes(Path(samples[1][0]).read_bytes())
    result = decode_images(samples, SIZE, cache_dir=cache, progress=False)
    assert len(calls) == len(samples)
    np.testing.assert_array_equal(result.images[0], result.images[1])


def test_memory_mapped_cache_streams_every_image(train_samples, decoded, tmp_path):
    on_disk = decode_images(train_samples, SIZE, cache_dir=tmp_path, progress=False, memory_limit_bytes=0)
    assert isinstance(on_disk.images, np.memmap)
    np.testing.assert_array_equal(np.asarray(on_disk.images), decoded.images)

    evaluation = batches(make_dataset(on_disk, NUM_CLASSES, batch_size=12, training=False))
    np.testing.assert_array_equal(np.concatenate([b[0] for b in evaluation]), decoded.images)

    training = make_dataset(on_disk, NUM_CLASSES, batch_size=16, training=True, seed=1)
    assert training.element_spec[0].shape.as_list() == [16, SIZE, SIZE, 3]
    label_of = {image_key(img): label for img, label in zip(decoded.images, decoded.labels, strict=True)}
    seen = []
    for images, labels in batches(training):
        for image, label in zip(images, labels, strict=True):
            assert label_of[image_key(image)] == label.argmax()
            seen.append(image_key(image))
    assert sorted(seen) == sorted(label_of)
    assert seen != [image_key(image) for image in decoded.images]


def test_too_large_for_memory_without_cache_dir_is_a_config_error(train_samples):
    with pytest.raises(ConfigError, match="cache directory"):
        decode_images(train_samples, SIZE, progress=False, memory_limit_bytes=1000)


def test_training_needs_at_least_one_full_batch(decoded):
    with pytest.raises(ConfigError, match="batch size"):
        make_dataset(decoded, NUM_CLASSES, batch_size=81, training=True)


def test_generator_and_tf_data_agree_on_classes_and_pixels_at_224(small_dataset):
    samples = list_samples(small_dataset, "test")
    iterator = make_generator(
        samples, CLASS_NAMES, image_size=224, batch_size=16, training=False, augment_flip=False, seed=0
    )
    assert iterator.class_indices == {name: i for i, name in enumerate(CLASS_NAMES)}
    assert iterator.samples == len(samples)
    generated = [iterator[i] for i in range(len(iterator))]
    gen_images = np.concatenate([b[0] for b in generated])
    gen_labels = np.concatenate([b[1] for b in generated])
    assert gen_images.dtype == np.float32 and gen_labels.dtype == np.float32

    decoded_224 = decode_images(samples, 224, progress=False)
    got = batches(make_dataset(decoded_224, NUM_CLASSES, batch_size=16, training=False))
    images = np.concatenate([b[0] for b in got])
    labels = np.concatenate([b[1] for b in got])
    np.testing.assert_array_equal(gen_labels, labels)
    np.testing.assert_array_equal(gen_labels.argmax(axis=1), [label for _, label in samples])
    np.testing.assert_array_equal(gen_images, images)


def test_generator_reads_16_bit_and_transparent_images_as_the_tf_data_path_does(tmp_path):
    from PIL import Image

    from idenprof.data.imaging import load_image_rgb

    rng = np.random.default_rng(0)
    gray16 = Image.fromarray(rng.integers(0, 4000, (32, 32), dtype=np.uint16))  # mode I;16
    rgba = Image.fromarray(rng.integers(0, 256, (32, 32, 4), dtype=np.uint8), "RGBA")
    plain = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "RGB")
    samples = []
    for label, (name, image) in enumerate((("gray16.png", gray16), ("rgba.png", rgba), ("plain.jpg", plain))):
        image.save(tmp_path / name)
        samples.append((str(tmp_path / name), label))
    iterator = make_generator(samples, CLASS_NAMES, image_size=32, batch_size=3, training=False,
                              augment_flip=False, seed=0)
    images, _ = iterator[0]
    for got, (path, _) in zip(images, samples, strict=True):
        np.testing.assert_array_equal(got, load_image_rgb(path).astype(np.float32))


def test_generator_uses_only_the_given_files_and_flips_when_training(small_dataset):
    samples = list_samples(small_dataset, "train")[::3]
    iterator = make_generator(
        samples, CLASS_NAMES, image_size=SIZE, batch_size=8, training=True, augment_flip=True, seed=0
    )
    assert iterator.samples == len(samples)
    assert iterator.image_data_generator.horizontal_flip
    images, labels = iterator[0]
    assert images.shape == (8, SIZE, SIZE, 3) and labels.shape == (8, NUM_CLASSES)
    assert images.min() >= 0 and images.max() > 1.5  # 0..255, not rescaled


def test_both_pipelines_train_a_keras_model(decoded, small_dataset):
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(NUM_CLASSES, activation="softmax")(x))
    model.compile("sgd", "categorical_crossentropy")
    dataset = make_dataset(decoded, NUM_CLASSES, batch_size=16, training=True,
                           augment=AugmentConfig(crop_scale=(0.5, 1.0), cutmix_alpha=1.0))
    history = model.fit(dataset, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])
    generator = make_generator(list_samples(small_dataset, "train"), CLASS_NAMES, image_size=SIZE,
                               batch_size=16, training=True, augment_flip=True, seed=0)
    history = model.fit(generator, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_training_at_a_smaller_size_resizes_whole_images_or_crops(decoded):
    plain = make_dataset(decoded, NUM_CLASSES, batch_size=16, training=True, seed=4)
    small = make_dataset(decoded, NUM_CLASSES, batch_size=16, training=True, seed=4,
                         augment=AugmentConfig(flip=False, output_size=SIZE // 2))
    (plain_images, plain_labels), = batches(plain, 1)
    (images, labels), = batches(small, 1)
    assert images.shape == (16, SIZE // 2, SIZE // 2, 3)
    np.testing.assert_array_equal(labels, plain_labels)
    # Without a crop the whole image is shrunk: close to a 2x2 box average of the original (the
    # resize filter is wider), much closer than to any other image of the batch.
    pooled = plain_images.reshape(16, SIZE // 2, 2, SIZE // 2, 2, 3).mean(axis=(2, 4))
    own = np.abs(images - pooled).mean(axis=(1, 2, 3))
    others = np.abs(images - np.roll(pooled, 1, axis=0)).mean(axis=(1, 2, 3))
    assert own.max() < 10.0 and (others > 3 * own).all()
    cropped = make_dataset(decoded, NUM_CLASSES, batch_size=16, training=True, seed=4,
                           augment=AugmentConfig(flip=False, crop_scale=(0.3, 0.5), output_size=SIZE // 2))
    (crops, _), = batches(cropped, 1)
    assert crops.shape == (16, SIZE // 2, SIZE // 2, 3)
    assert np.abs(crops - pooled).mean(axis=(1, 2, 3)).min() > 2.0  # crops, not whole images


def test_whole_image_flag_switches_training_batches_to_whole_images_at_the_decoded_size(decoded):
    plain = make_dataset(decoded, NUM_CLASSES, batch_size=16, training=True, seed=6)
    flag = tf.Variable(False, trainable=False)
    switching = make_dataset(decoded, NUM_CLASSES, batch_size=16, training=True, seed=6, whole_images=flag,
                             augment=AugmentConfig(flip=False, crop_scale=(0.3, 0.5), output_size=SIZE // 2))
    # Each pass over a dataset is a new epoch with a new shuffle (the same for both datasets).
    (crops, _), = batches(switching, 1)
    batches(plain, 1)
    assert crops.shape == (16, SIZE // 2, SIZE // 2, 3)
    flag.assign(True)
    (plain_images, plain_labels), = batches(plain, 1)
    (images, labels), = batches(switching, 1)
    np.testing.assert_array_equal(labels, plain_labels)
    np.testing.assert_array_equal(images, plain_images)  # whole images: no crop, no resize


def test_a_repeating_training_dataset_gives_each_image_once_per_epoch_reshuffled(decoded):
    steps = 80 // 16
    dataset = make_dataset(decoded, NUM_CLASSES, batch_size=16, training=True, seed=4, repeat=True,
                           augment=AugmentConfig(flip=False))
    got = batches(dataset, 3 * steps)  # one iterator, three epochs
    epochs = [[image_key(image) for images, _ in got[e * steps:(e + 1) * steps] for image in images]
              for e in range(3)]
    for keys in epochs:
        assert len(set(keys)) == len(keys) == steps * 16  # no image twice within an epoch
    assert epochs[0] != epochs[1] != epochs[2]  # reshuffled at each pass
    once = make_dataset(decoded, NUM_CLASSES, batch_size=16, training=True, seed=4, augment=AugmentConfig(flip=False))
    assert [image_key(image) for images, _ in batches(once) for image in images] == epochs[0]


def test_datasets_run_without_the_autotuning_thread(decoded):
    """Destroying an iterator waited at 0% CPU for tf.data's autotuning thread: seconds after each
    epoch's validation, up to 44 s after training (docs/BENCHMARKS.md, "CPU share")."""
    evaluation = make_dataset(decoded, NUM_CLASSES, batch_size=16, training=False)
    training = make_dataset(decoded, NUM_CLASSES, batch_size=16, training=True, repeat=True,
                            augment=AugmentConfig(flip=True), whole_images=tf.Variable(False))
    assert evaluation.options().autotune.enabled is False
    assert training.options().autotune.enabled is False
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches(evaluation)]),
                                  decoded.images.astype(np.float32))  # the same batches as before


def test_fit_with_steps_per_epoch_keeps_one_iterator_of_a_repeating_dataset(decoded, monkeypatch):
    """Keras makes a new iterator per epoch of a finite dataset (and drops the old one half-read);
    train.py's repeating input with steps_per_epoch makes one for the whole run."""
    from keras.src.backend.tensorflow.trainer import TFEpochIterator as EpochIterator

    made = []
    original = EpochIterator._get_iterator

    def counting(self):
        made.append(1)
        return original(self)

    monkeypatch.setattr(EpochIterator, "_get_iterator", counting)
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(NUM_CLASSES, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")

    def iterators_made(**inputs):
        made.clear()
        model.fit(epochs=4, verbose=0, shuffle=False, **inputs)
        return len(made)

    finite = make_dataset(decoded, NUM_CLASSES, batch_size=16, training=True, seed=1)
    repeating = make_dataset(decoded, NUM_CLASSES, batch_size=16, training=True, seed=1, repeat=True)
    assert iterators_made(x=finite) >= 4
    assert iterators_made(x=repeating, steps_per_epoch=80 // 16) == 1
