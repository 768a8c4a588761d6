"""Where the course keeps what learners make: checkpoints, labels, logs.

The shipped data (world files, tokenizer, base model) lives in the repository's `data/` folder and is read-only.
Everything a lesson or command produces goes into the *workspace*: `$RLHF_LESSONS_HOME` when set, else
`~/.rlhf-lessons`. Inside it, each stage writes a folder named after itself (`sft/`, `rm/`, `ppo/`), the
preference store is `preferences.sqlite`, and `learner_id` holds the rater id the labelling widgets start with.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DATA_DIR = PACKAGE_DIR.parent / "data"  # the repository's shipped data
BASE_MODEL_DIR = DATA_DIR / "base"
WORLD_DIR = DATA_DIR / "world"

STAGE_NAMES = ("sft", "rm", "ppo")  # checkpoint names a learner can pass instead of a path
LEARNER_ID_FILE = "learner_id"  # in the workspace: this learner's default rater id, one line
LEARNER_ID_PREFIX = "learner-"


def workspace_dir() -> Path:
    """The workspace folder (created if missing): $RLHF_LESSONS_HOME or ~/.rlhf-lessons."""
    root = Path(os.environ.get("RLHF_LESSONS_HOME") or Path.home() / ".rlhf-lessons").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def stage_dir(name: str) -> Path:
    """Default folder of a stage's checkpoint in the workspace, e.g. stage_dir('sft')."""
    if name not in STAGE_NAMES:
        raise ValueError(f"unknown stage {name!r}: expected one of {STAGE_NAMES}")
    return workspace_dir() / name


def new_learner_id() -> str:
    """'learner-' and six random hex digits: thirty learners all keep their own id with near certainty (a clash
    among 30 has a chance of about 3 in 100,000)."""
    return LEARNER_ID_PREFIX + secrets.token_hex(3)


def _usable_id(text: str) -> bool:
    return bool(text) and len(text) <= 100 and text.isprintable()


def learner_id() -> str:
    """This workspace's rater id, which the labelling widgets put in their Rater box: made at random the first time
    and kept in <workspace>/learner_id, so it stays the same after a re-run or a kernel restart, and differs from
    every other learner's. When a class merges everyone's label files, a pair is kept once per rater name: thirty
    learners all called "learner" would lose each other's identical labels. Typing another name in the Rater box
    (or passing rater=...) stores under that name instead; editing the file changes the default for good.

    Two kernels asking at the same moment get the same id: the file is created whole, once (a hard link of a
    finished temporary file, which fails if another process made it first)."""
    path = workspace_dir() / LEARNER_ID_FILE
    unusable = True  # the file is there, but empty or unreadable as a name: replaced below
    try:
        text = path.read_text(encoding="utf-8").strip()
        if _usable_id(text):
            return text
    except FileNotFoundError:
        unusable = False
    except UnicodeDecodeError:  # not text
        pass
    tmp = path.with_name(f".{LEARNER_ID_FILE}.{os.getpid()}.tmp")
    tmp.write_text(new_learner_id() + "\n", encoding="utf-8")
    try:
        if unusable:  # not `path.exists()`: a file another kernel made since the read above is a good one, kept
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:  # another kernel made one a moment ago: use that one
                pass
            except OSError:  # a file system without hard links: a plain rename
                os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text(encoding="utf-8").strip()
