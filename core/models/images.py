"""Real inputs from a folder of images, with the model's own preprocessing declared: each
image decoded (Pillow), converted to the model's colours, resized to its input size,
scaled and normalised as the model was trained, laid out NCHW or NHWC, and checked
against the model's input like any other sample input.

A folder travels as a ``.zip`` of its images (:func:`zip_folder`; the dashboard zips what
the browser uploads), so a server reads it from bytes like every other input file.

Preprocessing (:func:`preprocessing`) starts from a preset and takes overrides:

* ``"imagenet"``: RGB, values / 255, then (x - mean) / std with torchvision's ImageNet mean
  (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225);
* ``"unit"``: values / 255 (0 to 1);
* ``"symmetric"``: values / 127.5 - 1 (-1 to 1, as Inception and MobileNet in TensorFlow);
* ``"raw"``: the pixel values 0 to 255;

overrides: ``size`` ([height, width]; default the model's fixed spatial dimensions),
``layout`` ("NCHW" or "NHWC"; default from where the model's channel dimension is),
``color`` ("RGB", "BGR" or "L"), ``resize`` ("stretch", or "crop": the shorter side to the
size, then the centre), ``mean``, ``std``, ``scale``.

Example:
    >>> samples = read_images(zip_folder("cats/"), "cats.zip", info, "imagenet")
    >>> engine.set_inputs("resnet", "cats/", preprocess="imagenet")
    'real: cats.zip, 224×224 RGB NCHW, imagenet (12 samples)'
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from core.errors import InputValidationError

__all__ = ["ImagePreprocess", "preprocessing", "read_images", "zip_folder", "zip_files",
           "IMAGE_SUFFIXES", "PRESETS", "looks_like_images"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
#: No image is decoded past this many pixels (a small file can declare a huge image).
MAX_IMAGE_PIXELS = 40_000_000
#: At most this many images are read from one folder.
MAX_IMAGES = 10_000


@dataclass(frozen=True)
class ImagePreprocess:
    """How an image becomes a model input (see the module's docstring)."""

    preset: str = "imagenet"
    size: tuple[int, int] | None = None
    layout: str | None = None
    color: str | None = None
    resize: str = "stretch"
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)

    def describe(self, size: tuple[int, int], color: str, layout: str) -> str:
        crop = ", centre crop" if self.resize == "crop" else ""
        return f"{size[0]}×{size[1]} {color} {layout}{crop}, {self.preset}"


PRESETS = {
    "imagenet": ImagePreprocess("imagenet", mean=(0.485, 0.456, 0.406),
                                std=(0.229, 0.224, 0.225)),
    "unit": ImagePreprocess("unit"),
    "symmetric": ImagePreprocess("symmetric", scale=1 / 127.5, mean=(1.0, 1.0, 1.0)),
    "raw": ImagePreprocess("raw", scale=1.0),
}


def _refuse(message: str) -> InputValidationError:
    return InputValidationError(message)


