"""The theme= trait every view takes: checked values, constructor keyword, synced state."""
import pytest
import traitlets as t

import mri_widgets as mw
from mri_widgets.widgets.base import THEMES, MRIWidget


def test_theme_default_values_and_keyword():
    w = mw.TokenHeat(["a", "b"], [0.1, 0.2])
    assert w.theme == "auto"
    for v in THEMES:
        w.theme = v
        assert w.get_state()["theme"] == v
    assert mw.TokenHeat(["a"], [1.0], theme="dark").theme == "dark"
    assert "theme" in MRIWidget.class_trait_names(sync=True)
    assert "theme" not in mw.TokenHeat.view_traits()  # a base trait, not view data


@pytest.mark.parametrize("bad", ["blue", "Dark", "", None, 1])
def test_theme_rejects_other_values_with_the_choices(bad):
    with pytest.raises(t.TraitError, match="theme must be one of 'auto', 'light', 'dark'"):
        mw.TokenHeat(["a"], [1.0], theme=bad)
    w = mw.TokenHeat(["a"], [1.0])
    with pytest.raises(t.TraitError, match="theme must be one of"):
        w.theme = bad
    assert w.theme == "auto"


def test_unknown_keywords_still_rejected_and_theme_listed():
    with pytest.raises(TypeError, match=r"unknown keyword argument 'thme'.*theme"):
        mw.TokenHeat(["a"], [1.0], thme="dark")
