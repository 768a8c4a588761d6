"""Labelling widgets: compare two replies, rank K replies, rate one reply, the ways products collect feedback.

    w = CompareWidget(items)     # items: [{"prompt": str, "replies": [str, str], "checkpoint": str, "meta": {...}}]
    w                            # a bare `w` in a cell displays it

Every click is stored at once (one committed SQLite transaction, see rlhf_lessons.store), so a crashed kernel
loses nothing. Model text is shown through html.escape: a reply containing `<script>` is shown as text, and
bidirectional controls (U+202E and its kin, which would show a reply's text reversed) are shown as their escapes.
A click the store cannot take (read-only, or locked by another program for longer than CLICK_BUSY_TIMEOUT) is not
counted: the widget says so in its status line and the learner clicks again; nothing already stored is lost.
The Rater box starts with this workspace's own rater id ("learner-" and six hex digits, kept in the workspace, see
workspace.learner_id) unless `rater=` names someone: files merged from a class keep every learner apart, and the
learner can type their own name over it.
For tests and scripts each widget exposes its controls: `w.buttons[...]`, `w.rank_buttons[i]`, `w.undo_button`,
`w.rater_box`, and `w.html` (the request and replies), `w.progress`, `w.status`.
"""

import html
import re

import ipywidgets as widgets

from rlhf_lessons.errors import WorkspaceError
from rlhf_lessons.store import SOURCES, PreferenceStore, StoreBusyError

CLICK_BUSY_TIMEOUT = 2  # seconds a click waits for another program's lock: a click must not hang the notebook
BUSY_MESSAGE = ("The label store is busy (another program is writing to it); your click was not saved, "
                "try again.")
BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")  # embeddings, overrides and isolates

BOX_STYLE = ("white-space: pre-wrap; overflow-wrap: anywhere; max-width: 60em; border: 1px solid #bbb; "
             "border-radius: 4px; padding: 6px 8px; margin: 2px 0 8px 0;")


def visible_html(text):
    """`text` escaped for HTML, with every bidirectional control shown as its escape (\\u202e), so that none can
    reorder what is shown after it."""
    return BIDI_CONTROLS.sub(lambda match: f'<code title="bidirectional control character">'
                                           f"{ascii(match.group())[1:-1]}</code>", html.escape(text))


def text_block(title, text):
    """A titled box of escaped text; long text wraps."""
    return f'<div><strong>{html.escape(title)}</strong><div style="{BOX_STYLE}">{visible_html(text)}</div></div>'


def default_rater():
    """The name a widget's Rater box starts with when no rater is given: the workspace's own id, 'learner-' and six
    random hex digits, the same on every run in this workspace (workspace.learner_id). A workspace that cannot be
    written gets a fresh id each time instead: the widget still works, and its store says what is wrong."""
    from rlhf_lessons.workspace import learner_id, new_learner_id

    try:
        return learner_id()
    except OSError:
        return new_learner_id()


def check_items(items, min_replies, max_replies):
    """Raise ValueError, saying what to fix, unless items is a list of {"prompt", "replies", ...} dicts."""
    if not isinstance(items, (list, tuple)) or not items:
        raise ValueError("items must be a non-empty list of dicts with 'prompt' and 'replies'")
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
            raise ValueError(f"item {i} must be a dict with a 'prompt' string, got {item!r:.80}")
        replies = item.get("replies")
        if not isinstance(replies, (list, tuple)) or not all(isinstance(r, str) for r in replies):
            raise ValueError(f"item {i}: 'replies' must be a list of strings")
        if not min_replies <= len(replies) <= max_replies:
            raise ValueError(f"item {i} has {len(replies)} replies; this widget needs {min_replies} to {max_replies}")
    return list(items)


