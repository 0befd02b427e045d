"""In-memory and unusual image inputs: bit depths, empty/odd arrays, base64, huge headers."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from PIL import Image, ImageFile
from test_recognizer import ASTRONAUT, make_slim, png_bomb

from ferkit.data.images import ImageDecodeError, ImageTooLargeError, decode_image, to_uint8
from ferkit.errors import FerkitError
from ferkit.inference.recognizer import Recognizer


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    return Recognizer.from_pretrained(make_slim(tmp_path_factory.mktemp("m") / "tiny.pt"))


@pytest.fixture(scope="module")
def astro():
    return np.asarray(Image.open(ASTRONAUT).convert("RGB"))


def _faces(faces):
    return [(f.box, f.label, round(f.confidence, 4)) for f in faces]


def _one_line_error(exc_info, *words):
    msg = str(exc_info.value)
    assert "\n" not in msg and len(msg) < 300, msg[:500]
    for w in words:
        assert w in msg, msg
    return msg


# ----------------------------------------------------------------------------- bit depth
def test_16bit_rgb_array_is_scaled_by_bit_depth_not_clipped(rec, astro):
    sixteen = astro.astype(np.uint16) * 257  # what cv2.IMREAD_UNCHANGED gives for a 16-bit PNG
    assert np.array_equal(decode_image(sixteen), astro)
    assert _faces(rec.predict(sixteen)) == _faces(rec.predict(astro))
    assert len(rec.predict(sixteen)) == 1


def test_16bit_gray_png_from_its_path_matches_its_8bit_version(tmp_path, astro):
    gray8 = np.asarray(Image.fromarray(astro).convert("L"))
    # A low-contrast picture: stretching min..max to 0..255 would change it a lot.
    gray8 = (gray8 // 4 + 60).astype(np.uint8)
    Image.fromarray(gray8).save(tmp_path / "g8.png")
    Image.fromarray(gray8.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    a8, a16 = decode_image(tmp_path / "g8.png"), decode_image(tmp_path / "g16.png")
    assert a16.dtype == np.uint8 and np.abs(a16.astype(int) - a8).max() <= 1


@pytest.mark.parametrize(
    "make",
    [
        lambda a: a.astype(np.float32) / 255.0,  # float 0-1 (skimage, torchvision)
        lambda a: a.astype(np.float64),  # float 0-255
        lambda a: a.astype(np.int64),  # np.array of Python ints
        lambda a: a.astype(np.uint32) * 16843009,  # full-range 32-bit
    ],
    ids=["float01", "float255", "int64", "uint32"],
)
def test_other_dtypes_decode_like_uint8(astro, make):
    assert np.abs(decode_image(make(astro)).astype(int) - astro).max() <= 1


def test_bool_mask_and_two_channel_arrays():
    mask = np.zeros((20, 30), bool)
    mask[5:10] = True
    assert set(np.unique(decode_image(mask))) == {0, 255}
    la = np.zeros((10, 10, 2), np.uint8)  # black, fully transparent -> white like a file
    assert (decode_image(la) == 255).all() and decode_image(la).shape == (10, 10, 1)


def test_rgba_array_matches_the_same_rgba_file(tmp_path, astro):
    rgba = np.dstack([astro, np.zeros(astro.shape[:2], np.uint8)])
    rgba[100:300, 100:300, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    assert np.array_equal(decode_image(rgba), decode_image(tmp_path / "t.png"))
    bgra = rgba[:, :, [2, 1, 0, 3]]
    assert np.array_equal(Recognizer.load_image(bgra, color="bgr"), decode_image(rgba))


def test_float_crops_are_classified_like_uint8_crops(rec):
    crops = np.random.default_rng(0).integers(0, 255, (3, 48, 48), dtype=np.uint8)
    p8 = rec.classify_faces(crops)
    assert np.allclose(rec.classify_faces([c.astype(np.float32) / 255 for c in crops]), p8, atol=1e-4)
    assert np.allclose(rec.classify_faces([c.astype(np.uint16) * 257 for c in crops]), p8, atol=1e-4)


# ----------------------------------------------------------------------------- bad arrays
@pytest.mark.parametrize(
    "arr, words",
    [
        (np.zeros((0, 0, 3), np.uint8), ["empty", "(0, 0, 3)"]),
        (np.zeros((0, 0), np.float32), ["empty"]),
        (np.zeros((0, 640, 3), np.uint8), ["empty", "(0, 640, 3)"]),
        (np.zeros((640, 0), np.uint16), ["empty"]),
        (np.zeros(100, np.uint8), ["expected (H, W) or (H, W, C)"]),
        (np.zeros((2, 32, 32, 3), np.uint8), ["batch of images"]),
        (np.zeros((3, 64, 80), np.uint8), ["channels-first", "transpose(1, 2, 0)"]),
        (np.zeros((64, 80, 7), np.uint8), ["1, 3 or 4 channels"]),
        (np.full((8, 8), np.nan, np.float32), ["NaN"]),
        (np.full((8, 8), -0.5, np.float32), ["negative"]),
        (np.full((8, 8), 300.0), ["0-1 or 0-255"]),
        (np.full((8, 8), "x", object), ["dtype object"]),
        (np.zeros((8, 8), np.complex64), ["dtype complex64"]),
    ],
    ids=lambda v: str(getattr(v, "shape", "")),
)
def test_bad_arrays_are_one_line_ferkit_errors(rec, arr, words):
    with pytest.raises(FerkitError) as e:
        rec.predict(arr)
    _one_line_error(e, *words)


def test_detector_and_predict_arrays_take_an_empty_array_without_dividing_by_zero(rec):
    from ferkit.inference.faces import get_detector

    assert get_detector("haar").detect(np.zeros((0, 640, 3), np.uint8)) == []
    assert rec.predict_arrays([np.zeros((0, 0, 3), np.uint8)]) == [[]]


# ----------------------------------------------------------------------------- encoded
def test_bytes_base64_and_data_uri_are_decoded(rec, astro):
    raw = ASTRONAUT.read_bytes()
    b64 = base64.b64encode(raw).decode()
    want = _faces(rec.predict(astro))
    for src in (raw, b64, "data:image/png;base64," + b64, b64.encode(), bytearray(raw)):
        assert _faces(rec.predict(src)) == want, type(src)


def test_long_strings_and_missing_files_give_short_messages(rec, tmp_path):
    junk = "not base64! " * 10_000  # 120 KB of text that is neither a path nor base64
    with pytest.raises(ImageDecodeError) as e:
        rec.predict(junk)
    _one_line_error(e, "no such file")
    bad64 = base64.b64encode(b"definitely not an image" * 100).decode()
    with pytest.raises(ImageDecodeError) as e:
        rec.predict(bad64)
    _one_line_error(e, "cannot decode")
    with pytest.raises(ImageDecodeError) as e:
        rec.predict(b"")
    _one_line_error(e, "empty")
    with pytest.raises(ImageDecodeError) as e:
        rec.predict(tmp_path / "missing.jpg")
    _one_line_error(e, "no such file", "missing.jpg")


def test_unsupported_types_say_what_is_supported(rec):
    with pytest.raises(FerkitError) as e:
        rec.predict([[1, 2], [3, 4]])
    _one_line_error(e, "unsupported image input list", "numpy array")


# ----------------------------------------------------------------------------- huge images
def test_huge_image_is_refused_from_its_header_without_decoding(tmp_path, monkeypatch):
    # 100 MP claimed by a 60-byte PNG: between Pillow's own warning and error limits,
    # so only ferkit's check stands between it and a full decode.
    path = tmp_path / "huge.png"
    path.write_bytes(png_bomb(10_000, 10_000))
    loads = []
    monkeypatch.setattr(Image.Image, "load", lambda self: loads.append(1))
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(1))
    for src in (path, path.read_bytes()):
        with pytest.raises(ImageTooLargeError) as e:
            decode_image(src)
        _one_line_error(e, "too large", "10000x10000", "before decoding")
    assert loads == []


def test_cli_reports_a_huge_image_and_goes_on(tmp_path, capsys, rec):
    from ferkit.cli import main

    slim = make_slim(tmp_path / "tiny.pt")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "huge.png").write_bytes(png_bomb(10_000, 10_000))
    (tmp_path / "in" / "ok.png").write_bytes(ASTRONAUT.read_bytes())
    rc = main(["predict", str(tmp_path / "in"), "--model", str(slim), "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 1 and "ok.png" in out and "huge.png" not in out
    assert "too large" in err and "10000x10000" in err


def test_to_uint8_keeps_uint8_untouched():
    a = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert to_uint8(a) is a


def test_pil_images_of_high_bit_depth_and_float_modes(astro):
    gray8 = np.asarray(Image.fromarray(astro).convert("L"))
    as16 = Image.fromarray(gray8.astype(np.uint16) * 257)  # mode I;16
    as_f01 = Image.fromarray(gray8.astype(np.float32) / 255.0, "F")  # float 0-1
    as_i32 = Image.fromarray(gray8.astype(np.int32) * 257, "I")  # 16-bit data in mode I
    for im in (as16, as_f01, as_i32):
        assert np.abs(decode_image(im)[:, :, 0].astype(int) - gray8).max() <= 1, im.mode
    la = Image.fromarray(np.dstack([gray8, np.zeros_like(gray8)]), "LA")  # fully transparent
    assert (decode_image(la) == 255).all()
