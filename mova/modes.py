"""Generation modes: what a clip is given besides its prompt, read and checked once, and the windows it is made of.

==========  ===========================================================================================================
kind        given (``GenerationSettings`` fields)
==========  ===========================================================================================================
t2va/it2va  a prompt (and a first frame, ``image``)
flf2va      ``last_image``: the clip ends on it (its last latent frame is held)
a2v         ``audio``: a sound kept as given (clean, t = 0) while the picture is generated for it
v2a         ``video``: frames kept as given (clean) while their sound is generated
extend      ``extend``: a clip with sound, continued by ``num_windows`` windows of ``num_frames`` new frames
retake      ``retake``: a clip whose span ``[retake_start, retake_end)`` is generated again (``retake_modality``: both,
            video or audio), re-noised only partly with ``strength`` < 1 (SDEdit); the rest is kept
==========  ===========================================================================================================

``num_windows`` > 1 chains windows into a long clip: every window after the first starts with the last
:data:`OVERLAP_LATENTS` latent frames (fewer in short windows) of what came before, and the sound under them, held as
known latents, and adds ``num_frames`` new frames, so N windows make N × ``num_frames`` frames. Joins
(``crossfade``): ``"pixel"`` cross-fades frames and samples over the held overlap; ``"latent"`` fades the held
latents out across the overlap and cuts there (the sound with a 10 ms fade). A modality given whole comes out exactly as given, and so does the outside of a
retake span: the output carries the given frames and samples, not a re-decoded copy.

:func:`read_inputs` decodes and checks every input that depends on a file (``ValueError`` naming the field, the value
and what is allowed), both before the queue (``Backend.check``) and in the pipeline; :class:`Plan` turns the inputs
into windows and joins what the pipeline generates for each into the output. Nothing here imports torch.

Conventions: frames uint8 [T, H, W, 3] at the clip's ``fps`` and size, sound float32 [n] mono at the model's rate;
output frame ``f`` starts at sample ``⌊f · rate / fps⌋``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.ndimage import distance_transform_edt

from mova import media
from mova.eval.seams import Join
from mova.validation import FRAME_MULTIPLE, MAX_DURATION_S, MAX_IMAGE_PIXELS

if TYPE_CHECKING:  # pragma: no cover
    from mova.settings import GenerationSettings

__all__ = ["Inputs", "Output", "Plan", "Window", "WindowSpec", "read_inputs", "OVERLAP_LATENTS"]

# An extension window starts with this many latent frames of what it continues (9 frames at 4×), fewer when a window
# is shorter. Measured on 3-window chains of the demo model (benchmarks/modes_eval.py): with 2 latents (5 held
# frames) 6 of 10 pixel joins stayed within the clip's own 95th-percentile frame change, with 3 all 10.
OVERLAP_LATENTS = 3
AUDIO_MARGIN_LATENTS = 2  # sound latents this close to generated sound are generated too (the DAC's reach)
AUDIO_CONTEXT_S = 0.5  # given sound before a window, encoded with it so the encoder sees real audio at its start
CUT_FADE_S = 0.01  # a cut in the sound (the edge of a retake span, a latent join) fades over this long
SILENT_PEAK_DB = -60.0  # given sound whose peak is below this is refused as silent
ASPECT_TOLERANCE = 0.02  # a clip to extend or retake may differ this much from the generation's aspect ratio


@dataclass
class Inputs:
    """A generation's given media, conformed to the clip (see the module docstring for the conventions).

    ``frames``: the video of v2a, or the clip of extend / retake; ``audio``: the sound of a2v, or the clip's."""

    first_frame: np.ndarray | None = None
    last_frame: np.ndarray | None = None
    frames: np.ndarray | None = None
    audio: np.ndarray | None = None


@dataclass
class Output:
    """The clip being built: frames uint8 [T, H, W, 3] and its raw (not loudness-normalised) sound float32 [n]."""

    frames: np.ndarray
    audio: np.ndarray


