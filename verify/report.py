"""The verification report: one pydantic model, rendered as a table or as JSON."""

from __future__ import annotations

from pydantic import BaseModel, Field


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class Problem(BaseModel):
    """One thing wrong: which file, which tensor, what. ``str()`` is the one-line form."""

    file: str | None = None
    tensor: str | None = None
    message: str

    def __str__(self) -> str:
        from weightlift.verify.header import quote

        where = []
        if self.file is not None:
            where.append(self.file)
        if self.tensor is not None and f'tensor {quote(self.tensor)}' not in self.message:
            where.append(f"tensor {quote(self.tensor)}")
        text = " ".join(self.message.split())
        return f"{': '.join(where)}: {text}" if where else text


class FileReport(BaseModel):
    rel: str
    size: int
    kind: str  # "shard", "index" or "other"
    tensors: int = 0
    params: int = 0
    data_bytes: int = 0
    sha256_checked: bool = False


class TensorScan(BaseModel):
    """Deep-scan findings for one tensor (only tensors with something to say are listed)."""

    file: str
    tensor: str
    dtype: str
    nan: int = 0
    inf: int = 0
    all_zero: bool = False


class VerifyReport(BaseModel):
    """Everything `verify` found; ``ok`` is True exactly when ``problems`` is empty."""

    directory: str
    ok: bool = False
    files: list[FileReport] = Field(default_factory=list)
    shards: int = 0
    tensors: int = 0
    params: int = 0
    expected_params: int | None = None
    params_by_dtype: dict[str, int] = Field(default_factory=dict)
    params_by_shard: dict[str, int] = Field(default_factory=dict)
    hashed_files: int = 0
    deep: bool = False
    scanned_bytes: int = 0
    findings: list[TensorScan] = Field(default_factory=list)
    problems: list[Problem] = Field(default_factory=list)
    warnings: list[Problem] = Field(default_factory=list)
    seconds: float = 0.0

    def problem_lines(self) -> list[str]:
        return [str(p) for p in self.problems]

    def to_table(self) -> str:
        """A readable multi-line summary: files, dtypes, totals, problems, verdict."""
        lines = [f"checkpoint {self.directory}"]
        rows = [(f.rel, human_bytes(f.size), str(f.tensors) if f.kind == "shard" else "",
                 f"{f.params:,}" if f.kind == "shard" else f.kind,
                 "ok" if f.sha256_checked else "")
                for f in self.files]
        header = ("file", "size", "tensors", "params", "sha256")
        widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i])
                  for i in range(5)]

        def fmt(cells: tuple[str, ...]) -> str:
            left = cells[0].ljust(widths[0])
            rest = "  ".join(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
            return f"  {left}  {rest}".rstrip()

        lines.append(fmt(header))
        lines.extend(fmt(r) for r in rows)
        if self.params_by_dtype:
            lines.append("")
            lines.append("  dtype     params")
            width = max(len(f"{v:,}") for v in self.params_by_dtype.values())
            for dtype, n in sorted(self.params_by_dtype.items()):
                share = n / self.params * 100 if self.params else 0.0
                lines.append(f"  {dtype:<8}  {n:>{width},}  {share:5.1f}%")
        lines.append("")
        total = f"total: {self.params:,} parameters in {self.tensors:,} tensors, " \
                f"{self.shards} shard(s)"
        if self.expected_params is not None:
            diff = self.params - self.expected_params
            total += (f" = expected {self.expected_params:,}" if diff == 0 else
                      f" but expected {self.expected_params:,} ({diff:+,})")
        lines.append(total)
        if self.hashed_files:
            lines.append(f"integrity: {self.hashed_files} file(s) match the pull receipt")
        if self.deep:
            lines.append(f"deep scan: {human_bytes(self.scanned_bytes)} of tensor data read")
        for w in self.warnings:
            lines.append(f"warning: {w}")
        for p in self.problems:
            lines.append(f"problem: {p}")
        verdict = "OK" if self.ok else f"FAILED ({len(self.problems)} problem(s))"
        lines.append(f"result: {verdict} in {self.seconds:.2f}s")
        return "\n".join(lines)
