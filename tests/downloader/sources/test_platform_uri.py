"""Platform SOURCE URIs: every accepted form, and one clear usage error for the rest."""

import pytest

from weightlift.downloader.errors import EXIT_USAGE, UsageError
from weightlift.downloader.sources.platform_uri import (
    PlatformRef,
    is_platform_uri,
    parse_platform_uri,
)

JOB = "3f2b9c1e-8d7a-4e6f-9b0c-1a2b3c4d5e6f"


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        (f"axom://jobs/{JOB}", PlatformRef("axom", "job", job_id=JOB)),
        (f"axom://models/{JOB}", PlatformRef("axom", "model", model_id=JOB)),
        (f"AXOM://jobs/{JOB}/", PlatformRef("axom", "job", job_id=JOB)),
        ("tensorone://jobs/job_abc123", PlatformRef("tensorone", "job", job_id="job_abc123")),
        ("tensorone://jobs/job_1/checkpoints/ckpt-7.final",
         PlatformRef("tensorone", "checkpoint", job_id="job_1", checkpoint_id="ckpt-7.final")),
        ("  tensorone://jobs/j  ", PlatformRef("tensorone", "job", job_id="j")),
    ],
)
def test_accepted_forms(text: str, ref: PlatformRef) -> None:
    assert parse_platform_uri(text) == ref
    assert is_platform_uri(text)
    assert parse_platform_uri(str(ref)) == ref  # str() round-trips


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("axom://runs/1", "unknown kind 'runs'"),
        ("axom://jobs", "the id is missing"),
        ("axom://jobs/", "the id is missing"),
        ("axom://jobs//", "empty id"),
        ("axom://jobs/a/b", "unexpected path"),
        ("axom://jobs/1/checkpoints/2", "unexpected path"),
        ("axom://jobs/../x", "id '..' is not a valid id"),
        ("axom://jobs/a%2Fb", "is not a valid id"),
        ("axom://jobs/a b", "is not a valid id"),
        ("axom://jobs/x?token=secret", "a query or fragment"),
        ("axom://models/x#frag", "a query or fragment"),
        ("tensorone://models/m1", "unexpected path"),
        ("tensorone://jobs/j/checkpoints", "unexpected path"),
        ("tensorone://jobs/j/checkpoints/", "unexpected path"),
        ("tensorone://jobs/j/snapshots/c", "unexpected path"),
        ("tensorone://jobs/j/checkpoints/c/x", "unexpected path"),
        ("tensorone://jobs/-lead", "is not a valid id"),
        ("axom://jobs/" + "a" * 200, "is not a valid id"),
        ("hf://jobs/1", "not a platform source"),
        ("axom:jobs/1", "not a platform source"),
    ],
)
def test_malformed_is_a_usage_error(text: str, says: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_platform_uri(text)
    err = info.value
    assert err.exit_code == EXIT_USAGE
    assert says in err.message
    line = err.one_line()
    assert "\n" not in line
    assert "://" in (err.hint or "") or "axom" in (err.hint or "")


def test_control_characters_are_escaped_in_the_message() -> None:
    with pytest.raises(UsageError) as info:
        parse_platform_uri("axom://jobs/a\x1b[31mb")
    assert "\x1b" not in info.value.one_line()


def test_is_platform_uri_for_other_sources() -> None:
    assert not is_platform_uri("manifest.json")
    assert not is_platform_uri("https://example.com/a.safetensors")
