"""Tests of the preference store: schema, pairs, export, validated all-or-nothing import, stats, agreement."""

import json
import math
import sqlite3

import pytest

from rlhf_lessons.store import LabelFileError, PreferenceStore, ranking_pairs


@pytest.fixture
def store(tmp_path):
    return PreferenceStore(tmp_path / "preferences.sqlite")


def comparison(store, prompt, a, b, choice, rater="ann", **kw):
    return store.add("comparison", prompt, [a, b], {"choice": choice}, rater=rater, **kw)


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def pair_line(prompt="p", chosen="good", rejected="bad", **extra):
    return json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected, **extra})


def snapshot(store):
    return [(row["id"], row["hash"]) for row in store.labels()]


# ----- ranking_pairs -----

def test_ranking_pairs_by_hand():
    assert ranking_pairs([2, 0, 1]) == [(2, 0), (2, 1), (0, 1)]
    assert ranking_pairs([1, 0]) == [(1, 0)]


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_ranking_pairs_count_and_winners(k):
    order = list(reversed(range(k)))
    pairs = ranking_pairs(order)
    assert len(pairs) == math.comb(k, 2)
    assert len(set(pairs)) == len(pairs)
    assert all(order.index(win) < order.index(lose) for win, lose in pairs)


# ----- adding labels -----

def test_add_roundtrip_and_schema(store):
    label_id = store.add("ranking", "req", ["x", "y", "z"], {"order": [1, 2, 0]}, rater="bob",
                         source="simulated", population="cautious", checkpoint="sft", meta={"request_id": "r1"})
    assert isinstance(label_id, int)
    [row] = store.labels()
    assert row["kind"] == "ranking" and row["request"] == "req" and row["replies"] == ["x", "y", "z"]
    assert row["label"] == {"order": [1, 2, 0]} and row["rater"] == "bob" and row["source"] == "simulated"
    assert row["population"] == "cautious" and row["checkpoint"] == "sft" and row["meta"] == {"request_id": "r1"}
    assert row["created"].endswith("+00:00") and len(row["hash"]) == 64
    # stored as text columns: replies and label are JSON
    with sqlite3.connect(store.path) as db:
        replies, label = db.execute("SELECT replies, label FROM labels").fetchone()
    assert json.loads(replies) == ["x", "y", "z"] and json.loads(label) == {"order": [1, 2, 0]}


def test_store_survives_reopening(store):
    comparison(store, "p", "a", "b", "A")
    assert len(PreferenceStore(store.path)) == 1


def test_duplicates_stored_once(store):
    assert comparison(store, "p", "a", "b", "A") is not None
    assert comparison(store, "p", "a", "b", "A") is None
    assert comparison(store, "p", "a", "b", "A", rater="cat") is not None  # another rater is another label
    assert comparison(store, "p", "a", "b", "B") is not None
    assert len(store) == 3


@pytest.mark.parametrize("kind,replies,label", [
    ("comparison", ["a", "b"], {"choice": "C"}),
    ("comparison", ["a", "b", "c"], {"choice": "A"}),
    ("ranking", ["a", "b", "c"], {"order": [0, 1]}),
    ("ranking", ["a", "b"], {"order": [0, 0]}),
    ("ranking", ["a"], {"order": [0]}),
    ("rating", ["a"], {"score": 6, "scale": "5"}),
    ("rating", ["a"], {"score": 2, "scale": "thumbs"}),
    ("rating", ["a"], {"score": 3.0, "scale": "5"}),
    ("rating", ["a", "b"], {"score": 3, "scale": "5"}),
    ("vote", ["a", "b"], {"choice": "A"}),
])
def test_invalid_labels_rejected(store, kind, replies, label):
    with pytest.raises(ValueError):
        store.add(kind, "p", replies, label, rater="ann")
    assert len(store) == 0


def test_bad_rater_and_source_rejected(store):
    with pytest.raises(ValueError, match="rater"):
        comparison(store, "p", "a", "b", "A", rater="  ")
    with pytest.raises(ValueError, match="source"):
        comparison(store, "p", "a", "b", "A", source="robot")


