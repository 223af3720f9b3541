"""idenprof.predict.inference: finding the model, loading every format, predicting files in batches."""

from __future__ import annotations

import io
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_export import CLASS_NAMES, IMAGE_SIZE

from idenprof.class_index import write_class_index
from idenprof.data.imaging import load_image_rgb
from idenprof.errors import ConfigError, ModelFileError
from idenprof.predict.inference import predict_files
from idenprof.predict.inputs import expand_inputs
from idenprof.predict.loaders import load_predictor, predict_in_batches
from idenprof.predict.model_finding import resolve_model_path

FORMATS = ["model.keras", "model.h5", "saved_model", "model.tflite", "model.onnx"]


@pytest.fixture(scope="module")
def reference(export_dir, photos) -> np.ndarray:
    """Keras probabilities [10, 10] for `photos`, computed without idenprof.predict.inference."""
    import keras

    model = keras.models.load_model(export_dir / "model.keras", compile=False)
    pixels = np.stack([load_image_rgb(p, size=IMAGE_SIZE) for p in photos]).astype(np.float32)
    return keras.ops.convert_to_numpy(model(pixels))


def make_run(runs_dir: Path, name: str, export_dir: Path, *, val: str = "0.5000",
             with_export: bool = False) -> Path:
    """A run folder in train.py's layout: best checkpoint (.keras + .h5), class index, export/."""
    run = runs_dir / name
    run.mkdir(parents=True)
    shutil.copy(export_dir / "model.keras", run / f"model-e003-val{val}.keras")
    shutil.copy(export_dir / "model.h5", run / f"model-e003-val{val}.h5")
    write_class_index(CLASS_NAMES, run / "class_index.json")
    (run / "metrics.csv").write_text("epoch,accuracy\n")
    if with_export:
        shutil.copytree(export_dir, run / "export", copy_function=shutil.copy)
    return run


def set_mtime(path: Path, seconds: float) -> None:
    os.utime(path, (seconds, seconds))


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height pixels (no pixel data): a decompression bomb as
    far as any decoder that trusts the header is concerned."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def bad_inputs(folder: Path, photo: Path) -> dict[str, Path]:
    """One file for each way an input can be unusable; keys name the problem."""
    folder.mkdir(parents=True, exist_ok=True)
    text = folder / "notes.jpg"
    text.write_text("not a picture\n")
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(photo.read_bytes()[:2000])
    bomb = png_header_only(folder / "bomb.png", 40_000, 40_000)
    empty = folder / "empty_folder"
    empty.mkdir()
    return {"missing": folder / "missing.jpg", "not an image": text, "truncated": truncated,
            "too large": bomb, "no image": empty}


# ----- resolve_model_path -----

def test_model_file_resolves_to_itself(export_dir):
    assert resolve_model_path(str(export_dir / "model.tflite")) == export_dir / "model.tflite"


def test_saved_model_folder_resolves_to_itself(export_dir):
    assert resolve_model_path(str(export_dir / "saved_model")) == export_dir / "saved_model"


def test_run_folder_resolves_to_its_best_checkpoint(tmp_path, export_dir):
    run = make_run(tmp_path, "run", export_dir, val="0.4000")
    shutil.copy(export_dir / "model.keras", run / "model-e007-val0.6125.keras")
    assert resolve_model_path(str(run)) == run / "model-e007-val0.6125.keras"


def test_run_folder_prefers_its_litert_export_when_up_to_date(tmp_path, export_dir):
    run = make_run(tmp_path, "run", export_dir, with_export=True)
    assert resolve_model_path(str(run)) == run / "export" / "model.tflite"


def test_run_folder_without_litert_export_uses_onnx_not_tensorflow(tmp_path, export_dir):
    run = make_run(tmp_path, "run", export_dir, with_export=True)
    (run / "export" / "model.tflite").unlink()
    assert resolve_model_path(str(run)) == run / "export" / "model.onnx"


def test_run_folder_ignores_an_export_older_than_its_best_checkpoint(tmp_path, export_dir):
    run = make_run(tmp_path, "run", export_dir, with_export=True)
    set_mtime(run / "export" / "model.tflite", 1_000_000)
    assert resolve_model_path(str(run)) == run / "model-e003-val0.5000.keras"


def test_default_is_the_most_recently_modified_run_with_a_model(tmp_path, export_dir):
    older = make_run(tmp_path, "older", export_dir)
    newer = make_run(tmp_path, "newer", export_dir)
    unfinished = tmp_path / "unfinished"  # newest, but training has not saved a model yet
    unfinished.mkdir()
    set_mtime(older, 2_000_000)
    set_mtime(newer, 3_000_000)
    set_mtime(unfinished, 4_000_000)
    assert resolve_model_path(None, runs_dir=tmp_path) == newer / "model-e003-val0.5000.keras"


