"""The Hub stand-in's demo content: one model (public, private and gated copies, two commits and
a tag) and one dataset, used by the tests and by `python -m weightlift.emulator`."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from weightlift.emulator.hub import HubEmulator
from weightlift.emulator.storage import StorageEmulator


@dataclass(frozen=True)
class DemoHub:
    """What `demo_hub` put on the Hub: repository ids, commits, and the source files."""

    hub: HubEmulator
    model: str  # public; `main` has two commits, tag `v1` is the first
    private: str  # private: the token reads it
    gated: str  # gated: the token is not granted it (`hub.grant(gated)` changes that)
    dataset: str  # a public dataset
    params: int  # the model's parameter count (the Hub reports it as safetensors.total)
    src: Path  # the model's files at `main`
    first_commit: str
    main_commit: str


def demo_hub(workdir: Path, *, model_bytes: int = 1 << 20, shards: int = 2,
             url_lifetime: float = 600.0, token: str | None = None,
             storage: StorageEmulator | None = None) -> DemoHub:
    """A Hub with one model (public, private and gated copies) and one dataset, generated
    into ``workdir``: a real safetensors checkpoint, its config, and a tokenizer in a folder."""
    from weightlift.emulator.model_gen import generate_checkpoint

    src = workdir / "hub-model"
    ck = generate_checkpoint(src, total_bytes=model_bytes, shards=shards)
    (src / "tokenizer").mkdir(exist_ok=True)
    (src / "tokenizer" / "vocab.json").write_text(json.dumps({f"t{i}": i for i in range(64)}))
    (src / "README.md").write_text("# tiny-model\nA synthetic checkpoint for weightlift.\n")
    files: dict[str, bytes | Path] = {p.relative_to(src).as_posix(): p
                                      for p in sorted(src.rglob("*")) if p.is_file()}
    hub = HubEmulator(storage, url_lifetime=url_lifetime, token=token)
    model, private, gated = "weightlift/tiny-model", "weightlift/private-model", \
        "weightlift/gated-model"
    hub.create_repo(model, params=ck.params)
    first = hub.commit(model, {**files, "config.json": b'{"model_type": "draft"}\n'})
    hub.tag(model, "v1", first)
    main = hub.commit(model, files)
    hub.create_repo(private, private=True, params=ck.params)
    hub.commit(private, files)
    hub.create_repo(gated, gated="manual", params=ck.params)
    hub.commit(gated, files)
    dataset = "weightlift/tiny-data"
    hub.create_repo(dataset, repo_type="dataset")
    hub.commit(dataset, {"README.md": b"# tiny-data\n",
                         "data/train.parquet": secrets.token_bytes(200_000)},
               repo_type="dataset")
    return DemoHub(hub, model, private, gated, dataset, ck.params, src, first, main)


def announce(demo: DemoHub, endpoint: str) -> list[str]:
    """What `python -m weightlift.emulator` prints about the Hub: where, and what to try."""
    env = f"HF_ENDPOINT={endpoint} HF_TOKEN={demo.hub.token}"
    return [
        f"  Hugging Face Hub: {endpoint}   token {demo.hub.token}",
        f"    {demo.model} (public, tag v1), {demo.private} (private), {demo.gated} (gated, "
        f"not granted), datasets/{demo.dataset}",
        f"  {env} weightlift pull hf://{demo.model} -o ./hf-model",
        f"  {env} weightlift pull hf://{demo.private}@main --hf-cache ./hf-cache",
    ]
