import json

import pytest

from weightlift.downloader.errors import BadManifest
from weightlift.downloader.manifest import (
    MAX_FILES,
    check_rel,
    manifest_from_urls,
    parse_manifest,
    validate_manifest,
)


def _m(*files, **top):
    return {"files": list(files), **top}


def _f(rel="a.bin", size=10, url="https://s3.example.com/b/a.bin?X-Amz-Signature=abc", **kw):
    return {"rel": rel, "size": size, "url": url, **kw}


def test_axom_shape_with_extras_is_accepted():
    m = validate_manifest(_m(
        _f("model-00001-of-00002.safetensors", 5, sha256="AB" * 32, extra_field=1),
        _f("sub/config.json", 0),
        model_id="m1", name="n", version="v", unknown={"x": 1},
    ))
    assert [f.rel for f in m.files] == ["model-00001-of-00002.safetensors", "sub/config.json"]
    assert m.files[0].sha256 == "ab" * 32  # normalised to lower case
    assert m.model_id == "m1"
    assert m.known_bytes == 5


@pytest.mark.parametrize(("rel", "why"), [
    ("", "empty"),
    ("/etc/passwd", "absolute"),
    ("\\\\server\\share\\x", "absolute"),
    ("C:/Windows/x", "drive letter"),
    ("c:x", "drive letter"),
    ("../x", "'..'"),
    ("a/../../x", "'..'"),
    ("a/./b", "'.' path component"),
    ("a//b", "empty or '.'"),
    ("a\\b", "backslash"),
    ("a\x00b", "control"),
    ("a/b/", "empty or '.'"),
    (".weightlift/receipt.json", "reserved"),
    ("x" * 300, "longer than"),
    ("dir./x", "trailing dot"),
])
def test_hostile_names_are_rejected_with_a_reason(rel, why):
    with pytest.raises(BadManifest) as err:
        check_rel(rel)
    assert why in err.value.message
    assert "\n" not in err.value.one_line()


@pytest.mark.parametrize(("data", "why"), [
    ({}, "no 'files'"),
    ({"files": {}}, "not a list"),
    ([], "not a JSON object"),
    (_m(_f(size=-1)), "negative size"),
    (_m(_f(url="file:///etc/passwd")), "not http(s)"),
    (_m(_f(url="ftp://host/x")), "not http(s)"),
    (_m(_f(url="https:///nohost")), "not http(s)"),
    (_m(_f("a"), _f("a")), "twice"),
    (_m(_f("Model.bin"), _f("model.bin")), "ignoring case"),
    (_m(_f("caf\u00e9"), _f("cafe\u0301")), "ignoring case"),
    (_m(_f("a"), _f("a/b")), "also a file"),
    (_m(_f(sha256="zz")), "64 hex"),
    (_m({"rel": "a", "size": 1}), "url"),
    (_m(_f(size="big")), "size"),
    (_m("just a string"), "files[0]"),
])
def test_bad_manifests(data, why):
    with pytest.raises(BadManifest) as err:
        validate_manifest(data)
    assert why in err.value.one_line()


@pytest.mark.parametrize(("text", "why"), [
    ("{not json", "invalid JSON"),
    (b"\xff\xfe", "UTF-8"),
    ('{"files": [], "files": []}', "duplicate JSON key"),
    ('{"files": [{"rel": "a", "size": NaN, "url": "http://h/a"}]}', "NaN"),
    ("[" * 100000 + "]" * 100000, "nested"),
])
def test_unparseable_manifests(text, why):
    with pytest.raises(BadManifest) as err:
        parse_manifest(text)
    assert why in err.value.one_line()


def test_too_many_files():
    files = [{"rel": f"f{i}", "size": 1, "url": "http://h/x"} for i in range(MAX_FILES + 1)]
    with pytest.raises(BadManifest, match="more than"):
        parse_manifest(json.dumps({"files": files}))


def test_errors_never_show_a_signature():
    with pytest.raises(BadManifest) as err:
        validate_manifest(_m(_f(url="ftp://h/x?X-Amz-Signature=SECRET")))
    assert "SECRET" not in err.value.one_line()


def test_urls_are_named_by_their_last_segment():
    m = manifest_from_urls(["https://h/a/model%20one.safetensors?sig=1", "http://h/b.json"])
    assert [f.rel for f in m.files] == ["model one.safetensors", "b.json"]
    assert all(f.size is None for f in m.files)
    with pytest.raises(BadManifest):
        manifest_from_urls(["https://h/"])


def test_scrub_removes_every_query_string():
    from weightlift.downloader.errors import redact_url, scrub

    text = "GET https://b.s3.amazonaws.com/k?X-Amz-Signature=abc&x=1 failed; http://h/p?sig=zz."
    out = scrub(text)
    assert "abc" not in out
    assert "sig=zz" not in out
    assert "https://b.s3.amazonaws.com/k?…" in out
    assert redact_url("https://user:pw@h:8080/p?se=2026&sig=x") == "https://h:8080/p?…"


@pytest.mark.parametrize(("text", "key", "constant"), [
    ('{"a": 1, "a": 2}', "a", None),
    ('{"x": {"b": 1, "b": 1}}', "b", None),
    ('{"a": NaN}', None, "NaN"),
    ('[Infinity]', None, "Infinity"),
    ('{"a": -Infinity}', None, "-Infinity"),
])
def test_strict_json_rejects_duplicates_and_constants(text, key, constant):
    from weightlift.downloader.strict_json import StrictJSONError, loads_strict

    with pytest.raises(StrictJSONError) as err:
        loads_strict(text)
    assert (err.value.key, err.value.constant) == (key, constant)
    assert loads_strict('{"a": [1, 2.5, "NaN"]}') == {"a": [1, 2.5, "NaN"]}