def test_add_many_one_transaction(store):
    rows = [dict(kind="comparison", request=f"p{i}", replies=["a", "b"], label={"choice": "A"}, rater="sim",
                 source="simulated", population="balanced") for i in range(100)]
    assert store.add_many(rows) == 100
    assert store.add_many(rows[:10]) == 0
    bad = rows + [dict(rows[0], label={"choice": "maybe"})]
    with pytest.raises(ValueError):
        store.add_many(bad)
    assert len(store) == 100


def test_undo_last_deletes_newest_of_that_rater_only(store):
    comparison(store, "p1", "a", "b", "A", rater="ann")
    comparison(store, "p2", "a", "b", "B", rater="ann")
    comparison(store, "p3", "a", "b", "A", rater="bob")
    undone = store.undo_last("ann")
    assert undone["request"] == "p2"
    assert [row["request"] for row in store.labels()] == ["p1", "p3"]
    assert store.undo_last("nobody") is None


def test_delete_by_id(store):
    label_id = comparison(store, "p", "a", "b", "A")
    assert store.delete(label_id) is True
    assert store.delete(label_id) is False
    assert len(store) == 0


# ----- pairs -----

def test_comparison_pairs(store):
    comparison(store, "p1", "a", "b", "A", checkpoint="sft")
    comparison(store, "p2", "c", "d", "B")
    comparison(store, "p3", "e", "f", "tie")
    comparison(store, "p4", "g", "h", "skip")
    pairs = store.pairs()
    assert [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs] == [("p1", "a", "b"), ("p2", "d", "c")]
    assert pairs[0] == {"prompt": "p1", "chosen": "a", "rejected": "b", "source": "human", "rater": "ann",
                        "population": None, "checkpoint": "sft"}


def test_ranking_expands_to_all_pairs(store):
    store.add("ranking", "p", ["r0", "r1", "r2", "r3"], {"order": [2, 0, 3, 1]}, rater="ann")
    got = {(p["chosen"], p["rejected"]) for p in store.pairs()}
    assert got == {("r2", "r0"), ("r2", "r3"), ("r2", "r1"), ("r0", "r3"), ("r0", "r1"), ("r3", "r1")}


def test_ratings_become_pairs(store):
    for reply, score in [("great", 5), ("ok", 3), ("also ok", 3), ("bad", 1)]:
        store.add("rating", "p", [reply], {"score": score, "scale": "5"}, rater="ann", checkpoint="sft")
    store.add("rating", "p", ["other rater"], {"score": 4, "scale": "5"}, rater="bob")
    store.add("rating", "p", ["thumb"], {"score": 1, "scale": "thumbs"}, rater="ann")
    store.add("rating", "q", ["another request"], {"score": 2, "scale": "5"}, rater="ann")
    got = {(p["chosen"], p["rejected"]) for p in store.pairs()}
    # equal scores (ok, also ok) give no pair; other raters, scales and requests are not mixed in
    assert got == {("great", "ok"), ("great", "also ok"), ("great", "bad"), ("ok", "bad"), ("also ok", "bad")}
    assert all(p["checkpoint"] == "sft" and p["rater"] == "ann" for p in store.pairs())


def test_thumbs_ratings_pair_up_with_down(store):
    store.add("rating", "p", ["yes"], {"score": 1, "scale": "thumbs"}, rater="ann")
    store.add("rating", "p", ["no"], {"score": 0, "scale": "thumbs"}, rater="ann")
    assert [(p["chosen"], p["rejected"]) for p in store.pairs()] == [("yes", "no")]


