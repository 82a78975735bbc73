"""The one JSON contract: `pull --json`, `verify --json`, `watch --json` and the Python API's
reports are these pydantic models (schema version 1).

Every document carries ``schema`` (1), ``kind``, ``ok``, ``exit_code``, ``error``, ``source``
and the model / checkpoint ids, on success and on failure alike (null when unknown). The JSON
Schema published in ``api/schema/report.schema.json`` is generated from these models:
``python -m weightlift.reports`` rewrites it, and a test fails when it is stale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

SCHEMA_VERSION = 1
# resolve(): in a strict editable install this file is a link to api/reports.py.
SCHEMA_PATH = Path(__file__).resolve().with_name("schema") / "report.schema.json"

FileStatus = Literal["downloaded", "already-complete", "failed", "to-fetch", "partial", "present"]


class _Doc(BaseModel):
    # Unknown fields are refused: the schema says exactly what a document may hold.
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    # `schema` would shadow BaseModel.schema(): the field is `schema_version`, its JSON name is
    # "schema".
    schema_version: Literal[1] = Field(default=1, alias="schema")

    def to_json(self, *, indent: int | None = 1) -> str:
        """The JSON document (field names as in the schema, e.g. ``"schema": 1``)."""
        return self.model_dump_json(by_alias=True, indent=indent)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class FileEntry(BaseModel):
    """One file of a pull (or of a dry run's plan)."""

    model_config = ConfigDict(extra="forbid")
    rel: str = Field(description="path inside the output folder")
    size: int | None = Field(description="bytes; null only in a dry run, when the source does "
                                         "not know it before fetching")
    sha256: str | None = Field(
        description="64 lowercase hex digits; null when the file was not fetched",
        pattern="^[0-9a-f]{64}$")
    status: FileStatus = Field(
        description="downloaded, already-complete or failed; in a dry run: to-fetch, partial "
                    "or present")
    bytes_fetched: int = Field(0, description="bytes fetched by this pull")
    bytes_present: int = Field(0, description="bytes already on disk before this pull")
    error: str | None = Field(None, description="why the file failed, one line")


class Totals(BaseModel):
    model_config = ConfigDict(extra="forbid")
    files: int
    bytes: int = Field(description="size of the files (known sizes)")
    bytes_fetched: int
    bytes_present: int = Field(description="bytes already on disk when the pull started")
    seconds: float
    throughput_mb_s: float
    refreshes: int = 0
    retries: int = 0
    restarts: int = 0


class DiskSpace(BaseModel):
    """A dry run's answer to "does it fit?"."""

    model_config = ConfigDict(extra="forbid")
    needed_bytes: int = Field(description="bytes still to fetch")
    free_bytes: int = Field(description="free bytes on the output folder's filesystem")
    fits: bool


class VerifiedFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rel: str
    size: int
    kind: Literal["shard", "index", "other"]
    tensors: int
    params: int
    sha256_checked: bool


class TensorFinding(BaseModel):
    model_config = ConfigDict(extra="forbid")
    file: str
    tensor: str
    dtype: str
    nan: int
    inf: int
    all_zero: bool


class VerifyReport(_Doc):
    """`weightlift verify DIR` / ``weightlift.verify(DIR)``: ``ok`` exactly when ``problems`` is
    empty. ``hashes_checked`` and ``params_checked`` say whether the sha256 re-check (needs the
    pull receipt) and the parameter gate (needs an expected count) actually ran."""

    kind: Literal["verify"] = "verify"
    ok: bool
    exit_code: int = Field(description="the CLI's exit code: 0 ok, 1 verification failed, "
                                       "2 bad input")
    error: str | None = Field(None, description="why nothing could be checked (exit 2)")
    directory: str
    source: str | None = Field(None, description="the SOURCE the folder was pulled from "
                                                 "(from the pull receipt; redacted)")
    model_id: str | None = None
    checkpoint_id: str | None = None
    params: int | None = Field(None, description="parameters counted in the shards")
    expected_params: int | None = None
    params_checked: bool = Field(False, description="an expected count was compared")
    hashes_checked: bool = Field(False, description="sha256 re-checked against the receipt")
    problems: list[str] = Field(default_factory=list, description="one line per problem")
    warnings: list[str] = Field(default_factory=list)
    files: list[VerifiedFile] = Field(default_factory=list)
    shards: int = 0
    tensors: int = 0
    params_by_dtype: dict[str, int] = Field(default_factory=dict)
    deep: bool = False
    findings: list[TensorFinding] = Field(default_factory=list)
    seconds: float = 0.0


class PullReport(_Doc):
    """`weightlift pull --json` / ``weightlift.pull(...)``. ``params`` is the counted parameter
    total when the checkpoint was verified, else null."""

    kind: Literal["pull"] = "pull"
    ok: bool
    exit_code: int = Field(description="the CLI's exit code: 0 ok, 1 verification failed, "
                                       "2 bad input, 3 transfer failed, 4 platform error, "
                                       "130 interrupted")
    error: str | None = Field(None, description="what went wrong, one line (null when ok)")
    source: str = Field(description="the SOURCE argument(s), redacted")
    model_id: str | None = None
    checkpoint_id: str | None = None
    output: str
    dry_run: bool = False
    files: list[FileEntry] = Field(default_factory=list)
    totals: Totals
    params: int | None = None
    expected_params: int | None = None
    problems: list[str] = Field(default_factory=list,
                                description="verification problems, one line each")
    warnings: list[str] = Field(default_factory=list,
                                description="what was not checked, and why; one line each")
    verification: VerifyReport | None = Field(
        None, description="the checkpoint checks run after the download (null when skipped)")
    skipped_files: int = Field(0, description="manifest files left out by --include/--exclude")
    disk: DiskSpace | None = Field(None, description="dry run only")

    @property
    def out_dir(self) -> Path:
        return Path(self.output)


class ClusterNodeResult(BaseModel):
    """One node of a cluster pull."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="what {node} expanded to (the node id's first 12 hex digits)")
    node_id: str = Field(description="the Ray node id")
    output: str = Field(description="the node's output folder")
    ok: bool
    exit_code: int
    bytes_from_origin: int = 0
    bytes_from_peers: int = 0
    seconds: float = 0.0
    params: int | None = Field(None, description="parameters counted on this node (verified)")
    rss_peak: int | None = Field(None, description="peak resident bytes of the node's pull "
                                                   "process, when known")
    error: str | None = Field(None, description="why this node failed, one line")


class ClusterPullReport(_Doc):
    """`weightlift pull --ray --json` / ``weightlift.pull(..., ray=True)``: one model onto every
    selected node of a Ray cluster. ``ok`` exactly when every node holds the verified model;
    ``exit_code`` is then 0, else the gravest node's code."""

    kind: Literal["cluster-pull"] = "cluster-pull"
    ok: bool
    exit_code: int = Field(description="the CLI's exit code: 0 ok, 1 verification failed, "
                                       "2 bad input, 3 transfer failed, 4 platform error, "
                                       "130 interrupted")
    error: str | None = Field(None, description="what went wrong, one line (null when ok)")
    source: str = Field(description="the SOURCE argument(s), redacted")
    model_id: str | None = None
    checkpoint_id: str | None = None
    output: str = Field(description="the output folder template ({node} expands per node)")
    nodes: list[ClusterNodeResult] = Field(default_factory=list)
    model_bytes: int = 0
    origin_bytes: int = Field(0, description="bytes the origin served, all nodes together")
    seconds: float = 0.0
    chunk_size: int = 0
    object_store_budget: int = 0
    object_store_peak: int = Field(0, description="most published chunk bytes held at once")
    over_budget_claims: int = 0
    refreshes: int = Field(0, description="URL refreshes served for the cluster")


class ListedFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rel: str
    size: int | None = Field(description="bytes; null when storage did not say")
    sha256: str | None = None
    error: str | None = Field(None, description="why the size is unknown")


class ListedCheckpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")
    checkpoint_id: str
    step: int | None = None
    epoch: int | None = None
    size: str | None = Field(None, description="as the platform states it (e.g. '2.1GB')")
    created_at: str | None = None
    latest: bool = False
    source: str = Field(description="the SOURCE that pulls this checkpoint")


class ListReport(_Doc):
    """`weightlift ls SOURCE --json`: a source's files (or a TensorOne job's checkpoints),
    without downloading."""

    kind: Literal["ls"] = "ls"
    ok: bool = True
    exit_code: int = 0
    error: str | None = None
    source: str
    model_id: str | None = None
    checkpoint_id: str | None = None
    expected_params: int | None = None
    files: list[ListedFile] = Field(default_factory=list)
    checkpoints: list[ListedCheckpoint] = Field(default_factory=list)


WatchEventName = Literal["status", "metrics", "progress", "log", "done", "pull", "error"]


class WatchEvent(_Doc):
    """One line of `weightlift watch --json`. The fields every event has are declared; each
    event adds its own (``status``: status/phase/step, ``metrics``: loss/lr/..., ``log``:
    text, ...). ``pull`` carries the pull's report; ``done``, ``pull`` and ``error`` carry
    ``exit_code``."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    kind: Literal["watch"] = "watch"
    event: WatchEventName
    source: str
    job_id: str | None = None
    exit_code: int | None = Field(None, description="set on done, pull and error")
    error: str | None = None
    report: PullReport | None = Field(None, description="the pull's report (event pull)")


AnyDocument = PullReport | VerifyReport | WatchEvent | ListReport | ClusterPullReport
Document = Annotated[AnyDocument, Field(discriminator="kind")]
DOCUMENT: TypeAdapter[AnyDocument] = TypeAdapter(Document)


def parse_document(text: str | bytes) -> AnyDocument:
    """Parse (and validate) one JSON document of any kind."""
    return DOCUMENT.validate_json(text)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of every document weightlift prints, generated from the models."""
    schema = DOCUMENT.json_schema(by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "weightlift report (schema 1)",
        "description": "One document printed by `weightlift pull --json` (`--ray`: "
                       "cluster-pull), `verify --json`, `ls --json`, or one line of `watch "
                       "--json`; the Python API's PullReport, ClusterPullReport and "
                       "VerifyReport are the same documents.",
        **schema,
    }


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


def write_schema(path: Path = SCHEMA_PATH) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(schema_text(), encoding="utf-8")


if __name__ == "__main__":  # pragma: no cover - `python -m weightlift.reports`
    write_schema()
    print(f"wrote {SCHEMA_PATH}")
