"""What server/engine/model_files.py reads of a model's files without loading them, engine-free: the hub
revision from the Hugging Face cache's own layout (`models--ORG--NAME/refs/main`,
`snapshots/<commit>`: an internal of huggingface_hub that docs/vllm-internals.md lists)."""

from __future__ import annotations

from server.engine.model_files import hub_revision

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_hub_cache(root, name: str = "Org/Model"):
    repo = root / f"models--{name.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT + "\n")
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    return snapshot


def test_the_hub_revision_from_a_snapshot_path_or_a_cached_hub_id(tmp_path, monkeypatch):
    import huggingface_hub.constants

    snapshot = fake_hub_cache(tmp_path)
    assert hub_revision(str(snapshot)) == COMMIT
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert hub_revision("Org/Model") == COMMIT
    assert hub_revision("Org/Other") is None  # not in the cache
    assert hub_revision(str(tmp_path)) is None  # a local directory of one's own
