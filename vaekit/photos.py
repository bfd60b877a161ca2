"""Colour photographs for the two image labs, from a folder or built offline from the wheels' sample photos.

The labs are latent space and AdaIN; the default set comes from the sample photos that scikit-image and
scikit-learn ship inside their wheels.

No dataset package bundles a photo set that fits (the course's 64×64 "Dog" set and COCO / WikiArt download at
run time), so the default set is random crops (random scale, position and horizontal flip, seeded) of those
sample photos. Whole photos are held out for evaluation, so held-out crops show scenes the model never saw.
Sources and licences: each ``skimage.data`` function's docstring (public domain, CC0 or CC-BY) and
``sklearn/datasets/images/README.txt`` (china.jpg and flower.jpg, CC-BY 2.0) in the installed packages.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

# Colour photographs in the two packages (the rest of scikit-image's samples are grey or synthetic).
TRAIN_PHOTOS = ("skimage:astronaut", "skimage:chelsea", "skimage:coffee", "skimage:rocket", "skimage:hubble_deep_field",
                "skimage:immunohistochemistry", "skimage:retina", "sklearn:china.jpg")
HELDOUT_PHOTOS = ("sklearn:flower.jpg", "skimage:motorcycle_left")
# For style transfer: scenes as content, strongly textured or coloured images as styles.
CONTENT_PHOTOS = ("skimage:astronaut", "skimage:chelsea", "skimage:rocket", "sklearn:china.jpg",
                  "skimage:motorcycle_left", "skimage:coffee")
STYLE_PHOTOS = ("skimage:hubble_deep_field", "skimage:immunohistochemistry", "skimage:retina", "sklearn:flower.jpg",
                "skimage:brick", "skimage:grass", "skimage:gravel")


def _sample_photo(name: str) -> np.ndarray:
    source, item = name.split(":")
    if source == "skimage":
        from skimage import data

        if item == "motorcycle_left":
            return data.stereo_motorcycle()[0]
        return getattr(data, item)()
    from sklearn.datasets import load_sample_image

    return load_sample_image(item)


def sample_photos(names: tuple[str, ...]) -> list[torch.Tensor]:
    """The named sample photos as float ``[3,H,W]`` tensors in [0, 1]."""
    out = []
    for name in names:
        img = np.asarray(_sample_photo(name))
        if img.ndim == 2:
            img = np.stack([img] * 3, -1)
        out.append(torch.from_numpy(np.array(img[..., :3], dtype=np.uint8)).permute(2, 0, 1).float() / 255)
    return out


def load_image_folder(folder: str | Path, size: int, limit: int | None = None, seed: int = 0) -> torch.Tensor:
    """The images under ``folder`` (recursively; at most ``limit`` of them, a seeded random choice, so a large
    set such as COCO never has to fit in memory), resized (short side) and centre-cropped to ``size``², RGB:
    float ``[N,3,size,size]`` in [0, 1]. Raises ``FileNotFoundError`` / ``ValueError`` with the folder named."""
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist.")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if limit is not None and len(files) > limit:
        pick = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed))[:limit]
        files = [files[i] for i in sorted(pick.tolist())]
    images = []
    for path in files:
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except OSError:
            continue  # not an image after all; skipped, counted below
        w, h = img.size
        scale = size / min(w, h)
        img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
        w, h = img.size
        left, top = (w - size) // 2, (h - size) // 2
        img = img.crop((left, top, left + size, top + size))
        images.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))
    if not images:
        raise ValueError(f"no readable image ({', '.join(IMAGE_SUFFIXES)}) under {folder}.")
    return torch.stack(images).float() / 255


def random_crops(photos: list[torch.Tensor], n: int, size: int, seed: int,
                 scale: tuple[float, float] = (0.1, 0.6)) -> torch.Tensor:
    """``n`` crops ``[n,3,size,size]``: a random photo, a square of ``scale`` × its short side at a random
    place, resized to ``size`` and flipped left-right half of the time."""
    gen = torch.Generator().manual_seed(seed)
    out = torch.empty(n, 3, size, size)
    for i in range(n):
        img = photos[int(torch.randint(len(photos), (1,), generator=gen))]
        _, h, w = img.shape
        lo, hi = scale
        side = max(size // 2, int(min(h, w) * (lo + (hi - lo) * float(torch.rand(1, generator=gen)))))
        top = int(torch.randint(h - side + 1, (1,), generator=gen))
        left = int(torch.randint(w - side + 1, (1,), generator=gen))
        crop = F.interpolate(img[None, :, top:top + side, left:left + side], size=(size, size), mode="bilinear",
                             antialias=True, align_corners=False)[0]
        out[i] = crop.flip(-1) if float(torch.rand(1, generator=gen)) < 0.5 else crop
    return out.clamp(0, 1)


def default_photo_set(n_train: int, n_heldout: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(training crops, held-out crops): crops of ``TRAIN_PHOTOS`` and of the unseen ``HELDOUT_PHOTOS``."""
    return (random_crops(sample_photos(TRAIN_PHOTOS), n_train, size, seed),
            random_crops(sample_photos(HELDOUT_PHOTOS), n_heldout, size, seed + 1))