def preprocessing(spec: str | dict[str, Any] | ImagePreprocess | None) -> ImagePreprocess:
    """An :class:`ImagePreprocess` from a preset name, or a dict with ``preset`` and
    overrides; refused with what is accepted."""
    if isinstance(spec, ImagePreprocess):
        return spec
    if spec is None or isinstance(spec, str):
        spec = {"preset": spec or "imagenet"}
    if not isinstance(spec, dict):
        raise _refuse(f"preprocess must be a preset name ({', '.join(PRESETS)}) or a dict "
                      f"with 'preset' and overrides, got {type(spec).__name__}")
    spec = dict(spec)
    name = spec.pop("preset", "imagenet")
    if name not in PRESETS:
        raise _refuse(f"unknown preprocessing preset {name!r}; expected one of "
                      f"{', '.join(PRESETS)}")
    allowed = ("size", "layout", "color", "resize", "scale", "mean", "std")
    unknown = [k for k in spec if k not in allowed]
    if unknown:
        raise _refuse(f"unknown preprocessing option(s) {', '.join(map(str, unknown))}; "
                      f"expected {', '.join(allowed)}")
    out = replace(PRESETS[name], **{k: v for k, v in spec.items()
                                    if k in ("layout", "color", "resize")})
    try:
        if spec.get("size") is not None:
            h, w = (int(v) for v in spec["size"])
            if not (0 < h <= 4096 and 0 < w <= 4096):
                raise ValueError("each side 1 to 4096 pixels")
            out = replace(out, size=(h, w))
        if "scale" in spec:
            out = replace(out, scale=float(spec["scale"]))
        for key in ("mean", "std"):
            if key in spec:
                vals = tuple(float(v) for v in np.atleast_1d(spec[key]))
                if key == "std" and not all(v > 0 for v in vals):
                    raise ValueError("std must be positive")
                out = replace(out, **{key: vals})
    except (TypeError, ValueError) as err:
        raise _refuse(f"preprocessing: {err} (size is [height, width]; scale, mean and std "
                      "are numbers)") from None
    if out.layout not in (None, "NCHW", "NHWC"):
        raise _refuse(f"layout must be 'NCHW' or 'NHWC', got {out.layout!r}")
    if out.color not in (None, "RGB", "BGR", "L"):
        raise _refuse(f"color must be 'RGB', 'BGR' or 'L', got {out.color!r}")
    if out.resize not in ("stretch", "crop"):
        raise _refuse(f"resize must be 'stretch' or 'crop', got {out.resize!r}")
    return out


def looks_like_images(info: Any) -> bool:
    """Whether ``info`` takes one image-shaped input: rank 4 with 1 or 3 channels first
    (after the batch) or last."""
    if len(info.inputs) != 1:
        return False
    shape = tuple(info.inputs[0].shape or ())
    return len(shape) == 4 and (shape[1] in (1, 3) or shape[3] in (1, 3))


def _geometry(info: Any, pre: ImagePreprocess, where: str
              ) -> tuple[str, tuple[int, int], str]:
    """(layout, (height, width), colour) for the model's one image input."""
    if not looks_like_images(info):
        raise _refuse(f"{where}: images feed a model with one image input [N, C, H, W] or "
                      f"[N, H, W, C] (C = 1 or 3); model {info.name!r} takes "
                      + "; ".join(f"{s.name} {list(s.shape or ())}" for s in info.inputs))
    shape = tuple(info.inputs[0].shape)
    layout = pre.layout or ("NCHW" if shape[1] in (1, 3) else "NHWC")
    channels, spatial = (shape[1], shape[2:4]) if layout == "NCHW" else (shape[3], shape[1:3])
    if not isinstance(channels, int):
        channels = 1 if pre.color == "L" else 3
    color = pre.color or ("L" if channels == 1 else "RGB")
    if (color == "L") != (channels == 1):
        raise _refuse(f"{where}: color {color} gives {1 if color == 'L' else 3} channel(s); "
                      f"the model takes {channels}")
    if pre.size is not None:
        size = pre.size
    elif all(isinstance(d, int) for d in spatial):
        size = (int(spatial[0]), int(spatial[1]))
    else:
        raise _refuse(f"{where}: the model's image size is not fixed ({list(spatial)}); "
                      "declare it: preprocess={'size': [height, width]}")
    return layout, size, color


