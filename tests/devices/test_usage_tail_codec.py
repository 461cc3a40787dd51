"""The usage tail's text cache (devices.ingest._encoded_tail / _decoded_tail): whatever a batch does to a
device's window (append in order, fold, merge a late item, start afresh), the text written to the row must
decode to exactly the tail, and reading back that text must give the tail without decoding it again."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from devices import ingest

raw_items = st.lists(st.integers(0, 2**62), max_size=5).map(lambda ts: [[t, 0, "", t / 7] for t in ts])
operations = st.lists(st.tuples(st.sampled_from(["append", "fold", "replace", "same", "foreign"]), raw_items),
                      max_size=30)


@settings(max_examples=200, deadline=None)
@given(operations)
def test_the_written_text_always_decodes_to_the_tail(steps):
    pk = -1  # a row id no real row has
    ingest._TAILS.pop(pk, None)
    window: list = []
    try:
        for operation, new in steps:
            if operation == "append":
                window = window + new  # as a batch in order does: the same item objects, then more
            elif operation == "fold":
                window = window[len(window) // 2:] + new
            elif operation == "replace":
                window = [list(item) for item in window] + new  # equal items, but new objects
            elif operation == "foreign":  # another worker wrote the row: its text is read back
                text = orjson.dumps({"items": window + new, "cur": None}).decode()
                tail = ingest._decoded_tail(pk, text)
                assert tail == {"items": window + new, "cur": None}
                window = tail["items"]
                continue
            tail = {"base": None, "base_key": None, "items": window, "cur": {"n": len(window)}}
            text = ingest._encoded_tail(pk, tail)
            assert orjson.loads(text) == tail
            assert ingest._decoded_tail(pk, text) is tail  # read back: no decoding
    finally:
        ingest._TAILS.pop(pk, None)


def test_a_text_this_worker_did_not_write_is_decoded():
    pk = -2
    try:
        mine = ingest._encoded_tail(pk, {"items": [[1, 0]], "cur": None})
        theirs = mine.replace("[[1,0]]", "[[1,0],[2,0]]")
        assert theirs != mine
        assert ingest._decoded_tail(pk, theirs) == {"items": [[1, 0], [2, 0]], "cur": None}
    finally:
        ingest._TAILS.pop(pk, None)