def test_pairs_filtered_by_source_and_population(store):
    comparison(store, "p", "a", "b", "A", rater="ann")
    comparison(store, "p", "a", "b", "B", rater="sim1", source="simulated", population="cautious")
    comparison(store, "p", "a", "b", "A", rater="sim2", source="simulated", population="verbose")
    assert [p["rater"] for p in store.pairs(source="human")] == ["ann"]
    assert [p["rater"] for p in store.pairs(source="simulated")] == ["sim1", "sim2"]
    assert [p["rater"] for p in store.pairs(population="cautious")] == ["sim1"]
    assert [p["chosen"] for p in store.pairs(rater="sim1")] == ["b"]


# ----- stats and agreement -----

def test_stats(store):
    comparison(store, "p", "a", "b", "A", rater="ann")
    store.add("ranking", "p", ["a", "b", "c"], {"order": [0, 1, 2]}, rater="sim", source="simulated")
    assert store.stats() == {"labels": 2, "pairs": 4, "by_kind": {"comparison": 1, "ranking": 1},
                             "by_source": {"human": 1, "simulated": 1}, "by_rater": {"ann": 1, "sim": 1}}


def test_agreement_on_shared_pairs(store):
    comparison(store, "p1", "a", "b", "A", rater="ann")
    comparison(store, "p2", "c", "d", "A", rater="ann")
    comparison(store, "p3", "e", "f", "A", rater="ann")  # bob never saw p3
    comparison(store, "p1", "b", "a", "B", rater="bob")  # same pair, shown the other way round: agrees
    comparison(store, "p2", "c", "d", "B", rater="bob")  # disagrees
    store.add("ranking", "p3", ["e", "f", "g"], {"order": [2, 0, 1]}, rater="gold")
    assert store.agreement("ann", "bob") == {"shared": 2, "agreed": 1, "agreement": 0.5}
    assert store.agreement("ann", "gold") == {"shared": 1, "agreed": 1, "agreement": 1.0}
    assert store.agreement("bob", "gold") == {"shared": 0, "agreed": 0, "agreement": None}


# ----- export and import -----

def test_export_jsonl(store, tmp_path):
    comparison(store, "p", "a <b>", "b", "A", checkpoint="sft")
    store.add("ranking", "q", ["x", "y", "z"], {"order": [2, 1, 0]}, rater="sim", source="simulated",
              population="terse")
    out = tmp_path / "pairs.jsonl"
    assert store.export_jsonl(out) == 4
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert lines == store.pairs()
    assert set(lines[0]) == {"prompt", "chosen", "rejected", "source", "rater", "population", "checkpoint"}
    assert store.export_jsonl(tmp_path / "sim.jsonl", source="simulated") == 3


def test_import_merges_learners(store, tmp_path):
    ann = PreferenceStore(tmp_path / "ann.sqlite")
    ann.add("ranking", "p", ["x", "y", "z"], {"order": [0, 1, 2]}, rater="ann", checkpoint="sft")
    bob = PreferenceStore(tmp_path / "bob.sqlite")
    comparison(bob, "p", "x", "y", "B", rater="bob")
    ann.export_jsonl(tmp_path / "ann.jsonl")
    bob.export_jsonl(tmp_path / "bob.jsonl")

    counts = store.import_jsonl([tmp_path / "ann.jsonl", tmp_path / "bob.jsonl"])
    assert counts["files"] == 2 and counts["lines"] == 4 and counts["imported"] == 4 and counts["duplicates"] == 0
    assert sorted(map(str, counts["by_file"].values())) == ["1", "3"]
    pairs = sorted(store.pairs(), key=lambda p: (p["rater"], p["chosen"], p["rejected"]))
    expected = sorted(ann.pairs() + bob.pairs(), key=lambda p: (p["rater"], p["chosen"], p["rejected"]))
    assert pairs == expected
    assert store.stats()["by_kind"] == {"comparison": 4}
    assert store.agreement("ann", "bob") == {"shared": 1, "agreed": 0, "agreement": 0.0}

    again = store.import_jsonl(str(tmp_path / "ann.jsonl"))  # a str path works too
    assert again["imported"] == 0 and again["duplicates"] == 3 and len(store) == 4


