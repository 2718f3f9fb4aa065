"""Real inputs from a folder of images (issue 26): each image decoded, resized, scaled and
normalised as the model declares, laid out as its input takes it; what the model then sees
is checked through the model itself (it answers each channel's mean). Bad folders are
refused before anything large is decoded, naming the file and the bound."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from core import Engine, EngineConfig
from core.errors import InputValidationError
from core.models.images import MAX_IMAGE_PIXELS, PRESETS, preprocessing, zip_files
from core.serving import EngineServer, RemoteEngine
from tests.helpers import WAIT_S, channel_mean_model

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
COLORS = {"red.png": (200, 10, 30), "teal.png": (0, 128, 128), "white.jpg": (255, 255, 255)}


def folder(tmp_path, colors=COLORS, size=(40, 30)):
    for name, rgb in colors.items():
        Image.new("RGB", size, rgb).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image: skipped")
    return tmp_path


@pytest.fixture
def engine():
    eng = Engine(EngineConfig(demo_models=False))
    eng.load_model(channel_mean_model(["N", 3, 16, 16]), name="nchw")
    eng.load_model(channel_mean_model(["N", 16, 16, 3], "NHWC"), name="nhwc")
    eng.load_model(channel_mean_model(["N", 1, 8, 8]), name="gray")
    eng.load_model(channel_mean_model(["N", 3, "H", "W"]), name="anysize")
    yield eng
    eng.close()


def seen_by(engine, name: str) -> np.ndarray:
    """What the model answers for every sample, in the folder's (sorted) order."""
    x = engine.real_inputs(name).draw(rows=engine.real_inputs(name).count, seed=None)
    return engine.predict(name, x).outputs["mean"]


