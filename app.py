"""MOVA Studio app: ``python app.py [--model DIR|ORG/NAME|demo] [--revision REV] [--offload none|model|sequential] [--memory full|24gb] [--quantization fp8|int8|nf4]
[--compile auto|on|off] [--device DEV] [--host 127.0.0.1] [--port 7860] [--share] [--data-dir DIR] [--lora [NAME=]DIR ...] [--no-arena]
[--mcp|--no-mcp]``.

Environment: ``MOVA_MODEL`` (a checkpoint folder or a Hub repo id ``org/name``; default ``demo``), ``MOVA_REVISION``
(the Hub commit, branch or tag; default ``main``), ``MOVA_DATA_DIR`` (outputs, examples and the arena database;
default ``/data`` on a Space that has it, else ``./data``). Flags win over the environment. A Hub repo id is read
through the Hugging Face cache (``HF_HUB_CACHE`` / ``HF_HOME``; ``HF_HUB_OFFLINE=1`` reads only the cache).

``--mcp`` also serves the app's API endpoints as MCP tools (``/gradio_api/mcp/``, Gradio's MCP server; needs
``gradio[mcp]``); it is off by default locally and on by default on a Space (``--no-mcp`` turns it off; a Space,
which passes no flags, sets ``MOVA_MCP=0`` or ``1``).

On a Hugging Face Space (``SPACE_ID`` is set) the app uses :class:`~mova.backends.ZeroGPUBackend` (inert, i.e. a
plain local run, on Space hardware other than ZeroGPU): Spaces run
``python app.py``, so ``main()`` runs at start-up and ``build_backend`` loads the model there, in the main
process, before the GPU functions are called — the "load at import" that ZeroGPU expects. Persistent storage
(``/data``) is used when it exists. Importing this module loads nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from mova.settings import COMPILE_MODES, LOAD_FLAG_HELP, MEMORY_PROFILES, OFFLOAD_MODES, QUANTIZATIONS  # torch-free

logger = logging.getLogger("mova.app")



def on_spaces(env: dict[str, str] | None = None) -> bool:
    from mova.outputs import on_spaces as running_on_a_space

    return running_on_a_space(env)


def mcp_available() -> bool:
    """Whether Gradio's MCP server can start here (the ``mcp`` package of ``gradio[mcp]`` is installed)."""
    return importlib.util.find_spec("mcp") is not None


def parse_args(argv: Sequence[str] | None = None, env: dict[str, str] | None = None) -> argparse.Namespace:
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(prog="python app.py", description="MOVA Studio: video + audio generation UI")
    parser.add_argument("--model", default=env.get("MOVA_MODEL") or "demo",
                        help="checkpoint folder (official layout), Hub repo id org/name, or 'demo' "
                             "(default: $MOVA_MODEL or demo)")
    parser.add_argument("--revision", default=env.get("MOVA_REVISION") or None,
                        help="Hub commit, branch or tag of a repo id (default: $MOVA_REVISION or main)")
    parser.add_argument("--offload", default=None, choices=OFFLOAD_MODES, help=LOAD_FLAG_HELP["offload"])
    parser.add_argument("--quantization", default=None, choices=QUANTIZATIONS, help=LOAD_FLAG_HELP["quantization"])
    parser.add_argument("--memory", default=None, choices=list(MEMORY_PROFILES), help=LOAD_FLAG_HELP["memory"])
    parser.add_argument("--compile", default="auto", choices=COMPILE_MODES,
                        help="regional torch.compile of the denoiser blocks: auto (on for a full-size "
                             "model on one CUDA GPU without offload), on, off")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    parser.add_argument("--host", default="0.0.0.0" if on_spaces(env) else "127.0.0.1",
                        help="address to listen on (0.0.0.0 for a LAN; default 0.0.0.0 on a Space, else 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument("--data-dir", default=None,
                        help="outputs, examples and arena database (default: $MOVA_DATA_DIR, /data on Spaces, ./data)")
    parser.add_argument("--lora", action="append", default=[], metavar="[NAME=]DIR",
                        help="a LoRA adapter the UI offers (repeatable; NAME defaults to the folder name)")
    parser.add_argument("--no-arena", dest="arena", action="store_false", help="leave out the arena pages")
    parser.add_argument("--mcp", action=argparse.BooleanOptionalAction, default=None,
                        help="serve the API endpoints as MCP tools at /gradio_api/mcp/ (default: on on a Space, "
                             "off elsewhere)")
    parser.add_argument("--sp", type=int, default=1,
                        help="sequence-parallel degree under torchrun (--nproc-per-node = sp × cfg degree)")
    parser.add_argument("--cfg-parallel", dest="cfg_parallel", action="store_true",
                        help="under torchrun: spread the guidance branches over WORLD_SIZE / sp ranks")
    args = parser.parse_args(argv)
    placed = [f"--{k}" for k in ("offload", "memory", "quantization") if getattr(args, k) is not None]
    if placed and (on_spaces(env) or int(env.get("WORLD_SIZE", "1")) > 1):
        parser.error(f"{' and '.join(placed)} apply to one local GPU; a Space (ZeroGPU) and torchrun place the "
                     "model themselves")
    args.loras = dict(_lora_entry(entry) for entry in args.lora)
    if args.mcp is None and env.get("MOVA_MCP", "") != "":
        words = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
                 "off": False}
        if env["MOVA_MCP"].strip().lower() not in words:
            parser.error(f"MOVA_MCP={env['MOVA_MCP']!r} is invalid: expected 1 or 0 (true or false)")
        args.mcp = words[env["MOVA_MCP"].strip().lower()]
    args.mcp_explicit = args.mcp is not None
    if args.mcp is None:
        args.mcp = on_spaces(env)
    return args


