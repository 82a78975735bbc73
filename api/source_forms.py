"""Which SOURCE forms exist, and one clear line for a SOURCE that is none of them. Pure.

Checked before anything is resolved, so that a typo (`axon://`) or a form weightlift does not
take is named as such instead of surfacing as "manifest not found: axon:/models/x".
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from urllib.parse import urlsplit

from weightlift.downloader.errors import UsageError

SUPPORTED_FORMS = (
    "axom://models/<id>",
    "axom://jobs/<id>",
    "tensorone://jobs/<id>[/checkpoints/<id>]",
    "hf://ORG/NAME[@REV]",
    "s3://BUCKET/KEY|PREFIX/",
    "http(s):// URLs",
    "a manifest JSON file",
)
SCHEMES = ("axom", "tensorone", "hf", "s3", "http", "https")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(//)?")
# ORG/NAME as on the Hugging Face hub (what `hf download` takes), e.g. meta-llama/Llama-3-8B.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def supported_forms() -> str:
    return ", ".join(SUPPORTED_FORMS)


def _closest(scheme: str) -> str | None:
    found = difflib.get_close_matches(scheme.lower(), SCHEMES, n=1, cutoff=0.5)
    return found[0] if found else None


def check_source(source: str) -> None:
    """Raise UsageError (exit 2) when ``source`` is not a SOURCE weightlift can take: an unknown
    scheme (with the closest known one), an http(s) URL that names no file, or a hub-style
    ``ORG/NAME`` that is not a file here. Anything else is left to the resolver."""
    shown = source.split("?", 1)[0]  # a presigned URL's query never reaches a message
    match = _SCHEME.match(source)
    # A Windows drive letter (C:\\x) is a path, not a scheme.
    if match and len(match.group(1)) > 1:
        scheme = match.group(1).lower()
        if scheme not in SCHEMES:
            near = _closest(scheme)
            maybe = f"did you mean {near}://? " if near else ""
            raise UsageError(f"unsupported SOURCE scheme '{match.group(1)}://' in {shown!r}",
                             f"{maybe}supported: {supported_forms()}")
        if not match.group(2):  # "tensorone:/jobs/x", "axom:models/x"
            rest = source[match.end():].lstrip("/")
            raise UsageError(f"malformed SOURCE {shown!r}",
                             f"did you mean {scheme}://{rest.split('?', 1)[0]}? supported: "
                             f"{supported_forms()}")
        if scheme in ("http", "https"):
            path = urlsplit(source).path
            if not path.rstrip("/") or path.endswith("/"):
                raise UsageError(f"the URL {shown} names no file (its path ends in '/')",
                                 "give the URL of a file, e.g. https://host/model.safetensors")
        return
    if (_HUB_ID.match(source) and not source.lower().endswith(".json")
            and not Path(source).exists()):
        raise UsageError(f"{source!r} is neither a file here nor a SOURCE form",
                         f"for the Hugging Face repo use hf://{source}; supported: "
                         f"{supported_forms()}")
