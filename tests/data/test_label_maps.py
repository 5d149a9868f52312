"""Shipped Kinetics-400 / Something-Something V2 / Jester class lists and flip maps."""

import os

from tsm_keras.data import DataConfig, load_label_map, resolve_flip_label_map
from tsm_keras.data.annotations import LABEL_MAP_DIR


def test_kinetics400_list():
    names = load_label_map("kinetics400")
    assert len(names) == 400 and len(set(names)) == 400
    assert names == sorted(names)  # the official order is alphabetical
    assert names[:3] == ["abseiling", "air drumming", "answering questions"]
    assert names[-1] == "zumba"
    assert "petting animal (not cat)" in names and "massaging person's head" in names


def test_sthv2_list_and_its_left_right_pairs():
    names = load_label_map("sthv2")
    assert len(names) == 174 and len(set(names)) == 174
    assert names[0] == "Approaching something with your camera"
    for left, right in ((86, 87), (93, 94), (166, 167)):
        assert "left" in names[left] and "right" in names[right]
        assert names[left].replace("left", "X").replace("right", "left").replace("X", "right") == names[right]


def test_jester_list():
    names = load_label_map("jester")
    assert len(names) == 27 and len(set(names)) == 27
    assert names == sorted(names)  # the authors' online model was trained on the sorted classes
    assert names[:3] == ["Doing other things", "Drumming Fingers", "No gesture"]
    assert names[16:18] == ["Swiping Left", "Swiping Right"] and names[-1] == "Zooming Out With Two Fingers"


def test_label_map_files_ship_in_the_package():
    assert sorted(os.listdir(LABEL_MAP_DIR)) == ["jester.txt", "kinetics400.txt", "sthv2.txt"]


def test_auto_flip_map_recognises_sthv2_and_synthetic(tmp_path):
    sthv2 = DataConfig(source="video", train_list="x.txt", label_map="sthv2")
    assert resolve_flip_label_map(sthv2) == {86: 87, 87: 86, 93: 94, 94: 93, 166: 167, 167: 166}
    # The same class list in a user's own file is recognised by content.
    copy = tmp_path / "labels.txt"
    copy.write_text("\n".join(load_label_map("sthv2")) + "\n")
    assert resolve_flip_label_map(sthv2.replace(label_map=str(copy))) == resolve_flip_label_map(sthv2)
    assert resolve_flip_label_map(sthv2.replace(label_map="kinetics400")) == {}
    assert resolve_flip_label_map(sthv2.replace(flip_label_map=None)) == {}
    assert resolve_flip_label_map(DataConfig(source="synthetic")) == {0: 1, 1: 0, 6: 7, 7: 6}
    assert resolve_flip_label_map(DataConfig(source="synthetic", synthetic={"num_classes": 4})) == {0: 1, 1: 0}
