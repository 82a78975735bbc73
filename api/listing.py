"""`weightlift ls SOURCE`: a source's files with sizes (and sha256 when known), or a TensorOne
job's checkpoints with their ids, without downloading anything."""

from __future__ import annotations

from collections.abc import Mapping

from weightlift.reports import ListedCheckpoint, ListedFile, ListReport


async def list_source(sources: list[str], env: Mapping[str, str]) -> ListReport:
    """What ``pull`` would fetch from ``sources``; for `tensorone://jobs/<id>`, every
    checkpoint of the job (the `.../checkpoints/<id>` SOURCE of each). Raises WeightliftError
    like ``pull`` does for a bad SOURCE or a platform error."""
    from weightlift.downloader.sources.platform_uri import is_platform_uri, parse_platform_uri
    from weightlift.pulling import shown_source, source_ids
    from weightlift.source_forms import check_source

    for s in sources:
        check_source(s)
    shown = shown_source(sources)
    if len(sources) == 1 and is_platform_uri(sources[0]):
        ref = parse_platform_uri(sources[0])
        if ref.platform == "tensorone" and ref.kind == "job" and ref.job_id is not None:
            return await _tensorone_checkpoints(ref.job_id, shown, env)
    from weightlift.downloader.sources.resolve import open_source
    from weightlift.dry_run import probe_sizes

    async with open_source(sources, env) as resolved:
        files = list(resolved.manifest.files)
        probed = await probe_sizes(files)
        model_id, checkpoint_id = source_ids(sources, resolved)
        listed = []
        for f in files:
            got = probed.get(f.rel, f.size)
            listed.append(ListedFile(rel=f.rel, size=got if isinstance(got, int) else None,
                                     sha256=f.sha256,
                                     error=got if isinstance(got, str) else None))
        return ListReport(source=shown, model_id=model_id, checkpoint_id=checkpoint_id,
                          expected_params=resolved.expected_params, files=listed)


async def _tensorone_checkpoints(job_id: str, shown: str, env: Mapping[str, str]) -> ListReport:
    from weightlift.downloader.sources.resolve import open_session
    from weightlift.downloader.sources.tensorone import TensorOneClient, latest_checkpoint

    async with open_session("tensorone", env) as session:
        listing = await TensorOneClient(session).checkpoints(job_id)
    latest = latest_checkpoint(listing)
    ordered = sorted(listing.checkpoints, key=lambda c: (c.step or -1, c.createdAt or ""))
    return ListReport(source=shown, checkpoints=[
        ListedCheckpoint(checkpoint_id=c.checkpointId, step=c.step, epoch=c.epoch, size=c.size,
                         created_at=c.createdAt,
                         latest=latest is not None and c.checkpointId == latest.checkpointId,
                         source=f"tensorone://jobs/{job_id}/checkpoints/{c.checkpointId}")
        for c in ordered])