def test_default_prefers_a_finished_run_to_a_newer_one_still_training(tmp_path, export_dir):
    finished = make_run(tmp_path, "finished", export_dir, with_export=True)
    (finished / "metrics.json").write_text("{}")
    training = make_run(tmp_path, "training", export_dir)  # has a best checkpoint, no report yet
    set_mtime(finished, 2_000_000)
    set_mtime(training, 3_000_000)
    assert resolve_model_path(None, runs_dir=tmp_path) == finished / "export" / "model.tflite"
    (finished / "metrics.json").unlink()  # neither finished: the newest run with a model
    set_mtime(finished, 2_000_000)
    assert resolve_model_path(None, runs_dir=tmp_path) == training / "model-e003-val0.5000.keras"


def test_without_runs_the_pretrained_model_is_the_default(tmp_path, export_dir):
    shipped = export_dir / "model.tflite"
    assert resolve_model_path(None, runs_dir=tmp_path / "runs", pretrained=shipped) == shipped
    make_run(tmp_path / "runs", "run", export_dir)  # any run with a model comes first
    assert resolve_model_path(None, runs_dir=tmp_path / "runs", pretrained=shipped) == (
        tmp_path / "runs" / "run" / "model-e003-val0.5000.keras")


def test_no_runs_and_no_pretrained_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelFileError, match="no trained model under .* and no pretrained model at "
                                             ".*missing.tflite; train one with python train.py"):
        resolve_model_path(None, runs_dir=tmp_path / "runs", pretrained=tmp_path / "missing.tflite")


def test_a_file_that_is_not_a_model_kind_is_an_error(tmp_path):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"x")
    with pytest.raises(ModelFileError, match="photo.jpg: not a model file"):
        resolve_model_path(str(photo))


def test_a_folder_without_a_model_is_an_error(tmp_path):
    with pytest.raises(ModelFileError, match="no model in this folder"):
        resolve_model_path(str(tmp_path))


# ----- load_predictor -----

@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_loads_with_size_classes_and_keras_probabilities(
    export_dir, photos, reference, fmt
):
    predictor = load_predictor(export_dir / fmt)
    assert predictor.class_names == CLASS_NAMES
    assert predictor.image_size == IMAGE_SIZE
    pixels = np.stack([load_image_rgb(p, size=IMAGE_SIZE) for p in photos])
    probabilities = predictor.predict(pixels)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, reference, atol=1e-5)


def test_a_plain_keras_model_export_saved_model_also_loads(tmp_path, export_dir, photos,
                                                           reference):
    import keras

    model = keras.models.load_model(export_dir / "model.keras", compile=False)
    model.export(tmp_path / "plain", verbose=False)  # output named "output_0", not ours
    write_class_index(CLASS_NAMES, tmp_path / "class_index.json")
    predictor = load_predictor(resolve_model_path(str(tmp_path / "plain")))
    pixels = np.stack([load_image_rgb(p, size=IMAGE_SIZE) for p in photos])
    np.testing.assert_allclose(predictor.predict(pixels), reference, atol=1e-5)


def test_predict_runs_in_batches_and_batching_does_not_change_results(export_dir, photos):
    predictor = load_predictor(export_dir / "model.tflite")
    batch_sizes = []
    run_batch = predictor.predict_batch
    predictor.predict_batch = lambda images: (batch_sizes.append(len(images)), run_batch(images))[1]
    pixels = np.stack([load_image_rgb(p, size=IMAGE_SIZE) for p in photos])
    in_fours = predictor.predict(pixels, batch_size=4)
    assert batch_sizes == [4, 4, 2]
    np.testing.assert_allclose(in_fours, predictor.predict(pixels, batch_size=32), atol=1e-6)


def test_predict_takes_uint8_or_float32_and_checks_the_shape(export_dir, photos):
    predictor = load_predictor(export_dir / "model.tflite")
    pixels = load_image_rgb(photos[0], size=IMAGE_SIZE)[None]
    np.testing.assert_array_equal(predictor.predict(pixels), predictor.predict(pixels / 1.0))
    with pytest.raises(ValueError, match=r"\[N, 32, 32, 3\]"):
        predictor.predict(np.zeros((1, 64, 64, 3), np.uint8))


@pytest.mark.parametrize("name", ["model.keras", "model.h5", "model.tflite", "model.onnx"])
def test_a_file_that_is_not_a_model_names_the_file(tmp_path, name):
    fake = tmp_path / name
    fake.write_bytes(b"certainly not a model" * 50)
    write_class_index(CLASS_NAMES, tmp_path / "class_index.json")
    with pytest.raises(ModelFileError, match=f"{name}: cannot load"):
        load_predictor(fake)


