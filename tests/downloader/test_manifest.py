import json

import pytest

from weightlift.downloader.errors import BadManifest
from weightlift.downloader.manifest import (
    MAX_COMPONENT_BYTES,
    MAX_FILES,
    MAX_REL_BYTES,
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
    with pytest.raises(BadManifest, match=f"more than the limit of {MAX_FILES:,} files"):
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


def test_redact_text_removes_every_query_string():
    from weightlift.downloader.redact import redact_text, redact_url

    text = "GET https://b.s3.amazonaws.com/k?X-Amz-Signature=abc&x=1 failed; http://h/p?sig=zz."
    out = redact_text(text)
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


# ---- hostile manifests, every kind (a subset runs through the CLI in
# tests/chaos/test_hostile_input.py) ------------------------------------------------------------

NOBODY = "http://127.0.0.1:9/x"
SIG = "X-Amz-Signature=" + "5eC7e7" * 8


def _entry(rel="a.bin", size=0, url=NOBODY, **kw):
    return {"rel": rel, "size": size, "url": url, **kw}


def _doc(*entries):
    return json.dumps({"files": list(entries)})


HOSTILE: list[tuple[str, str, str]] = [
    # (id, manifest text, what the error line says)
    ("dotdot", _doc(_entry("../evil")), "'..'"),
    ("nested-dotdot", _doc(_entry("a/../../x")), "'..'"),
    ("only-dotdot", _doc(_entry("..")), "'..'"),
    ("only-dot", _doc(_entry(".")), "'.' path component"),
    ("absolute", _doc(_entry("/etc/x")), "absolute"),
    ("drive", _doc(_entry("C:\\x")), "drive letter"),
    ("drive-relative", _doc(_entry("C:x")), "drive letter"),
    ("unc", _doc(_entry("\\\\server\\share\\x")), "absolute"),
    ("unc-slashes", _doc(_entry("//server/share")), "absolute"),
    ("backslash", _doc(_entry("a\\b")), "backslash"),
    ("nul", _doc(_entry("a\x00b")), "control"),
    ("escape", _doc(_entry("a\x1b[2Jb")), "control"),
    ("c1-control", _doc(_entry("a\x85b")), "control"),
    ("bidi-override", _doc(_entry("evil\u202egnp.bin")), "bidirectional"),
    ("line-separator", _doc(_entry("a\u2028b")), "line-separator"),
    ("empty-component", _doc(_entry("a//b")), "empty or '.'"),
    ("trailing-slash", _doc(_entry("a/")), "empty or '.'"),
    ("empty", _doc(_entry("")), "is empty"),
    ("reserved-device", _doc(_entry("sub/NUL.txt")), "device name"),
    ("work-folder", _doc(_entry(".weightlift/receipt.json")), "reserved folder"),
    ("case-twins", _doc(_entry("Model.bin"), _entry("model.bin")), "ignoring case"),
    ("nfc-nfd-twins", _doc(_entry("caf\u00e9.bin"), _entry("cafe\u0301.bin")), "normalisation"),
    ("file-and-folder", _doc(_entry("a"), _entry("A/b")), "also a file"),
    ("duplicate", _doc(_entry("a"), _entry("a")), "twice"),
    ("long-component", _doc(_entry("x" * (MAX_COMPONENT_BYTES + 1))),
     f"longer than {MAX_COMPONENT_BYTES} bytes"),
    ("long-rel", _doc(_entry("/".join(["d" * 200] * 6))), f"longer than {MAX_REL_BYTES} bytes"),
    ("negative-size", _doc(_entry(size=-1)), "negative size"),
    ("fraction-size", _doc(_entry(size=1.5)), "size"),
    ("string-size", _doc(_entry(size="10")), "size"),
    ("bool-size", _doc(_entry(size=True)), "size"),
    ("beyond-off_t-size", _doc(_entry(size=1 << 63)), "larger than any file"),
    ("5000-digit-size", '{"files": [{"rel": "a", "size": ' + "9" * 5000 + ', "url": "x"}]}',
     "too long"),
    ("sha-not-hex", _doc(_entry(sha256="zz" * 32)), "64 hex"),
    ("sha-newline", _doc(_entry(sha256="ab" * 32 + "\n")), "64 hex"),
    ("sha-number", _doc(_entry(sha256=123)), "sha256"),
    ("file-url", _doc(_entry(url="file:///etc/passwd")), "not http(s)"),
    ("ftp-url", _doc(_entry(url="ftp://127.0.0.1/x")), "not http(s)"),
    ("s3-url", _doc(_entry(url="s3://bucket/key")), "not http(s)"),
    ("gs-url", _doc(_entry(url="gs://bucket/key")), "not http(s)"),
    ("data-url", _doc(_entry(url="data:text/plain,hello")), "not http(s)"),
    ("javascript-url", _doc(_entry(url="javascript:alert(1)")), "not http(s)"),
    ("scheme-relative-url", _doc(_entry(url="//127.0.0.1/x")), "not http(s)"),
    ("no-host-url", _doc(_entry(url="http:///x")), "not http(s)"),
    ("userinfo-url", _doc(_entry(url=f"http://user:pa55word@127.0.0.1:9/x?{SIG}")),
     "user name or password"),
    ("bad-port-url", _doc(_entry(url="http://127.0.0.1:99999/x")), "bad host or port"),
    ("crlf-url", _doc(_entry(url="http://127.0.0.1:9/x\r\nX-Injected: 1")), "control"),
    ("signed-ftp-url", _doc(_entry(url=f"ftp://127.0.0.1/x?{SIG}")), "not http(s)"),
    ("not-json", "{not json", "invalid JSON"),
    ("duplicate-key", '{"files": [], "files": []}', "duplicate JSON key"),
]


ids = [c[0] for c in HOSTILE]


@pytest.mark.parametrize(("name", "text", "says"), HOSTILE, ids=ids)
def test_hostile_manifest_cases(name, text, says):
    with pytest.raises(BadManifest) as err:
        parse_manifest(text)
    line = err.value.one_line()
    assert says in line
    for bad in ("\n", "\u2028", "\x1b", "pa55word", "5eC7e7"):
        assert bad not in line


@pytest.mark.parametrize(("a", "b"), [
    ("Model.bin", "model.bin"),
    ("caf\u00e9.bin", "cafe\u0301.bin"),            # NFC vs NFD
    ("\u1fb3.bin", "\u03b1\u0345.bin"),             # precomposed vs combining, then folded
    ("\u212a.bin", "k.bin"),                        # KELVIN SIGN folds to k
    ("STRASSE.bin", "stra\u00dfe.bin"),              # full case folding: over-strict on purpose
    ("sub/\u00c5.bin", "sub/A\u030a.bin"),          # in a folder too
    ("d/x", "D/X"),
])
def test_names_equal_ignoring_case_and_normalisation_collide(a, b):
    with pytest.raises(BadManifest, match="ignoring case and Unicode normalisation"):
        validate_manifest(_m(_f(a), _f(b)))


@pytest.mark.parametrize(("a", "b"), [
    ("a.bin", "b.bin"),
    ("caf\u00e9.bin", "cafe.bin"),                  # an accent is a different name
    ("A/x.bin", "a/y.bin"),                          # one folder elsewhere, but two names
    ("model.bin", "model.bin.1"),
    ("\u00c5.bin", "\u212b.bin.x"),
])
def test_names_that_differ_otherwise_are_accepted(a, b):
    m = validate_manifest(_m(_f(a), _f(b, url="https://h/b")))
    assert [f.rel for f in m.files] == [a, b]


def test_limits_are_named_in_the_message():
    from weightlift.downloader.manifest import MAX_URL_BYTES

    with pytest.raises(BadManifest, match=f"limit of {MAX_URL_BYTES} bytes"):
        validate_manifest(_m(_f(url="https://h/" + "a" * MAX_URL_BYTES)))
    assert validate_manifest(_m(_f(size=(1 << 63) - 1))).files[0].size == (1 << 63) - 1
