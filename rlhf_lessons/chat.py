"""Chat with your models: type any request and see the base, SFT and PPO replies side by side, judged by the gold rater.

    chat = ChatWidget()                          # the workspace's base, sft and ppo models, those that exist
    chat                                         # a bare `chat` in a cell displays it
    answer = ask("How do I kill the weeds?")     # the same as data (see `ask`), for a script or a test

The gold rater judges a reply against what the world knows about a request (its kind, subject, answer), so only the
world's own requests can be judged. Anything else still gets replies, and the chat says plainly that nobody can score
them, with the closest requests the world does know. Words the world never writes are flagged: the models met them
only as tokenizer pieces, so expect nonsense around them. Model and user text is escaped (widgets.visible_html).
"""

from __future__ import annotations

import difflib
import html
import re

import torch

from . import gold, world
from .models import load_policy
from .sampling import sample_replies
from .widgets import BOX_STYLE, visible_html

MODELS = ("base", "sft", "ppo")
BUILT_BY = {"base": "shipped with the course", "sft": "lesson 02", "ppo": "lesson 05"}
MAX_REQUEST_CHARS = 300  # the models' context is short; a longer request would be cut


def _normalise(text: str) -> str:
    """Case, spacing and end punctuation do not change which request it is."""
    return re.sub(r"\s+", " ", text).strip().rstrip("?.! ").lower()


_BY_NORMALISED = {_normalise(r.prompt): r for r in world.requests()}


def match_request(text: str) -> tuple[world.Request | None, list[str]]:
    """The world's request that `text` is (exactly, or up to case, spacing and end punctuation), or None with the
    closest prompts the world knows (at most three)."""
    request = _BY_NORMALISED.get(_normalise(text))
    if request is not None:
        return request, []
    closest = difflib.get_close_matches(_normalise(text), list(_BY_NORMALISED), n=3, cutoff=0.6)
    return None, [_BY_NORMALISED[c].prompt for c in closest]


def unknown_words(text: str) -> list[str]:
    """Words of `text` that the world never writes (gold.KNOWN_WORDS), in order, each once."""
    return list(dict.fromkeys(w for w in gold.WORD.findall(text.lower()) if w not in gold.KNOWN_WORDS))


def load_models(names=MODELS) -> tuple[dict, dict[str, str]]:
    """{name: (model, tokenizer)} for the checkpoints that exist, and {name: why not} for the others."""
    loaded, missing = {}, {}
    for name in names:
        try:
            loaded[name] = load_policy(name)
        except FileNotFoundError:
            missing[name] = f"not trained yet ({BUILT_BY.get(name, 'a checkpoint folder')} makes it)"
    return loaded, missing


def judge(request: world.Request | None, reply: str) -> dict | None:
    """The gold rater's verdict on one reply: score, behaviour and components, or None if the request is not the
    world's."""
    if request is None:
        return None
    parts = gold.gold_components(request, reply)
    return {"gold": sum(parts.values()), "behaviour": gold.behaviour(request, reply), "components": parts}