class LabelWidget:
    """What the three widgets share: the store, the rater box, progress, undo, and the "done" message.

    A subclass sets `kind`, builds `self.tasks` (one per label to collect: a dict with "prompt", "replies" as they
    are stored, optional "checkpoint" and "meta") and implements `task_html(task)` and `show_controls(task)`;
    its button handlers call `self.save(label)`.
    """

    kind = None

    def __init__(self, tasks, store=None, rater=None, source="human", population=None):
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        self.tasks = tasks
        self.store = store if isinstance(store, PreferenceStore) else PreferenceStore(store)
        self.source, self.population = source, population
        self.position = 0  # index of the task on screen; == len(tasks) when all are done
        self.history = []  # (position, stored label id or None if it was a duplicate), for undo
        self.error = None  # the store's error of the last click it refused, or None
        self.rater_box = widgets.Text(value=default_rater() if rater is None else rater, description="Rater:",
                                      placeholder="your name")
        self.progress = widgets.HTML()
        self.html = widgets.HTML()
        self.status = widgets.HTML()
        self.controls = widgets.HBox()
        self.undo_button = widgets.Button(description="Undo last", tooltip="delete the last label you stored")
        self.undo_button.on_click(lambda _: self.undo())
        self.widget = widgets.VBox([widgets.HBox([self.progress, self.rater_box]), self.html, self.controls,
                                    self.undo_button, self.status])

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    @property
    def done(self):
        return self.position >= len(self.tasks)

    @property
    def stored(self):
        """How many labels this widget has stored (duplicates of labels already in the store are not counted)."""
        return sum(label_id is not None for _, label_id in self.history)

    def save(self, label):
        """Store `label` for the task on screen and move on to the next one. Returns False if nothing was stored."""
        rater = self.rater_box.value.strip()
        if self.done:
            return False
        if not rater:
            self.status.value = "Type your name in the <strong>Rater</strong> box first, then click again."
            return False
        task = self.tasks[self.position]
        try:
            label_id = self.store.add(self.kind, task["prompt"], task["replies"], label, rater=rater,
                                      source=self.source, population=self.population,
                                      checkpoint=task.get("checkpoint"), meta=task.get("meta"),
                                      busy_timeout=CLICK_BUSY_TIMEOUT)
        except WorkspaceError as error:
            self.show_store_error(error)
            return False
        self.error = None
        self.history.append((self.position, label_id))
        self.position += 1
        note = "stored" if label_id is not None else "was already in the store"
        self.refresh(f"Label {html.escape(describe(label))} {note} (rater: {visible_html(rater)}).")
        return True

    def show_store_error(self, error):
        """Say on screen why the store refused the click; the task stays on screen to be clicked again."""
        self.error = error
        message = BUSY_MESSAGE if isinstance(error, StoreBusyError) else f"Your click was not saved: {error}"
        self.status.value = f'<span style="color: #b00020;"><strong>{visible_html(message)}</strong></span>'

    def undo(self):
        """Delete the last stored label and show its task again."""
        if not self.history:
            self.status.value = "Nothing to undo."
            return
        position, label_id = self.history[-1]
        if label_id is not None:
            try:
                self.store.delete(label_id, busy_timeout=CLICK_BUSY_TIMEOUT)
            except WorkspaceError as error:  # the label stays stored, and so stays in the history
                self.show_store_error(error)
                return
        self.error = None
        self.history.pop()
        self.position = position
        self.refresh("Undone: the last label was deleted from the store." if label_id is not None else
                     "Undone (that click repeated a label already in the store, which stays there).")

    def refresh(self, message=""):
        """Redraw progress, the task (or the done message) and the controls."""
        self.progress.value = f"<strong>{min(self.position, len(self.tasks))} of {len(self.tasks)}</strong> labelled"
        if self.done:
            plural = "s" if self.stored != 1 else ""
            self.html.value = (f'<div style="font-size: 1.2em; color: #176117;"><strong>done: {self.stored} '
                               f"label{plural} stored</strong> in {visible_html(str(self.store.path))}</div>")
            self.controls.children = []
        else:
            self.html.value = self.task_html(self.tasks[self.position])
            self.show_controls(self.tasks[self.position])
        self.status.value = message


def describe(label):
    return ", ".join(f"{key} {value}" for key, value in label.items())