def _image(raw: bytes, name: str, size: tuple[int, int], color: str, pre: ImagePreprocess,
           where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(io.BytesIO(raw)) as im:
            if im.size[0] * im.size[1] > MAX_IMAGE_PIXELS:
                raise _refuse(f"{where}: {name} is {im.size[0]}×{im.size[1]} pixels, over "
                              f"the {MAX_IMAGE_PIXELS:,} read per image")
            im = im.convert("L" if color == "L" else "RGB")
            h, w = size
            if pre.resize == "crop":  # the shorter side to the size, then the centre
                k = max(h / im.height, w / im.width)
                im = im.resize((max(w, round(im.width * k)), max(h, round(im.height * k))),
                               Image.BILINEAR)
                left, top = (im.width - w) // 2, (im.height - h) // 2
                im = im.crop((left, top, left + w, top + h))
            else:
                im = im.resize((w, h), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.float32)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise _refuse(f"{where}: {name} is not a readable image ({err})") from None
    if arr.ndim == 2:
        arr = arr[..., None]
    if color == "BGR":
        arr = arr[..., ::-1]
    n = arr.shape[-1]
    mean = np.resize(np.asarray(pre.mean, np.float32), n)
    std = np.resize(np.asarray(pre.std, np.float32), n)
    return (arr * np.float32(pre.scale) - mean) / std


def read_images(data: bytes, filename: str, info: Any,
                preprocess: str | dict[str, Any] | ImagePreprocess | None = None,
                max_bytes: int = 64 * 2**20) -> tuple[dict[str, np.ndarray], str]:
    """The images of a ``.zip`` as samples of the model's one image input, preprocessed:
    ``({input name: array [count, ...]}, "cats.zip, 224×224 RGB NCHW, imagenet")``; bounded before decoding (count,
    pixels per image, the arrays' bytes)."""
    where = PurePath(filename).name
    pre = preprocessing(preprocess)
    layout, size, color = _geometry(info, pre, where)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as err:
        raise _refuse(f"{where} is not a readable .zip of images ({err})") from None
    with zf:
        members = sorted((i for i in zf.infolist() if not i.is_dir()
                          and PurePath(i.filename).suffix.lower() in IMAGE_SUFFIXES
                          and not PurePath(i.filename).name.startswith(".")
                          and "__MACOSX" not in i.filename), key=lambda i: i.filename)
        if not members:
            raise _refuse(f"{where} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        per_image = 4 * size[0] * size[1] * (1 if color == "L" else 3)
        fit = max_bytes // per_image
        if len(members) > min(fit, MAX_IMAGES):
            raise _refuse(f"{where}: {len(members)} images of {size[0]}×{size[1]} are "
                          f"{len(members) * per_image / 2**20:.0f} MiB as inputs; at most "
                          f"{min(fit, MAX_IMAGES)} fit the {max_bytes // 2**20} MiB kept per "
                          "model: use fewer")
        if sum(i.file_size for i in members) > 4 * max_bytes:
            raise _refuse(f"{where}: its images unpack to over {4 * max_bytes // 2**20} MiB")
        arrays = []
        for i in members:
            try:
                raw = zf.read(i)
            except (zipfile.BadZipFile, OSError, ValueError) as err:
                raise _refuse(f"{where}: {i.filename} cannot be read from the .zip "
                              f"({err})") from None
            arrays.append(_image(raw, i.filename, size, color, pre, where))
    batch = np.stack(arrays)  # N, H, W, C
    if layout == "NCHW":
        batch = batch.transpose(0, 3, 1, 2)
    return ({info.inputs[0].name: np.ascontiguousarray(batch)},
            f"{where}, {pre.describe(size, color, layout)}")


def zip_folder(folder: str | Path, max_bytes: int = 256 * 2**20) -> bytes:
    """The image files under ``folder`` (recursively) as one stored ``.zip``."""
    root = Path(folder)
    files = sorted(p for p in root.rglob("*")
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise _refuse(f"{root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    if len(files) > MAX_IMAGES:
        raise _refuse(f"{root} holds {len(files)} images; at most {MAX_IMAGES} are read")
    total = sum(p.stat().st_size for p in files)
    if total > max_bytes:
        raise _refuse(f"{root}'s images are {total:,} bytes, over the {max_bytes:,} read")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for p in files:
            zf.write(p, p.relative_to(root).as_posix())
    return buf.getvalue()


def zip_files(files: list[tuple[str, bytes]]) -> bytes:
    """Named images (a browser's folder upload) as one stored ``.zip``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, raw in files:
            zf.writestr(name, raw)
    return buf.getvalue()