@dataclass(frozen=True)
class Window:
    """One denoising run: its frame 0 lands on output frame ``start``; its first ``overlap`` frames continue the
    output (0 for a first window)."""

    index: int
    start: int
    num_frames: int
    overlap: int = 0


@dataclass
class WindowSpec:
    """What one window is given, for the pipeline.

    ``frames`` uint8 [num_frames, H, W, 3] with ``frames_known`` bool [num_frames]; ``audio`` float32 [n] (the
    window's samples, zero where not given) with ``audio_known`` bool [n] and ``audio_context`` (given samples just
    before the window, a whole number of hops: encoded with it, then dropped); ``condition_frame`` the first-frame
    condition (None: MOVA's white frame); ``last_frame`` held as the last latent frame; ``strength`` (video,
    audio) of a partial re-noising; ``fade``: the held overlap's latents fade out (the latent join)."""

    window: Window
    condition_frame: np.ndarray | None = None
    frames: np.ndarray | None = None
    frames_known: np.ndarray | None = None
    audio: np.ndarray | None = None
    audio_known: np.ndarray | None = None
    audio_context: np.ndarray | None = None
    last_frame: np.ndarray | None = None
    strength: tuple[float, float] = (1.0, 1.0)
    fade: bool = False


# ----------------------------------------------------------------------------------------------------------------
# Reading and checking the inputs
# ----------------------------------------------------------------------------------------------------------------


def _named(name: str, exc: ValueError) -> ValueError:
    """A media reader's error (``path: …`` / ``image: …``) restated for the field ``name``."""
    text = str(exc)
    for prefix in ("path:", "image:"):
        if text.startswith(prefix):
            text = text[len(prefix):].strip()
    return ValueError(f"{name} is invalid: {text}")


def _image(name: str, value: Any) -> np.ndarray:
    try:
        return media.load_image(value, max_pixels=MAX_IMAGE_PIXELS)
    except ValueError as exc:
        raise _named(name, exc) from None


def _check_aspect(name: str, size: tuple[int, int], target: tuple[int, int], what: str = "the clip",
                  target_what: str = "the clip is generated at") -> None:
    """Refuse ``size`` (height, width) when its aspect ratio differs from ``target``'s by more than 2 %."""
    (h, w), (th, tw) = size, target
    ours, theirs = tw / th, w / h
    if abs(theirs / ours - 1.0) > ASPECT_TOLERANCE:
        raise ValueError(f"{name} is invalid: {what} is {w}×{h} (width×height) but {target_what} {tw}×{th}: "
                         f"their aspect ratios differ ({theirs:.2f} vs {ours:.2f}); give one of the same proportions "
                         "(or set width and height to them)")


