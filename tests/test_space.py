"""The Hugging Face Space: the README front matter follows the Spaces config reference, a Hub repo id is served offline
from a pre-populated Hugging Face cache holding only the files the front matter preloads, the app's MCP server lists
the generation endpoints as described tools and runs T2VA, and arena votes survive a restart of the app.

The Space is simulated: ``SPACE_ID`` is set (the app then uses the ZeroGPU backend, inert off ZeroGPU, and turns its
MCP server on by default), ``HF_HUB_OFFLINE=1`` and ``HF_HUB_CACHE`` point at a cache this test builds.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from gradio_client import Client
from huggingface_hub import SpaceHardware, SpaceStorage
from huggingface_hub.utils import filter_repo_objects, validate_repo_id

from tests.arena_fixtures import session_call, write_synthetic_pool
from tests.hub_fixtures import make_hf_cache
from tests.test_app_support import FAST, ROOT, app_process, streams

README = ROOT / "README.md"
DEMO = ROOT / "assets" / "demo"
REPO_ID = "mova-test/demo-clone"  # a repo that exists only in the cache built here
SPACE_ENV = {"SPACE_ID": "someone/mova-studio"}

# Every key the Spaces configuration reference documents ("All the accepted parameters are listed below"), from
# huggingface/hub-docs, docs/hub/spaces-config-reference.md, plus `license`, the repo-card metadata key of
# docs/hub/repositories-licenses.md that every Space card may carry.
DOCUMENTED_KEYS = frozenset({
    "title", "emoji", "colorFrom", "colorTo", "sdk", "python_version", "sdk_version", "suggested_hardware",
    "suggested_storage", "app_file", "app_port", "app_build_command", "base_path", "fullWidth", "header",
    "short_description", "models", "datasets", "tags", "pinned", "hf_oauth", "hf_oauth_redirect_path",
    "disable_embedding", "startup_duration_timeout", "custom_headers", "preload_from_hub", "license",
})
COLORS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}  # the reference's thumbnail colours
SHORT_DESCRIPTION_MAX = 60  # the Hub refuses a longer short_description


def front_matter(text: str) -> dict:
    assert text.startswith("---\n"), "README.md must open with the Space's YAML block"
    return yaml.safe_load(text[4:text.index("\n---\n", 4)])


def preload(config: dict) -> dict[str, tuple[list[str], str | None]]:
    """``preload_from_hub`` as repo id → (file patterns, commit or None): entries are ``repo``, ``repo f1,f2`` or
    ``repo f1,f2 commit``."""
    entries = {}
    for entry in config["preload_from_hub"]:
        repo, *rest = entry.split()
        files = rest[0].split(",") if rest else ["*"]
        entries[repo] = (files, rest[1] if len(rest) > 1 else None)
    return entries


def pinned_version(package: str) -> str:
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        match = re.match(rf"{package}(\[[\w,]+\])?==([\w.]+)", line.split("#")[0].strip())
        if match:
            return match.group(2)
    raise AssertionError(f"{package} is not pinned in requirements.txt")


def preloaded(patterns: list[str], files: list[str]) -> set[str]:
    """The files a preload with ``patterns`` fetches, matched as huggingface_hub matches ``allow_patterns``."""
    return set(filter_repo_objects(files, allow_patterns=patterns))


# ----------------------------------------------------------------------------------------------------------------
# Front matter (criterion 2)
# ----------------------------------------------------------------------------------------------------------------


def test_front_matter_follows_the_spaces_config_reference():
    config = front_matter(README.read_text(encoding="utf-8"))
    assert set(config) <= DOCUMENTED_KEYS, f"undocumented keys: {set(config) - DOCUMENTED_KEYS}"
    assert config["sdk"] == "gradio" and config["sdk_version"] == pinned_version("gradio")
    assert config["app_file"] == "app.py" and (ROOT / config["app_file"]).is_file()
    major, minor = (int(v) for v in str(config["python_version"]).split(".")[:2])
    assert (major, minor) >= (3, 11)  # pyproject's requires-python
    assert config["suggested_hardware"] in {h.value for h in SpaceHardware}
    assert config["suggested_hardware"].startswith("zero-")  # ZeroGPU
    assert config["suggested_storage"] in {s.value for s in SpaceStorage}
    assert {config["colorFrom"], config["colorTo"]} <= COLORS
    assert 0 < len(config["short_description"]) <= SHORT_DESCRIPTION_MAX
    assert re.fullmatch(r"\d+[smh]", config["startup_duration_timeout"])
    for repo in config["models"]:
        validate_repo_id(repo)
    assert set(preload(config)) == set(config["models"]) == {"OpenMOSS-Team/MOVA-360p"}


def test_preload_fetches_what_the_pipeline_reads_and_nothing_else():
    (patterns, _), = preload(front_matter(README.read_text(encoding="utf-8"))).values()
    demo_files = [str(p.relative_to(DEMO)) for p in DEMO.rglob("*") if p.is_file()]
    assert preloaded(patterns, demo_files) == set(demo_files) - {"README.md"}
    official = [  # the official layout with sharded weights (docs/model.md)
        "model_index.json", "scheduler/scheduler_config.json", "tokenizer/spiece.model", "tokenizer/tokenizer.json",
        "tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json", "text_encoder/config.json",
        "text_encoder/model.safetensors.index.json", "text_encoder/model-00001-of-00003.safetensors",
        "video_dit/config.json", "video_dit/diffusion_pytorch_model.safetensors.index.json",
        "video_dit/diffusion_pytorch_model-00001-of-00006.safetensors", "video_dit_2/config.json",
        "audio_dit/diffusion_pytorch_model.safetensors", "dual_tower_bridge/diffusion_pytorch_model.safetensors",
        "audio_vae/config.json", "audio_vae/diffusion_pytorch_model.safetensors", "video_vae/config.json",
    ]
    not_read = ["README.md", ".gitattributes", "assets/teaser.mp4", "video_dit/diffusion_pytorch_model.bin",
                "text_encoder/pytorch_model.bin", "audio_vae/model.pth"]
    assert preloaded(patterns, official + not_read) == set(official)


# ----------------------------------------------------------------------------------------------------------------
# A Hub repo id from the Hugging Face cache, offline (criterion 1), and the MCP server (criterion 5)
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def space_app(tmp_path_factory):
    """``python app.py`` as a Space runs it, with MOVA_MODEL a Hub repo id served from the cache, offline."""
    root = tmp_path_factory.mktemp("space")
    (patterns, _), = preload(front_matter(README.read_text(encoding="utf-8"))).values()
    files = [str(p.relative_to(DEMO)) for p in DEMO.rglob("*") if p.is_file()]
    snapshot = make_hf_cache(DEMO, root / "hub", REPO_ID, files=preloaded(patterns, files))
    assert (snapshot / "model_index.json").is_symlink() and not (snapshot / "README.md").exists()
    env = {**SPACE_ENV, "MOVA_MODEL": REPO_ID, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(root / "hub"),
           "MOVA_DATA_DIR": str(root / "data")}
    with app_process(["--host", "127.0.0.1"], env) as (url, proc):  # MCP on: the default on a Space
        yield url, root


def test_a_hub_repo_id_is_served_offline_from_the_hf_cache(space_app):
    url, root = space_app
    client = Client(url, verbose=False)
    video, seed, figures, details = client.predict(prompt="a red ball bounces on a wooden floor", seed=5,
                                                   randomize_seed=False, **FAST, api_name="/generate_t2va")
    info = streams(video)
    assert (info["video_codec"], info["audio_codec"], info["frames"]) == ("h264", "aac", 9) and info["samples"] > 0
    assert int(seed) == 5
    assert details["model"] == REPO_ID.split("/")[1]  # the pipeline was loaded from the repo id
    assert len(list((root / "data" / "outputs").glob("*.mp4"))) >= 1


def test_an_uncached_hub_repo_id_says_why_it_cannot_start(tmp_path):
    import subprocess

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty-cache"),
           "MOVA_MODEL": "mova-test/not-cached", "MOVA_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run([sys.executable, "app.py", "--no-arena"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "cannot start" in done.stderr and "mova-test/not-cached" in done.stderr
    assert "HF_HUB_OFFLINE" in done.stderr  # offline: only the cache was read


async def mcp_session(url: str, calls):
    """Run ``calls(session)`` in an MCP client session with the app's MCP server (streamable HTTP)."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with httpx.AsyncClient(timeout=httpx.Timeout(60, read=600)) as http:
        async with streamable_http_client(url + "gradio_api/mcp/", http_client=http) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await calls(session)


