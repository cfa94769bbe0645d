"""mova.media: mp4/wav writing and reading, image loading, loudness normalisation (real files, real numbers)."""

from __future__ import annotations

import struct
import zlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image
from scipy.signal import butter, resample, resample_poly, sosfilt

from mova import media

SR = 48000


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------


def gradient_video(T: int, H: int, W: int) -> np.ndarray:
    """Smooth RGB gradients that drift a little per frame: uint8 [T, H, W, 3]."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    frames = []
    for t in range(T):
        r = 40 + 170 * xx / max(W - 1, 1) + t
        g = 40 + 170 * yy / max(H - 1, 1)
        b = 40 + 85 * (xx / max(W - 1, 1) + yy / max(H - 1, 1))
        frames.append(np.stack([r, g, b], axis=-1))
    return np.clip(np.round(np.stack(frames)), 0, 255).astype(np.uint8)


def sine(seconds: float, freq: float = 440.0, amp: float = 0.3, sr: int = SR) -> np.ndarray:
    n = int(round(seconds * sr))
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / sr)).astype(np.float32)


def decode_with_pyav(path: Path) -> dict:
    """Independent read-back straight through PyAV (not through mova.media)."""
    with av.open(str(path)) as c:
        v, a = c.streams.video, c.streams.audio
        out = {
            "n_video": len(v),
            "n_audio": len(a),
            "video_codec": v[0].codec_context.name if v else None,
            "audio_codec": a[0].codec_context.name if a else None,
            "rate": v[0].average_rate if v else None,
            "pix_fmt": v[0].codec_context.pix_fmt if v else None,
            "sample_rate": a[0].codec_context.sample_rate if a else None,
            "channels": a[0].codec_context.channels if a else None,
        }
        out["frames"] = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]) if v else None
    if out["n_audio"]:
        with av.open(str(path)) as c:
            end = max(float((p.pts + p.duration) * p.time_base) for p in c.demux(audio=0) if p.pts is not None)
            out["audio_end_s"] = end
        with av.open(str(path)) as c:
            out["audio_samples"] = sum(f.samples for f in c.decode(audio=0))
    return out


def true_peak(x: np.ndarray) -> float:
    """4x oversampled peak, linear; x [N] or [N, C]."""
    x2 = x if x.ndim == 2 else x[:, None]
    up = resample_poly(x2.astype(np.float64), 4, 1, axis=0)
    return float(max(np.abs(up).max(), np.abs(x2).max()))


# --------------------------------------------------------------------------------------------------------------
# write_mp4 / read_mp4 / probe
# --------------------------------------------------------------------------------------------------------------


def test_write_mp4_streams_frames_and_audio_duration(tmp_path):
    T, fps = 24, 24
    video = gradient_video(T, 64, 96)
    path = media.write_mp4(tmp_path / "clip.mp4", video, fps, sine(T / fps), SR)
    assert path == tmp_path / "clip.mp4"

    info = decode_with_pyav(path)
    assert (info["n_video"], info["n_audio"]) == (1, 1)
    assert info["video_codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert info["rate"] == 24
    assert info["frames"].shape == (T, 64, 96, 3)
    assert info["audio_codec"] == "aac" and info["sample_rate"] == 48000 and info["channels"] == 1
    expected = T / fps * SR
    assert abs(info["audio_samples"] - expected) <= 1024
    assert abs(info["audio_end_s"] * SR - expected) <= 1024
    # crf 18 on a smooth gradient is near-lossless.
    assert np.abs(info["frames"].astype(np.int16) - video).mean() < 3.0

    # faststart: the moov atom precedes the media data, so browsers can start playing progressively.
    data = path.read_bytes()
    assert 0 < data.find(b"moov") < data.find(b"mdat")


def test_read_mp4_and_probe(tmp_path):
    T, fps = 12, 12.5
    stereo = np.stack([sine(T / fps, 440), sine(T / fps, 660)], axis=1)
    path = media.write_mp4(tmp_path / "s.mp4", gradient_video(T, 32, 48), fps, stereo, SR)

    m = media.read_mp4(path)
    assert m.video.shape == (T, 32, 48, 3) and m.video.dtype == np.uint8
    assert m.fps == pytest.approx(12.5)
    assert (m.video_codec, m.audio_codec, m.sample_rate, m.audio_channels) == ("h264", "aac", 48000, 2)
    assert m.audio.ndim == 1 and m.audio.dtype == np.float32
    assert abs(m.audio.shape[0] - T / fps * SR) <= 1024
    assert m.duration_s == pytest.approx(T / fps, abs=0.03)
    # The decoded mono mix matches the mean of the two sines (AAC is lossy: compare correlation and level).
    ref = stereo.mean(axis=1)
    n = min(ref.shape[0], m.audio.shape[0])
    assert np.corrcoef(ref[2048 : n - 2048], m.audio[2048 : n - 2048])[0, 1] > 0.99

    info = media.probe(path)
    assert info["video_codec"] == "h264" and info["audio_codec"] == "aac"
    assert info["num_frames"] == T and info["fps"] == pytest.approx(12.5)
    assert (info["width"], info["height"], info["pix_fmt"]) == (48, 32, "yuv420p")
    assert info["sample_rate"] == 48000 and info["audio_channels"] == 2
    assert info["duration_s"] == pytest.approx(T / fps, abs=0.03)


def test_odd_sizes_are_padded_by_edge_replication(tmp_path):
    video = gradient_video(6, 33, 47)
    path = media.write_mp4(tmp_path / "odd.mp4", video, 24)
    frames = decode_with_pyav(path)["frames"]
    assert frames.shape == (6, 34, 48, 3)
    assert np.abs(frames[:, :33, :47].astype(np.int16) - video).mean() < 3.0
    # The added row / column repeat the last ones (up to codec error).
    assert np.abs(frames[:, 33].astype(np.int16) - frames[:, 32]).mean() < 3.0
    assert np.abs(frames[:, :, 47].astype(np.int16) - frames[:, :, 46]).mean() < 3.0


@pytest.mark.parametrize(
    ("fps", "expected_rate"),
    [(12.5, Fraction(25, 2)), (23.976, Fraction(24000, 1001)), (Fraction(30000, 1001), Fraction(30000, 1001))],
)
def test_fractional_fps(tmp_path, fps, expected_rate):
    T = 15
    path = media.write_mp4(tmp_path / "f.mp4", gradient_video(T, 16, 16), fps, sine(2.0), SR)
    info = decode_with_pyav(path)
    assert info["rate"] == expected_rate
    assert info["frames"].shape[0] == T
    # Audio was 2 s, longer than the video: trimmed to T / fps.
    assert abs(info["audio_end_s"] - T / expected_rate) <= 1024 / SR


def test_long_audio_trimmed_short_audio_kept(tmp_path):
    T, fps = 24, 24
    long_path = media.write_mp4(tmp_path / "long.mp4", gradient_video(T, 16, 16), fps, sine(3.0), SR)
    short_path = media.write_mp4(tmp_path / "short.mp4", gradient_video(T, 16, 16), fps, sine(0.5), SR)
    assert abs(decode_with_pyav(long_path)["audio_end_s"] - 1.0) <= 1024 / SR
    assert abs(decode_with_pyav(short_path)["audio_end_s"] - 0.5) <= 1024 / SR
    assert decode_with_pyav(short_path)["frames"].shape[0] == T


def test_write_mp4_video_only(tmp_path):
    path = media.write_mp4(tmp_path / "silent.mp4", gradient_video(5, 16, 16), 8)
    m = media.read_mp4(path)
    assert m.video.shape[0] == 5 and m.audio is None and m.audio_codec is None and m.sample_rate is None


def test_the_same_frames_give_the_same_bytes_after_the_heap_is_reused(tmp_path):
    """x264's macroblock tree read heap memory it never wrote: after small buffers were freed (here by torch, as a
    generation does) the same 64x64 clip encoded to other bytes, ~7 distinct files in 12. ``X264_PARAMS`` turns it
    off; this must hold for any frames, so a textured ball moving over a gradient stands in for a generated clip."""
    import torch

    rng = np.random.default_rng(0)
    video = gradient_video(25, 64, 64).astype(np.int16) + rng.integers(-12, 13, size=(25, 64, 64, 3))
    yy, xx = np.mgrid[0:64, 0:64]
    for t in range(25):
        ball = (yy - 20 - 30 * abs(np.sin(t / 3))) ** 2 + (xx - 10 - 1.8 * t) ** 2 < 49
        video[t][ball] = (200, 30, 30)
    video = np.clip(video, 0, 255).astype(np.uint8)
    audio = sine(25 / 12, sr=16000)
    g = torch.Generator().manual_seed(0)
    digests = set()
    for _ in range(12):
        path = media.write_mp4(tmp_path / "clip.mp4", video, 12, audio, 16000)
        digests.add(path.read_bytes())
        junk = [torch.randn(int(n), generator=g) for n in torch.randint(4, 3000, (3000,), generator=g)]
        del junk
    assert len(digests) == 1
    assert decode_with_pyav(path)["frames"].shape == (25, 64, 64, 3)


def test_write_mp4_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "out.mp4"
    target.write_bytes(b"previous version")
    calls = {"n": 0}
    original = av.VideoFrame.from_ndarray

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash while encoding")
        return original(*args, **kwargs)

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", failing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        media.write_mp4(target, gradient_video(6, 16, 16), 24)
    assert target.read_bytes() == b"previous version"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # no temp file left behind


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"video": np.zeros((4, 16, 16, 3), np.float32)}, "video"),
        ({"video": np.zeros((16, 16, 3), np.uint8)}, "video"),
        ({"video": np.zeros((0, 16, 16, 3), np.uint8)}, "video"),
        ({"fps": 0}, "fps"),
        ({"fps": float("nan")}, "fps"),
        ({"crf": 60}, "crf"),
        ({"audio": np.zeros((100, 3), np.float32)}, "audio"),
        ({"audio": np.zeros(100, np.int16)}, "audio"),
        ({"audio": np.full(100, np.nan, np.float32)}, "audio"),
        ({"audio": np.zeros(100, np.float32), "sample_rate": 0}, "sample_rate"),
        ({"audio": np.zeros(100, np.float32), "sample_rate": 12345}, "sample_rate"),
    ],
)
def test_write_mp4_rejects_bad_arguments(tmp_path, kwargs, field):
    args = {"video": np.zeros((4, 16, 16, 3), np.uint8), "fps": 24} | kwargs
    with pytest.raises(ValueError, match=field):
        media.write_mp4(tmp_path / "x.mp4", **args)
    assert not list(tmp_path.iterdir())


def test_read_errors_name_path(tmp_path):
    with pytest.raises(ValueError, match="path"):
        media.read_mp4(tmp_path / "missing.mp4")
    bogus = tmp_path / "bogus.mp4"
    bogus.write_text("not a video")
    with pytest.raises(ValueError, match="path"):
        media.read_mp4(bogus)


# --------------------------------------------------------------------------------------------------------------
# WAV and read_audio
# --------------------------------------------------------------------------------------------------------------


def test_write_wav_round_trip_and_clipping(tmp_path):
    x = sine(0.5, amp=0.5)
    x[:10] = 1.7  # out of range: clipped
    x[10:20] = -3.0
    path = media.write_wav(tmp_path / "a.wav", x, SR)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (SR, 1, "PCM_16", x.shape[0])
    y, sr = sf.read(str(path), dtype="float32")
    assert sr == SR
    assert np.abs(y[20:] - x[20:]).max() <= 1.0 / 32768 + 1e-6
    assert y[:10].min() >= 0.9999 and y[10:20].max() <= -0.9999

    stereo = np.stack([x, -x], axis=1) * 0.3
    y2, _ = sf.read(str(media.write_wav(tmp_path / "b.wav", stereo, 16000)), dtype="float32")
    assert y2.shape == stereo.shape


def test_read_audio_resamples_and_mixes(tmp_path):
    stereo = np.stack([sine(1.0, 440, 0.4), sine(1.0, 440, 0.2)], axis=1)
    path = media.write_wav(tmp_path / "s.wav", stereo, SR)

    mono, sr = media.read_audio(path)
    assert sr == SR and mono.shape == (SR,) and mono.dtype == np.float32
    np.testing.assert_allclose(mono, stereo.mean(axis=1), atol=2e-4)

    both, sr = media.read_audio(path, mono=False)
    assert both.shape == (SR, 2)

    down, sr = media.read_audio(path, sample_rate=16000)
    assert sr == 16000 and abs(down.shape[0] - 16000) <= 32
    # Still a 440 Hz tone at the same level after resampling.
    spectrum = np.abs(np.fft.rfft(down[1000:15000]))
    assert np.fft.rfftfreq(14000, 1 / 16000)[np.argmax(spectrum)] == pytest.approx(440, abs=2)
    assert np.sqrt(np.mean(down[1000:15000] ** 2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.02)

    # The audio of an mp4 too.
    mp4 = media.write_mp4(tmp_path / "v.mp4", gradient_video(24, 16, 16), 24, sine(1.0), SR)
    a, sr = media.read_audio(mp4, sample_rate=24000)
    assert sr == 24000 and abs(a.shape[0] - 24000) <= 512


# --------------------------------------------------------------------------------------------------------------
# load_image
# --------------------------------------------------------------------------------------------------------------


def test_load_image_modes(tmp_path):
    # RGBA: opaque red, half-transparent red, fully transparent -> composited on white.
    rgba = np.zeros((4, 3, 4), np.uint8)
    rgba[:, 0] = (255, 0, 0, 255)
    rgba[:, 1] = (255, 0, 0, 128)
    rgba[:, 2] = (0, 0, 255, 0)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out = media.load_image(tmp_path / "rgba.png")
    assert out.shape == (4, 3, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[0, 1, 0] == 255 and abs(int(out[0, 1, 1]) - 127) <= 1 and abs(int(out[0, 1, 2]) - 127) <= 1
    assert out[0, 2].tolist() == [255, 255, 255]

    # LA (grey + alpha).
    la = Image.fromarray(np.dstack([np.full((2, 2), 0, np.uint8), np.full((2, 2), 0, np.uint8)]), "LA")
    assert media.load_image(la)[0, 0].tolist() == [255, 255, 255]

    # L (grey).
    Image.fromarray(np.full((5, 6), 77, np.uint8), "L").save(tmp_path / "grey.png")
    assert media.load_image(str(tmp_path / "grey.png"))[2, 3].tolist() == [77, 77, 77]

    # P (palette) and P with a transparent index.
    pal = Image.new("P", (4, 4))
    pal.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    pal.putpixel((1, 1), 1)
    pal.save(tmp_path / "pal.png")
    p = media.load_image(tmp_path / "pal.png")
    assert p[0, 0].tolist() == [10, 20, 30] and p[1, 1].tolist() == [200, 100, 50]
    pal.save(tmp_path / "pal_t.png", transparency=0)
    pt = media.load_image(tmp_path / "pal_t.png")
    assert pt[0, 0].tolist() == [255, 255, 255] and pt[1, 1].tolist() == [200, 100, 50]

    # CMYK (JPEG stores it; PIL converts to RGB).
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    c = media.load_image(tmp_path / "cmyk.jpg")
    assert c.shape == (8, 8, 3) and c[4, 4, 0] > 230 and c[4, 4, 1] < 25 and c[4, 4, 2] < 25

    # EXIF orientation 6 (camera rotated 90 degrees) is applied: a 20x10 (WxH) file becomes 10x20.
    phone = Image.new("RGB", (20, 10), (90, 90, 90))
    exif = phone.getexif()
    exif[0x0112] = 6
    phone.save(tmp_path / "phone.jpg", exif=exif)
    assert media.load_image(tmp_path / "phone.jpg").shape == (20, 10, 3)

    # Premultiplied alpha modes.
    assert media.load_image(Image.new("LA", (2, 2), (0, 0)).convert("La"))[0, 0].tolist() == [255] * 3

    # numpy inputs.
    assert media.load_image(np.full((3, 3), 9, np.uint8)).shape == (3, 3, 3)
    assert media.load_image(np.ones((3, 3, 3), np.float32))[0, 0].tolist() == [255, 255, 255]
    assert media.load_image(np.zeros((3, 3, 4), np.uint8))[0, 0].tolist() == [255, 255, 255]


def test_load_image_errors_name_image(tmp_path):
    with pytest.raises(ValueError, match=r"image.*not found"):
        media.load_image(tmp_path / "nope.png")
    fake = tmp_path / "notes.png"
    fake.write_text("this is a text file, not a PNG\n" * 10)
    with pytest.raises(ValueError, match=r"image.*not a readable image"):
        media.load_image(fake)
    truncated = tmp_path / "trunc.png"
    Image.fromarray(gradient_video(1, 64, 64)[0]).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(ValueError, match="image"):
        media.load_image(truncated)
    with pytest.raises(ValueError, match=r"image.*zero-size"):
        media.load_image(np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(ValueError, match=r"image.*zero-size"):
        media.load_image(Image.new("RGB", (0, 5)))
    with pytest.raises(ValueError, match="image"):
        media.load_image(np.zeros((4, 4, 3), np.int32))
    with pytest.raises(ValueError, match="image"):
        media.load_image(12345)


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height but holds almost no pixel data (never decoded)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_load_image_refuses_too_many_pixels_before_decoding(tmp_path, monkeypatch):
    big = tmp_path / "big.png"
    Image.new("RGB", (1200, 1000), (1, 2, 3)).save(big)

    def no_decode(self, *args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(Image.Image, "load", no_decode)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decode)
    with pytest.raises(ValueError, match=r"image.*1200x1000.*max_pixels=1000000"):
        media.load_image(big, max_pixels=1_000_000)
    monkeypatch.undo()
    assert media.load_image(big, max_pixels=1_200_000).shape == (1000, 1200, 3)

    # A forged header over the default limit (81 MP): refused from the header alone.
    _png_header_only(tmp_path / "forged.png", 9000, 9000)
    with pytest.raises(ValueError, match=r"image.*exceeds"):
        media.load_image(tmp_path / "forged.png")
    # Over PIL's own decompression-bomb limit (2.5 GP): PIL refuses at open, reported the same way.
    _png_header_only(tmp_path / "bomb.png", 50000, 50000)
    with pytest.raises(ValueError, match="image"):
        media.load_image(tmp_path / "bomb.png")


# --------------------------------------------------------------------------------------------------------------
# Loudness
# --------------------------------------------------------------------------------------------------------------


def _noise(seconds: float, std: float, seed: int = 0) -> np.ndarray:
    return (std * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


@pytest.mark.parametrize("target", [-16.0, -23.0])
@pytest.mark.parametrize("kind", ["noise", "tone", "stereo"])
def test_normalize_loudness_hits_target(kind, target):
    x = {
        "noise": _noise(4.0, 0.05),
        "tone": sine(4.0, 1000, 0.05),
        "stereo": np.stack([_noise(4.0, 0.05, 1), _noise(4.0, 0.02, 2)], axis=1),
    }[kind]
    y = media.normalize_loudness(x, SR, target_lufs=target)
    assert y.shape == x.shape and y.dtype == np.float32 and np.all(np.isfinite(y))
    assert media.integrated_loudness(y, SR) == pytest.approx(target, abs=0.5)
    assert true_peak(y) <= 10 ** (-1.0 / 20)


def _with_burst(kind: str) -> np.ndarray:
    x = _noise(5.0, 0.05)
    rng = np.random.default_rng(3)
    if kind == "signs":  # worst case: 5 ms of full-band random signs, energy right up to Nyquist
        x[2 * SR : 2 * SR + 240] += 0.9 * np.sign(rng.standard_normal(240))
    else:  # a realistic hit: decaying noise, band-limited to 16 kHz
        burst = sosfilt(butter(8, 16000, fs=SR, output="sos"), rng.standard_normal(2400))
        x[2 * SR : 2 * SR + 2400] += 0.9 * burst / np.abs(burst).max() * np.exp(-np.arange(2400) / (0.005 * SR))
    return x


@pytest.mark.parametrize("kind", ["signs", "hit"])
def test_normalize_loudness_limits_transient_and_keeps_loudness(kind):
    x = _with_burst(kind)
    ceiling_db = -1.0
    ceiling = 10 ** (ceiling_db / 20)
    gain_only = x * 10 ** ((-16.0 - media.integrated_loudness(x, SR)) / 20)
    assert true_peak(gain_only) > 1.2 * ceiling  # the burst would be well over the ceiling without the limiter

    y = media.normalize_loudness(x, SR, target_lufs=-16.0, true_peak_db=ceiling_db)
    assert np.all(np.isfinite(y))
    assert np.abs(y).max() <= ceiling
    assert true_peak(y) <= ceiling  # 4x oversampled with scipy's default filter
    if kind == "hit":
        # Ideal (FFT) band-limited interpolation agrees within 0.1 dB for band-limited material.
        assert np.abs(resample(y.astype(np.float64), 4 * y.shape[0])).max() <= ceiling * 10 ** (0.1 / 20)
    assert media.integrated_loudness(y, SR) == pytest.approx(-16.0, abs=0.5)
    # Soft limiting: far from the burst the signal only got one constant gain ...
    far = y[:SR].astype(np.float64) / x[:SR]
    assert np.ptp(far) < 1e-4 * far.mean()
    # ... the gain dips only around the burst (+-25 ms), and smoothly (no sample-to-sample jumps).
    gain = y.astype(np.float64) / x / far.mean()  # [N], 1.0 where untouched
    assert np.all(np.abs(gain[: 2 * SR - 1200] - 1) < 1e-4) and np.all(np.abs(gain[2 * SR + 3600 :] - 1) < 1e-4)
    assert gain[2 * SR : 2 * SR + 240].min() < 0.9
    assert np.abs(np.diff(gain)).max() < 0.02


def test_normalize_loudness_silence_and_near_silence_unchanged():
    silence = np.zeros(SR, np.float32)
    out = media.normalize_loudness(silence, SR)
    assert np.array_equal(out, silence) and np.all(np.isfinite(out))
    quiet = _noise(2.0, 1e-5)  # about -97 LUFS: under the -70 LUFS gate
    assert media.integrated_loudness(quiet, SR) == float("-inf") or media.integrated_loudness(quiet, SR) < -70
    np.testing.assert_array_equal(media.normalize_loudness(quiet, SR), quiet)
    assert media.integrated_loudness(silence, SR) == float("-inf")


def test_normalize_loudness_short_audio_uses_rms_fallback():
    x = sine(0.2, 1000, 0.05)  # shorter than the 0.4 s gating block
    assert media.integrated_loudness(x, SR) == float("-inf")
    y = media.normalize_loudness(x, SR, target_lufs=-16.0)
    # Fallback measure: -0.691 + 10 log10(mean square).
    assert -0.691 + 10 * np.log10(np.mean(y.astype(np.float64) ** 2)) == pytest.approx(-16.0, abs=0.05)
    assert true_peak(y) <= 10 ** (-1.0 / 20)
    loud = media.normalize_loudness(_noise(0.2, 0.5), SR, target_lufs=-9.0)
    assert np.all(np.isfinite(loud)) and true_peak(loud) <= 10 ** (-1.0 / 20)


def test_normalize_loudness_rejects_bad_input():
    with pytest.raises(ValueError, match="audio"):
        media.normalize_loudness(np.array([0.1, np.nan], np.float32), SR)
    with pytest.raises(ValueError, match="sample_rate"):
        media.normalize_loudness(_noise(1.0, 0.1), 0)
    with pytest.raises(ValueError, match="target_lufs"):
        media.normalize_loudness(_noise(1.0, 0.1), SR, target_lufs=float("inf"))
    with pytest.raises(ValueError, match="true_peak_db"):
        media.normalize_loudness(_noise(1.0, 0.1), SR, true_peak_db=3.0)
