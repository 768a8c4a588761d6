"""The preference store: every label a learner (or a simulated rater) gives, in one SQLite file.

Why SQLite: it ships with Python, needs no server, and a committed transaction survives a killed kernel.
Every call to `PreferenceStore.add` is one committed transaction, so a click is on disk the moment it is made.

One table holds the three kinds of feedback products collect:

    kind        label (JSON)                                 replies (JSON list)
    comparison  {"choice": "A" | "B" | "tie" | "skip"}       [reply_A, reply_B]
    ranking     {"order": [indices, best first]}             [reply_0, ..., reply_{K-1}]   (K >= 2)
    rating      {"score": int, "scale": "thumbs" | "5"}      [reply]   thumbs: 1 = up, 0 = down; "5": 1..5

plus request (the prompt text), rater (a name), source ("human" | "simulated"), population (the simulated rater
population, or NULL), checkpoint (the model that wrote the replies), meta (JSON, free-form), created (UTC ISO time)
and a unique content hash of (kind, request, replies, label, rater, source, population): the same label from the
same rater is stored once. Give every rater its own name (e.g. "sim:cautious:0"), since identical labels from one
name count once.

How every kind becomes (chosen, rejected) pairs, the data a reward model trains on:

- comparison: "A" gives (A, B), "B" gives (B, A); "tie" and "skip" give no pair (no preference was expressed).
- ranking of K replies: all K choose 2 pairs, the reply higher in the order wins (`ranking_pairs`).
  A ranking of 4 gives 6 pairs, which is why rankings are the cheap way to collect many comparisons.
- ratings: the replies one rater rated for the same request on the same scale are paired; the higher score wins,
  equal scores give no pair. A rating alone says little; it is the difference between two ratings that is data.

Pairs export to JSONL with the fields `prompt`, `chosen`, `rejected` (the format TRL's reward trainer and
Hugging Face `datasets.load_dataset("json", ...)` read) plus source, rater, population and checkpoint.
`import_jsonl` merges such files from many learners: all files are validated first and imported in one transaction,
so a bad file imports nothing, and the error names the file, the line and the field.

What can go wrong is said in one sentence, as one of the course's errors (rlhf_lessons.errors): a label file that
fails validation is a `LabelFileError`; a store that cannot be opened or written (read-only, a folder, not an
SQLite file) is a `WorkspaceError`, and one that another program holds locked is a `StoreBusyError`. Text from a
file (a rater's name, a path) is printed through `terminal_safe`, so escape sequences cannot reach the terminal.
"""

import errno
import functools
import hashlib
import itertools
import json
import os
import sqlite3
import stat
from collections import Counter, defaultdict
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from pathlib import Path

from rlhf_lessons.errors import CourseError, WorkspaceError

KINDS = ("comparison", "ranking", "rating")
SOURCES = ("human", "simulated")
CHOICES = ("A", "B", "tie", "skip")
SCALES = {"thumbs": (0, 1), "5": (1, 2, 3, 4, 5)}
PAIR_FIELDS = ("prompt", "chosen", "rejected", "source", "rater", "population", "checkpoint")
BUSY_TIMEOUT = 30  # seconds a connection waits for another writer's lock before giving up

SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT NOT NULL CHECK (kind IN ('comparison', 'ranking', 'rating')),
    request    TEXT NOT NULL,
    replies    TEXT NOT NULL,              -- JSON list of reply strings
    label      TEXT NOT NULL,              -- JSON, see the module docstring
    rater      TEXT NOT NULL,
    source     TEXT NOT NULL CHECK (source IN ('human', 'simulated')),
    population TEXT,
    checkpoint TEXT,
    meta       TEXT NOT NULL DEFAULT '{}', -- JSON object
    created    TEXT NOT NULL,              -- UTC, ISO 8601
    hash       TEXT NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS labels_rater ON labels (rater);
"""


def terminal_safe(text):
    """`text` with every control or invisible formatting character shown as its escape (ESC as \\x1b, U+202E as
    \\u202e), so a name or path read from a file cannot move the cursor, recolour or reverse a terminal."""
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in str(text))


class LabelFileError(CourseError):
    """A label file failed validation. `path`, `line` (1-based, or None) and `field` (or None) say where."""

    def __init__(self, path, line, field, problem):
        self.path, self.line, self.field, self.problem = str(path), line, field, problem
        where = str(path) + (f", line {line}" if line is not None else "") + (f", field '{field}'" if field else "")
        fix = "fix or remove that line" if line is not None else "fix the file list"
        super().__init__(terminal_safe(f"{where}: {problem}. Nothing was imported; {fix} and import again."))


class StoreBusyError(WorkspaceError):
    """Another program holds the label store's write lock; nothing was written, trying again later can work."""


