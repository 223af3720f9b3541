"""idenprof.data.imaging's `load_image_rgb`, as TensorFlow ops: what the SavedModel's
`serving_bytes` signature runs on encoded image bytes, so TensorFlow Serving sees the pixels
infer.py and training see.

Followed step by step: the size limit (MAX_IMAGE_PIXELS, read from the header before decoding),
JPEG's reduced-scale decoding (PIL's `draft`), EXIF orientation (JPEG's APP1 segment), 16-bit
PNGs (grayscale scaled by its maximum, colour by its high byte), alpha composited on white, then
the bilinear resize, rounded to whole 0..255 values. Not followed: EXIF orientation in PNG and
WebP files (cameras write JPEG), transparency in GIF, BMP and WebP, and the frame count of an
animated GIF (only its first frame is used, but all are decoded).
"""

from __future__ import annotations

import tensorflow as tf

from idenprof.data.imaging import MAX_IMAGE_PIXELS

HEAD_BYTES = 1 << 17  # where the header fields and JPEG's APP1 (at most 64 KiB) are looked for
ORIENTATION_TAG = 0x0112
MAX_IFD_ENTRIES = 64


def decode_resized(encoded: tf.Tensor, size: int) -> tf.Tensor:
    """Encoded image bytes (a scalar string) -> float32 RGB [size, size, 3] of whole values 0..255.

    Raises InvalidArgumentError for an image above MAX_IMAGE_PIXELS (before decoding it) and for
    bytes that are no image.
    """
    head = tf.io.decode_raw(tf.strings.substr(encoded, 0, HEAD_BYTES) + b"\0" * HEAD_BYTES, tf.uint8)
    head = tf.cast(head, tf.int64)
    is_jpeg = tf.strings.substr(encoded, 0, 3) == b"\xff\xd8\xff"
    is_png = tf.strings.substr(encoded, 0, 8) == b"\x89PNG\r\n\x1a\n"
    height, width = header_size(encoded, head, is_jpeg, is_png)
    check = tf.debugging.assert_less_equal(
        height * width, tf.constant(MAX_IMAGE_PIXELS, tf.int64),
        message=f"image too large to be a photo (more than {MAX_IMAGE_PIXELS} pixels; possible decompression bomb)")
    with tf.control_dependencies([check]):
        resized = tf.case(
            [(is_jpeg, lambda: resize(decode_jpeg_like_pil(encoded, head, height, width, size), size)),
             (is_png, lambda: decode_png_resized(encoded, head, size))],
            default=lambda: resize(tf.io.decode_image(encoded, channels=3, expand_animations=False), size),
        )
    return tf.clip_by_value(tf.round(resized), 0.0, 255.0)


def resize(image: tf.Tensor, size: int) -> tf.Tensor:
    """float32 [size, size, C] of an integer image [H, W, C]: bilinear, antialiased (PIL's resize).
    Integer in: the resize reads it as it goes, with no float32 copy of the whole photo (an
    8000x8000 photo would need 768 MB for one)."""
    return tf.image.resize(image, (size, size), method="bilinear", antialias=True)


def big_endian(head: tf.Tensor, offset, length: int) -> tf.Tensor:
    value = tf.constant(0, tf.int64)
    for i in range(length):
        value = value * 256 + head[offset + i]
    return value


def little_endian(head: tf.Tensor, offset, length: int) -> tf.Tensor:
    value = tf.constant(0, tf.int64)
    for i in reversed(range(length)):
        value = value * 256 + head[offset + i]
    return value


def header_size(encoded, head, is_jpeg, is_png) -> tuple[tf.Tensor, tf.Tensor]:
    """(height, width) int64 from the file's header, without decoding its pixels; (0, 0) for a
    format whose header is not read here."""
    is_gif = tf.strings.substr(encoded, 0, 4) == b"GIF8"
    is_bmp = tf.strings.substr(encoded, 0, 2) == b"BM"
    bmp_height = little_endian(head, 22, 4)
    bmp_height = tf.abs(tf.where(bmp_height >= 2**31, bmp_height - 2**32, bmp_height))  # top-down BMPs
    is_webp = (tf.strings.substr(encoded, 0, 4) == b"RIFF") & (tf.strings.substr(encoded, 8, 4) == b"WEBP")
    shape = tf.case(
        [(is_jpeg, lambda: tf.cast(tf.io.extract_jpeg_shape(encoded)[:2], tf.int64)),
         (is_png, lambda: tf.stack([big_endian(head, 20, 4), big_endian(head, 16, 4)])),
         (is_gif, lambda: tf.stack([little_endian(head, 8, 2), little_endian(head, 6, 2)])),
         (is_bmp, lambda: tf.stack([bmp_height, little_endian(head, 18, 4)])),
         (is_webp, lambda: webp_size(encoded, head))],
        default=lambda: tf.zeros([2], tf.int64),
    )
    return shape[0], shape[1]


