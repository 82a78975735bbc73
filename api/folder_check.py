"""Refuse, before any byte is fetched, to pull a model into a folder that holds another one
(the pull would end in "unreferenced shard" and a parameter mismatch)."""

from __future__ import annotations

from pathlib import Path

from weightlift.downloader.errors import UsageError, VerificationFailed
from weightlift.downloader.manifest import Manifest
from weightlift.downloader.receipt import load_receipt

WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json")
HINT = "pull into an empty folder (or another -o DIR), or empty this one first"


def check_folder_holds_this_model(out: Path, manifest: Manifest) -> None:
    """Raise UsageError when ``out`` holds another model: its pull receipt names another model
    id, or it holds weight files (``*.safetensors``, index) that this manifest does not list.
    Files this manifest lists (a resume, or an update of the same model) are fine."""
    if not out.is_dir():
        return
    try:
        receipt = load_receipt(out)
    except VerificationFailed:
        receipt = None  # damaged: the file check below still applies
    if receipt is not None and receipt.model_id and manifest.model_id \
            and receipt.model_id != manifest.model_id:
        raise UsageError(f"{out} holds another model ({receipt.model_id}; this SOURCE is "
                         f"{manifest.model_id})", HINT)
    from weightlift.verify.checkpoint import list_files

    wanted = {f.rel for f in manifest.files}
    strangers = [rel for rel in list_files(out)
                 if rel.endswith(WEIGHT_SUFFIXES) and rel not in wanted]
    if strangers:
        more = f" and {len(strangers) - 1} more" if len(strangers) > 1 else ""
        raise UsageError(f"{out} already holds weight files this SOURCE does not have "
                         f"({strangers[0]}{more}): another model?", HINT)