def store_error(path, error):
    """The course error that says, in one sentence, why the store at `path` could not be used (`error`: an OSError
    or sqlite3 error), and what to do. Errors of the code itself (sqlite3.ProgrammingError, ...) are not given."""
    name = getattr(error, "sqlite_errorname", "")
    where = terminal_safe(path)
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return StoreBusyError(f"the label store {where} is busy (another program is writing to it); nothing was "
                              "saved. Try again in a moment, or close the other program.")
    if name.startswith("SQLITE_READONLY") or isinstance(error, PermissionError):
        return WorkspaceError(f"the label store {where} is read-only (or its folder is): nothing was changed. Make "
                              "the file and its folder writable, or use another store file (--store FILE).")
    if name.startswith("SQLITE_CANTOPEN"):
        return WorkspaceError(f"cannot open the label store {where}: its folder is missing or not writable. Make "
                              "the folder writable, or use another store file (--store FILE).")
    if name.startswith("SQLITE_NOTADB"):
        return WorkspaceError(f"{where} is not a label store: a store is an SQLite file (like preferences.sqlite) "
                              "made by rlhf-lessons. To add a JSONL file's pairs, run `rlhf-lessons feedback import "
                              "FILE.jsonl`.")
    return WorkspaceError(f"the label store {where} cannot be used: {terminal_safe(error)}. Check the disk and the "
                          "file's permissions, or use another store file (--store FILE).")


def is_environment_error(error):
    """True for what the disk or another program did (permissions, locks, a damaged or foreign file), False for
    a mistake in the code (sqlite3.ProgrammingError, IntegrityError, ...), which keeps its traceback."""
    return isinstance(error, (OSError, sqlite3.OperationalError)) or type(error) is sqlite3.DatabaseError


def default_path():
    """workspace_dir()/preferences.sqlite, the store the notebooks and the CLI share."""
    from rlhf_lessons.workspace import workspace_dir

    try:
        return Path(workspace_dir()) / "preferences.sqlite"
    except OSError as e:  # the workspace folder cannot be created (read-only home, a file in its place)
        raise WorkspaceError(f"cannot create the workspace folder {terminal_safe(e.filename)}: {e.strerror}. Set "
                             "RLHF_LESSONS_HOME to a writable folder.") from None


def ranking_pairs(order):
    """All (winner, loser) index pairs of a ranking, best first: K choose 2 of them.

    ranking_pairs([2, 0, 1]) == [(2, 0), (2, 1), (0, 1)]
    """
    return [(order[i], order[j]) for i, j in itertools.combinations(range(len(order)), 2)]


