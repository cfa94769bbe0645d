"""Arena pool: import from manifests and result folders (per-row reasons, no traversal), generate, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import av
import numpy as np
import pytest

from mova.__main__ import main as mova_main
from mova.arena import ArenaService
from mova.arena.fill import ModelSpec, PromptItem, generate_pool, parse_model_spec, read_prompts
from mova.arena.pool import import_source
from mova.arena.service import CountingRules
from tests.arena_fixtures import write_synthetic_clip, write_synthetic_pool


@pytest.fixture()
def pool(tmp_path) -> Path:
    pool = tmp_path / "pool"
    for model in ("m1", "m2", "m3"):
        write_synthetic_clip(pool / model / "p1.mp4")
    (pool / "frames").mkdir()
    (pool / "frames" / "p1.png").write_bytes(b"\x89PNG fake")
    (pool / "notes.txt").write_text("not a video")
    return pool


def write_jsonl(path: Path, rows: list[dict | str]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def row(**overrides):
    return {"prompt_id": "p1", "prompt": "rain on a tin roof", "model": "m1", "path": "m1/p1.mp4", **overrides}


def test_manifest_rows_are_checked_one_by_one(tmp_path, pool):
    outside = tmp_path / "outside.mp4"
    write_synthetic_clip(outside)
    (pool / "m2" / "link.mp4").symlink_to(outside)  # a symlink inside the pool that leads out of it
    manifest = write_jsonl(pool / "manifest.jsonl", [
        row(first_frame="frames/p1.png", category="weather", settings={"text_scale": 5.0}, seed=3),  # 1 ok
        row(model="m2", path="m2/p1.mp4"),                                   # 2 ok
        row(model="m3", path="m3/missing.mp4"),                              # 3 missing file
        row(model="m3", colour="red"),                                       # 4 unknown field
        {"prompt_id": "p1", "model": "m3", "path": "m1/p1.mp4"},             # 5 missing field
        row(model="m3", path="../outside.mp4"),                              # 6 traversal
        row(model="m3", path=str(outside)),                                  # 7 absolute path outside
        row(model="m3", path="m2/link.mp4"),                                 # 8 symlink out of the pool
        row(model="m3", path="notes.txt"),                                   # 9 not a video
        "{not json",                                                         # 10 unreadable
        row(prompt="a different text", model="m3", path="m3/p1.mp4"),       # 11 conflicting prompt
        row(model="tie", path="m3/p1.mp4"),                                  # 12 reserved name
        row(model="m3", first_frame="../outside.mp4"),                       # 13 first frame outside
    ])
    service = ArenaService(tmp_path / "data")
    report = import_source(service, manifest)
    reasons = dict(report.rejected)
    assert report.added == 2, report.summary()
    assert reasons["line 3"] == "missing file 'm3/missing.mp4'"
    assert reasons["line 4"].startswith("unknown field 'colour'")
    assert reasons["line 5"] == "missing field 'prompt'"
    for line in ("line 6", "line 7", "line 8"):
        assert "outside the pool directory" in reasons[line], (line, reasons[line])
    assert "not a video file" in reasons["line 9"]
    assert reasons["line 10"].startswith("not valid JSON")
    assert reasons["line 11"] == "prompt_id 'p1' is already in the pool with a different prompt text"
    assert "reserved" in reasons["line 12"]
    assert reasons["line 13"].startswith("first_frame:") and "outside the pool" in reasons["line 13"]
    assert len(report.rejected) == 11
    assert "added 2 clips" in report.summary() and "11 rejected" in report.summary()

    clips = service.store.read(lambda c: c.execute(
        "SELECT c.path, c.settings, p.first_frame, p.category FROM clips c JOIN prompts p ON p.id = c.prompt_id "
        "ORDER BY c.path").fetchall())
    assert [tuple(r) for r in clips] == [
        ("m1/p1.mp4", json.dumps({"seed": 3, "text_scale": 5.0}, sort_keys=True), "frames/p1.png", "weather"),
        ("m2/p1.mp4", "{}", "frames/p1.png", "weather"),
    ]
    again = import_source(service, manifest)
    assert again.added == 0 and again.duplicates == 2


def test_csv_manifest_and_dry_run(tmp_path, pool):
    manifest = pool / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt_id", "prompt", "first_frame", "model", "path", "settings"])
        writer.writerow(["p1", "rain", "", "m1", "m1/p1.mp4", '{"num_inference_steps": 20}'])
        writer.writerow(["p1", "rain", "", "m2", "m2/p1.mp4", "[1, 2]"])
        writer.writerow(["p1", "rain", "", "m2", "m2/p1.mp4", "{}", "extra"])
    service = ArenaService(tmp_path / "data")
    dry = import_source(service, manifest, dry_run=True)
    assert dry.added == 1 and service.store.counts()["clips"] == 0 and service.pool_dir is None
    report = import_source(service, manifest)
    assert report.added == 1
    assert dict(report.rejected) == {"line 3": "settings is not a JSON object",
                                     "line 4": "more values than header columns"}


def test_folder_of_generation_results(tmp_path):
    results = tmp_path / "results"
    for model in ("m1", "m2"):
        clip = write_synthetic_clip(results / model / "p1.mp4")
        clip.with_suffix(".json").write_text(json.dumps(
            {"prompt": "rain", "prompt_id": "p1", "model": model, "seed": 7, "settings": {"fps": 24}}))
    write_synthetic_clip(results / "m3" / "p1.mp4")  # no sidecar
    odd = write_synthetic_clip(results / "m4" / "p1.mp4")
    odd.with_suffix(".json").write_text(json.dumps({"prompt": "rain", "prompt_id": "p1", "model": "m4", "gpu": "h100"}))
    service = ArenaService(tmp_path / "data")
    report = import_source(service, results)
    assert report.added == 2
    assert dict(report.rejected) == {
        "m3/p1.mp4": "missing sidecar p1.json",
        "m4/p1.mp4": dict(report.rejected)["m4/p1.mp4"],
    }
    assert dict(report.rejected)["m4/p1.mp4"].startswith("unknown field 'gpu'")
    assert service.pool_dir == results.resolve()  # the folder became the pool
    assert service.next_battle("s").prompt == "rain"


def test_parse_model_spec():
    spec = parse_model_spec("mova-cfg5=demo:text_scale=5,num_inference_steps=4,guidance=text")
    assert spec == ModelSpec("mova-cfg5", "demo", {"text_scale": 5.0, "num_inference_steps": 4, "guidance": "text"})
    assert parse_model_spec("base=/ckpt/MOVA-360p").settings == {}
    assert parse_model_spec("base=/ckpt/MOVA-360p:offload=model").source == "/ckpt/MOVA-360p"
    assert parse_model_spec("x=demo:bridge_strength=0").settings == {"bridge_strength": 0.0}  # any setting
    with pytest.raises(ValueError, match="NAME=DIR_OR_demo"):
        parse_model_spec("demo")
    with pytest.raises(ValueError, match="setting 'mode=text' is not allowed"):
        parse_model_spec("x=demo:mode=text")
    with pytest.raises(ValueError, match="guidance='5' is invalid"):
        parse_model_spec("x=demo:guidance=5")
    with pytest.raises(ValueError, match="is not a int"):
        parse_model_spec("x=demo:num_frames=many")


def fake_result(settings, color: tuple[int, int, int]):
    """What the pipeline returns for ``settings``: a GenerationResult of one flat colour and a tone."""
    from mova.pipeline import GenerationResult

    video = np.zeros((9, 32, 32, 3), np.uint8) + np.array(color, np.uint8)
    audio = (0.2 * np.sin(np.arange(9 * 4000) / 5.0)).astype(np.float32)
    return GenerationResult(video=video, audio=audio, sample_rate=48000, fps=12.0, seed=settings.seed,
                            settings=settings, nfe=2, timings={"total": 0.1}, model="checkpoint")


def test_generate_fills_the_pool_with_the_pipeline(tmp_path):
    calls: list[tuple] = []

    def factory(source, **load):
        calls.append(("load", source, load))

        def pipe(settings):
            calls.append(("call", source, settings))
            return fake_result(settings, (200, 10, 10) if source == "demo" else (10, 200, 10))

        return pipe

    frame = tmp_path / "frame.png"
    from PIL import Image

    Image.new("RGB", (16, 16), (1, 2, 3)).save(frame)
    prompts_file = tmp_path / "prompts.jsonl"
    write_jsonl(prompts_file, [
        {"prompt_id": "p1", "prompt": "waves", "category": "nature", "first_frame": "frame.png"},
        {"prompt_id": "p2", "prompt": "a violin", "category": "music"},
    ])
    prompts = read_prompts(prompts_file)
    assert prompts[0] == PromptItem("p1", "waves", frame.resolve(), "nature", "")
    models = [parse_model_spec("demo-cfg5=demo:text_scale=5,num_frames=9"), parse_model_spec("other=/ckpt/x:offload=model")]
    service = ArenaService(tmp_path / "data")
    reports = generate_pool(service, prompts, models, seed=10, pipeline_factory=factory)
    assert [r.added for r in reports] == [2, 2] and not any(r.rejected for r in reports)
    assert [c for c in calls if c[0] == "load"] == [("load", "demo", {}), ("load", "/ckpt/x", {"offload": "model"})]
    first = next(c for c in calls if c[0] == "call")[2]
    assert (first.prompt, first.seed, first.num_frames, first.text_scale) == ("waves", 10, 9, 5.0)
    assert first.image == str(frame.resolve())

    pool = service.pool_dir
    assert pool == (tmp_path / "data" / "arena" / "pool").resolve()
    clip = pool / "demo-cfg5" / "p2_seed11.mp4"
    sidecar = json.loads(clip.with_suffix(".json").read_text())  # mova.outputs.save_clip's, plus the arena's
    assert {k: sidecar[k] for k in ("prompt", "prompt_id", "model", "seed", "category", "source")} == {
        "prompt": "a violin", "prompt_id": "p2", "model": "demo-cfg5", "seed": 11, "category": "music",
        "source": "demo"}
    assert sidecar["settings"]["text_scale"] == 5.0 and sidecar["settings"]["num_frames"] == 9
    with av.open(str(clip)) as container:
        assert {s.codec_context.name for s in container.streams} == {"h264", "aac"}
    assert (pool / "first_frames" / "p1.png").is_file()
    assert service.categories() == ["music", "nature"]

    calls.clear()  # a second run keeps what exists (resume)
    reports = generate_pool(service, prompts, models, seed=10, pipeline_factory=factory)
    assert calls == [] and [r.duplicates for r in reports] == [2, 2]


def test_cli_import_ratings_export(tmp_path, capsys):
    manifest = write_synthetic_pool(tmp_path / "pool", ("m1", "m2", "m3"), prompts=2, categories=("a", "b"))
    data = str(tmp_path / "data")
    assert mova_main(["arena", "import", str(manifest), "--data-dir", data]) == 0
    assert "added 6 clips" in capsys.readouterr().out

    bad = write_jsonl(tmp_path / "pool" / "bad.jsonl", [row(path="../../etc/passwd")])
    assert mova_main(["arena", "import", str(bad), "--data-dir", data]) == 1
    assert "outside the pool directory" in capsys.readouterr().out

    service = ArenaService(data, counting=CountingRules(min_view_s=0.0))  # these votes count however fast
    for i in range(12):
        battle = service.next_battle(f"s{i}")
        service.vote(f"s{i}", battle.id, ("left", "right", "tie")[i % 3])

    assert mova_main(["arena", "ratings", "--data-dir", data, "--rounds", "50"]) == 0
    out = capsys.readouterr().out
    assert "12 votes" in out and all(m in out for m in ("m1", "m2", "m3"))
    assert mova_main(["arena", "ratings", "--data-dir", data, "--method", "elo", "--category", "a",
                      "--rounds", "20"]) == 0

    assert mova_main(["arena", "export", "--data-dir", data, "--votes", str(tmp_path / "v.csv"),
                      "--ratings", str(tmp_path / "r.jsonl"), "--rounds", "20"]) == 0
    with (tmp_path / "v.csv").open() as handle:
        votes = list(csv.DictReader(handle))
    assert len(votes) == 12 and {"battle_id", "model_a", "model_b", "choice", "winner", "judge", "anonymous",
                                 "category", "tstamp", "served", "flag", "client", "browser"} <= set(votes[0])
    ratings = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert {r["model"] for r in ratings} == {"m1", "m2", "m3"} and {"rank", "lower", "upper"} <= set(ratings[0])
    assert mova_main(["arena", "export", "--data-dir", data, "--votes", str(tmp_path / "v.jsonl")]) == 0
    assert len((tmp_path / "v.jsonl").read_text().splitlines()) == 12

    assert mova_main(["arena", "export", "--data-dir", data, "--votes", str(tmp_path / "v.xlsx")]) == 2
    assert "use .csv or .jsonl" in capsys.readouterr().err
