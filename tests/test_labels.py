import warnings

import pytest

from ferkit.errors import DataError
from ferkit.labels import FER7, filter_to_labels, normalize_label


def test_fer7_order_is_fer2013_index_order():
    assert FER7 == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


@pytest.mark.parametrize(
    "name,expected",
    [("anger", "angry"), ("Happiness", "happy"), ("sadness", "sad"), ("fearful", "fear"),
     ("surprised", "surprise"), ("Disgusted", "disgust"), ("NEUTRAL", "neutral"),
     ("contempt", "contempt"), ("calm", "calm"), ("3_happy", "happy"), ("faces", None), ("xyz", None)],
)
def test_synonyms(name, expected):
    assert normalize_label(name) == expected


def test_filter_warns_naming_dropped_classes():
    with pytest.warns(UserWarning, match=r"contempt \(2\)"):
        keep = filter_to_labels(["angry", "contempt", "contempt", "happy"], FER7)
    assert keep == [True, False, False, True]


def test_filter_strict_raises():
    with pytest.raises(DataError, match="contempt"):
        filter_to_labels(["contempt"], FER7, strict=True)


def test_filter_silent_when_all_known():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert filter_to_labels(["angry"], FER7) == [True]
