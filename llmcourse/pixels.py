"""Small generated images whose distribution is known exactly (chapter 8c: the same GPT on pixels).

Every image is ``size x size`` pixels (8 x 8 by default) of ``levels`` grey levels (4: black, two greys and
white, as the values 0, 1/3, 2/3, 1), black except for **one shape** in one non-black level:

==========  ===============================================================  ================
kind        the shape                                                        images (8 x 8, 4 levels)
==========  ===============================================================  ================
hline       a horizontal line across the whole image, in row r               8 x 3 = 24
vline       a vertical line down the whole image, in column c                8 x 3 = 24
rect        a filled rectangle, at least 2 x 2                               28 x 28 x 3 = 2,352
frame       the outline of a rectangle, at least 3 x 3                       21 x 21 x 3 = 1,323
diagonal    a diagonal line (either direction) at least 3 pixels long         11 x 2 x 3 = 66
cross       a plus sign of five pixels, its centre at least 1 from the edge   6 x 6 x 3 = 108
==========  ===============================================================  ================

An image is drawn by picking a kind uniformly at random, then one of that kind's images uniformly at random. The
distribution is therefore known exactly (:func:`image_distribution`: every possible image and its probability),
and so is its entropy (:func:`entropy`): the lowest average negative log-likelihood any model of these images
can reach, as :func:`llmcourse.data.entropy_floor` is for the course's text.

    >>> images = sample_images(16, seed=0)        # (16, 8, 8) float32 in [0, 1], the same for the same seed
    >>> images_all, probs = image_distribution()  # every possible image (M, 8, 8) and its probability (M,)
    >>> entropy() / 64                            # nats per pixel: the floor of a model's loss per pixel token
"""

from __future__ import annotations

import functools
import math
import numbers

import torch

__all__ = ["SIZE", "LEVELS", "KINDS", "shapes", "image_distribution", "sample_images", "entropy",
           "pixel_marginals"]

SIZE = 8  #: the side of an image, in pixels
LEVELS = 4  #: grey levels: 0 (black), 1/3, 2/3, 1 (white)
KINDS = ("hline", "vline", "rect", "frame", "diagonal", "cross")


def _check(size, levels) -> tuple[int, int]:
    for name, value, low, high in (("size", size, 4, 32), ("levels", levels, 2, 256)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} should be an int, got {type(value).__name__} {value!r}")
        if not low <= value <= high:
            raise ValueError(f"{name} should be between {low} and {high}, got {value}")
    return int(size), int(levels)


def _masks(kind: str, size: int) -> list[torch.Tensor]:
    """Every position of one kind of shape, as (size, size) boolean masks, in a fixed order."""
    n = size
    out = []
    if kind == "hline":
        for r in range(n):
            m = torch.zeros(n, n, dtype=torch.bool)
            m[r, :] = True
            out.append(m)
    elif kind == "vline":
        for c in range(n):
            m = torch.zeros(n, n, dtype=torch.bool)
            m[:, c] = True
            out.append(m)
    elif kind in ("rect", "frame"):
        least = 1 if kind == "rect" else 2  # bottom - top: rectangles 2 x 2 or more, frames 3 x 3 or more
        spans = [(a, b) for a in range(n) for b in range(a + least, n)]
        for top, bottom in spans:
            for left, right in spans:
                m = torch.zeros(n, n, dtype=torch.bool)
                m[top: bottom + 1, left: right + 1] = True
                if kind == "frame":
                    m[top + 1: bottom, left + 1: right] = False
                out.append(m)
    elif kind == "diagonal":
        for flip in (False, True):
            for offset in range(-(n - 3), n - 2):  # at least 3 pixels long: (i, i + offset) in the image
                m = torch.zeros(n, n, dtype=torch.bool)
                for i in range(n):
                    if 0 <= i + offset < n:
                        m[i, i + offset] = True
                out.append(m.flip(1) if flip else m)
    elif kind == "cross":
        for r in range(1, n - 1):
            for c in range(1, n - 1):
                m = torch.zeros(n, n, dtype=torch.bool)
                m[r, c - 1: c + 2] = True
                m[r - 1: r + 2, c] = True
                out.append(m)
    else:
        raise ValueError(f"no kind of shape called {kind!r}; the kinds are {KINDS}")
    return out