def _fit_audio(name: str, audio: np.ndarray, rate: int, need: int, what: str) -> np.ndarray:
    """``audio`` cut to ``need`` samples; a shortfall of less than a frame is padded with silence, more is refused."""
    if audio.shape[0] < need:
        if need - audio.shape[0] > max(1, rate // 24):  # more than a frame at 24 fps short
            raise ValueError(f"{name} is invalid: {what} is {audio.shape[0] / rate:.2f} s long, shorter than the "
                             f"{need / rate:.2f} s it must cover; give a longer one or lower num_frames "
                             "(or num_windows)")
        audio = np.pad(audio, (0, need - audio.shape[0]))
    return np.ascontiguousarray(audio[:need], np.float32)


def _check_audible(name: str, audio: np.ndarray) -> None:
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    peak_db = 20 * math.log10(peak) if peak > 0 else float("-inf")
    if peak_db < SILENT_PEAK_DB:
        raise ValueError(f"{name} is invalid: the sound is silent (peak {peak_db:.0f} dBFS, at least "
                         f"{SILENT_PEAK_DB:.0f} dBFS is needed): the picture is generated to follow it, so give "
                         "sound you can hear")


def _retime(frames: np.ndarray, src_fps: float, fps: float) -> np.ndarray:
    """Frames at ``src_fps`` → at ``fps``, each output frame the nearest in time."""
    if abs(src_fps - fps) <= 1e-6 * fps:
        return frames
    count = int(math.floor(frames.shape[0] / src_fps * fps + 1e-9))
    index = np.minimum(np.round(np.arange(count) * src_fps / fps).astype(np.int64), frames.shape[0] - 1)
    return frames[index]


def _conform(frames: np.ndarray, s: GenerationSettings) -> np.ndarray:
    if frames.shape[1:3] == (s.height, s.width):
        return np.ascontiguousarray(frames)
    return np.stack([media.center_crop_resize(f, s.height, s.width) for f in frames])


def _read_audio(value: Any, rate: int, max_seconds: float) -> np.ndarray:
    """The ``audio`` input (a file, or a (samples, rate) pair) mono at ``rate``."""
    if isinstance(value, str):
        try:
            audio, _ = media.read_audio(value, sample_rate=rate, max_seconds=max_seconds)
        except ValueError as exc:
            raise _named("audio", exc) from None
        return audio
    samples, src_rate = value
    samples = np.asarray(samples)
    if not np.issubdtype(samples.dtype, np.floating) or samples.ndim not in (1, 2) or not np.all(np.isfinite(samples)):
        raise ValueError("audio is invalid: expected finite float samples [N] or [N, C] with their sample rate")
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    return media.resample_audio(mono[:int(max_seconds * src_rate) + 1], int(src_rate), rate)


def _read_video(value: Any, s: GenerationSettings, rate: int, max_seconds: float) -> np.ndarray:
    """The ``video`` input (a file, or uint8 frames at ``s.fps``) conformed."""
    if isinstance(value, str):
        try:
            clip = media.read_clip(value, fps=s.fps, height=s.height, width=s.width, sample_rate=rate,
                                   max_seconds=max_seconds)
        except ValueError as exc:
            raise _named("video", exc) from None
        if clip.video is None:
            raise ValueError("video is invalid: the file has no video stream")
        return clip.video
    frames = np.asarray(value)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"video is invalid: expected uint8 frames [T, H, W, 3], got {frames.dtype} "
                         f"{tuple(frames.shape)}")
    return _conform(frames[:int(max_seconds * s.fps) + 1], s)