def test_a_corrupt_onnx_file_is_named_as_not_an_onnx_model(tmp_path, export_dir):
    corrupt = tmp_path / "model.onnx"
    corrupt.write_bytes((export_dir / "model.onnx").read_bytes()[:5000])  # a truncated download
    write_class_index(CLASS_NAMES, tmp_path / "class_index.json")
    with pytest.raises(ModelFileError, match=r"model\.onnx: cannot load as an ONNX model \(.+\)$"):
        load_predictor(corrupt)


def test_labels_that_do_not_match_the_outputs_name_both_numbers(tmp_path, export_dir):
    labels = write_class_index(["cat", "dog", "bird"], tmp_path / "labels.json")
    with pytest.raises(ModelFileError, match="has 10 outputs but .*labels.json names 3 classes"):
        load_predictor(export_dir / "model.tflite", labels)


def test_labels_override_the_class_index_beside_the_model(tmp_path, export_dir):
    renamed = [name.upper() for name in CLASS_NAMES]
    labels = write_class_index(renamed, tmp_path / "labels.json")
    assert load_predictor(export_dir / "model.tflite", labels).class_names == renamed


def test_a_model_without_a_class_index_is_an_error(tmp_path, export_dir):
    shutil.copy(export_dir / "model.tflite", tmp_path / "model.tflite")
    with pytest.raises(ModelFileError, match="class_index.json not found"):
        load_predictor(tmp_path / "model.tflite")


# ----- predict_files -----

@pytest.fixture(scope="module")
def litert(export_dir):
    return load_predictor(export_dir / "model.tflite")


def test_predict_files_gives_top5_most_likely_first(litert, photos, reference):
    results, errors = predict_files(litert, photos)
    assert errors == []
    assert [r.path for r in results] == [str(p) for p in photos]
    for result, expected in zip(results, reference, strict=True):
        probabilities = [p for _, p in result.predictions]
        assert len(probabilities) == 5
        assert probabilities == sorted(probabilities, reverse=True)
        top = np.argsort(-expected)[:5]
        assert [name for name, _ in result.predictions] == [CLASS_NAMES[i] for i in top]
        np.testing.assert_allclose(probabilities, expected[top], atol=1e-5)


def test_top_k_is_bounded_by_the_number_of_classes(litert, photos):
    results, _ = predict_files(litert, photos[:1], top_k=50)
    assert sorted(name for name, _ in results[0].predictions) == sorted(CLASS_NAMES)
    with pytest.raises(ConfigError, match="--top"):
        predict_files(litert, photos[:1], top_k=0)


def test_unreadable_files_are_errors_and_the_rest_still_predicted(litert, photos, tmp_path):
    bad = bad_inputs(tmp_path, photos[0])
    files = [bad["missing"], photos[0], bad["not an image"], bad["truncated"], bad["too large"],
             photos[1]]
    results, errors = predict_files(litert, files, batch_size=2)
    assert [r.path for r in results] == [str(photos[0]), str(photos[1])]
    assert [e.path for e in errors] == [str(bad[k]) for k in
                                        ("missing", "not an image", "truncated", "too large")]
    for error, problem in zip(errors, ("no such file", "not an image", "truncated", "too large"),
                              strict=True):
        assert error.message.startswith(error.path) and problem in error.message


def test_tta_is_the_mean_of_the_image_and_its_mirror(litert, photos):
    results, _ = predict_files(litert, photos[:2], top_k=10, tta=True)
    pixels = np.stack([load_image_rgb(p, size=IMAGE_SIZE) for p in photos[:2]])
    expected = (litert.predict(pixels) + litert.predict(pixels[:, :, ::-1])) / 2
    for result, row in zip(results, expected, strict=True):
        got = dict(result.predictions)
        np.testing.assert_allclose([got[name] for name in CLASS_NAMES], row, atol=1e-6)
    plain, _ = predict_files(litert, photos[:2], top_k=10)
    assert plain[0].predictions != results[0].predictions


def save_variants(photo: Path, folder: Path) -> list[Path]:
    """The same real photo in every file format and pixel mode infer.py should accept."""
    folder.mkdir()
    rgb = Image.open(photo).convert("RGB")
    made = []

    def save(name, image, **options):
        made.append(folder / name)
        image.save(made[-1], **options)

    save("photo.png", rgb)
    save("photo.webp", rgb)
    save("photo.bmp", rgb)
    save("photo.gif", rgb.convert("P"))
    save("gray.jpg", rgb.convert("L"))
    save("rgba.png", rgb.convert("RGBA"))
    save("palette.png", rgb.convert("P", palette=Image.Palette.ADAPTIVE))
    save("cmyk.jpg", rgb.convert("CMYK"))
    sixteen = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
    assert sixteen.mode == "I;16"
    save("sixteen_bit.png", sixteen)
    save("wide.jpg", rgb.resize((900, 60)))
    save("tall.png", rgb.resize((20, 700)))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 clockwise to display
    save("exif_rotated.png", rgb.transpose(Image.Transpose.ROTATE_90), exif=exif)
    return made