def test_mcp_lists_the_generation_tools_with_descriptions_and_runs_t2va(space_app):
    url, _ = space_app

    async def calls(session):
        tools = (await session.list_tools()).tools
        result = await session.call_tool("generate_t2va", {
            "prompt": "a bell rings twice", "seed": 7, "randomize_seed": False, **FAST})
        return tools, result

    tools, result = asyncio.run(mcp_session(url, calls))
    by_name = {tool.name: tool for tool in tools}
    # the generation and prompt endpoints; the arena's battles, votes and leaderboard are for people
    assert set(by_name) == {"generate_i2va", "generate_t2va", "generate_a2v", "generate_v2a", "extend", "retake",
                            "compare", "describe", "rewrite", "first_frame_prompt"}
    t2va = by_name["generate_t2va"]
    assert "video" in t2va.description.lower() and "audio" in t2va.description.lower()
    properties = t2va.inputSchema["properties"]
    assert {"prompt", "num_frames", "fps", "num_inference_steps", "seed"} <= set(properties)
    assert all(properties[name].get("description") for name in ("prompt", "num_frames", "num_inference_steps"))
    assert "image" in by_name["generate_i2va"].inputSchema["properties"]
    assert all(tool.description for tool in tools)
    assert not result.isError, result.content
    links = re.findall(r"https?://\S+?\.mp4", " ".join(getattr(c, "text", "") or "" for c in result.content))
    assert links, result.content
    video = httpx.get(links[0], timeout=60)
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"
    clip = Path(space_app[1] / "mcp.mp4")
    clip.write_bytes(video.content)
    info = streams(clip)
    assert (info["video_codec"], info["audio_codec"], info["frames"]) == ("h264", "aac", 9) and info["samples"] > 0


