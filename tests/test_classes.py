"""Class lists: built-in datasets, user class files, and the class list a Store keeps per dataset."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from promptgen.classes import ClassList, list_datasets, load_class_file, load_dataset
from promptgen.errors import PromptgenError
from promptgen.store import Store

EXPECTED_COUNTS = {
    "cifar10": 10, "cifar100": 100, "imagenet": 1000, "food101": 101, "pets": 37, "dtd": 47,
    "eurosat": 10, "cub": 200, "flowers102": 102, "fashion-mnist": 10,
}


def _open_clip_imagenet_classnames() -> list[str]:
    """open_clip's IMAGENET_CLASSNAMES, read from its module file without importing open_clip
    (whose package import pulls in torch and takes seconds)."""
    spec = importlib.util.find_spec("open_clip")
    assert spec is not None and spec.submodule_search_locations, "open_clip is not installed"
    path = Path(list(spec.submodule_search_locations)[0]) / "zero_shot_metadata.py"
    module_spec = importlib.util.spec_from_file_location("_open_clip_zero_shot_metadata", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return list(module.IMAGENET_CLASSNAMES)


# -- built-in datasets --------------------------------------------------------------------------

@pytest.mark.parametrize("name,count", sorted(EXPECTED_COUNTS.items()))
def test_builtin_dataset_is_listed_with_its_class_count(name: str, count: int) -> None:
    assert name in list_datasets()
    classes = load_dataset(name)
    assert len(classes) == count
    assert len(classes.names) == count
    assert len(set(classes.names)) == count
    assert classes.dataset == name


def test_cifar10_names_in_label_order() -> None:
    assert load_dataset("cifar10").names == (
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def test_unknown_builtin_dataset_error_lists_datasets() -> None:
    with pytest.raises(PromptgenError) as info:
        load_dataset("no-such-dataset")
    assert "no-such-dataset" in str(info.value)
    assert "cifar10" in str(info.value) and "imagenet" in str(info.value)


def test_datasets_cli_lists_builtin_datasets(cli) -> None:
    result = cli("datasets")
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    for name, count in EXPECTED_COUNTS.items():
        assert name in lines, f"{name} missing from `promptgen datasets`"
        assert re.search(rf"\b{count}\b", lines[name]), lines[name]


def test_datasets_cli_json(cli) -> None:
    result = cli("datasets", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    by_name = {row["dataset"]: row for row in rows}
    for name, count in EXPECTED_COUNTS.items():
        assert by_name[name]["classes"] == count
        assert by_name[name]["builtin"] is True


def test_datasets_cli_includes_stored_user_list(cli, root: Path, tmp_path: Path) -> None:
    class_file = tmp_path / "mine.txt"
    class_file.write_text("alpha\nbeta\ngamma\n", encoding="utf-8")
    store = Store(root)
    store.remember_classes(store.classes("mine", class_file))
    rows = json.loads(cli("datasets", "--json").stdout)
    mine = [row for row in rows if row["dataset"] == "mine"]
    assert len(mine) == 1
    assert mine[0]["classes"] == 3 and mine[0]["builtin"] is False


# -- imagenet -----------------------------------------------------------------------------------

def test_imagenet_names_match_open_clip_except_two_duplicates() -> None:
    reference = _open_clip_imagenet_classnames()
    ours = load_dataset("imagenet").names
    assert len(reference) == len(ours) == 1000
    differences = {i: (ref, mine) for i, (ref, mine) in enumerate(zip(reference, ours)) if ref != mine}
    assert differences == {744: ("missile", "projectile"), 836: ("sunglasses", "sunglass")}
    # the reference repeats those two names; ours keeps the other occurrence
    assert reference.count("missile") == 2 and reference.count("sunglasses") == 2
    assert ours[657] == "missile" and ours[837] == "sunglasses"


def test_imagenet_ids_are_wordnet_ids() -> None:
    imagenet = load_dataset("imagenet")
    assert imagenet.ids is not None
    assert len(imagenet.ids) == 1000
    assert len(set(imagenet.ids)) == 1000
    assert all(re.fullmatch(r"n\d{8}", wnid) for wnid in imagenet.ids)
    assert imagenet.ids[0] == "n01440764"
    assert imagenet.names[0] == "tench"
    assert list(imagenet.ids) == sorted(imagenet.ids)  # ImageNet label order is sorted wnid order


# -- user class files ---------------------------------------------------------------------------

def test_text_file_one_name_per_line_ignores_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "birds.txt"
    path.write_text("robin\n\n  sparrow  \n\t\n   \nblue jay\n\n", encoding="utf-8")
    classes = load_class_file(path)
    assert classes.names == ("robin", "sparrow", "blue jay")
    assert classes.ids is None
    assert classes.dataset == "birds"


def test_text_file_dataset_name_overrides_stem(tmp_path: Path) -> None:
    path = tmp_path / "birds.txt"
    path.write_text("robin\nsparrow\n", encoding="utf-8")
    assert load_class_file(path, "mybirds").dataset == "mybirds"


def test_text_file_with_tab_ids(tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    path.write_text("n01\trobin\nn02\tsparrow\n\nn03\tblue jay\n", encoding="utf-8")
    classes = load_class_file(path)
    assert classes.names == ("robin", "sparrow", "blue jay")
    assert classes.ids == ("n01", "n02", "n03")


def test_json_list_of_strings(tmp_path: Path) -> None:
    path = tmp_path / "names.json"
    path.write_text(json.dumps(["robin", "sparrow", "blue jay"]), encoding="utf-8")
    classes = load_class_file(path)
    assert classes.names == ("robin", "sparrow", "blue jay")
    assert classes.ids is None


def test_json_list_of_objects_with_ids(tmp_path: Path) -> None:
    path = tmp_path / "names.json"
    path.write_text(json.dumps([{"name": "robin", "id": "n01"}, {"name": "sparrow", "id": 2}]), encoding="utf-8")
    classes = load_class_file(path)
    assert classes.names == ("robin", "sparrow")
    assert classes.ids == ("n01", "2")


def test_duplicate_names_error_names_the_duplicate_and_indices(tmp_path: Path) -> None:
    path = tmp_path / "dups.txt"
    path.write_text("robin\nsparrow\nrobin\nwren\n", encoding="utf-8")
    with pytest.raises(PromptgenError) as info:
        load_class_file(path)
    message = str(info.value)
    assert "robin" in message
    assert re.search(r"0\D+2", message), message
    assert "sparrow" not in message and "wren" not in message


def test_duplicate_names_in_json_error(tmp_path: Path) -> None:
    path = tmp_path / "dups.json"
    path.write_text(json.dumps(["a", "b", "c", "b"]), encoding="utf-8")
    with pytest.raises(PromptgenError) as info:
        load_class_file(path)
    assert "'b'" in str(info.value)
    assert re.search(r"1\D+3", str(info.value))


@pytest.mark.parametrize("content", ["", "\n\n   \n", "[]"])
def test_empty_class_file_is_an_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PromptgenError, match="empty"):
        load_class_file(path)


@pytest.mark.parametrize("name", [" robin", "robin ", " robin "])
def test_json_name_with_surrounding_spaces_is_an_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / "spaces.json"
    path.write_text(json.dumps(["sparrow", name]), encoding="utf-8")
    with pytest.raises(PromptgenError) as info:
        load_class_file(path)
    assert "spaces" in str(info.value)


def test_mixed_ids_in_text_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "mixed.txt"
    path.write_text("n01\trobin\nsparrow\nn03\twren\n", encoding="utf-8")
    with pytest.raises(PromptgenError) as info:
        load_class_file(path)
    assert "2 of 3" in str(info.value)


def test_mixed_ids_in_json_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps([{"name": "robin", "id": "n01"}, {"name": "sparrow"}, "wren"]), encoding="utf-8")
    with pytest.raises(PromptgenError):
        load_class_file(path)


def test_missing_class_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PromptgenError, match="does not exist"):
        load_class_file(tmp_path / "nope.txt")


def test_bad_json_entry_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(["robin", 3]), encoding="utf-8")
    with pytest.raises(PromptgenError, match="entry 1"):
        load_class_file(path)


# -- ClassList.hash -----------------------------------------------------------------------------

def test_hash_depends_on_order_and_ids() -> None:
    a = ClassList("d", ("cat", "dog"))
    b = ClassList("d", ("dog", "cat"))
    assert a.hash != b.hash
    assert a.hash == ClassList("other", ("cat", "dog"), source="elsewhere").hash
    assert a.hash != ClassList("d", ("cat", "dog"), ids=("1", "2")).hash
    assert a.hash.startswith("sha256:") and len(a.hash) == len("sha256:") + 64


# -- Store.classes ------------------------------------------------------------------------------

def test_store_classes_stores_user_list_and_reuses_it(root: Path, tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("n1\talpha\nn2\tbeta\nn3\tgamma\n", encoding="utf-8")
    store = Store(root)
    first = store.classes("mine", path)
    stored = root / "prompts" / "mine" / "classes.json"
    assert not stored.exists(), "reading a list must not fix it: only a written version does"
    store.remember_classes(first)
    assert stored.is_file()
    data = json.loads(stored.read_text(encoding="utf-8"))
    assert data["classes"] == ["alpha", "beta", "gamma"]
    assert data["ids"] == ["n1", "n2", "n3"]
    path.unlink()  # the stored copy is what later calls use
    second = Store(root).classes("mine")
    assert second.names == first.names == ("alpha", "beta", "gamma")
    assert second.ids == ("n1", "n2", "n3")
    assert second.hash == first.hash


def test_store_classes_same_file_again_is_accepted(root: Path, tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("alpha\nbeta\n", encoding="utf-8")
    store = Store(root)
    assert store.classes("mine", path).names == store.classes("mine", path).names == ("alpha", "beta")


def test_store_classes_rejects_a_different_list(root: Path, tmp_path: Path) -> None:
    first = tmp_path / "first.txt"
    first.write_text("alpha\nbeta\ngamma\n", encoding="utf-8")
    other = tmp_path / "other.txt"
    other.write_text("alpha\nbeta\ndelta\n", encoding="utf-8")
    store = Store(root)
    store.remember_classes(store.classes("mine", first))
    with pytest.raises(PromptgenError) as info:
        store.classes("mine", other)
    message = str(info.value)
    assert "missing" in message and "'gamma'" in message
    assert "unknown" in message and "'delta'" in message
    # the stored list is unchanged
    assert store.classes("mine").names == ("alpha", "beta", "gamma")


def test_store_classes_rejects_reordered_list(root: Path, tmp_path: Path) -> None:
    first = tmp_path / "first.txt"
    first.write_text("alpha\nbeta\n", encoding="utf-8")
    swapped = tmp_path / "swapped.txt"
    swapped.write_text("beta\nalpha\n", encoding="utf-8")
    store = Store(root)
    store.remember_classes(store.classes("mine", first))
    with pytest.raises(PromptgenError, match="another order"):
        store.classes("mine", swapped)


def test_store_classes_builtin_dataset_rejects_other_file(root: Path, tmp_path: Path) -> None:
    path = tmp_path / "cifar.txt"
    path.write_text("\n".join(load_dataset("cifar10").names[:9]) + "\n", encoding="utf-8")
    with pytest.raises(PromptgenError) as info:
        Store(root).classes("cifar10", path)
    assert "'truck'" in str(info.value)
    assert not (root / "prompts" / "cifar10" / "classes.json").exists()


def test_store_classes_builtin_dataset_without_file(root: Path) -> None:
    assert Store(root).classes("cifar10").names == load_dataset("cifar10").names


def test_store_classes_unknown_dataset_without_file(root: Path) -> None:
    with pytest.raises(PromptgenError) as info:
        Store(root).classes("mystery")
    message = str(info.value)
    assert "mystery" in message
    for name in EXPECTED_COUNTS:
        assert name in message


def test_a_dry_run_or_failed_command_does_not_fix_the_class_list(cli, root: Path, tmp_path: Path) -> None:
    typo = tmp_path / "mine.txt"
    typo.write_text("cat\ndgo\n", encoding="utf-8")
    assert cli("describe", "mine", "--classes", str(typo), "--model", "openai/x", "--api-base",
               "http://127.0.0.1:9/v1", "--dry-run").exit_code == 0
    fixed = tmp_path / "fixed.txt"
    fixed.write_text("cat\ndog\n", encoding="utf-8")
    assert cli("describe", "mine", "--classes", str(fixed), "--source", "wordnet").exit_code == 0
    assert Store(root).classes("mine").names == ("cat", "dog")
    result = cli("describe", "mine", "--classes", str(typo), "--source", "wordnet")
    assert result.exit_code == 2 and "'dgo'" in result.stderr
