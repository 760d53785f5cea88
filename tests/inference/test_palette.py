"""Class colours: one palette for every output."""

from __future__ import annotations

from inference.palette import CYCLE, NAMED, class_colours, colour_table


def test_named_classes_keep_their_colours_and_others_are_distinct() -> None:
    classes = ["Forest", "SeaLake", "Glacier", "Dune", "Forest2"]
    colours = class_colours(classes)
    assert colours[:2] == [NAMED["Forest"], NAMED["SeaLake"]]
    assert len(set(colours)) == len(colours)
    assert class_colours(classes) == colours  # stable


def test_many_classes_all_get_a_colour() -> None:
    classes = [f"c{k}" for k in range(3 * len(CYCLE))]
    colours = class_colours(classes)
    assert len(colours) == len(classes) and len(set(colours)) == len(classes)


def test_colour_table_is_gdal_shaped() -> None:
    table = colour_table(["Forest", "x"])
    assert table == {0: (*NAMED["Forest"], 255), 1: (*CYCLE[0], 255)}