def webp_size(encoded, head) -> tf.Tensor:
    """[height, width] int64 of a WebP file from its first chunk: VP8X (the canvas, 24-bit sides
    minus one), VP8L (lossless: 14-bit sides minus one after the 0x2f signature) or VP8 (lossy: 14-bit
    sides after the 9d 01 2a start code)."""
    chunk = tf.strings.substr(encoded, 12, 4)
    lossless = little_endian(head, 21, 4)
    return tf.case(
        [(chunk == b"VP8X", lambda: tf.stack([little_endian(head, 27, 3) + 1, little_endian(head, 24, 3) + 1])),
         (chunk == b"VP8L", lambda: tf.stack([(lossless // (1 << 14)) % (1 << 14) + 1, lossless % (1 << 14) + 1]))],
        default=lambda: tf.stack([little_endian(head, 28, 2) % (1 << 14), little_endian(head, 26, 2) % (1 << 14)]),
    )


def decode_jpeg_like_pil(encoded, head, height, width, size: int) -> tf.Tensor:
    """uint8 RGB, decoded at PIL's draft scale for `size` (the largest of 8, 4, 2, 1 that keeps
    both sides at least `size`), with the EXIF orientation applied."""
    reduction = tf.minimum(width // size, height // size)
    branch = tf.where(reduction >= 8, 3, tf.where(reduction >= 4, 2, tf.where(reduction >= 2, 1, 0)))
    image = tf.switch_case(tf.cast(branch, tf.int32), [
        lambda ratio=ratio: tf.io.decode_jpeg(encoded, channels=3, ratio=ratio, dct_method="INTEGER_ACCURATE")
        for ratio in (1, 2, 4, 8)
    ])
    return oriented(image, exif_orientation(encoded, head))


def exif_orientation(encoded, head) -> tf.Tensor:
    """The EXIF orientation (1..8) of a JPEG's APP1 segment; 1 when it has none."""
    before = tf.strings.split(tf.strings.substr(encoded, 0, HEAD_BYTES), sep=b"Exif\0\0", maxsplit=1)
    tiff = tf.cast(tf.strings.length(before[0]), tf.int64) + 6
    limit = HEAD_BYTES - 16
    found = (tf.size(before) == 2) & (tiff < limit)
    tiff = tf.minimum(tiff, limit)
    in_app1 = (head[tf.maximum(tiff - 10, 0)] == 0xFF) & (head[tf.maximum(tiff - 9, 0)] == 0xE1)
    little = head[tiff] == ord("I")

    def read(offset, length):
        offset = tf.clip_by_value(offset, 0, limit)
        return tf.where(little, little_endian(head, offset, length), big_endian(head, offset, length))

    ifd = tiff + read(tiff + 4, 4)
    entries = tf.minimum(read(ifd, 2), MAX_IFD_ENTRIES)
    starts = ifd + 2 + 12 * tf.range(MAX_IFD_ENTRIES, dtype=tf.int64)
    tags = tf.map_fn(lambda start: read(start, 2), starts)
    values = tf.map_fn(lambda start: read(start + 8, 2), starts)
    match = (tags == ORIENTATION_TAG) & (tf.range(MAX_IFD_ENTRIES, dtype=tf.int64) < entries)
    value = tf.where(tf.reduce_any(match), tf.reduce_max(tf.where(match, values, 0)), 1)
    return tf.where(found & in_app1 & (value >= 1) & (value <= 8), value, 1)


def oriented(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """`image` [H, W, C] turned upright as PIL's ImageOps.exif_transpose turns it."""
    return tf.switch_case(tf.cast(orientation - 1, tf.int32), [
        lambda: image,
        lambda: tf.image.flip_left_right(image),
        lambda: tf.image.rot90(image, k=2),
        lambda: tf.image.flip_up_down(image),
        lambda: tf.image.transpose(image),
        lambda: tf.image.rot90(image, k=3),
        lambda: tf.image.rot90(tf.image.transpose(image), k=2),
        lambda: tf.image.rot90(image, k=1),
    ])


def decode_png_resized(encoded, head, size: int) -> tf.Tensor:
    """float32 [size, size, 3] of a PNG as imaging.to_rgb and the resize make it. 8-bit PNGs (and
    palettes) stay in integers: without alpha decoded straight to uint8 RGB; with alpha composited
    on white after the resize, which is linear: resize(c*a/255 + 255 - a) = resize(c*a)/255 + 255 -
    resize(a), one channel at a time. 16-bit PNGs go through decode_png_like_pil."""
    bit_depth = head[24]

    def eight_bit():
        rgba = tf.io.decode_png(encoded, channels=4)
        alpha = rgba[..., 3:]
        opaque = tf.reduce_all(tf.equal(alpha, 255))

        def composited():
            a = tf.cast(alpha, tf.uint16)
            channels = [resize(tf.cast(rgba[..., i:i + 1], tf.uint16) * a, size) for i in range(3)]
            return tf.concat(channels, axis=-1) / 255.0 + 255.0 - resize(alpha, size)

        return tf.cond(opaque, lambda: resize(rgba[..., :3], size), composited)

    return tf.cond(bit_depth <= 8, eight_bit, lambda: resize(decode_png_like_pil(encoded, head), size))


def decode_png_like_pil(encoded, head) -> tf.Tensor:
    """uint8 RGB as imaging.to_rgb makes it: 16-bit grayscale scaled by its maximum (when above
    255), other 16-bit images by their high byte; grayscale to RGB; alpha composited on white."""
    bit_depth, color_type = head[24], head[25]
    image = tf.cast(tf.io.decode_png(encoded, channels=0, dtype=tf.uint16), tf.float32)
    eight_bit = tf.where(bit_depth == 16, tf.floor(image / 256.0), tf.round(image / 257.0))
    peak = tf.reduce_max(image)
    gray16 = tf.floor(image * tf.where(peak > 255.0, 255.0 / tf.maximum(peak, 1.0), 1.0))
    image = tf.where((bit_depth == 16) & (color_type == 0), tf.minimum(gray16, 255.0), eight_bit)
    channels = tf.shape(image)[-1]
    color = tf.cond(channels <= 2, lambda: tf.tile(image[..., :1], [1, 1, 3]), lambda: image[..., :3])
    alpha = tf.cond(tf.equal(channels % 2, 0), lambda: image[..., -1:], lambda: tf.fill(tf.shape(image[..., :1]), 255.0))
    return tf.cast(tf.round((color * alpha + 255.0 * (255.0 - alpha)) / 255.0), tf.uint8)