def test_reimporting_own_export_adds_nothing(store, tmp_path):
    store.add("ranking", "p", ["x", "y", "z"], {"order": [0, 1, 2]}, rater="ann")
    store.export_jsonl(tmp_path / "mine.jsonl")
    assert store.import_jsonl([tmp_path / "mine.jsonl"])["imported"] == 0
    assert len(store.pairs()) == 3


def test_import_duplicate_lines_once_and_defaults(store, tmp_path):
    path = write_lines(tmp_path / "carol.jsonl", [pair_line(), pair_line(), "", pair_line(chosen="fine"),
                                                  pair_line(source="simulated", rater="sim", population="cautious")])
    counts = store.import_jsonl([path])
    assert counts["lines"] == 4 and counts["imported"] == 3 and counts["duplicates"] == 1
    by_rater = {p["rater"]: p for p in store.pairs()}
    assert by_rater["carol"]["source"] == "human"  # no rater: the file's name; no source: human
    assert by_rater["sim"]["source"] == "simulated" and by_rater["sim"]["population"] == "cautious"


BAD_FILES = [
    # (lines of the file, line number named, field named, words in the message)
    ([pair_line(), '{"prompt": "p", "chosen": "a" "rejected": "b"}'], 2, None, "not valid JSON"),
    ([pair_line(), pair_line(chosen="x"), '{"prompt": "p", "chosen": "a", "rej'], 3, None, "cut off"),
    ([pair_line(), json.dumps({"prompt": "p", "chosen": "a"})], 2, "rejected", "missing"),
    ([json.dumps({"prompt": "p", "chosen": 3, "rejected": "b"})], 1, "chosen", "non-empty string"),
    ([json.dumps({"prompt": "", "chosen": "a", "rejected": "b"})], 1, "prompt", "non-empty string"),
    ([pair_line(chosen="same", rejected="same")], 1, "rejected", "same text"),
    ([pair_line(source="robot")], 1, "source", "must be one of"),
    ([pair_line(rater=7)], 1, "rater", "string"),
    ([pair_line(population=["cautious"])], 1, "population", "string"),
    ([json.dumps(["p", "a", "b"])], 1, None, "JSON object"),
]


@pytest.mark.parametrize("lines,line,field,words", BAD_FILES)
def test_bad_file_rejected_with_file_line_field(store, tmp_path, lines, line, field, words):
    good = write_lines(tmp_path / "good.jsonl", [pair_line(prompt="fine", rater="dan")])
    bad = tmp_path / "bad.jsonl"
    text = "".join(x + "\n" for x in lines)
    bad.write_text(text[:-1] if words == "cut off" else text, encoding="utf-8")  # a cut file has no final newline
    comparison(store, "already", "a", "b", "A")
    before = snapshot(store)

    with pytest.raises(LabelFileError) as error:
        store.import_jsonl([good, bad])  # only the second file is bad

    assert snapshot(store) == before  # nothing of either file imported
    assert (error.value.path, error.value.line, error.value.field) == (str(bad), line, field)
    message = str(error.value)
    assert str(bad) in message and f"line {line}" in message and words in message
    if field:
        assert f"'{field}'" in message
    assert isinstance(error.value, ValueError)


def test_missing_and_non_utf8_files(store, tmp_path):
    with pytest.raises(LabelFileError, match="no such file"):
        store.import_jsonl([tmp_path / "nope.jsonl"])
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(pair_line().encode() + b"\n\xff\xfe\n")
    with pytest.raises(LabelFileError, match="line 2.*UTF-8"):
        store.import_jsonl([binary])
    assert len(store) == 0


def test_default_path_is_the_workspace(tmp_path, monkeypatch):
    pytest.importorskip("rlhf_lessons.workspace", reason="rlhf_lessons.workspace (lead) not written yet")
    monkeypatch.setenv("RLHF_LESSONS_HOME", str(tmp_path / "home"))
    store = PreferenceStore()
    assert store.path == tmp_path / "home" / "preferences.sqlite" and store.path.exists()
