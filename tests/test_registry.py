from __future__ import annotations

import pytest

from lookalike.registry import Registry


def test_register_create_and_list() -> None:
    shapes: Registry[object] = Registry("shape")

    @shapes.register("Square")
    def square(side: float) -> float:
        return side * side

    assert shapes.create("square", 3.0) == 9.0
    assert shapes.names() == ["square"] and "SQUARE" in shapes and len(shapes) == 1


def test_unknown_name_lists_valid_names() -> None:
    shapes: Registry[object] = Registry("shape")
    shapes.register("circle")(lambda: None)
    shapes.register("square")(lambda: None)
    with pytest.raises(ValueError, match=r"unknown shape 'hexagon'; valid names: circle, square"):
        shapes.get("hexagon")


def test_double_registration_is_refused() -> None:
    shapes: Registry[object] = Registry("shape")
    shapes.register("circle")(lambda: 1)
    with pytest.raises(ValueError, match="already registered"):
        shapes.register("circle")(lambda: 2)


def test_arguments_an_entry_does_not_take_are_a_value_error_listing_its_own() -> None:
    shapes: Registry[object] = Registry("shape")

    @shapes.register("square")
    def square(side: float, rounded: bool = False) -> float:
        return side * side

    with pytest.raises(
        ValueError,
        match=r"shape 'square' with options \{'colour': 'red'\}: got an unexpected keyword "
        r"argument 'colour'; it takes side, rounded",
    ):
        shapes.create("square", 2.0, colour="red")
    with pytest.raises(ValueError, match="missing a required argument: 'side'"):
        shapes.create("square")
