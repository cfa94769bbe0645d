"""Where a checkpoint comes from: a folder, the shipped demo checkpoint, or a Hugging Face Hub repository.

``resolve_checkpoint("org/name")`` fetches only the files the pipeline reads (``checkpoint_patterns``: configs,
safetensors weights and their indexes, tokenizer and scheduler files; never pickles) through
``huggingface_hub.snapshot_download`` into the standard HF cache (``HF_HOME`` / ``HF_HUB_CACHE``), honouring
``HF_HUB_OFFLINE`` and ``HF_TOKEN``, and returns the snapshot folder, which is then read like any other folder. A
missing, gated or uncached repository is a :class:`ModelNotFound` (a ``ValueError``) that says what to do. Nothing here imports torch.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent.parent / "assets" / "demo"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
WEIGHT_COMPONENTS = ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge", "audio_vae", "video_vae",
                     "text_encoder")


class ModelNotFound(ValueError):
    """A model name that resolves to no checkpoint: no demo checkpoint, or a repo the Hub (or the cache) cannot give."""


def checkpoint_patterns(high_noise_expert: bool = True) -> list[str]:
    """``allow_patterns`` of the files a MOVA pipeline reads (the high-noise expert's only when it is wanted)."""
    patterns = ["model_index.json", "scheduler/*.json", "tokenizer/*"]
    for name in WEIGHT_COMPONENTS:
        if name == "video_dit" and not high_noise_expert:
            continue
        patterns += [f"{name}/config.json", f"{name}/*.safetensors", f"{name}/*.safetensors.index.json"]
    return patterns


def is_repo_id(name: str) -> bool:
    """``org/name`` that is not an existing local path and that the Hub accepts as a repo id."""
    if not REPO_ID.match(name) or Path(name).expanduser().exists():
        return False
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def resolve_checkpoint(name_or_path: str | os.PathLike, *, revision: str | None = None,
                       high_noise_expert: bool = True) -> Path:
    """The local folder of ``"demo"``, a folder, or a Hub repo id (downloaded or found in the HF cache)."""
    name = os.fspath(name_or_path)
    if name == "demo":
        if not (DEMO_DIR / "model_index.json").is_file():
            raise ModelNotFound(f"the demo checkpoint is not present at {DEMO_DIR} (it ships in the source checkout); "
                             "pass a checkpoint folder or a Hub repo id instead")
        return DEMO_DIR
    if not is_repo_id(name):
        if revision is not None:
            raise ValueError(f"revision={revision!r} is for Hub repo ids; {name!r} is a local path")
        return Path(name).expanduser()
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    where = f"{name}" + (f" (revision {revision!r})" if revision else "")
    try:
        return Path(snapshot_download(name, revision=revision, allow_patterns=checkpoint_patterns(high_noise_expert),
                                      local_files_only=constants.HF_HUB_OFFLINE))
    except GatedRepoError:
        raise ModelNotFound(f"model {where} is gated on the Hugging Face Hub: accept its terms at "
                         f"https://huggingface.co/{name} and log in (`hf auth login`) or set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise ModelNotFound(f"model {where}: no such repository on the Hugging Face Hub, or it is private (log in with "
                         "`hf auth login` or set HF_TOKEN); a local folder of that name does not exist either") from None
    except RevisionNotFoundError:
        raise ModelNotFound(f"model {name}: the repository has no revision {revision!r}") from None
    except LocalEntryNotFoundError:
        raise ModelNotFound(f"model {where} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and cannot be "
                         "downloaded (HF_HUB_OFFLINE is set, or the Hub is unreachable): download it first with "
                         f"`hf download {name}` where there is a network, or pass its folder") from None
    except (HfHubHTTPError, OSError) as exc:
        raise ModelNotFound(f"model {where} could not be downloaded from the Hugging Face Hub: {exc}") from None
