import pytest

from pcseg.utils.registry import Registry, UnknownNameError, build_from_config


def _make() -> Registry:
    reg = Registry("widget")

    @reg.register
    def Knob(size: int, colour: str = "red"):
        return ("knob", size, colour)

    @reg.register
    class Lever:
        def __init__(self, length: float) -> None:
            self.length = length

    return reg


def test_register_uses_the_callables_name_and_builds():
    reg = _make()
    assert list(reg) == ["Knob", "Lever"] and len(reg) == 2 and "Knob" in reg
    assert reg.build({"name": "Knob", "size": 3}) == ("knob", 3, "red")
    assert reg.build({"name": "Lever", "length": 2.0}).length == 2.0
    assert reg["Knob"](1, "blue") == ("knob", 1, "blue")


def test_unknown_name_lists_known_names():
    reg = _make()
    with pytest.raises(UnknownNameError, match=r"widget 'Knobb' unknown; known: Knob, Lever"):
        reg.build({"name": "Knobb", "size": 1})
    with pytest.raises(KeyError):
        reg["nope"]
    assert "nope" not in reg


def test_unknown_and_missing_keys_are_named():
    reg = _make()
    with pytest.raises(TypeError, match=r"widget 'Knob': unknown key\(s\) sise; accepted: size, colour"):
        reg.build({"name": "Knob", "sise": 1})
    with pytest.raises(TypeError, match=r"missing required key\(s\) size"):
        reg.build({"name": "Knob"})
    with pytest.raises(ValueError, match="'name' key"):
        reg.build({"size": 1})


def test_duplicate_name_raises_but_reregistering_same_object_is_fine():
    reg = _make()
    knob = reg["Knob"]
    assert reg.register(knob) is knob

    def Knob():  # noqa: N802 - a second object named like the first
        return None

    with pytest.raises(ValueError, match="'Knob' registered twice"):
        reg.register(Knob)


def test_build_from_config_on_a_plain_table():
    table = {"pair": lambda a, b=0: (a, b)}
    assert build_from_config("thing", table, {"name": "pair", "a": 1}) == (1, 0)
    with pytest.raises(UnknownNameError, match="thing 'trio' unknown; known: pair"):
        build_from_config("thing", table, {"name": "trio"})