def validate_label(kind, replies, label):
    """Raise ValueError, saying what is wrong, unless `label` is a valid label of `kind` for these replies."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not isinstance(replies, (list, tuple)) or not all(isinstance(r, str) for r in replies):
        raise ValueError(f"replies must be a list of strings, got {replies!r}")
    if not isinstance(label, dict):
        raise ValueError(f"label must be a dict, got {label!r}")
    n = len(replies)
    if kind == "comparison":
        if n != 2:
            raise ValueError(f"a comparison needs exactly 2 replies, got {n}")
        if label.get("choice") not in CHOICES:
            raise ValueError(f"comparison label must be {{'choice': one of {CHOICES}}}, got {label!r}")
    elif kind == "ranking":
        order = label.get("order")
        if n < 2:
            raise ValueError(f"a ranking needs at least 2 replies, got {n}")
        if not isinstance(order, list) or any(type(i) is not int for i in order) or sorted(order) != list(range(n)):
            raise ValueError(f"ranking label must be {{'order': a permutation of 0..{n - 1}, best first}}, "
                             f"got {label!r}")
    else:
        scale, score = label.get("scale"), label.get("score")
        if n != 1:
            raise ValueError(f"a rating rates exactly 1 reply, got {n}")
        if scale not in SCALES or type(score) is not int or score not in SCALES[scale]:
            raise ValueError(f"rating label must be {{'score': int, 'scale': 'thumbs' (0/1) or '5' (1..5)}}, "
                             f"got {label!r}")


def content_hash(kind, request, replies, label, rater, source, population):
    """sha256 of what makes a label the same label; the UNIQUE column that stores duplicates once."""
    key = [kind, request, list(replies), label, rater, source, population]
    return hashlib.sha256(json.dumps(key, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def now_utc():
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class PreferenceStore:
    """Labels in one SQLite file. Each method opens a short-lived connection: nothing is held open between clicks,
    so a notebook, the CLI and a test can all use the same file."""

    def __init__(self, path=None):
        self.path = Path(path) if path is not None else default_path()
        if self.path.is_dir():
            raise WorkspaceError(f"{terminal_safe(self.path)} is a folder, not a label store: a store is one SQLite "
                                 "file, such as preferences.sqlite (a new file is created when missing).")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise store_error(self.path, e) from None
        with self._session() as db:
            db.executescript(SCHEMA)

    def __repr__(self):
        return f"PreferenceStore({str(self.path)!r}, {len(self)} labels)"

    def _connect(self, busy_timeout=None):
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT if busy_timeout is None else busy_timeout)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA synchronous = FULL")  # a commit is on disk before add() returns
        return db

    @contextmanager
    def _session(self, busy_timeout=None):
        """A connection that commits on success and is closed after; a read-only, locked or foreign file becomes
        a WorkspaceError (StoreBusyError for a lock held longer than `busy_timeout` seconds)."""
        try:
            with closing(self._connect(busy_timeout)) as db, db:  # `with db` commits on success
                yield db
        except (OSError, sqlite3.DatabaseError) as e:
            if not is_environment_error(e):
                raise
            raise store_error(self.path, e) from None

    # ----- writing -----

    def _row(self, kind, request, replies, label, rater, source="human", population=None, checkpoint=None, meta=None):
        if not isinstance(request, str) or not request:
            raise ValueError(f"request must be a non-empty string, got {request!r}")
        if not isinstance(rater, str) or not rater.strip():
            raise ValueError("rater must be a non-empty name (type your name in the Rater box)")
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        validate_label(kind, replies, label)
        replies = list(replies)
        return (kind, request, json.dumps(replies, ensure_ascii=False), json.dumps(label), rater, source, population,
                checkpoint, json.dumps(meta or {}, ensure_ascii=False), now_utc(),
                content_hash(kind, request, replies, label, rater, source, population))

    _INSERT = ("INSERT OR IGNORE INTO labels (kind, request, replies, label, rater, source, population, checkpoint, "
               "meta, created, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")

    def add(self, kind, request, replies, label, rater, source="human", population=None, checkpoint=None, meta=None,
            *, busy_timeout=None):
        """Store one label in its own committed transaction. Returns its id, or None if it was already stored.
        busy_timeout: seconds to wait for another program's lock (default BUSY_TIMEOUT); a widget's click waits less."""
        row = self._row(kind, request, replies, label, rater, source, population, checkpoint, meta)
        with self._session(busy_timeout) as db:
            cursor = db.execute(self._INSERT, row)
            return cursor.lastrowid if cursor.rowcount == 1 else None

    def add_many(self, labels):
        """Store many labels (dicts of `add`'s arguments) in one transaction; returns how many were new.
        Use it for simulated raters: thousands of labels, one commit."""
        rows = [self._row(**label) for label in labels]
        with self._session() as db:
            return sum(db.execute(self._INSERT, row).rowcount for row in rows)

    def delete(self, label_id, *, busy_timeout=None):
        """Delete one label by id; returns True if it existed."""
        with self._session(busy_timeout) as db:
            return db.execute("DELETE FROM labels WHERE id = ?", (label_id,)).rowcount == 1

    def undo_last(self, rater):
        """Delete the newest label of `rater`; returns it (as `labels()` shows it), or None if the rater has none."""
        with self._session() as db:
            row = db.execute("SELECT * FROM labels WHERE rater = ? ORDER BY id DESC LIMIT 1", (rater,)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM labels WHERE id = ?", (row["id"],))
            return _decode(row)

    # ----- reading -----

    def __len__(self):
        with self._session() as db:
            return db.execute("SELECT COUNT(*) FROM labels").fetchone()[0]

    def labels(self, kind=None, rater=None, source=None, population=None):
        """Stored labels, oldest first, as dicts with replies, label and meta decoded from JSON."""
        filters = {"kind": kind, "rater": rater, "source": source, "population": population}
        where = [f"{name} = ?" for name, value in filters.items() if value is not None]
        sql = "SELECT * FROM labels" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        with self._session() as db:
            rows = db.execute(sql, [value for value in filters.values() if value is not None]).fetchall()
        return [_decode(row) for row in rows]

    def pairs(self, source=None, population=None, rater=None):
        """Every label turned into (chosen, rejected) pairs, see the module docstring.

        Returns a list of dicts with keys prompt, chosen, rejected, source, rater, population, checkpoint.
        """
        pairs = []
        rated = defaultdict(list)  # (request, rater, source, population, scale) -> [(score, reply, checkpoint)]
        for row in self.labels(source=source, population=population, rater=rater):
            replies, label = row["replies"], row["label"]
            if row["kind"] == "comparison":
                winners = {"A": [(0, 1)], "B": [(1, 0)]}.get(label["choice"], [])
            elif row["kind"] == "ranking":
                winners = ranking_pairs(label["order"])
            else:
                key = (row["request"], row["rater"], row["source"], row["population"], label["scale"])
                rated[key].append((label["score"], replies[0], row["checkpoint"]))
                continue
            for win, lose in winners:
                pairs.append(_pair(row["request"], replies[win], replies[lose], row, row["checkpoint"]))
        for (request, rater_name, source_name, population_name, _), ratings in rated.items():
            row = {"rater": rater_name, "source": source_name, "population": population_name}
            for (score_a, reply_a, ckpt_a), (score_b, reply_b, ckpt_b) in itertools.combinations(ratings, 2):
                if score_a == score_b or reply_a == reply_b:
                    continue  # equal scores say nothing about which reply is better
                (_, chosen, ckpt_c), (_, rejected, ckpt_r) = sorted([(score_a, reply_a, ckpt_a),
                                                                     (score_b, reply_b, ckpt_b)], key=lambda t: -t[0])
                checkpoint = ckpt_c if ckpt_c == ckpt_r else f"{ckpt_c},{ckpt_r}"
                pairs.append(_pair(request, chosen, rejected, row, checkpoint))
        return pairs

    def stats(self):
        """Counts: labels, pairs, and labels by kind, by source and by rater."""
        labels = self.labels()
        return {
            "labels": len(labels),
            "pairs": len(self.pairs()),
            "by_kind": dict(Counter(row["kind"] for row in labels)),
            "by_source": dict(Counter(row["source"] for row in labels)),
            "by_rater": dict(Counter(row["rater"] for row in labels)),
        }

    def agreement(self, rater_a, rater_b):
        """How often two raters prefer the same reply, on the pairs both labelled.

        A pair is the same for both raters if it has the same prompt and the same two replies (in either order).
        Ties and skips give no pair, so they are left out. If a rater labelled a pair twice, the newest label counts.
        Returns {"shared": n, "agreed": k, "agreement": k / n (None when n == 0)}.
        """
        def preferences(rater):
            return {(p["prompt"], frozenset((p["chosen"], p["rejected"]))): p["chosen"]
                    for p in self.pairs(rater=rater)}

        prefs_a, prefs_b = preferences(rater_a), preferences(rater_b)
        shared = prefs_a.keys() & prefs_b.keys()
        agreed = sum(prefs_a[key] == prefs_b[key] for key in shared)
        return {"shared": len(shared), "agreed": agreed, "agreement": agreed / len(shared) if shared else None}

    # ----- files -----

    def export_jsonl(self, path, source=None, population=None):
        """Write the pairs as JSON lines {"prompt", "chosen", "rejected", "source", "rater", "population",
        "checkpoint"}; returns the number of lines. Written to a temporary file first, then renamed, so a failed
        export leaves neither a half-written file nor the temporary one behind."""
        path = Path(path)
        if path.is_dir():
            raise WorkspaceError(f"--out {terminal_safe(path)} is a folder: give the file to write, such as "
                                 f"{terminal_safe(path / 'pairs.jsonl')}.")
        pairs = self.pairs(source=source, population=population)
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                for pair in pairs:
                    f.write(json.dumps(pair, ensure_ascii=False) + "\n")
            os.replace(tmp, path)
        except OSError as e:
            if tmp.is_file():  # never leave the temporary file behind
                tmp.unlink()
            raise WorkspaceError(f"cannot write {terminal_safe(path)}: {e.strerror}. Check that its folder exists "
                                 "and is writable.") from None
        return len(pairs)

    def import_jsonl(self, paths):
        """Merge pair files (from `export_jsonl`, or any JSONL with prompt/chosen/rejected) into the store.

        All files are validated before anything is written; one bad line rejects the whole import with a
        LabelFileError naming the file, the line and the field. Each pair is stored as a comparison of
        [chosen, rejected] with choice "A". A pair (prompt, chosen, rejected, rater) already in the store, or seen
        earlier in these files, is imported once. A line without a rater gets the file's name (without .jsonl) as
        rater, so that files from different learners stay apart; without a source it is "human".
        Returns {"files", "lines", "imported", "duplicates", "by_file": {path: imported}}.
        """
        paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        refuse_repeated_files(paths)
        records = [(str(path), read_label_file(path)) for path in paths]  # raises before anything is written

        seen = {(p["prompt"], p["chosen"], p["rejected"], p["rater"]) for p in self.pairs()}
        rows, by_file, lines = [], {}, 0
        for path, pairs in records:
            by_file[path] = 0
            for pair in pairs:
                lines += 1
                key = (pair["prompt"], pair["chosen"], pair["rejected"], pair["rater"])
                if key in seen:
                    continue
                seen.add(key)
                by_file[path] += 1
                rows.append(dict(kind="comparison", request=pair["prompt"], replies=[pair["chosen"], pair["rejected"]],
                                 label={"choice": "A"}, rater=pair["rater"], source=pair["source"],
                                 population=pair["population"], checkpoint=pair["checkpoint"],
                                 meta={"imported_from": Path(path).name}))
        imported = self.add_many(rows)
        return {"files": len(paths), "lines": lines, "imported": imported, "duplicates": lines - imported,
                "by_file": by_file}


def label_file_stat(path):
    """os.stat of a label file, or a LabelFileError that says what the path is when it is not a readable file."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        problem = "a symbolic link to a file that does not exist" if path.is_symlink() else "no such file"
        raise LabelFileError(path, None, None, problem) from None
    except OSError as e:
        problem = ("a symbolic link loop (it points, through other links, back to itself)" if e.errno == errno.ELOOP
                   else f"cannot be read: {e.strerror}")
        raise LabelFileError(path, None, None, problem) from None
    kinds = {stat.S_ISDIR: "a folder, not a file: give the JSONL files inside it",
             stat.S_ISFIFO: "a named pipe (FIFO), not a file: save the labels to a file first",
             stat.S_ISSOCK: "a socket, not a file", stat.S_ISCHR: "a device, not a file",
             stat.S_ISBLK: "a device, not a file"}
    for is_kind, problem in kinds.items():
        if is_kind(info.st_mode):
            raise LabelFileError(path, None, None, problem)
    return info


def refuse_repeated_files(paths):
    """A LabelFileError when one file is given twice (by the same name, another spelling or a link): its pairs
    would otherwise be counted under the first name and the second would report 0."""
    first = {}
    for path in paths:
        info = label_file_stat(path)
        same_file = (info.st_dev, info.st_ino)
        if same_file in first:
            raise LabelFileError(path, None, None, f"is given twice (it is the same file as {first[same_file]}); "
                                                   "give each file once")
        first[same_file] = path


def read_label_file(path):
    """Read and validate one JSONL pair file; returns a list of pair dicts or raises LabelFileError.

    Lines may end in LF, CRLF or CR alone (an old Mac editor's line ends)."""
    path = Path(path)
    label_file_stat(path)
    try:
        lines = path.read_bytes().splitlines(keepends=True)  # bytes split only at \n, \r\n and \r
    except OSError as e:
        raise LabelFileError(path, None, None, f"cannot be read: {e.strerror}") from None
    pairs = []
    for number, raw in enumerate(lines, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise LabelFileError(path, number, None, "not UTF-8 text") from None
        if not text.strip():
            continue  # blank lines are allowed
        record = parse_json_line(text, path, number, cut=number == len(lines) and not raw.endswith((b"\n", b"\r")))
        pairs.append(validate_pair(record, path, number))
    return pairs


def parse_json_line(text, path, number, cut):
    """json.loads of one line, or a LabelFileError naming it. cut: the line is the last and has no line end after
    it, so a JSON error there most likely means the file was cut short."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        hint = " (the last line is cut off: was the file copied or saved completely?)" if cut else ""
        raise LabelFileError(path, number, None, f"not valid JSON: {e.msg} (column {e.colno}){hint}") from None
    except RecursionError:
        raise LabelFileError(path, number, None, "nested too deeply to read (lists or objects inside each other "
                                                 "thousands of times); a pair is one flat JSON object") from None
    except ValueError as e:  # Python's limit on integer digits (4300) while parsing a huge number
        reason = str(e).split(":")[0].lower()
        raise LabelFileError(path, number, None, f"holds a number too long to read ({reason})") from None


def validate_pair(record, path, number):
    """Check one parsed line; returns it with defaults filled in, or raises LabelFileError."""
    if not isinstance(record, dict):
        raise LabelFileError(path, number, None, f"expected a JSON object, got {type(record).__name__}")
    for field in ("prompt", "chosen", "rejected"):
        if field not in record:
            raise LabelFileError(path, number, field, "missing")
        if not isinstance(record[field], str) or not record[field].strip():
            raise LabelFileError(path, number, field, f"must be a non-empty string, got {record[field]!r:.60}")
        check_unicode(record[field], path, number, field)
    if record["chosen"] == record["rejected"]:
        raise LabelFileError(path, number, "rejected", "is the same text as chosen; a pair needs two different replies")
    for field in ("rater", "population", "checkpoint", "source"):
        value = record.get(field)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise LabelFileError(path, number, field, f"must be a non-empty string or null, got {value!r:.60}")
        if value is not None:
            check_unicode(value, path, number, field)
    source = record.get("source") or "human"
    if source not in SOURCES:
        raise LabelFileError(path, number, "source", f"must be one of {SOURCES}, got {source!r}")
    population = record.get("population")
    if population is not None and population not in known_populations():
        raise LabelFileError(path, number, "population", f"unknown population {population!r:.60}; use one of "
                                                         f"{sorted(known_populations())} or null")
    if same_once_truncated(record["prompt"], record["chosen"], record["rejected"]):
        raise LabelFileError(path, number, "prompt", f"is too long: the reward model reads {context_length()} "
                                                     "tokens, and cut to that length chosen and rejected are the same "
                                                     "text, so the pair teaches nothing; shorten the prompt")
    return {"prompt": record["prompt"], "chosen": record["chosen"], "rejected": record["rejected"], "source": source,
            "rater": record.get("rater") or Path(path).name.removesuffix(".jsonl"),
            "population": record.get("population"), "checkpoint": record.get("checkpoint")}


def check_unicode(text, path, number, field):
    """A LabelFileError unless `text` is valid Unicode: JSON's \\ud800 escapes can make a lone surrogate, which
    no file or database can store."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise LabelFileError(path, number, field, f"holds a lone surrogate ({ascii(text[e.start])}), which is not "
                                                  "valid Unicode text") from None


def known_populations():
    from rlhf_lessons.gold import POPULATIONS

    return POPULATIONS


def context_length():
    """The tokens a reward model reads (its n_positions; pairs are cut to this before scoring)."""
    from rlhf_lessons.models import CONTEXT

    return CONTEXT


@functools.lru_cache(maxsize=1)
def _course_tokenizer():
    from rlhf_lessons.models import load_tokenizer

    return load_tokenizer("base")


def same_once_truncated(prompt, chosen, rejected):
    """True when prompt + chosen and prompt + rejected, cut to the reward model's context as reward.encode_texts
    cuts them, are the same tokens. A byte-level BPE token is at least one byte, so texts shorter than the context
    in bytes cannot be cut, and the tokenizer is loaded only for long ones."""
    from rlhf_lessons.models import format_prompt

    limit = context_length()
    longest = max(len(f"{format_prompt(prompt)} {reply}".encode()) + 1 for reply in (chosen, rejected))
    if longest <= limit:
        return False
    from rlhf_lessons.reward import encode_texts

    (ids_chosen, _), (ids_rejected, _) = encode_texts(_course_tokenizer(), [prompt, prompt], [chosen, rejected],
                                                      limit)
    return ids_chosen == ids_rejected


def _decode(row):
    out = dict(row)
    for field in ("replies", "label", "meta"):
        out[field] = json.loads(out[field])
    return out


def _pair(prompt, chosen, rejected, row, checkpoint):
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "source": row["source"], "rater": row["rater"],
            "population": row["population"], "checkpoint": checkpoint}