class CompareWidget(LabelWidget):
    """Two replies to one request: "A is better", "B is better", "Tie" or "Skip"."""

    kind = "comparison"

    def __init__(self, items, store=None, rater=None, source="human", population=None):
        super().__init__(check_items(items, 2, 2), store, rater, source, population)
        names = {"A": "A is better", "B": "B is better", "tie": "Tie", "skip": "Skip"}
        self.buttons = {key: widgets.Button(description=name) for key, name in names.items()}
        for key, button in self.buttons.items():
            button.on_click(lambda _, choice=key: self.save({"choice": choice}))
        self.refresh()

    def task_html(self, task):
        reply_a, reply_b = task["replies"]
        return text_block("Request", task["prompt"]) + text_block("Reply A", reply_a) + text_block("Reply B", reply_b)

    def show_controls(self, task):
        self.controls.children = list(self.buttons.values())


class RankWidget(LabelWidget):
    """K replies (2 to 4) to one request: click them from best to worst; the K-th click stores the ranking."""

    kind = "ranking"

    def __init__(self, items, store=None, rater=None, source="human", population=None):
        super().__init__(check_items(items, 2, 4), store, rater, source, population)
        self.order = []  # indices clicked so far, best first
        self.rank_buttons = []
        self.refresh()

    def task_html(self, task):
        blocks = [text_block(f"Reply {i + 1}", reply) for i, reply in enumerate(task["replies"])]
        so_far = " > ".join(f"Reply {i + 1}" for i in self.order) or "nothing yet"
        return (text_block("Request", task["prompt"]) + "".join(blocks) +
                f"<div>Click the replies from best to worst. Your order so far: {so_far}</div>")

    def show_controls(self, task):
        k = len(task["replies"])
        if len(self.rank_buttons) != k:  # new buttons only when K changes
            for button in self.rank_buttons:
                button.close()
            self.rank_buttons = [widgets.Button() for _ in range(k)]
            for i, button in enumerate(self.rank_buttons):
                button.on_click(lambda _, index=i: self.pick(index))
        for i, button in enumerate(self.rank_buttons):
            button.disabled = i in self.order
            button.description = f"Reply {i + 1}" + (f": #{self.order.index(i) + 1}" if i in self.order else "")
        self.controls.children = self.rank_buttons

    def pick(self, index):
        """One click of a ranking: reply `index` is the next best."""
        if self.done or index in self.order:
            return
        self.order.append(index)
        if len(self.order) < len(self.tasks[self.position]["replies"]):
            self.refresh(f"Reply {index + 1} is #{len(self.order)}.")
            return
        order, self.order = self.order, []
        if not self.save({"order": order}):
            self.order = order[:-1]  # not stored (no rater name yet): take the last click back

    def undo(self):
        """During a ranking, undo the last click; otherwise delete the last stored ranking."""
        if self.order:
            self.order.pop()
            self.refresh("Undone: the last click of this ranking.")
        else:
            super().undo()


class RatingWidget(LabelWidget):
    """One reply at a time: thumbs up/down (scale "thumbs", stored as 1/0) or 1 to 5 stars (scale "5").

    Every reply of every item is rated; ratings of replies to the same request later become pairs.
    """

    kind = "rating"

    def __init__(self, items, store=None, rater=None, source="human", population=None, scale="thumbs"):
        if scale not in ("thumbs", "5"):
            raise ValueError(f"scale must be 'thumbs' or '5', got {scale!r}")
        tasks = [{**item, "replies": [reply], "meta": {**item.get("meta", {}), "reply_index": i}}
                 for item in check_items(items, 1, 100) for i, reply in enumerate(item["replies"])]
        super().__init__(tasks, store, rater, source, population)
        self.scale = scale
        names = {"up": "👍 good", "down": "👎 bad"} if scale == "thumbs" else {n: str(n) for n in range(1, 6)}
        self.buttons = {key: widgets.Button(description=name) for key, name in names.items()}
        for key, button in self.buttons.items():
            score = {"up": 1, "down": 0}.get(key, key)
            button.on_click(lambda _, score=score: self.save({"score": score, "scale": self.scale}))
        self.refresh()

    def task_html(self, task):
        question = "Is this a good reply?" if self.scale == "thumbs" else "How good is this reply, from 1 (bad) to 5?"
        return text_block("Request", task["prompt"]) + text_block("Reply", task["replies"][0]) + f"<p>{question}</p>"

    def show_controls(self, task):
        self.controls.children = list(self.buttons.values())