def _lora_entry(entry: str) -> tuple[str, str]:
    name, sep, path = entry.partition("=")
    if not sep:
        path, name = entry, Path(entry).name
    return name, path


def build_backend(args: argparse.Namespace) -> Any:
    """The backend for ``args``: ZeroGPU on a Space, local otherwise. Loads the model (start-up only).

    Raises ``mova.backends.ModelUnavailableError`` with what to pass instead when the model is missing.
    """
    if on_spaces():
        import spaces  # noqa: F401 - first, before anything initialises CUDA

        from mova.backends.zerogpu import ZeroGPUBackend

        return ZeroGPUBackend(args.model, revision=args.revision, device=args.device, data_dir=args.data_dir,
                              loras=args.loras)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from mova.backends.distributed import DistributedBackend

        return DistributedBackend(args.model, revision=args.revision, sp=args.sp, cfg_parallel=args.cfg_parallel,
                                  data_dir=args.data_dir, loras=args.loras)
    from mova.backends.local import LocalBackend

    return LocalBackend(args.model, revision=args.revision, device=args.device, offload=args.offload,
                        quantization=args.quantization, memory=args.memory, data_dir=args.data_dir,
                        loras=args.loras, compile=args.compile)


def main(argv: Sequence[str] | None = None) -> int:
    from mova import configure_logging

    configure_logging("INFO", "%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if args.mcp and not mcp_available():
        if args.mcp_explicit:
            print("MOVA Studio cannot start: --mcp needs Gradio's MCP extra: pip install -r requirements.txt "
                  "(or pip install 'gradio[mcp]')", file=sys.stderr)
            return 2
        logger.warning("the mcp package is not installed: the app runs without its MCP server")
        args.mcp = False
    from mova.backends import ModelUnavailableError

    try:
        backend = build_backend(args)
    except (ModelUnavailableError, ValueError) as exc:
        print(f"MOVA Studio cannot start: {exc}\nUsage: python app.py --model DIR|ORG/NAME|demo "
              "(or MOVA_MODEL=DIR|ORG/NAME)", file=sys.stderr)
        return 2
    if getattr(backend, "is_main", True) is False:  # torchrun ranks > 0 follow rank 0's requests
        backend.follow()
        return 0
    arena = None
    if args.arena:
        from mova.arena import ArenaService

        arena = ArenaService(backend.data_dir)
    from ui import build_app, launch_options

    app = build_app(backend, arena)
    try:
        app.launch(server_name=args.host, server_port=args.port, share=args.share, mcp_server=args.mcp,
                   **launch_options(backend, arena))
    finally:
        backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
