"""Random training augmentation of whole batches, seeded and stateless.

`augment_batch` applies an `AugmentConfig` to one batch inside tf.data: flips, random-resized
crops (Keras has no equivalent that keeps FixRes' output size), shifts and rotations, colour
jitter, mixup and cutmix. Every draw comes from the batch's seed, so a seed fixes a run's
augmentation. (Keras' RandAugment layer is not used: it draws its operations once per batch from
a stateful generator, so runs would not repeat, and computes every operation to select some.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf

@dataclass(frozen=True)
class AugmentConfig:
    """Random training augmentation, applied per batch by `make_dataset` (all seeded).

    Attributes:
        flip: mirror left-right with probability 1/2.
        crop_scale: random-resized-crop area fraction range (lo, hi) in (0, 1], aspect ratio
            3/4..4/3, resized back to S x S; None for no crop.
        shift: maximum translation in each direction, as a fraction of S.
        rotation: maximum rotation in degrees (either way).
        color_jitter: scale each image's brightness, contrast and saturation by random factors
            in [1 - color_jitter, 1 + color_jitter], drawn per image; 0 for none.
        mixup_alpha: Beta(alpha, alpha) mixup of image pairs and their labels; 0 for none.
        cutmix_alpha: Beta(alpha, alpha) cutmix; when both alphas are > 0, each batch uses one
            of the two, chosen at random.
        output_size: side of the training images handed to the model; None keeps S. The crop
            (or, without one, the whole image) is resized to it: training on crops smaller than
            the evaluation size is cheaper and, with random-resized crops, more accurate
            ("FixRes", Touvron et al. 2019).
    """

    flip: bool = True
    crop_scale: tuple[float, float] | None = None
    shift: float = 0.0
    rotation: float = 0.0
    color_jitter: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    output_size: int | None = None



def augment_batch(images, labels, seed, config: AugmentConfig):
    """Randomly augment one batch; every draw comes from `seed` (int [2]).

    Args:
        images: uint8 [B, S, S, 3].
        labels: float32 [B, C] one-hot labels.
        seed: int32/int64 [2] stateless seed.
        config: which augmentations to apply.

    Returns:
        (images float32 [B, T, T, 3] in 0..255, labels float32 [B, C] summing to 1 per row), where
        T is `config.output_size` or S.
    """
    flip_seed, crop_seed, affine_seed, mix_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=4)
    )
    if config.flip:
        images = _random_flip(images, flip_seed)
    images = tf.cast(images, tf.float32)
    if config.crop_scale is not None:
        images = _random_resized_crop(images, crop_seed, config.crop_scale, config.output_size)
    elif config.output_size is not None:
        images = tf.image.resize(images, [config.output_size, config.output_size], method="bilinear",
                                 antialias=True)
    if config.shift > 0 or config.rotation > 0:
        images = _random_shift_rotate(images, affine_seed, config.shift, config.rotation)
    if config.color_jitter > 0:
        # Folded from the batch seed, not split from it: the other draws stay those of runs
        # without colour jitter.
        images = _random_color(images, tf.random.experimental.stateless_fold_in(seed, 5), config.color_jitter)
    if config.mixup_alpha > 0 and config.cutmix_alpha > 0:
        choice_seed, mix_seed = tf.unstack(tf.random.experimental.stateless_split(mix_seed, 2))
        return tf.cond(
            tf.random.stateless_uniform([], choice_seed) < 0.5,
            lambda: _mixup(images, labels, mix_seed, config.mixup_alpha),
            lambda: _cutmix(images, labels, mix_seed, config.cutmix_alpha),
        )
    if config.mixup_alpha > 0:
        return _mixup(images, labels, mix_seed, config.mixup_alpha)
    if config.cutmix_alpha > 0:
        return _cutmix(images, labels, mix_seed, config.cutmix_alpha)
    return images, labels


@tf.function(jit_compile=True)
def _random_flip(images, seed):
    """Mirror each uint8 image with probability 1/2.

    Compiled with XLA, which fuses the reverse and select into one pass: TensorFlow's own
    kernels for them made the flip cost more than the rest of the batch (bench/pipeline.py).
    """
    mirror = tf.random.stateless_uniform([tf.shape(images)[0], 1, 1, 1], seed) < 0.5
    return tf.where(mirror, tf.reverse(images, axis=[2]), images)


def _random_resized_crop(images, seed, crop_scale, output_size=None):
    """Crop a random box of area fraction in crop_scale, aspect 3/4..4/3; resize to
    output_size x output_size (default: back to S x S)."""
    batch = tf.shape(images)[0]
    size = tf.shape(images)[1] if output_size is None else tf.constant(output_size)
    area_seed, aspect_seed, y_seed, x_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=4)
    )
    area = tf.random.stateless_uniform([batch], area_seed, crop_scale[0], crop_scale[1])
    log_aspect = tf.random.stateless_uniform([batch], aspect_seed, math.log(3 / 4), math.log(4 / 3))
    aspect = tf.exp(log_aspect)
    # Height and width as fractions of the side; a box that would not fit is clipped to it.
    height = tf.minimum(tf.sqrt(area / aspect), 1.0)
    width = tf.minimum(tf.sqrt(area * aspect), 1.0)
    top = tf.random.stateless_uniform([batch], y_seed) * (1.0 - height)
    left = tf.random.stateless_uniform([batch], x_seed) * (1.0 - width)
    boxes = tf.stack([top, left, top + height, left + width], axis=1)
    return tf.image.crop_and_resize(
        images, boxes, tf.range(batch), tf.stack([size, size]), method="bilinear"
    )


def _random_shift_rotate(images, seed, shift, rotation_degrees):
    """Translate by up to shift*S pixels each way and rotate by up to rotation_degrees, about
    the centre; uncovered pixels are filled by reflection."""
    batch = tf.shape(images)[0]
    side = tf.cast(tf.shape(images)[1], tf.float32)
    angle_seed, dx_seed, dy_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=3))
    max_angle = rotation_degrees * math.pi / 180.0
    angle = tf.random.stateless_uniform([batch], angle_seed, -max_angle, max_angle)
    dx = tf.random.stateless_uniform([batch], dx_seed, -shift, shift) * side
    dy = tf.random.stateless_uniform([batch], dy_seed, -shift, shift) * side
    cos, sin = tf.cos(angle), tf.sin(angle)
    # Output pixel p maps to input R(p - t) about the centre c: R p + (c - R c) - R t.
    centre = (side - 1.0) / 2.0
    x_offset = centre - (cos * centre - sin * centre) - (cos * dx - sin * dy)
    y_offset = centre - (sin * centre + cos * centre) - (sin * dx + cos * dy)
    zeros = tf.zeros([batch])
    transforms = tf.stack([cos, -sin, x_offset, sin, cos, y_offset, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )


def _random_color(images, seed, strength):
    """Scale brightness, then contrast (about the image's mean grey), then saturation (about each
    pixel's grey) of each float image by factors drawn uniformly in [1 - strength, 1 + strength];
    clipped to 0..255."""
    factors = tf.random.stateless_uniform([3, tf.shape(images)[0], 1, 1, 1], seed, 1.0 - strength, 1.0 + strength)
    images = images * factors[0]
    grey = tf.image.rgb_to_grayscale(images)  # [B, H, W, 1]
    mean = tf.reduce_mean(grey, axis=[1, 2, 3], keepdims=True)
    images = (images - mean) * factors[1] + mean
    grey = tf.image.rgb_to_grayscale(images)
    images = grey + (images - grey) * factors[2]
    return tf.clip_by_value(images, 0.0, 255.0)


def _beta(seed, shape, alpha):
    """Beta(alpha, alpha) samples as G1 / (G1 + G2) of two Gamma(alpha) draws."""
    seed_1, seed_2 = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    g1 = tf.random.stateless_gamma(shape, seed_1, alpha)
    g2 = tf.random.stateless_gamma(shape, seed_2, alpha)
    return g1 / tf.maximum(g1 + g2, 1e-12)


def _partners(seed, batch):
    """A random permutation of 0..batch-1: each image is mixed with another of its batch."""
    return tf.argsort(tf.random.stateless_uniform([batch], seed))


def _mixup(images, labels, seed, alpha):
    """images lam*x + (1-lam)*x[partner], labels likewise, one lam ~ Beta(alpha, alpha) per image."""
    batch = tf.shape(images)[0]
    lam_seed, partner_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    lam = _beta(lam_seed, [batch], alpha)
    partner = _partners(partner_seed, batch)
    lam_images, lam_labels = tf.reshape(lam, [-1, 1, 1, 1]), tf.reshape(lam, [-1, 1])
    images = lam_images * images + (1.0 - lam_images) * tf.gather(images, partner)
    labels = lam_labels * labels + (1.0 - lam_labels) * tf.gather(labels, partner)
    return images, labels


def _cutmix(images, labels, seed, alpha):
    """Paste a random box of a partner image (area 1-lam, lam ~ Beta(alpha, alpha)) into each
    image; labels are weighted by the pixel areas actually kept and pasted."""
    batch, size = tf.shape(images)[0], tf.shape(images)[1]
    side = tf.cast(size, tf.float32)
    lam_seed, partner_seed, y_seed, x_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=4)
    )
    lam = _beta(lam_seed, [batch], alpha)
    partner = _partners(partner_seed, batch)
    half = tf.sqrt(1.0 - lam) * side / 2.0
    centre_y = tf.random.stateless_uniform([batch], y_seed) * side
    centre_x = tf.random.stateless_uniform([batch], x_seed) * side
    top = tf.clip_by_value(tf.round(centre_y - half), 0.0, side)
    bottom = tf.clip_by_value(tf.round(centre_y + half), 0.0, side)
    left = tf.clip_by_value(tf.round(centre_x - half), 0.0, side)
    right = tf.clip_by_value(tf.round(centre_x + half), 0.0, side)
    coords = tf.range(side)
    rows = (coords >= top[:, None]) & (coords < bottom[:, None])  # [B, S]
    cols = (coords >= left[:, None]) & (coords < right[:, None])  # [B, S]
    pasted = rows[:, :, None, None] & cols[:, None, :, None]  # [B, S, S, 1]
    images = tf.where(pasted, tf.gather(images, partner), images)
    kept = 1.0 - (bottom - top) * (right - left) / (side * side)
    kept = tf.reshape(kept, [-1, 1])
    labels = kept * labels + (1.0 - kept) * tf.gather(labels, partner)
    return images, labels
