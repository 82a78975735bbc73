"""The pull receipt: what landed, so `verify` can re-check integrity later without the network.

Stored at ``DIR/.weightlift/receipt.json``; written by write-temp-then-rename after every file is
final. Sources are recorded without their query strings (signatures never touch the disk).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from weightlift.downloader.errors import VerificationFailed

WORK_DIR = ".weightlift"
RECEIPT_NAME = "receipt.json"


class ReceiptFile(BaseModel):
    model_config = ConfigDict(extra="ignore")
    rel: str
    size: int
    sha256: str
    source: str = ""  # redacted URL: scheme, host, path only
    etag: str | None = None


class Receipt(BaseModel):
    model_config = ConfigDict(extra="ignore")
    version: int = 1
    model_id: str | None = None
    expected_params: int | None = None
    files: list[ReceiptFile] = Field(default_factory=list)


def receipt_path(out_dir: Path) -> Path:
    return out_dir / WORK_DIR / RECEIPT_NAME


def load_receipt(out_dir: Path) -> Receipt | None:
    """The receipt of a pull into ``out_dir``, or None when there is none."""
    path = receipt_path(out_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise VerificationFailed(f"cannot read receipt {path}: {exc.strerror}") from None
    try:
        return Receipt.model_validate_json(text)
    except ValueError:
        raise VerificationFailed(
            f"receipt {path} is damaged", "pull again to rewrite it, or verify with --no-hash"
        ) from None


def write_receipt(out_dir: Path, receipt: Receipt) -> None:
    """Atomically replace the receipt (temp file, fsync, rename)."""
    path = receipt_path(out_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    data = json.dumps(receipt.model_dump(), indent=1).encode()
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