# ----------------------------------------------------------------------------------------------------------------
# Persistent storage: the data folder and arena votes across a restart
# ----------------------------------------------------------------------------------------------------------------


def test_data_dir_is_the_spaces_volume_when_one_is_mounted(tmp_path, monkeypatch):
    from mova import outputs

    volume = tmp_path / "volume"
    monkeypatch.setattr(outputs, "SPACES_DATA_DIR", volume)
    assert outputs.resolve_data_dir(env=SPACE_ENV) == (Path.cwd() / "data").resolve()  # no volume mounted
    volume.mkdir()
    assert outputs.resolve_data_dir(env=SPACE_ENV) == volume.resolve()
    assert outputs.resolve_data_dir(env={}) == (Path.cwd() / "data").resolve()  # not a Space
    assert outputs.resolve_data_dir(env={**SPACE_ENV, "MOVA_DATA_DIR": str(tmp_path / "x")}) == tmp_path / "x"
    assert outputs.resolve_data_dir(tmp_path / "flag", env=SPACE_ENV) == tmp_path / "flag"


def test_arena_votes_and_clips_survive_a_restart_of_the_app(tmp_path):
    from mova.arena import ArenaService
    from mova.arena.pool import import_source

    data = tmp_path / "data"
    service = ArenaService(data)
    import_source(service, write_synthetic_pool(tmp_path / "pool", ("zebra-model", "yak-model"), prompts=1))
    env = {**SPACE_ENV, "MOVA_DATA_DIR": str(data)}
    args = ["--host", "127.0.0.1", "--no-mcp"]
    with app_process(args, env) as (url, _):
        base = url.rstrip("/")
        session_call(base, "next_battle", ["All categories"], session="voter-1")
        judge = service.voter_ids("voter-1").judge  # watched for a minute before voting, as a counted vote must
        service.store.write(lambda c: c.execute("UPDATE battles SET served = served - 60 WHERE judge = ?", (judge,)))
        session_call(base, "vote", ["left"], session="voter-1")
        Client(url, verbose=False).predict(prompt="rain on a roof", seed=1, randomize_seed=False, **FAST,
                                           api_name="/generate_t2va")
    clips = sorted(p.name for p in (data / "outputs").glob("*.mp4"))
    assert len(clips) == 1

    with app_process(args, env) as (url, _):  # a new process on the same storage
        _, board = session_call(url.rstrip("/"), "leaderboard", ["All categories", "bt"], session="viewer")
        assert "1 votes" in board[0]
        assert {row[1] for row in board[1]["value"]["data"]} == {"zebra-model", "yak-model"}
    reopened = ArenaService(data)
    (row,) = reopened.store.vote_rows()
    assert row["judge"] == judge and row["flag"] == ""
    assert sorted(p.name for p in (data / "outputs").glob("*.mp4")) == clips  # the start-up sweep kept the clip
    assert json.loads((data / "outputs" / clips[0].replace(".mp4", ".json")).read_text())["seed"] == 1