def _read_clip(name: str, value: Any, s: GenerationSettings, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """A clip to extend or retake (a file or a clip in memory) → (frames, sound) conformed; refused without sound,
    with other proportions than the generation's, or longer than the longest clip we hold."""
    if isinstance(value, str):
        try:
            duration = media.probe(value).get("duration_s")
            if duration is not None and duration > MAX_DURATION_S + 1.0:
                raise ValueError(f"path: the clip is {duration:.1f} s long, at most {MAX_DURATION_S:g} s are read")
            clip = media.read_clip(value, fps=s.fps, height=s.height, width=s.width, sample_rate=rate,
                                   max_seconds=MAX_DURATION_S)
        except ValueError as exc:
            raise _named(name, exc) from None
        frames, audio, size = clip.video, clip.audio, clip.source_size
        if frames is None:
            raise ValueError(f"{name} is invalid: the file has no video stream")
    else:
        video = np.asarray(value.video)
        if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
            raise ValueError(f"{name} is invalid: its video must be uint8 frames [T, H, W, 3]")
        size = video.shape[1:3]
        frames = _conform(_retime(video, float(value.fps), float(s.fps)), s)
        audio = None if value.audio is None else media.resample_audio(np.asarray(value.audio, np.float32),
                                                                         int(value.sample_rate), rate)
    if audio is None or audio.size == 0:
        raise ValueError(f"{name} is invalid: the clip has no sound; {name} needs a clip with its sound (an mp4 "
                         "with an audio track)")
    _check_aspect(name, tuple(size), (s.height, s.width))
    return frames, _fit_audio(name, audio, rate, int(rate * frames.shape[0] / s.fps), "its sound")


def read_inputs(s: GenerationSettings, sample_rate: int, temporal: int = FRAME_MULTIPLE) -> Inputs:
    """Decode, conform and check the media inputs of resolved settings ``s`` (``ValueError`` naming the field);
    ``temporal``: the video VAE's temporal factor (how many frames an extension window continues from)."""
    out = Inputs()
    if s.image is not None:
        first = _image("image", s.image)
        out.first_frame = media.center_crop_resize(first, s.height, s.width)
    if s.last_image is not None:
        last = _image("last_image", s.last_image)
        if s.image is not None:
            _check_aspect("last_image", last.shape[:2], first.shape[:2], "the last frame",
                          "the first frame (image) is")
        out.last_frame = media.center_crop_resize(last, s.height, s.width)
    if (s.num_windows > 1 or s.extend is not None) and overlap_latents(s.num_frames, temporal) < 1:
        raise ValueError(f"num_frames={s.num_frames} is invalid for chained windows: each window continues at least "
                         f"{temporal} frames of the one before, so num_frames must be at least {temporal + 1}")
    frames_needed = s.num_windows * s.num_frames  # what the windows generate
    seconds = frames_needed / s.fps
    if s.audio is not None:
        audio = _read_audio(s.audio, sample_rate, seconds + 1.0)
        if audio.size == 0:
            raise ValueError("audio is invalid: the file holds no sound")
        _check_audible("audio", audio)
        out.audio = _fit_audio("audio", audio, sample_rate, int(sample_rate * seconds), "the sound")
    if s.video is not None:
        frames = _read_video(s.video, s, sample_rate, seconds + 1.0 / s.fps)
        if frames.shape[0] < frames_needed:
            raise ValueError(f"video is invalid: it has {frames.shape[0]} frames at {s.fps:g} fps "
                             f"({frames.shape[0] / s.fps:.2f} s), shorter than the clip: {frames_needed} frames "
                             f"({seconds:.2f} s) are needed; give a longer video or lower num_frames")
        out.frames = frames[:frames_needed]
    for name in ("extend", "retake"):
        if getattr(s, name) is not None:
            out.frames, out.audio = _read_clip(name, getattr(s, name), s, sample_rate)
    if s.extend is not None:
        _check_audible("extend", out.audio)
        need = overlap_frames(s.num_frames, temporal)
        if out.frames.shape[0] < need:
            raise ValueError(f"extend is invalid: the clip has {out.frames.shape[0]} frames at {s.fps:g} fps; at "
                             f"least {need} are needed to continue it")
    if s.retake is not None:
        retake_window(s, out.frames.shape[0])  # checks the span
    return out


# ----------------------------------------------------------------------------------------------------------------
# Windows
# ----------------------------------------------------------------------------------------------------------------


def overlap_latents(num_frames: int, temporal: int) -> int:
    """Latent frames an extension window holds from what it continues: :data:`OVERLAP_LATENTS`, or fewer so that
    the overlap is shorter than a window (``num_frames`` 9 at 4×: 2)."""
    return min(OVERLAP_LATENTS, (num_frames - 1) // temporal)


def overlap_frames(num_frames: int, temporal: int) -> int:
    """Frames an extension window shares with what it continues: its held latents × the VAE's temporal factor, so
    that the window (``num_frames`` + overlap) stays 4k + 1. The first :func:`held_frames` of them are held."""
    return overlap_latents(num_frames, temporal) * temporal


def held_frames(num_frames: int, temporal: int) -> int:
    """Frames the held latents of an overlap cover: latent 0 holds one frame, each later one ``temporal``."""
    return 1 + temporal * (overlap_latents(num_frames, temporal) - 1)


def retake_window(s: GenerationSettings, clip_frames: int) -> tuple[int, float, float]:
    """(first frame of the retake window in the clip, span start, span end in seconds of the clip), checked: the
    clip holds a window of ``num_frames``, the span lies inside the clip and inside one window."""
    n, fps = s.num_frames, s.fps
    clip_s = clip_frames / fps
    if clip_frames < n:
        raise ValueError(f"retake is invalid: the clip has {clip_frames} frames at {fps:g} fps ({clip_s:.2f} s), "
                         f"fewer than num_frames={n}: lower num_frames (4k+1, at most {clip_frames})")
    start = 0.0 if s.retake_start is None else s.retake_start
    end = clip_s if s.retake_end is None else s.retake_end
    for name, value in (("retake_start", start), ("retake_end", end)):
        if not 0.0 <= value <= clip_s + 1e-9:
            raise ValueError(f"{name}={value:g} is outside the clip: expected 0 ≤ retake_start < retake_end ≤ "
                             f"{clip_s:.2f} (its length in seconds)")
    if start >= end:
        raise ValueError(f"retake_start={start:g} is invalid: expected a start before retake_end={end:g}")
    if end - start > n / fps + 1e-9:
        raise ValueError(f"retake_end={end:g} is invalid: the span {start:g}–{end:g} s is longer than one window "
                         f"(num_frames / fps = {n / fps:.2f} s); retake a shorter span or raise num_frames")
    centre = 0.5 * (start + end) * fps
    first = int(min(max(round(centre - n / 2), 0), clip_frames - n))
    first = min(first, int(math.floor(start * fps + 1e-9)))  # the window covers the span's start
    first = max(first, int(math.ceil(end * fps - 1e-9)) - n)  # … and its end
    return first, start, end


class Plan:
    """The windows of one generation and how their results join (see the module docstring).

    Args:
        s: resolved, checked settings; inputs: from :func:`read_inputs`.
        sample_rate: the model's audio rate; hop: samples per audio latent; temporal: the video VAE's temporal
            factor (latent j ≥ 1 holds ``temporal`` frames).
    """

    def __init__(self, s: GenerationSettings, inputs: Inputs, *, sample_rate: int, hop: int, temporal: int) -> None:
        self.s, self.inputs = s, inputs
        self.rate, self.hop, self.temporal = int(sample_rate), int(hop), int(temporal)
        self.kind = s.kind
        n, k = s.num_frames, overlap_frames(s.num_frames, temporal)
        if self.kind == "retake":
            first, start, end = retake_window(s, inputs.frames.shape[0])
            self.span = (start, end)
            self.windows = [Window(0, first, n)]
            self.total_frames = inputs.frames.shape[0]
        else:
            prefix = inputs.frames.shape[0] if self.kind == "extend" else 0
            self.windows = [Window(0, 0, n) if w == 0 and prefix == 0 else Window(w, prefix + w * n - k, n + k, k)
                            for w in range(s.num_windows)]
            self.total_frames = self.windows[-1].start + self.windows[-1].num_frames

    # -- what the output carries -----------------------------------------------------------------------------------

    @property
    def normalize_loudness(self) -> bool:
        """The output's sound is loudness-normalised only when none of it was given."""
        return self.kind in ("t2va", "it2va", "flf2va", "v2a")

    def sample(self, frame: int) -> int:
        """The output sample where output frame ``frame`` starts (⌊frame · rate / fps⌋, as a clip's length)."""
        return int(math.floor(frame * self.rate / self.s.fps + 1e-9))

    def window_samples(self, window: Window) -> int:
        """A window's samples, as the pipeline generates them (⌊rate · num_frames / fps⌋)."""
        return self.sample(window.num_frames)

    def initial(self) -> Output | None:
        """What the windows build on: the clip of extend and retake, else nothing."""
        if self.kind in ("extend", "retake"):
            return Output(self.inputs.frames.copy(), self.inputs.audio.copy())
        return None

    # -- what each window is given ---------------------------------------------------------------------------------

    def spec(self, window: Window, output: Output | None) -> WindowSpec:
        """What ``window`` is given, from the inputs and the output built so far."""
        s, inputs = self.s, self.inputs
        n, n_samples, s0 = window.num_frames, self.window_samples(window), self.sample(window.start)
        spec = WindowSpec(window, fade=s.crossfade == "latent" and window.overlap > 0)
        if window.index == len(self.windows) - 1 and self.kind != "retake":
            spec.last_frame = inputs.last_frame
        # 1. Frames: the given video (v2a), the clip around a retake span, or the held overlap
        if self.kind == "v2a":
            spec.frames = inputs.frames[window.start:window.start + n]
            spec.frames_known = np.ones(n, bool)
        elif self.kind == "retake":
            spec.frames = output.frames[window.start:window.start + n]
            times = (window.start + np.arange(n)) / s.fps
            spec.frames_known = ~self._in_span(times) if s.retake_modality != "audio" else np.ones(n, bool)
        elif window.overlap:
            spec.frames = np.zeros((n, s.height, s.width, 3), np.uint8)
            have = output.frames[window.start:window.start + window.overlap]
            spec.frames[:have.shape[0]] = have
            spec.frames_known = np.zeros(n, bool)
            spec.frames_known[:held_frames(self.s.num_frames, self.temporal)] = True
        # 2. Sound: the given sound (a2v), the clip's around a retake span, or the sound under the overlap
        source = inputs.audio if self.kind == "a2v" else None if output is None else output.audio
        if self.kind in ("a2v", "retake") or window.overlap:
            spec.audio = np.zeros(n_samples, np.float32)
            have = source[s0:s0 + n_samples]
            spec.audio[:have.shape[0]] = have
            if self.kind == "retake" and s.retake_modality != "video":
                spec.audio_known = ~self._in_span(window.start / s.fps + np.arange(n_samples) / self.rate)
            elif self.kind in ("a2v", "retake"):
                spec.audio_known = np.ones(n_samples, bool)
            else:
                spec.audio_known = np.arange(n_samples) < have.shape[0]
            context = min(s0, int(math.ceil(AUDIO_CONTEXT_S * self.rate / self.hop)) * self.hop) // self.hop * self.hop
            spec.audio_context = source[s0 - context:s0]
        # 3. The first-frame condition: the window's own first frame where it is given, else the image (or white)
        if spec.frames_known is not None and spec.frames_known[0]:
            spec.condition_frame = spec.frames[0]
        elif window.index == 0 and self.kind != "retake":
            spec.condition_frame = inputs.first_frame
        if self.kind == "retake":
            regen = (s.retake_modality != "audio", s.retake_modality != "video")
            spec.strength = tuple(s.strength if r else 1.0 for r in regen)
        return spec

    def _in_span(self, times: np.ndarray) -> np.ndarray:
        start, end = self.span
        return (times >= start - 1e-9) & (times < end - 1e-9)

    # -- joining ----------------------------------------------------------------------------------------------------

    def join(self, output: Output | None, spec: WindowSpec, frames: np.ndarray, audio: np.ndarray) -> Output:
        """The output with a window's decoded ``frames`` [num_frames, H, W, 3] and raw ``audio`` [n] joined in."""
        window, s0 = spec.window, self.sample(spec.window.start)
        if output is None:
            return Output(frames, audio)
        if self.kind == "retake":
            out = Output(output.frames.copy(), output.audio.copy())
            end = window.start + window.num_frames
            out.frames[window.start:end] = _paste(frames, spec.frames, spec.frames_known, 0)
            n = min(audio.shape[0], out.audio.shape[0] - s0)
            fade = int(round(CUT_FADE_S * self.rate))
            out.audio[s0:s0 + n] = _paste(audio[:n], spec.audio[:n], spec.audio_known[:n], fade)
            return out
        head_frames, head_audio = output.frames[:window.start], output.audio[:s0]
        if spec.fade:  # latent join: the held latents faded out; cut at the window's start (sound: a short fade)
            fade = int(round(CUT_FADE_S * self.rate))
            lap = _crossfade(output.audio[s0:s0 + fade], audio[:fade])
            return Output(np.concatenate([head_frames, frames]),
                          np.concatenate([head_audio, lap, audio[lap.shape[0]:]]).astype(np.float32))
        # pixel join: cross-fade over the held frames and the sound under them
        held = held_frames(self.s.num_frames, self.temporal)
        lap_frames = _crossfade(output.frames[window.start:window.start + held], frames[:held])
        lap_audio = _crossfade(output.audio[s0:s0 + self.sample(held)], audio[:self.sample(held)])
        return Output(np.concatenate([head_frames, lap_frames, frames[lap_frames.shape[0]:]]),
                      np.concatenate([head_audio, lap_audio, audio[lap_audio.shape[0]:]]).astype(np.float32))

    def joins(self) -> list[Join]:
        """Where the output is joined (``mova.eval.seam_figures``): each chained window's cross-fade (pixel: the held
        frames and the sound under them; latent: the cut at the window's start and its 10 ms fade), or a retake
        span's two edges."""
        fade = int(round(CUT_FADE_S * self.rate))
        if self.kind == "retake":
            fps, (start, end) = self.s.fps, self.span
            first, after = int(math.ceil(start * fps - 1e-9)), int(math.ceil(end * fps - 1e-9))
            a, b = int(round(start * self.rate)), int(round(end * self.rate))
            edges = [Join(first, first, (a, a + fade))] if first > 0 else []
            return edges + ([Join(after, after, (b - fade, b))] if after < self.total_frames else [])
        out = []
        for w in self.windows:
            if w.overlap:
                s0 = self.sample(w.start)
                if self.s.crossfade == "latent":
                    out.append(Join(w.start, w.start, (s0, s0 + fade)))
                else:
                    held = held_frames(self.s.num_frames, self.temporal)
                    out.append(Join(w.start, w.start + held, (s0, s0 + self.sample(held))))
        return out

    def finish(self, output: Output) -> Output:
        """The output cut to its length, carrying a modality given whole exactly as given (a2v, v2a)."""
        frames, n = output.frames[:self.total_frames], self.sample(self.total_frames)
        audio = output.audio[:n]
        if audio.shape[0] < n:
            audio = np.pad(audio, (0, n - audio.shape[0]))
        if self.kind == "a2v":
            audio = self.inputs.audio[:n].copy()
        if self.kind == "v2a":
            frames = self.inputs.frames[:self.total_frames].copy()
        return Output(frames, np.ascontiguousarray(audio, np.float32))


def _crossfade(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a`` fading into ``b`` along axis 0 (as long as the shorter one): the weight of ``b`` rises linearly from
    1/(L+1) to L/(L+1). Frames stay uint8 (rounded), samples float32."""
    length = min(a.shape[0], b.shape[0])
    if length == 0:
        return b[:0]
    w = (np.arange(1, length + 1) / (length + 1)).reshape(-1, *([1] * (a.ndim - 1)))
    mixed = (1.0 - w) * a[:length].astype(np.float64) + w * b[:length].astype(np.float64)
    return np.round(mixed).astype(np.uint8) if a.dtype == np.uint8 else mixed.astype(np.float32)


def _paste(generated: np.ndarray, given: np.ndarray, known: np.ndarray, fade: int) -> np.ndarray:
    """``given`` where ``known``, else ``generated``; within ``fade`` steps of given content the generated part
    fades in from the given one (no click at the edge of a retake span)."""
    known = np.asarray(known, bool)
    w = known.astype(np.float64)
    if fade > 0 and known.any() and not known.all():
        distance = distance_transform_edt(~known)  # steps from each generated position to the nearest given one
        w = np.where(known, 1.0, np.clip(1.0 - distance / (fade + 1), 0.0, 1.0))
    w = w.reshape(-1, *([1] * (generated.ndim - 1)))
    mixed = w * given.astype(np.float64) + (1.0 - w) * generated.astype(np.float64)
    return np.round(mixed).astype(np.uint8) if generated.dtype == np.uint8 else mixed.astype(np.float32)
