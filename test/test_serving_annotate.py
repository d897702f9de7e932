"""The debug view's drawing (core/serving/annotate.py), without ROS."""

from __future__ import annotations

import numpy as np
import pytest

from adaspring_ros.core.serving.annotate import MIN_WIDTH, annotate, decision_lines

LINES = decision_lines("Trouser", 0.971, "r28-w100d2ck100f-w100d2ck100f-w100d2ck100f", 3.24)


def test_the_lines_name_class_score_variant_and_latency():
    assert LINES == ["Trouser  0.97", "variant r28-w100d2ck100f-w100d2ck100f-w100d2ck100f",
                     "end-to-end 3.2 ms"]
    assert decision_lines("Bag", 0.5, "full", float("nan"))[2] == "end-to-end unknown (stamp)"


def test_text_is_drawn_on_a_copy_at_the_top_of_an_rgb_frame():
    frame = np.full((480, 640, 3), 128, np.uint8)
    view = annotate(frame, LINES)
    assert view.shape == (480, 640, 3) and view.dtype == np.uint8
    assert np.all(frame == 128)  # the input is untouched
    coloured = view[..., 0] != view[..., 2]  # the text is yellow on a grey frame
    assert coloured[:100].sum() > 200 and not coloured[200:].any()
    assert np.all(view[200:] == 128)


def test_narrow_and_grey_frames_are_enlarged_to_stay_readable():
    view = annotate(np.zeros((28, 28), np.uint8), LINES)
    assert view.shape == (336, 336, 3) and view.shape[1] >= MIN_WIDTH


@pytest.mark.parametrize("shape", [(4, 4, 4), (0, 10, 3), (10,)])
def test_other_shapes_are_refused(shape):
    with pytest.raises(ValueError, match="pixels"):
        annotate(np.zeros(shape, np.uint8), LINES)
