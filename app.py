"""MOVA Studio app: ``python app.py [--model DIR|demo] [--offload none|model|sequential] [--device DEV]
[--host 127.0.0.1] [--port 7860] [--share] [--data-dir DIR] [--lora [NAME=]DIR ...] [--no-arena]``.

Environment: ``MOVA_MODEL`` (default model, else ``demo``), ``MOVA_DATA_DIR`` (outputs, examples and the arena
database; default ``./data``). Flags win over the environment.

On a Hugging Face Space (``SPACE_ID`` is set) the app uses :class:`~mova.backends.ZeroGPUBackend` (inert, i.e. a
plain local run, on Space hardware other than ZeroGPU): Spaces run
``python app.py``, so ``main()`` runs at start-up and ``build_backend`` loads the model there, in the main
process, before the GPU functions are called — the "load at import" that ZeroGPU expects. Persistent storage
(``/data``) is used when it exists. Importing this module loads nothing.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

logger = logging.getLogger("mova.app")

OFFLOAD_MODES = ("none", "model", "sequential")
SPACES_DATA_DIR = Path("/data")  # Hugging Face persistent storage


def on_spaces(env: dict[str, str] | None = None) -> bool:
    return bool((os.environ if env is None else env).get("SPACE_ID"))


def parse_args(argv: Sequence[str] | None = None, env: dict[str, str] | None = None) -> argparse.Namespace:
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(prog="python app.py", description="MOVA Studio: video + audio generation UI")
    parser.add_argument("--model", default=env.get("MOVA_MODEL") or "demo",
                        help="checkpoint folder (official layout) or 'demo' (default: $MOVA_MODEL or demo)")
    parser.add_argument("--offload", default="none", choices=OFFLOAD_MODES,
                        help="GPU memory mode: none, model (one component on the GPU at a time), sequential")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for a LAN)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument("--data-dir", default=None,
                        help="outputs, examples and arena database (default: $MOVA_DATA_DIR, /data on Spaces, ./data)")
    parser.add_argument("--lora", action="append", default=[], metavar="[NAME=]DIR",
                        help="a LoRA adapter the UI offers (repeatable; NAME defaults to the folder name)")
    parser.add_argument("--no-arena", dest="arena", action="store_false", help="leave out the arena pages")
    parser.add_argument("--sp", type=int, default=1,
                        help="sequence-parallel degree under torchrun (--nproc-per-node = sp × cfg degree)")
    parser.add_argument("--cfg-parallel", dest="cfg_parallel", action="store_true",
                        help="under torchrun: spread the guidance branches over WORLD_SIZE / sp ranks")
    args = parser.parse_args(argv)
    args.loras = dict(_lora_entry(entry) for entry in args.lora)
    if args.data_dir is None:
        if env.get("MOVA_DATA_DIR"):
            args.data_dir = env["MOVA_DATA_DIR"]
        elif on_spaces(env) and SPACES_DATA_DIR.is_dir():
            args.data_dir = str(SPACES_DATA_DIR)
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

        return ZeroGPUBackend(args.model, device=args.device, data_dir=args.data_dir, loras=args.loras)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from mova.backends.distributed import DistributedBackend

        return DistributedBackend(args.model, sp=args.sp, cfg_parallel=args.cfg_parallel, data_dir=args.data_dir,
                                  loras=args.loras)
    from mova.backends.local import LocalBackend

    return LocalBackend(args.model, device=args.device, offload=args.offload, data_dir=args.data_dir,
                        loras=args.loras)


def main(argv: Sequence[str] | None = None) -> int:
    from mova import configure_logging

    configure_logging("INFO", "%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    from mova.backends import ModelUnavailableError

    try:
        backend = build_backend(args)
    except (ModelUnavailableError, ValueError) as exc:
        print(f"MOVA Studio cannot start: {exc}\nUsage: python app.py --model DIR|demo (or MOVA_MODEL=DIR)",
              file=sys.stderr)
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
    host = "0.0.0.0" if on_spaces() else args.host
    try:
        app.launch(server_name=host, server_port=args.port, share=args.share, **launch_options(backend, arena))
    finally:
        backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
