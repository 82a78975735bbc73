"""`verify DIR` as the API and the CLI run it: the checks of ``weightlift.verify`` turned into
the contract's VerifyReport (one string per problem, what was and was not checked)."""

from __future__ import annotations

from pathlib import Path

from weightlift.downloader.errors import EXIT_OK, EXIT_VERIFY_FAILED, VerificationFailed
from weightlift.downloader.receipt import Receipt, load_receipt
from weightlift.reports import TensorFinding, VerifiedFile, VerifyReport

# What was not checked, in the JSON's warnings; the table says it on its integrity line instead.
NO_RECEIPT = "no pull receipt in this folder: sha256 not checked"
NO_HASH = "sha256 not re-checked (--no-hash)"


def _receipt(directory: Path) -> Receipt | None:
    try:
        return load_receipt(directory)
    except (VerificationFailed, OSError):
        return None  # verify_directory reports a damaged receipt as a problem


def check_folder(directory: Path, expect_params: int | None, deep: bool, hashes: bool,
                 progress: bool) -> VerifyReport:
    """Run the checkpoint checks on ``directory``. Raises UsageError when it is missing or not
    a folder; every other finding is in the report."""
    from weightlift.verify.checkpoint import verify_directory

    found = verify_directory(directory, expect_params=expect_params, deep=deep,
                             check_hashes=hashes, progress=progress)
    receipt = _receipt(directory)
    source = receipt.source if receipt else None
    model_id = checkpoint_id = None
    if receipt is not None and receipt.model_id:
        if (source or "").lower().startswith("tensorone://"):
            checkpoint_id = receipt.model_id
        else:
            model_id = receipt.model_id
    warnings = [str(w) for w in found.warnings]
    hashes_checked = bool(hashes and receipt is not None and receipt.files)
    if receipt is None:
        warnings.append(NO_RECEIPT + ("" if found.expected_params is not None else
                                      ", and no expected parameter count to compare with "
                                      "(pass --expect-params N)"))
    elif not hashes:
        warnings.append(NO_HASH)
    return VerifyReport(
        ok=found.ok, exit_code=EXIT_OK if found.ok else EXIT_VERIFY_FAILED,
        directory=found.directory, source=source, model_id=model_id,
        checkpoint_id=checkpoint_id, params=found.params, expected_params=found.expected_params,
        params_checked=found.expected_params is not None, hashes_checked=hashes_checked,
        problems=found.problem_lines(), warnings=warnings,
        files=[VerifiedFile(rel=f.rel, size=f.size, kind=f.kind,
                            tensors=f.tensors, params=f.params,
                            sha256_checked=f.sha256_checked) for f in found.files],
        shards=found.shards, tensors=found.tensors, params_by_dtype=found.params_by_dtype,
        deep=found.deep,
        findings=[TensorFinding(file=t.file, tensor=t.tensor, dtype=t.dtype, nan=t.nan,
                                inf=t.inf, all_zero=t.all_zero) for t in found.findings],
        seconds=found.seconds)


def table(report: VerifyReport) -> str:
    """The human summary `weightlift verify` prints on stdout: files, totals, what was and was
    not checked, verdict. The problems themselves are said once, on stderr, one line each."""
    from weightlift.verify.report import human_bytes

    lines = [f"checkpoint {report.directory}"]
    rows = [(f.rel, human_bytes(f.size), str(f.tensors) if f.kind == "shard" else "",
             f"{f.params:,}" if f.kind == "shard" else f.kind, "ok" if f.sha256_checked else "")
            for f in report.files]
    header = ("file", "size", "tensors", "params", "sha256")
    widths = [max([len(header[i]), *(len(r[i]) for r in rows)]) for i in range(5)]

    def fmt(cells: tuple[str, ...]) -> str:
        rest = "  ".join(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return f"  {cells[0].ljust(widths[0])}  {rest}".rstrip()

    lines.append(fmt(header))
    lines.extend(fmt(r) for r in rows)
    total_params = report.params or 0
    if report.params_by_dtype:
        lines += ["", "  dtype     params"]
        width = max(len(f"{v:,}") for v in report.params_by_dtype.values())
        for dtype, n in sorted(report.params_by_dtype.items()):
            share = n / total_params * 100 if total_params else 0.0
            lines.append(f"  {dtype:<8}  {n:>{width},}  {share:5.1f}%")
    lines.append("")
    total = f"total: {total_params:,} parameters in {report.tensors:,} tensors, " \
            f"{report.shards} shard(s)"
    if report.expected_params is not None:
        diff = total_params - report.expected_params
        total += (f" = expected {report.expected_params:,}" if diff == 0 else
                  f" but expected {report.expected_params:,} ({diff:+,})")
    lines.append(total)
    hashed = sum(f.sha256_checked for f in report.files)
    not_hashed = next((w for w in report.warnings if w.startswith((NO_RECEIPT, NO_HASH))), None)
    lines.append(f"integrity: {hashed} file(s) match the pull receipt" if report.hashes_checked
                 else "integrity: sha256 NOT checked" + (
                     " (no pull receipt in this folder)" if not_hashed
                     and not_hashed.startswith(NO_RECEIPT) else " (--no-hash)"
                     if not_hashed else ""))
    lines.append("parameter count: " + ("checked" if report.params_checked else
                                        "NOT checked (no expected count)"))
    for w in report.warnings:
        if w is not not_hashed:  # said on the integrity line
            lines.append(f"warning: {w}")
    if report.ok:
        caveat = "" if report.hashes_checked and report.params_checked else \
            " (format only: " + " and ".join(
                x for x, done in (("sha256", report.hashes_checked),
                                  ("parameter count", report.params_checked)) if not done) \
            + " not checked)"
        verdict = f"OK{caveat}"
    else:
        verdict = f"FAILED ({len(report.problems)} problem(s), listed on stderr)"
    lines.append(f"result: {verdict} in {report.seconds:.2f}s")
    return "\n".join(lines)