def test_every_image_format_and_mode_is_predicted(litert, photos, tmp_path):
    variants = save_variants(photos[0], tmp_path / "variants")
    results, errors = predict_files(litert, variants)
    assert errors == []
    assert [r.path for r in results] == [str(p) for p in variants]
    by_name = {Path(r.path).name: r.predictions for r in results}
    # Lossless copies and the EXIF-rotated one decode to the same pixels as the PNG.
    assert by_name["exif_rotated.png"] == by_name["photo.png"]
    assert by_name["photo.bmp"] == by_name["photo.png"]


def test_image_bytes_in_memory_match_the_file(litert, photos):
    buffer = io.BytesIO(photos[0].read_bytes())
    from_bytes = litert.predict(load_image_rgb(buffer.getvalue(), size=IMAGE_SIZE)[None])
    results, _ = predict_files(litert, photos[:1], top_k=10)
    got = dict(results[0].predictions)
    np.testing.assert_allclose([got[n] for n in CLASS_NAMES], from_bytes[0], atol=1e-7)


# ----- expand_inputs -----

def test_a_folder_gives_its_images_sorted_not_recursive(tmp_path, small_dataset):
    folder = tmp_path / "chef"
    shutil.copytree(small_dataset / "test" / "chef", folder)  # includes Thumbs.db
    (folder / "nested").mkdir()
    shutil.copy(next(folder.glob("*.jpg")), folder / "nested" / "deep.jpg")
    paths, errors = expand_inputs([str(folder)])
    assert errors == []
    assert paths == sorted(str(p) for p in folder.glob("*.jpg"))
    assert len(paths) == 4


def test_globs_files_and_folders_combine_in_order_without_repeats(tmp_path, small_dataset):
    test_dir = small_dataset / "test"
    pattern = str(test_dir / "*" / "pilot-*.jpg")
    single = str(sorted((test_dir / "chef").glob("*.jpg"))[0])
    paths, errors = expand_inputs([single, pattern, str(test_dir / "chef")])
    assert errors == []
    pilots = sorted(str(p) for p in (test_dir / "pilot").glob("*.jpg"))
    chefs = sorted(str(p) for p in (test_dir / "chef").glob("*.jpg"))
    assert paths == [single, *pilots, *[c for c in chefs if c != single]]


def test_recursive_glob_reaches_nested_folders(small_dataset):
    paths, errors = expand_inputs([str(small_dataset / "**" / "judge-*.jpg")])
    assert errors == []
    assert len(paths) == 12  # 8 train + 4 test


def test_missing_files_empty_folders_and_empty_globs_are_errors(tmp_path, photos):
    bad = bad_inputs(tmp_path / "bad", photos[0])
    paths, errors = expand_inputs(
        [str(bad["missing"]), str(bad["no image"]), str(tmp_path / "*.webp"), str(photos[0]),
         str(bad["not an image"])])
    # Existing files are kept whatever they hold: decoding reports them, with the reason.
    assert paths == [str(photos[0]), str(bad["not an image"])]
    assert [e.message for e in errors] == [
        f"{bad['missing']}: no such file or folder",
        f"{bad['no image']}: folder has no image files",
        f"{tmp_path / '*.webp'}: pattern matches no image files",
    ]


def test_predict_in_batches_matches_predict_without_a_tf_data_iterator(monkeypatch):
    """The final test evaluation and the hold-out record predict this way: each `predict`
    iterator's teardown waited at 0% CPU for tf.data's autotuning thread in training."""
    import keras
    from keras.src.backend.tensorflow.trainer import TFEpochIterator

    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="softmax")])
    images = np.random.default_rng(0).random((21, 8, 8, 3), dtype=np.float32)
    expected = model.predict(images, batch_size=8, verbose=0)
    made = []
    original = TFEpochIterator._get_iterator
    monkeypatch.setattr(TFEpochIterator, "_get_iterator", lambda self: made.append(1) or original(self))
    got = predict_in_batches(model.predict_on_batch, images[:, :, ::-1], 8, 3)  # two batches of 8, one of 5
    assert made == []
    np.testing.assert_allclose(got, model.predict(images[:, :, ::-1].copy(), verbose=0), atol=1e-5)
    assert got.dtype == np.float32 and not np.allclose(got, expected)  # the mirrored images, not the originals
    assert predict_in_batches(model.predict_on_batch, images[:0], 8, 3).shape == (0, 3)