@functools.lru_cache(maxsize=8)
def _all_shapes(size: int, levels: int) -> tuple[torch.Tensor, ...]:
    """One (count, size, size) float32 stack per kind: every mask in every non-black level."""
    stacks = []
    for kind in KINDS:
        masks = torch.stack(_masks(kind, size)).float()  # (count, n, n)
        values = torch.arange(1, levels, dtype=torch.float32) / (levels - 1)  # the non-black levels
        stacks.append((values[:, None, None, None] * masks).reshape(-1, size, size))  # level-major order
    return tuple(stacks)


def shapes(kind: str, size: int = SIZE, levels: int = LEVELS) -> torch.Tensor:
    """Every image of one kind, (count, size, size) float32 in [0, 1], in a fixed order."""
    size, levels = _check(size, levels)
    if kind not in KINDS:
        raise ValueError(f"no kind of shape called {kind!r}; the kinds are {KINDS}")
    return _all_shapes(size, levels)[KINDS.index(kind)].clone()


def sample_images(n: int, seed: int | None = None, size: int = SIZE, levels: int = LEVELS, *,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` images, (n, size, size) float32 in [0, 1]: each a kind uniformly at random, then one of its images
    uniformly at random. The same ``seed`` (or the same state of ``generator``) gives the same images."""
    size, levels = _check(size, levels)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"n (how many images) should be an int >= 0, got {n!r}")
    if (seed is None) == (generator is None):
        raise ValueError("give exactly one of seed (an int) and generator (a torch.Generator)")
    if generator is None:
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed should be an int, got {type(seed).__name__} {seed!r}")
        generator = torch.Generator().manual_seed(int(seed))
    elif not isinstance(generator, torch.Generator):
        raise TypeError(f"generator should be a torch.Generator, got {type(generator).__name__}")
    stacks = _all_shapes(size, levels)
    kinds = torch.randint(len(stacks), (int(n),), generator=generator)
    u = torch.rand(int(n), generator=generator, dtype=torch.float64)
    out = torch.empty(int(n), size, size)
    for k, stack in enumerate(stacks):
        rows = (kinds == k).nonzero().squeeze(1)
        index = (u[rows] * len(stack)).long().clamp_(max=len(stack) - 1)
        out[rows] = stack[index]
    return out


@functools.lru_cache(maxsize=8)
def _distribution(size: int, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    stacks = _all_shapes(size, levels)
    probs: dict[bytes, float] = {}
    images: dict[bytes, torch.Tensor] = {}
    for stack in stacks:
        for image in stack:
            key = image.numpy().tobytes()
            probs[key] = probs.get(key, 0.0) + 1.0 / (len(stacks) * len(stack))
            images.setdefault(key, image)
    keys = list(images)
    return torch.stack([images[k] for k in keys]), torch.tensor([probs[k] for k in keys], dtype=torch.float64)


def image_distribution(size: int = SIZE, levels: int = LEVELS) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image :func:`sample_images` can draw, once, as (M, size, size) float32, and its exact probability
    (M,) float64 (summing to 1; an image two kinds can draw would get both shares)."""
    size, levels = _check(size, levels)
    images, probs = _distribution(size, levels)
    return images.clone(), probs.clone()


def entropy(size: int = SIZE, levels: int = LEVELS) -> float:
    """The entropy of the images, in nats per image: -sum p log p over :func:`image_distribution`."""
    _, probs = image_distribution(size, levels)
    return float(-(probs * probs.log()).sum())


def pixel_marginals(size: int = SIZE, levels: int = LEVELS) -> torch.Tensor:
    """(size * size, levels) float64: for each pixel in raster order, the exact probability of each level.
    A model that treats the pixels as independent can do no better than these."""
    images, probs = image_distribution(size, levels)
    index = torch.round(images.reshape(len(images), -1) * (levels - 1)).long()  # (M, size * size)
    onehot = torch.nn.functional.one_hot(index, levels).double()  # (M, size * size, levels)
    return torch.einsum("m,mpl->pl", probs, onehot)


if __name__ == "__main__":  # python -m llmcourse.pixels: the counts and the entropy
    for kind in KINDS:
        print(f"{kind:9s} {len(shapes(kind)):5d} images")
    print(f"distinct images: {len(image_distribution()[0])}; entropy {entropy():.4f} nats per image, "
          f"{entropy() / SIZE ** 2:.4f} nats per pixel ({entropy() / SIZE ** 2 / math.log(2):.4f} bits)")