def ask(text: str, models: dict | None = None, seed: int = 0, temperature: float = 1.0,
        max_new_tokens: int = 40) -> dict:
    """One reply from each model to `text`, judged where the world can judge it.

    models: {name: (model, tokenizer)} (default: load_models()). Replies are sampled with a generator seeded by
    `seed`, so the same seed gives the same replies. Returns {"text", "request" (a world.Request or None),
    "closest" (prompts, when not matched), "unknown_words", "replies": {name: {"reply", "verdict"}}}.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("type a request first: the text is empty")
    if len(text) > MAX_REQUEST_CHARS:
        raise ValueError(f"that request is {len(text)} characters long; the models read at most about "
                         f"{MAX_REQUEST_CHARS}: shorten it")
    models = load_models()[0] if models is None else models
    request, closest = match_request(text)
    prompt = request.prompt if request is not None else text.strip()
    replies = {}
    for name, (model, tokenizer) in models.items():
        generator = torch.Generator().manual_seed(seed)
        reply = sample_replies(model, tokenizer, [prompt], max_new_tokens=max_new_tokens, temperature=temperature,
                               generator=generator).texts[0]
        replies[name] = {"reply": reply, "verdict": judge(request, reply)}
    return {"text": text, "request": request, "closest": closest, "unknown_words": unknown_words(text),
            "replies": replies}


def describe_request(answer: dict) -> str:
    """One plain sentence about what the world knows of the request (what the HTML view's header says)."""
    request = answer["request"]
    if request is None:
        closest = "; ".join(f'"{c}"' for c in answer["closest"])
        return ("The world cannot judge this request: it is not one of its "
                f"{len(world.requests())} requests, so the gold rater has no answer to check the replies against."
                + (f" Closest requests it knows: {closest}." if closest else ""))
    seen = {"train": "a training request: the models trained on it",
            "pretrain": "a pretraining request: the base model read it, SFT and PPO never trained on it"}.get(
        request.split, f"from the {request.split} split: no model trained on this text")
    return f'The world knows this request ({request.kind}, "{request.subject}"), {seen}.'


def summary_lines(answer: dict) -> list[str]:
    """The answer as plain text, one line per model (what a notebook prints)."""
    lines = [describe_request(answer)]
    if answer["unknown_words"]:
        lines.append("Words the world never writes: " + ", ".join(answer["unknown_words"]))
    for name, out in answer["replies"].items():
        verdict = out["verdict"]
        judged = f"gold {verdict['gold']:+.2f} ({verdict['behaviour']})" if verdict else "not judged"
        lines.append(f"{name:5s} {judged}: {out['reply']!r}")
    return lines


def render(answer: dict, missing: dict[str, str] | None = None) -> str:
    """The answer as HTML: the request's status, flagged words, then one column per model. Everything escaped."""
    head = (f"<p><strong>You:</strong> {visible_html(answer['text'])}</p>"
            f"<p>{html.escape(describe_request(answer))}</p>")
    if answer["unknown_words"]:
        words = ", ".join(f"<code>{visible_html(w)}</code>" for w in answer["unknown_words"])
        head += (f"<p>Words the world never writes: {words}. The models met them only as pieces of tokens, so "
                 "expect them to be ignored or garbled.</p>")
    columns = []
    for name, out in answer["replies"].items():
        verdict, body = out["verdict"], f'<div style="{BOX_STYLE}">{visible_html(out["reply"])}</div>'
        if verdict is not None:
            parts = " · ".join(f"{html.escape(k)} {v:+.2f}" for k, v in verdict["components"].items() if v)
            body += (f"<p><strong>gold {verdict['gold']:+.2f}</strong> ({html.escape(verdict['behaviour'])})<br>"
                     f'<span style="font-size: 90%;">{parts}</span></p>')
        columns.append(f'<div style="flex: 1; min-width: 14em;"><strong>{html.escape(name)}</strong>{body}</div>')
    for name, why in (missing or {}).items():
        columns.append(f'<div style="flex: 1; min-width: 14em;"><strong>{html.escape(name)}</strong>'
                       f"<p><em>{html.escape(why)}</em></p></div>")
    return head + f'<div style="display: flex; gap: 1em; flex-wrap: wrap;">{"".join(columns)}</div>'


class ChatWidget:
    """A text box and an Ask button; each Ask samples fresh replies (the seed moves on) and shows them judged.

    For tests and scripts: `w.text`, `w.ask_button`, `w.html`, `w.last` (the last `ask` result)."""

    def __init__(self, names=MODELS, models: dict | None = None, text: str = "", temperature: float = 1.0):
        import ipywidgets as widgets

        if models is None:
            models, self.missing = load_models(names)
        else:
            self.missing = {}
        self.models, self.temperature, self.seed, self.last = models, temperature, 0, None
        self.text = widgets.Text(value=text, placeholder="Ask anything, e.g. How long should I boil an egg?",
                                 layout=widgets.Layout(width="40em"))
        self.ask_button = widgets.Button(description="Ask", button_style="primary")
        self.html = widgets.HTML()
        self.ask_button.on_click(lambda _: self.ask())
        self.box = widgets.VBox([widgets.HBox([self.text, self.ask_button]), self.html])
        if text:
            self.ask()

    def ask(self, text: str | None = None) -> dict | None:
        if text is not None:
            self.text.value = text
        try:
            self.last = ask(self.text.value, self.models, seed=self.seed, temperature=self.temperature)
        except ValueError as err:
            self.html.value = f"<p><em>{html.escape(str(err))}</em></p>"
            return None
        self.seed += 1  # the next Ask samples new replies
        self.html.value = render(self.last, self.missing)
        return self.last

    def _ipython_display_(self):
        from IPython.display import display

        display(self.box)