def test_a_folder_becomes_the_models_input_with_its_preprocessing(engine, tmp_path):
    said = engine.set_inputs("nchw", folder(tmp_path), preprocess="imagenet")
    assert said == f"real: {tmp_path.name}.zip, 16×16 RGB NCHW, imagenet (3 samples)"
    assert engine.input_source("nchw") == said
    want = [(np.array(COLORS[n], np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD
            for n in sorted(COLORS)]
    np.testing.assert_allclose(seen_by(engine, "nchw"), want, atol=2e-2)  # jpeg: near
    assert engine.sample_input("nchw", rows=2, seed=1).shape == (2, 3, 16, 16)

    engine.set_inputs("nhwc", tmp_path, preprocess="raw")   # channels last
    np.testing.assert_allclose(seen_by(engine, "nhwc"),
                               [COLORS[n] for n in sorted(COLORS)], atol=3)
    engine.set_inputs("gray", tmp_path, preprocess="unit")   # one channel: luminance
    lum = [(0.299 * r + 0.587 * g + 0.114 * b) / 255 for r, g, b in
           (COLORS[n] for n in sorted(COLORS))]
    np.testing.assert_allclose(seen_by(engine, "gray")[:, 0], lum, atol=1e-2)
    engine.set_inputs("nchw", tmp_path, preprocess={"preset": "symmetric", "color": "BGR"})
    red = seen_by(engine, "nchw")[sorted(COLORS).index("red.png")]
    np.testing.assert_allclose(red, [30 / 127.5 - 1, 10 / 127.5 - 1, 200 / 127.5 - 1],
                               atol=1e-3)


def test_centre_crop_keeps_the_middle(engine, tmp_path):
    im = Image.new("RGB", (48, 16), (0, 0, 0))       # wide: black sides, white middle
    im.paste((255, 255, 255), (16, 0, 32, 16))
    im.save(tmp_path / "wide.png")
    engine.set_inputs("nchw", tmp_path, preprocess={"preset": "unit", "resize": "crop"})
    assert seen_by(engine, "nchw")[0] == pytest.approx([1, 1, 1], abs=0.02)
    engine.set_inputs("nchw", tmp_path, preprocess="unit")  # stretched: a third is white
    assert seen_by(engine, "nchw")[0] == pytest.approx([1 / 3] * 3, abs=0.05)


def test_a_dynamic_size_must_be_declared(engine, tmp_path):
    folder(tmp_path)
    with pytest.raises(InputValidationError, match=r"image size is not fixed.*'size'"):
        engine.set_inputs("anysize", tmp_path)
    said = engine.set_inputs("anysize", tmp_path, preprocess={"size": [12, 20]})
    assert "12×20 RGB NCHW, imagenet" in said
    assert engine.sample_input("anysize").shape == (1, 3, 12, 20)


def test_what_is_not_a_good_image_folder_is_refused_with_the_reason(engine, tmp_path):
    def zipped(files):
        return zip_files(list(files.items()))

    with pytest.raises(InputValidationError, match=r"broken\.png is not a readable image"):
        engine.set_inputs("nchw", zipped({"broken.png": b"\x89PNG not really"}), "x.zip")
    with pytest.raises(InputValidationError, match="holds no images"):
        engine.set_inputs("nchw", zipped({"a.txt": b"hello"}), "x.zip")
    with pytest.raises(InputValidationError, match="not a readable .zip"):
        engine.set_inputs("nchw", b"not a zip", "x.zip")
    big = io.BytesIO()   # small on disk, but 48 million pixels once decoded
    Image.new("1", (8000, 6000)).save(big, "PNG")
    assert len(big.getvalue()) < 100_000 and 8000 * 6000 > MAX_IMAGE_PIXELS
    with pytest.raises(InputValidationError, match=r"8000×6000 pixels, over the 40,000,000"):
        engine.set_inputs("nchw", zipped({"huge.png": big.getvalue()}), "x.zip")
    with pytest.raises(InputValidationError, match="images feed a model with one image input"):
        engine.load_model(channel_mean_model(["N", 5, 8, 8]), name="five")
        engine.set_inputs("five", folder(tmp_path))
    with pytest.raises(InputValidationError, match="unknown preprocessing preset 'vgg'"):
        engine.set_inputs("nchw", tmp_path, preprocess="vgg")
    with pytest.raises(InputValidationError, match="unknown preprocessing option"):
        engine.set_inputs("nchw", tmp_path, preprocess={"mean_rgb": [1, 2, 3]})
    with pytest.raises(InputValidationError, match="preprocess= is for a .zip of images"):
        np.save(tmp_path / "x.npy", np.zeros((2, 3, 16, 16), np.float32))
        engine.set_inputs("nchw", tmp_path / "x.npy", preprocess="unit")
    assert engine.input_source("nchw").startswith("generated")   # nothing half-set


def test_too_many_images_are_refused_before_decoding(engine, monkeypatch):
    from core.models import inputs as inputs_mod

    monkeypatch.setattr(inputs_mod, "MAX_INPUT_BYTES", 2 * 3 * 16 * 16 * 4)  # two images
    tiny = io.BytesIO()
    Image.new("RGB", (4, 4)).save(tiny, "PNG")
    files = zip_files([(f"{i}.png", tiny.getvalue()) for i in range(3)])
    with pytest.raises(InputValidationError, match="3 images of 16×16.*at most 2 fit"):
        engine.set_inputs("nchw", files, "three.zip")


def test_presets_are_documented_values():
    assert preprocessing(None) == PRESETS["imagenet"]
    assert PRESETS["imagenet"].mean == (0.485, 0.456, 0.406)
    assert preprocessing({"preset": "raw", "size": [2, 3]}).size == (2, 3)


def test_a_notebooks_folder_travels_to_a_server_as_a_zip(engine, tmp_path):
    server = EngineServer(engine, port=0).start()
    remote = RemoteEngine.connect(server.url, timeout_s=WAIT_S)
    try:
        said = remote.set_inputs("nchw", folder(tmp_path), preprocess="unit")
        assert said.endswith("16×16 RGB NCHW, unit (3 samples)")
        np.testing.assert_allclose(
            seen_by(engine, "nchw")[sorted(COLORS).index("teal.png")],
            np.array(COLORS["teal.png"]) / 255, atol=1e-3)
    finally:
        remote.close()
        server.close()
