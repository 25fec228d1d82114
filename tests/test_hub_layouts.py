"""The hub layouts of VLFeedback and MathV360K, written small by the tests: VLFeedback's vlfeedback_80k.jsonl with
merged_images.zip (with and without a top-level folder), its parquet mirrors (completions as datasets' dict of
lists), MathV360K's data_images.zip (with and without a top-level data_images/), bad rows counted, resumable
unpacking, and hub revisions in stage keys through a fake hub cache. ``snapshot_download`` is replaced by a
function returning the test's folder: nothing here reaches the network."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from fakes import row as mathv_row
from PIL import Image

from kit.casseat import mathv360k
from kit.core import artifacts
from kit.eaco import critic
from kit.errors import KitError
from kit.eval.benchmarks import _common

VLF = "MMInstruction/VLFeedback"
MATHV = "Zhiqiang007/MathV360K"


# ------------------------------------------------------------------------------------------ helpers
def _jpeg(colour: tuple[int, int, int] = (200, 10, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def _annotations(h: str = "4", v: str = "3", e: str = "5") -> dict[str, Any]:
    return {"Helpfulness": {"Rating": h, "Rationale": "helps"},
            "Visual Faithfulness": {"Rating": v, "Rationale": "faithful"},
            "Ethical Considerations": {"Rating": e, "Rationale": "safe"}}


def _vlf_row(row_id: str, **changes: Any) -> dict[str, Any]:
    """A vlfeedback_80k.jsonl line: no img_path, the image is merged_images/<id>.jpg."""
    row = {"id": row_id, "prompt": f"What is in picture {row_id}?", "models": ["gpt-4v", "llava"],
           "completions": [{"model": "gpt-4v", "response": "A red square.", "annotations": _annotations()},
                           {"model": "llava", "response": "A cat.", "annotations": _annotations("2", "1", "5")}]}
    row.update(changes)
    return row


def _write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zipped:
        for name, data in files.items():
            zipped.writestr(name, data)
    return path


def _vlf_repo(folder: Path, rows: list[dict[str, Any]], image_ids: list[str], top: str | None) -> Path:
    """The hub repository's files: vlfeedback_80k.jsonl and merged_images.zip (plus the loading script)."""
    folder.mkdir(parents=True)
    (folder / "vlfeedback_80k.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "VLFeedback.py").write_text("# the loading script datasets >= 4 refuses\n")
    prefix = f"{top}/" if top else ""
    files = {f"{prefix}{image_id}.jpg": _jpeg() for image_id in image_ids}
    if top:
        files["__MACOSX/._junk"] = b"metadata"
    _write_zip(folder / "merged_images.zip", files)
    return folder


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """snapshot_download replaced: returns ``state["folders"][repo_id]`` and records the calls."""
    import huggingface_hub

    state: dict[str, Any] = {"folders": {}, "calls": []}

    def snapshot_download(repo_id: str, **kwargs: Any) -> str:
        state["calls"].append({"repo_id": repo_id, **kwargs})
        return str(state["folders"][repo_id])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv(artifacts.HUB_REVISIONS_ENV, raising=False)
    monkeypatch.setattr(_common, "HUB_IMAGE_CACHE", tmp_path / "hub_images")
    return state


# ------------------------------------------------------------------------------------------ VLFeedback
@pytest.mark.parametrize("top", ["merged_images", None], ids=["zip-with-top-folder", "flat-zip"])
def test_vlfeedback_from_the_hub_repository_files(fake_hub, tmp_path, monkeypatch, top):
    repo = _vlf_repo(tmp_path / "snapshot", [_vlf_row("svit-1"), _vlf_row("lrv-2")], ["svit-1", "lrv-2"], top)
    fake_hub["folders"][VLF] = repo
    monkeypatch.setenv(artifacts.HUB_REVISIONS_ENV, json.dumps({VLF: "c9b311a"}))
    loaded = critic.read_vlfeedback(VLF)
    (call,) = fake_hub["calls"]
    assert call["repo_type"] == "dataset" and call["revision"] == "c9b311a"
    assert set(call["allow_patterns"]) == {"vlfeedback_80k.jsonl", "merged_images.zip", "data.jsonl"}
    assert [r.id for r in loaded.rows] == ["svit-1", "lrv-2"]
    # the official script's layout, whichever way the archive was made
    assert loaded.rows[0].image == str((repo / "merged_images" / "svit-1.jpg").resolve())
    assert loaded.rows[1].completions[1].ratings == {"helpfulness": 2, "visual_faithfulness": 1,
                                                     "ethical_considerations": 5}
    assert (repo / "merged_images" / _common.EXTRACTED_MARKER).is_file()
    assert not (repo / ".merged_images.partial").exists() and not (repo / "merged_images" / "__MACOSX").exists()
    assert loaded.report.read == 2 and loaded.report.kept == 2 and loaded.report.problems == {}
    # unpacked once: a second load does not need the archive
    (repo / "merged_images.zip").unlink()
    assert len(critic.load_vlfeedback(VLF)) == 2


def test_vlfeedback_unzipped_by_hand_with_its_top_folder_and_a_local_copy(tmp_path):
    folder = tmp_path / "vlf"
    (folder / "merged_images" / "merged_images").mkdir(parents=True)
    (folder / "merged_images" / "merged_images" / "a.jpg").write_bytes(_jpeg())
    (folder / "vlfeedback_80k.jsonl").write_text(json.dumps(_vlf_row("a")) + "\n")
    (row,) = critic.load_vlfeedback(folder)
    assert row.image.endswith("merged_images/merged_images/a.jpg")


def test_bad_rows_are_counted_by_reason_with_their_ids(fake_hub, tmp_path):
    bad_rating = _vlf_row("b2")
    bad_rating["completions"][1]["annotations"]["Helpfulness"]["Rating"] = "N/A"
    rows = [_vlf_row("g1"), _vlf_row("no-image"), bad_rating, _vlf_row("b3", completions=[]), _vlf_row("g2"),
            _vlf_row("g3"), _vlf_row("g4")]
    repo = _vlf_repo(tmp_path / "snapshot", rows, ["g1", "b2", "b3", "g2", "g3", "g4"], "merged_images")
    with (repo / "vlfeedback_80k.jsonl").open("a") as handle:
        handle.write("{not json\n")
    fake_hub["folders"][VLF] = repo
    with pytest.raises(KitError, match=r"line 2 \(id no-image\): image file .*no-image.jpg not found"):
        critic.read_vlfeedback(VLF)
    loaded = critic.read_vlfeedback(VLF, skip_invalid=True)
    assert [r.id for r in loaded.rows] == ["g1", "g2", "g3", "g4"]
    report = loaded.report.to_dict()
    assert report["read"] == 8 and report["kept"] == 4
    assert report["problems"] == {"image_not_found": 1, "bad_rating": 1, "no_completions": 1, "invalid_json": 1}
    assert "id b2" in report["examples"]["bad_rating"][0] and "'N/A'" in report["examples"]["bad_rating"][0]
    assert "line 8" in report["examples"]["invalid_json"][0]
    assert any("merged_images/<id>.jpg" in tried for tried in report["tried"])


def test_most_rows_bad_is_a_loud_error_naming_the_paths_tried(fake_hub, tmp_path):
    repo = _vlf_repo(tmp_path / "snapshot", [_vlf_row("a"), _vlf_row("b"), _vlf_row("c")], ["a"], None)
    fake_hub["folders"][VLF] = repo
    with pytest.raises(KitError) as err:
        critic.read_vlfeedback(VLF, skip_invalid=True)
    message = str(err.value)
    assert "2 of the 3 rows" in message and "image_not_found 2" in message
    assert str(repo / "vlfeedback_80k.jsonl") in message and str(repo / "merged_images") in message


def _mirror_dataset(rows: list[dict[str, Any]]):
    """A parquet mirror's schema (the README's dataset_info): completions a sequence of structs."""
    import datasets
    from datasets import Features, Sequence, Value

    rating = {"Rating": Value("string"), "Rationale": Value("string")}
    features = Features({
        "id": Value("string"), "prompt": Value("string"), "models": Sequence(Value("string")),
        "completions": Sequence({"annotations": {"Helpfulness": rating, "Visual Faithfulness": rating,
                                                 "Ethical Considerations": rating},
                                 "model": Value("string"), "response": Value("string")}),
        "image": datasets.Image(),
    })
    columns: dict[str, list[Any]] = {name: [] for name in features}
    for row in rows:
        completions = row["completions"]
        columns["id"].append(row["id"])
        columns["prompt"].append(row["prompt"])
        columns["models"].append(row["models"])
        # datasets takes (and gives back) a sequence of structs as one dict of lists
        columns["completions"].append({key: [c[key] for c in completions]
                                       for key in ("annotations", "model", "response")})
        columns["image"].append({"bytes": _jpeg(), "path": f"{row['id']}.jpg"})
    return datasets.Dataset.from_dict(columns, features=features)


def _write_mirror(folder: Path, rows: list[dict[str, Any]]) -> Path:
    (folder / "data").mkdir(parents=True)
    _mirror_dataset(rows).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    return folder


@pytest.fixture
def local_datasets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Path]:
    """datasets.load_dataset reading the test's folders (a hub id mapped to one), its cache in tmp_path."""
    import datasets

    real = datasets.load_dataset
    redirects: dict[str, Path] = {}

    def load_dataset(source: str, split: str, **kwargs: Any):
        return real(str(redirects.get(source, source)), split=split, cache_dir=str(tmp_path / "ds-cache"), **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return redirects


def test_a_parquet_mirror_with_completions_as_a_dict_of_lists(fake_hub, local_datasets, tmp_path):
    import datasets

    broken = _vlf_row("m3")
    broken["completions"][0]["annotations"]["Visual Faithfulness"]["Rating"] = "7"
    mirror = _write_mirror(tmp_path / "mirror", [_vlf_row("m1"), _vlf_row("m2"), broken])
    first = datasets.load_dataset(str(mirror), split="train")[0]
    assert isinstance(first["completions"], dict) and first["completions"]["model"] == ["gpt-4v", "llava"]

    # a local folder in the mirror's layout
    loaded = critic.read_vlfeedback(mirror, skip_invalid=True)
    assert [r.id for r in loaded.rows] == ["m1", "m2"] and loaded.report.problems == {"bad_rating": 1}
    assert [c.model for c in loaded.rows[0].completions] == ["gpt-4v", "llava"]
    assert loaded.rows[0].completions[1].ratings["visual_faithfulness"] == 1
    assert Path(loaded.rows[0].image).is_file() and Path(loaded.rows[0].image).is_relative_to(tmp_path / "hub_images")

    # the same mirror as a hub id: the repository has no JSONL file, so it is read through datasets
    fake_hub["folders"]["someone/VLFeedback"] = tmp_path / "empty-snapshot"
    local_datasets["someone/VLFeedback"] = mirror
    assert [r.id for r in critic.load_vlfeedback("someone/VLFeedback", skip_invalid=True)] == ["m1", "m2"]


def test_completions_as_lists_of_unequal_length_are_a_bad_row(tmp_path):
    folder = tmp_path / "vlf"
    (folder / "merged_images").mkdir(parents=True)
    (folder / "merged_images" / "a.jpg").write_bytes(_jpeg())
    row = _vlf_row("a", completions={"model": ["x", "y"], "response": ["r"], "annotations": [_annotations()]})
    (folder / "vlfeedback_80k.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(KitError, match="not lists of one length"):
        critic.load_vlfeedback(folder)


def test_offline_without_a_cached_copy_says_so(fake_hub, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def not_cached(repo_id: str, **kwargs: Any) -> str:
        assert kwargs["local_files_only"] is True  # offline: the cache only, never the network
        raise LocalEntryNotFoundError("not in the cache")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", not_cached)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(KitError, match=r"MMInstruction/VLFeedback.*offline"):
        critic.load_vlfeedback(VLF)


def test_critic_stage_records_the_rows_left_out(fake_hub, tmp_path, monkeypatch):
    import kit.training.sft
    from kit.eaco.pipeline import critic_stage

    rows = [_vlf_row(f"g{i}") for i in range(4)] + [_vlf_row("lost")]
    fake_hub["folders"][VLF] = _vlf_repo(tmp_path / "snapshot", rows, [f"g{i}" for i in range(4)], "merged_images")
    monkeypatch.setattr(kit.training.sft, "train_stage", lambda *args, **kwargs: {"adapter": "stub"})
    monkeypatch.setattr(artifacts, "_ask_hub", lambda *args: None)  # no network: the key takes the bare id
    result = critic_stage("unused-base", VLF, tmp_path / "run", settings=None, heldout=0.25, progress=False)
    assert result["vlfeedback_rows"]["problems"] == {"image_not_found": 1} and result["vlfeedback_rows"]["kept"] == 4
    recorded = json.loads((Path(result["data"]) / "vlfeedback_rows.json").read_text())
    assert recorded == result["vlfeedback_rows"] and "id lost" in recorded["examples"]["image_not_found"][0]


# ------------------------------------------------------------------------------------------ unpacking
def test_unpacking_resumes_after_an_interruption(tmp_path, monkeypatch):
    import shutil

    archive = _write_zip(tmp_path / "data_images.zip",
                         {f"data_images/set/{i}.png": bytes([i]) * 10 for i in range(5)})
    dest = tmp_path / "data_images"
    real_copy, copied = shutil.copyfileobj, []

    def copy_then_die(source, out, length=0):
        if len(copied) == 3:
            raise OSError("disk full")
        copied.append(out.name)
        real_copy(source, out, length)

    monkeypatch.setattr(shutil, "copyfileobj", copy_then_die)
    with pytest.raises(KitError, match="could not unpack"):
        _common.extract_archive(archive, dest, strip="data_images")
    assert not dest.exists()  # nothing that looks finished
    partial = tmp_path / ".data_images.partial"
    assert len(list((partial / "set").glob("*.png"))) == 3 and not (partial / _common.EXTRACTED_MARKER).exists()
    copied.clear()
    monkeypatch.setattr(shutil, "copyfileobj", lambda source, out, length=0: (copied.append(1),
                                                                               real_copy(source, out, length)))
    assert _common.extract_archive(archive, dest, strip="data_images") == dest
    assert len(copied) == 2  # only the files the first run did not finish
    assert sorted(p.name for p in (dest / "set").iterdir()) == [f"{i}.png" for i in range(5)]
    marker = json.loads((dest / _common.EXTRACTED_MARKER).read_text())
    assert marker["files"] == 5 and marker["stripped"] == "data_images" and not partial.exists()


def test_unpacking_refuses_a_member_outside_the_folder_and_a_damaged_archive(tmp_path):
    archive = _write_zip(tmp_path / "evil.zip", {"../outside.txt": b"x"})
    with pytest.raises(KitError, match="outside"):
        _common.extract_archive(archive, tmp_path / "out")
    (tmp_path / "broken.zip").write_bytes(b"PK not really")
    with pytest.raises(KitError, match="not a readable zip"):
        _common.extract_archive(tmp_path / "broken.zip", tmp_path / "out2")


# ------------------------------------------------------------------------------------------ MathV360K
def _png(colour: tuple[int, int, int] = (10, 200, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _mathv_repo(folder: Path, rows: list[dict[str, Any]], images: list[str], top: bool) -> Path:
    folder.mkdir(parents=True)
    (folder / mathv360k.SOURCE_FILE).write_text(json.dumps(rows))
    _write_zip(folder / "data_images.zip", {("data_images/" if top else "") + name: _png() for name in images})
    return folder


@pytest.mark.parametrize("top", [True, False], ids=["zip-with-data_images", "flat-zip"])
def test_mathv360k_images_resolve_whichever_way_the_zip_is_laid_out(fake_hub, tmp_path, top):
    rows = [mathv_row("1", "TabMWP/images/1.png", "How many?", "3"),
            mathv_row("2", "geoqa+/images/2.png", "What angle?", "40")]
    repo = _mathv_repo(tmp_path / "snapshot", rows, ["TabMWP/images/1.png", "geoqa+/images/2.png"], top)
    fake_hub["folders"][MATHV] = repo
    loaded = mathv360k.read_source(MATHV)
    assert fake_hub["calls"][0]["allow_patterns"] == [mathv360k.SOURCE_FILE, "data_images.zip"]
    assert [item.image for item in loaded.items] == [str(repo / "data_images" / "TabMWP/images/1.png"),
                                                     str(repo / "data_images" / "geoqa+/images/2.png")]
    assert loaded.report.problems == {}


def test_mathv360k_unzipped_by_hand_into_data_images_is_found(tmp_path):
    folder = tmp_path / "MathV360K"
    image = folder / "data_images" / "data_images" / "TabMWP" / "1.png"
    image.parent.mkdir(parents=True)
    image.write_bytes(_png())
    (folder / mathv360k.SOURCE_FILE).write_text(json.dumps([mathv_row("1", "TabMWP/1.png", "How many?", "3")]))
    assert mathv360k.load_source(folder)[0].image == str(image)


def test_mathv360k_most_images_missing_is_an_error_naming_the_folders(tmp_path):
    folder = tmp_path / "MathV360K"
    (folder / "data_images" / "other").mkdir(parents=True)
    rows = [mathv_row(str(i), f"TabMWP/{i}.png", "How many?", "3") for i in range(3)]
    (folder / mathv360k.SOURCE_FILE).write_text(json.dumps(rows))
    with pytest.raises(KitError) as err:
        mathv360k.load_source(folder)
    message = str(err.value)
    assert "3 of 3 rows are missing" in message and str(folder / "data_images" / "data_images") in message
    assert "row 1 (id 0)" in message and str(folder / "TabMWP/0.png") in message


def test_mathv360k_damaged_rows_are_counted_with_skip_invalid(tmp_path):
    folder = tmp_path / "MathV360K"
    (folder / "img").mkdir(parents=True)
    (folder / "img" / "a.png").write_bytes(_png())
    rows = [mathv_row(str(i), "img/a.png", f"How many {i}?", "3") for i in range(3)]
    rows += [{"id": "x", "conversations": []}, mathv_row("gone", "img/none.png", "How many?", "1")]
    (folder / mathv360k.SOURCE_FILE).write_text(json.dumps(rows))
    with pytest.raises(KitError, match=r"row 4 \(id x\): no 'image'"):
        mathv360k.load_source(folder)
    loaded = mathv360k.read_source(folder, skip_invalid=True)
    assert [i.id for i in loaded.items] == ["0", "1", "2", "gone"]  # a missing image is the filters' to remove
    assert loaded.report.problems == {"no_image": 1, "image_not_found": 1} and loaded.report.read == 5


# ------------------------------------------------------------------------------------------ revisions
def _fake_cache(root: Path, kind: str, repo_id: str, refs: dict[str, str]) -> Path:
    folder = root / f"{kind}s--{repo_id.replace('/', '--')}"
    for ref, commit in refs.items():
        (folder / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (folder / "refs" / ref).write_text(commit)
        (folder / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
    return folder


SHA_A, SHA_B, SHA_TAG = "a" * 40, "b" * 40, "c" * 40


def test_fingerprint_of_a_hub_id_carries_its_commit(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(artifacts.HUB_REVISIONS_ENV, raising=False)

    def no_network(*args: Any) -> None:
        raise AssertionError("offline: the hub must not be asked")

    monkeypatch.setattr(artifacts, "_ask_hub", no_network)
    assert artifacts.fingerprint("org/model") == "org/model"  # not downloaded: nothing to resolve
    _fake_cache(cache, "model", "org/model", {"main": SHA_A, "v1.0": SHA_TAG})
    assert artifacts.fingerprint("org/model") == f"org/model@{SHA_A}"
    key_a = artifacts.stage_dir(tmp_path, "train", {"model": artifacts.fingerprint("org/model")})
    _fake_cache(cache, "model", "org/model", {"main": SHA_B})  # the hub repo changed and was downloaded again
    key_b = artifacts.stage_dir(tmp_path, "train", {"model": artifacts.fingerprint("org/model")})
    assert key_a != key_b
    # a pinned tag resolves through the cache; a pinned commit is taken as it is; datasets are found too
    monkeypatch.setenv(artifacts.HUB_REVISIONS_ENV, json.dumps({"org/model": "v1.0", "org/data": SHA_B}))
    assert artifacts.fingerprint("org/model") == f"org/model@{SHA_TAG}"
    assert artifacts.fingerprint("org/data") == f"org/data@{SHA_B}"
    monkeypatch.setenv(artifacts.HUB_REVISIONS_ENV, json.dumps({"org/model": "v2.0"}))
    assert artifacts.fingerprint("org/model") == "org/model@v2.0"  # unresolvable tag: keyed by the tag
    _fake_cache(cache, "dataset", "org/set", {"main": SHA_A})
    assert artifacts.fingerprint("org/set") == f"org/set@{SHA_A}"
    assert artifacts.fingerprint(tmp_path / "missing" / "folder") == str(tmp_path / "missing" / "folder")


def test_online_the_hubs_answer_wins_over_an_old_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", artifacts.HUB_REVISIONS_ENV):
        monkeypatch.delenv(name, raising=False)
    _fake_cache(tmp_path / "hub", "model", "org/model", {"main": SHA_A})
    asked = []
    monkeypatch.setattr(artifacts, "_ask_hub", lambda *args: asked.append(args) or SHA_B)
    assert artifacts.fingerprint("org/model") == f"org/model@{SHA_B}" and asked == [("org/model", "main", None)]
    monkeypatch.setattr(artifacts, "_ask_hub", lambda *args: None)  # the hub unreachable: the cache decides
    assert artifacts.fingerprint("org/model") == f"org/model@{SHA_A}"


def test_a_profile_pins_revisions_for_every_kernel(tmp_path, monkeypatch):
    import yaml

    from kit.core.profile import apply_runtime, load_profile

    monkeypatch.delenv(artifacts.HUB_REVISIONS_ENV, raising=False)
    base = {"name": "pinned", "seed": 0, "offline": False, "models": {"teacher": "Qwen/Qwen2-VL-7B-Instruct"},
            "datasets": {"mathv360k": MATHV}}
    path = tmp_path / "pinned.yaml"
    path.write_text(yaml.safe_dump({**base, "revisions": {MATHV: "f938a04"}}))
    profile = load_profile(path)
    assert apply_runtime(profile) == {artifacts.HUB_REVISIONS_ENV: json.dumps({MATHV: "f938a04"})}
    assert artifacts.pinned_revision(MATHV) == "f938a04" and artifacts.pinned_revision("other/id") is None
    path.write_text(yaml.safe_dump(base))
    apply_runtime(load_profile(path))  # a profile without pins clears the last one's
    assert artifacts.pinned_revision(MATHV) is None
    path.write_text(yaml.safe_dump({**base, "revisions": {MATHV: 1234567}}))
    with pytest.raises(KitError, match=r"revisions.Zhiqiang007/MathV360K must map a hub id .* quoted"):
        load_profile(path)


def test_the_tiny_profile_pins_nothing_and_resolves_without_the_network(monkeypatch, tmp_path):
    from kit.core.profile import load_profile, resolve_path

    tiny = load_profile("tiny")
    assert tiny.get("revisions", {}) == {}
    monkeypatch.setattr(artifacts, "_ask_hub", lambda *args: pytest.fail("the tiny profile asked the hub"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    for source in (*tiny.get("models").values(), *tiny.get("datasets").values()):
        # every tiny source is local (built or not), so its fingerprint is a content hash, never a hub lookup
        assert isinstance(resolve_path(source), Path), source
    assert artifacts.fingerprint("data/not-built-yet") == "data/not-built-yet"
