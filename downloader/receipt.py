"""The pull receipt: what landed, so `verify` can re-check integrity later without the network.

Stored at ``DIR/.weightlift/receipt.json``; written by write-temp-then-rename after every file is
final. Sources are recorded without their query strings (signatures never touch the disk).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from weightlift.downloader.errors import VerificationFailed, write_failed
from weightlift.downloader.failpoints import failpoint
from weightlift.downloader.redact import redact_text
from weightlift.downloader.safe_files import create_fresh, fsync_dir, read_plain, unlink_quietly

WORK_DIR = ".weightlift"
RECEIPT_NAME = "receipt.json"
MAX_RECEIPT_BYTES = 256 << 20  # ~250 bytes per file: 100,000 files make ~25 MB


class ReceiptFile(BaseModel):
    model_config = ConfigDict(extra="ignore")
    rel: str
    size: int
    sha256: str
    source: str = ""  # redacted URL: scheme, host, path only
    etag: str | None = None

    @field_validator("source")
    @classmethod
    def _no_query(cls, value: str) -> str:
        return redact_text(value)  # a safety net: the engine records redacted URLs already


class Receipt(BaseModel):
    model_config = ConfigDict(extra="ignore")
    version: int = 1
    model_id: str | None = None
    source: str | None = None  # the SOURCE argument(s), redacted (None: an older receipt)
    # The version of the model the source named: a Hub commit sha, a platform's model version.
    revision: str | None = None
    expected_params: int | None = None
    files: list[ReceiptFile] = Field(default_factory=list)


def receipt_path(out_dir: Path) -> Path:
    return out_dir / WORK_DIR / RECEIPT_NAME


def load_receipt(out_dir: Path) -> Receipt | None:
    """The receipt of a pull into ``out_dir``, or None when there is none."""
    path = receipt_path(out_dir)
    try:
        text = read_plain(path, MAX_RECEIPT_BYTES).decode("utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise VerificationFailed(f"cannot read receipt {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        text = ""  # damaged, below
    try:
        return Receipt.model_validate_json(text)
    except ValueError:
        raise VerificationFailed(
            f"receipt {path} is damaged", "pull again to rewrite it, or verify with --no-hash"
        ) from None


def write_receipt(out_dir: Path, receipt: Receipt) -> None:
    """Atomically replace the receipt (temp file, fsync, rename). A full disk raises DiskFull
    (other local errors TransferFailed) and leaves the old receipt and no temp file."""
    failpoint("receipt.before_write")
    path = receipt_path(out_dir)
    tmp = path.with_name(path.name + ".tmp")
    # Serialised by pydantic-core straight to JSON: no dict per file on the way (the receipt
    # is written at the end of a pull, when its peak memory is reached; 50,000 files).
    data = receipt.model_dump_json(indent=1).encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A fresh temp file: a symlink or hard link planted at its name is replaced, not
        # written through (open(tmp, "wb") would follow it and overwrite a file outside).
        with open(create_fresh(tmp), "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        failpoint("receipt.before_rename")
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        unlink_quietly(tmp)
        raise write_failed(exc, out_dir, "the receipt") from None
